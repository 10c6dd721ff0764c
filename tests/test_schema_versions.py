"""Constitution rule 9: the served tool schemas against the committed snapshot, the compatibility
checker's verdicts, rule-9 waivers, and the commands that keep the snapshot and the policy
catalogue in step with the providers."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import pytest
from msgspec import UNSET, Meta, UnsetType

from gateway.cli import main
from gateway.registry import Registry, input_schema
from gateway.schema_versions import (
    SNAPSHOT,
    breaking_changes,
    load_snapshot,
    render_snapshot,
    rule9_waivers,
    snapshot_of,
)
from gateway.serve import default_providers
from tests.conftest import POLICIES, ROOT


def served() -> dict[str, dict[str, object]]:
    return snapshot_of(Registry(default_providers()))


def test_served_schemas_are_compatible_with_the_committed_snapshot() -> None:
    problems = breaking_changes(load_snapshot(), served(), rule9_waivers(ROOT / "exceptions"))
    assert problems == [], "rule 9: " + "; ".join(problems)


def test_the_snapshot_records_every_served_tool() -> None:
    missing = sorted(set(served()) - set(load_snapshot()))
    assert missing == [], f"run `opsgate policy schemas --write` to record {missing}"


# -- the checker --------------------------------------------------------------------------------

class V1(msgspec.Struct, forbid_unknown_fields=True):
    repo: str
    version: Literal["1.0"] = "1.0"
    ref: str | UnsetType = UNSET
    state: Literal["open", "cleared"] = "open"
    limit: Annotated[int, Meta(ge=1, le=100)] = 10
    tags: list[str] = []


def snap(struct: type[msgspec.Struct], kind: str = "read", name: str = "p.tool") -> dict[str, dict[str, object]]:
    return {name: {"kind": kind, "input_schema": input_schema(struct)}}


def verdict(new: type[msgspec.Struct], **kw: str) -> list[str]:
    return breaking_changes(snap(V1), snap(new, **kw))


def test_compatible_changes() -> None:
    class AddedOptional(V1):
        note: str | UnsetType = UNSET

    class Widened(msgspec.Struct, forbid_unknown_fields=True):
        repo: str
        version: Literal["1.0", "2.0"] = "1.0"
        ref: str | UnsetType | None = UNSET
        state: Literal["open", "cleared", "all"] = "open"
        limit: Annotated[int, Meta(ge=1, le=1000)] = 10
        tags: list[str] = []

    assert verdict(V1) == []
    assert verdict(AddedOptional) == []
    assert verdict(Widened) == []
    both = {**snap(V1), **snap(AddedOptional, name="p.tool.v2")}
    assert breaking_changes(snap(V1), both) == []  # a new tool, e.g. the `.v2` of a breaking change


@pytest.mark.parametrize("change", ["removed", "required", "narrowed_enum", "narrowed_type", "tighter_bound",
                                    "new_pattern", "default", "kind", "tool_removed", "items"])
def test_breaking_changes(change: str) -> None:
    if change == "removed":
        class New(msgspec.Struct, forbid_unknown_fields=True):
            repo: str
            version: Literal["1.0"] = "1.0"
            state: Literal["open", "cleared"] = "open"
            limit: Annotated[int, Meta(ge=1, le=100)] = 10
            tags: list[str] = []
        expect = "input.ref: property removed"
    elif change == "required":
        New = msgspec.defstruct("New", [("repo", str), ("owner", str), ("version", Literal["1.0"], "1.0"),
                                        ("ref", str | UnsetType, UNSET), ("state", Literal["open", "cleared"], "open"),
                                        ("limit", Annotated[int, Meta(ge=1, le=100)], 10), ("tags", list[str], [])],
                                forbid_unknown_fields=True)
        expect = "input.owner: now required"
    elif change == "narrowed_enum":
        class New(V1):  # type: ignore[no-redef]
            state: Literal["open"] = "open"
        expect = "input.state: values removed: ['cleared']"
    elif change == "narrowed_type":
        class New(V1):  # type: ignore[no-redef]
            ref: Literal["main"] | UnsetType = UNSET
        expect = "input.ref: now limited to ['main']"
    elif change == "tighter_bound":
        class New(V1):  # type: ignore[no-redef]
            limit: Annotated[int, Meta(ge=1, le=50)] = 10
        expect = "input.limit: maximum lowered to 50"
    elif change == "new_pattern":
        class New(V1):  # type: ignore[no-redef]
            ref: Annotated[str, Meta(pattern="^[a-z]+$")] | UnsetType = UNSET
        expect = "input.ref: pattern changed"
    elif change == "default":
        class New(V1):  # type: ignore[no-redef]
            limit: Annotated[int, Meta(ge=1, le=100)] = 20
        expect = "input.limit: default changed from 10 to 20"
    elif change == "kind":
        assert verdict(V1, kind="scan") == ["p.tool: kind changed from read to scan"]
        return
    elif change == "tool_removed":
        assert breaking_changes(snap(V1), {}) == ["p.tool: tool removed (keep it, or serve its successor under a "
                                                  "new name)"]
        return
    else:
        class New(V1):  # type: ignore[no-redef]
            tags: list[Annotated[str, Meta(max_length=5)]] = []
        expect = "input.tags[]: maxLength lowered to 5"
    problems = verdict(New)
    assert any(p.startswith(f"p.tool: {expect}") for p in problems), problems


class Filter(msgspec.Struct):
    severity: Literal["low", "high"] = "low"


class NarrowFilter(msgspec.Struct):
    severity: Literal["low"] = "low"


class WithFilter(msgspec.Struct):
    filter: Filter
    version: Literal["1.0"] = "1.0"


class WithNarrowFilter(msgspec.Struct):
    filter: NarrowFilter
    version: Literal["1.0"] = "1.0"


def test_nested_structs_are_compared_through_refs() -> None:
    assert "$defs" in input_schema(WithFilter)
    assert breaking_changes(snap(WithFilter), snap(WithNarrowFilter)) == [
        "p.tool: input.filter.severity: values removed: ['high']"]


def test_waived_tools_may_break() -> None:
    class New(V1):
        state: Literal["open"] = "open"

    assert verdict(New)
    assert breaking_changes(snap(V1), snap(New), {"p.tool"}) == []
    assert breaking_changes(snap(V1), snap(New), {"p.*"}) == []
    assert breaking_changes(snap(V1), snap(New), {"q.*", "p.other"}) != []


def test_only_an_approved_unexpired_rule_9_exception_waives_a_breaking_change(tmp_path: Path) -> None:
    from datetime import timedelta

    from tests.conftest import NOW
    from tests.exception_fixtures import file, file_and_approve

    class New(V1):
        state: Literal["open"] = "open"

    def problems(at: datetime) -> list[str]:
        return breaking_changes(snap(V1), snap(New), rule9_waivers(tmp_path, at))

    assert problems(NOW) != []  # no exception filed
    file(tmp_path, "p", 9, {"tools": ["p.tool"]})
    assert problems(NOW) != []  # filed but not approved
    file_and_approve(tmp_path, "p", 9, {"tools": ["p.tool"]}, days=10, suffix="approved")
    assert problems(NOW) == []
    assert problems(NOW + timedelta(days=10, seconds=1)) != []  # expired


# -- the commands -------------------------------------------------------------------------------

def test_schemas_command_records_compatible_changes_and_refuses_breaking_ones(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "snapshot.json"
    current = load_snapshot(SNAPSHOT)
    assert main(["policy", "schemas", "--snapshot", str(SNAPSHOT)]) == 0  # the committed one is current

    older = {k: v for k, v in current.items() if k != "socket.repos.list"}  # a tool added since
    path.write_text(render_snapshot(older))
    assert main(["policy", "schemas", "--snapshot", str(path)]) == 1
    assert main(["policy", "schemas", "--snapshot", str(path), "--write"]) == 0
    assert load_snapshot(path) == current

    tampered = json.loads(json.dumps(current))
    tampered["socket.findings.list"]["input_schema"]["properties"]["legacy"] = {"type": "string"}
    tampered["socket.scan.repo"]["kind"] = "read"
    path.write_text(render_snapshot(tampered))
    capsys.readouterr()
    assert main(["policy", "schemas", "--snapshot", str(path), "--write"]) == 1
    err = capsys.readouterr().err
    assert "socket.findings.list: input.legacy: property removed" in err
    assert "socket.scan.repo: kind changed from read to scan" in err and "v2" in err
    assert load_snapshot(path) == tampered  # nothing recorded


def test_catalogue_command_writes_served_entries_and_keeps_the_others(tmp_path: Path) -> None:
    assert main(["policy", "catalogue", str(POLICIES)]) == 0  # the committed catalogue is current
    bundle = tmp_path / "policies"
    shutil.copytree(POLICIES, bundle)
    doc = json.loads((bundle / "tools.json").read_text())
    for tool in doc["tools"]:
        if tool["name"] == "socket.findings.list":
            tool["kind"], tool["input_schema"] = "scan", {"type": "object"}
    doc["tools"] = [t for t in doc["tools"] if t["name"] != "socket.repos.list"]
    doc["tools"].insert(0, {"name": "acme.thing", "kind": "read", "description": "not served here",
                            "input_schema": {"type": "object"}})
    (bundle / "tools.json").write_text(json.dumps(doc))

    assert main(["policy", "catalogue", str(bundle)]) == 1
    assert main(["policy", "catalogue", str(bundle), "--write"]) == 0
    tools = json.loads((bundle / "tools.json").read_text())["tools"]
    assert tools[0]["name"] == "acme.thing"  # an entry for a tool this gateway does not serve stays
    registry = Registry(default_providers())
    by_name = {t["name"]: t for t in tools}
    for t in registry.tools:
        assert (by_name[t.name]["kind"], by_name[t.name]["input_schema"]) == (t.tool.kind, t.input_schema)
    assert main(["policy", "check", str(bundle)]) == 0
