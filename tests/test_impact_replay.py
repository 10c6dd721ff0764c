"""Replay (`opsgate policy replay`): real traffic recorded through the real gateway, the bundle
changed, the recorded decisions decided again, and the flips named by event id.

The gateway masks `args.message` and `args.fail` in its audit rows (sensitive_paths), so every
call here has a redacted argument: replay must put back a value nobody reads (a masked Bool is not
a Bool any more, and Cedar would refuse the request), and must refuse to guess where the candidate
reads what was masked.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from engine.impact import BEFORE_REQUESTS
from gateway.cli import main
from gateway.config import GatewayConfig
from otel.events import PostgresEventStore, RunEvent, SqliteEventStore, new_event_id, utc_timestamp
from tests.conftest import POLICIES
from tests.events_pg import fresh_database, run_sync
from tests.harness import RunningGateway, code_of, running_gateway

CALLS = {  # label: (role, tool, arguments, what the caller got)
    "viewer_ping": ("ops_viewer", "echo.ping", {"message": "hello", "fail": False}, "ok"),
    "viewer_comment": ("ops_viewer", "echo.comment", {"message": "please"}, "FORBIDDEN"),
    "operator_scan": ("ops_operator", "echo.scan", {"message": "scan it"}, "ok"),
    "operator_ping": ("ops_operator", "echo.ping", {"message": "drop", "fail": True}, "tool_error"),
    "operator_annotate": ("ops_operator", "echo.annotate", {"message": "drop"}, "ok"),
    "admin_comment": ("ops_admin", "echo.comment", {"message": "note"}, "ok"),
    "invalid": ("ops_viewer", "echo.nope", {}, "INVALID_INPUT"),
}

CANDIDATE = '''
@id("rbac.viewer.comment")
permit (principal in Ops::Role::"ops_viewer", action == Ops::Action::"echo.comment", resource);

@id("echo.scan.admins-only")
forbid (principal, action == Ops::Action::"echo.scan", resource) unless { principal in Ops::Role::"ops_admin" };

@id("echo.annotate.no-drop")
forbid (principal, action == Ops::Action::"echo.annotate", resource)
when { context has args && context.args has message && context.args.message == "drop" };
'''


@dataclass
class Recorded:
    state: Path
    ids: dict[str, str]  # call label (and "old") -> event id
    rows: list[RunEvent]
    candidate: Path


def outcome(r: Any) -> str:
    return r if isinstance(r, str) else ("tool_error" if r.is_error else "ok")


async def _traffic(gw: RunningGateway) -> tuple[dict[str, str], list[RunEvent]]:
    ids: dict[str, str] = {}
    users: dict[str, str] = {}
    for label, (role, tool, args, expected) in CALLS.items():
        users[label] = str(uuid.uuid4())
        try:
            async with gw.client(gw.token(role, user_id=users[label])) as c:
                got = outcome(await c.call_tool(tool, args))
        except BaseException as e:
            got = code_of(e)
        assert got == expected, (label, got)
    store = gw.services.audit.store  # type: ignore[union-attr]
    rows = await store.query(limit=100)
    for label, user in users.items():
        (row,) = [r for r in rows if r.caller_id == user]
        ids[label] = row.id
    return ids, rows


async def _append_old_row(state: Path) -> RunEvent:
    """A row as the gateway wrote it before requests were kept: arguments only."""
    old = RunEvent(id=new_event_id(), provider="echo", tool="comment", decision="deny", created_at=utc_timestamp(),
                   duration_ms=1, caller_id=str(uuid.uuid4()), payload={"args": {"message": "[REDACTED]"}},
                   result={"status": "denied"})
    store = SqliteEventStore(state / "events.db")
    try:
        await store.append(old)
    finally:
        await store.close()
    return old


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recorded]:
    root = tmp_path_factory.mktemp("replay")
    policies = root / "policies"
    shutil.copytree(POLICIES, policies, ignore=shutil.ignore_patterns("tests"))
    config = GatewayConfig(policies=str(policies), state_dir=str(root / "state"), exceptions=str(root / "none"),
                           sensitive_paths=("args.message", "args.fail"))
    with running_gateway(config) as gw:
        ids, rows = asyncio.run(_traffic(gw))
    old = asyncio.run(_append_old_row(root / "state"))
    ids["old"] = old.id
    candidate = root / "candidate"
    shutil.copytree(policies, candidate)
    (candidate / "candidate.cedar").write_text(CANDIDATE)
    yield Recorded(root / "state", ids, [*rows, old], candidate)


def replay(rec: Recorded, capsys: pytest.CaptureFixture[str], bundle: Path, *extra: str) -> tuple[int, Any]:
    code = main(["policy", "replay", "--bundle", str(bundle), "--exceptions", str(rec.state / "none"),
                 "--since", "1h", "--state-dir", str(rec.state), "--format", "json", *extra])
    return code, json.loads(capsys.readouterr().out)


def test_rows_keep_the_request_as_decided_redacted_like_the_payload(recorded: Recorded) -> None:
    (row,) = [r for r in recorded.rows if r.id == recorded.ids["operator_ping"]]
    kept = row.payload["_request"]  # type: ignore[index]
    assert kept["role"] == "ops_operator" and kept["action"] == "echo.ping"
    assert kept["principal"] == {"type": "Ops::User", "id": row.caller_id}
    assert kept["resource"] == {"type": "Ops::Provider", "id": "echo"}
    assert kept["entities"][0]["parents"] == [{"type": "Ops::Role", "id": "ops_operator"}]
    # The context as Cedar saw it (defaults filled in), masked where the payload is masked.
    assert kept["context"] == {"args": {"version": "1.0", "message": "[REDACTED]", "fail": "[REDACTED]",
                                        "crash": False}}
    assert kept["redacted"] == [[["args", "message"], "String"], [["args", "fail"], "Bool"]]
    assert kept["now"].endswith("+00:00") and "drop" not in json.dumps(row.payload)


def test_replay_names_each_flip_by_event_id(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = replay(recorded, capsys, recorded.candidate)
    ids = recorded.ids
    assert code == 0
    assert out["flips"] == [
        {"direction": "deny-to-allow", "tool": "echo.comment", "role": "ops_viewer",
         "policies": ["rbac.viewer.comment"], "count": 1, "examples": [ids["viewer_comment"]]},
        {"direction": "allow-to-deny", "tool": "echo.scan", "role": "ops_operator",
         "policies": ["echo.scan.admins-only"], "count": 1, "examples": [ids["operator_scan"]]},
    ]
    # The annotate call's message was masked and the candidate reads it: reported, never guessed
    # (decided with "[REDACTED]", the forbid would not hold and the row would pass as unchanged).
    assert out["unreplayable"] == [
        {"reason": "policy echo.annotate.no-drop reads context.args.message, which the audit trail redacted",
         "count": 1, "examples": [ids["operator_annotate"]]},
        {"reason": BEFORE_REQUESTS, "count": 1, "examples": [ids["old"]]},
    ]
    # The pings had `fail` (a Bool) masked; no policy reads it, so each is replayed with a Bool put
    # back: unchanged, not a spurious allow -> deny from a request Cedar would refuse.
    assert {k: out[k] for k in ("rows", "decisions", "replayed", "unchanged", "allow_to_deny", "deny_to_allow",
                                "not_replayable", "no_decision")} == {
        "rows": 8, "decisions": 7, "replayed": 5, "unchanged": 3, "allow_to_deny": 1, "deny_to_allow": 1,
        "not_replayable": 2, "no_decision": 1}


def test_replaying_the_recorded_bundle_reproduces_every_decision(recorded: Recorded,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, out = replay(recorded, capsys, POLICIES, "--fail-on", "deny-to-allow")
    assert code == 0 and out["flips"] == []
    assert (out["replayed"], out["unchanged"], out["not_replayable"]) == (6, 6, 1)  # only the old row


def test_worker_processes_add_up_to_the_same_report(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    _, one = replay(recorded, capsys, recorded.candidate)
    # Two spans from the first row to just past the last: the calls in one, the old row (appended
    # after the gateway stopped) in the other.
    first, last = min(r.created_at for r in recorded.rows), max(r.created_at for r in recorded.rows)
    end = (datetime.fromisoformat(last) + timedelta(milliseconds=1)).isoformat()
    _, two = replay(recorded, capsys, recorded.candidate, "--workers", "2", "--since", first, "--until", end)
    drop = ("since", "until", "seconds")
    assert {k: v for k, v in two.items() if k not in drop} == {k: v for k, v in one.items() if k not in drop}


def test_fail_on_deny_to_allow_and_text_output(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "replay", "--bundle", str(recorded.candidate), "--since", "1h", "--state-dir",
                 str(recorded.state), "--fail-on", "deny-to-allow"]) == 1
    text = capsys.readouterr().out
    assert "deny → allow: 1" in text and recorded.ids["viewer_comment"] in text
    assert "by policy: rbac.viewer.comment 1" in text


def test_the_window_bounds_the_rows(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    first = min(r.created_at for r in recorded.rows)
    _, out = replay(recorded, capsys, recorded.candidate, "--until", first)
    assert out["rows"] == 0  # until is exclusive
    _, out = replay(recorded, capsys, recorded.candidate, "--since", first)
    assert out["rows"] == 8  # since is inclusive


def test_replay_from_postgres_gives_the_same_report(recorded: Recorded, capsys: pytest.CaptureFixture[str]) -> None:
    users = sorted({r.caller_id for r in recorded.rows if r.caller_id})
    with fresh_database(users) as db:
        async def copy() -> None:
            store = PostgresEventStore(db.gateway_dsn())
            try:
                await store.write_batch(recorded.rows)
            finally:
                await store.close()

        run_sync(copy())
        _, from_sqlite = replay(recorded, capsys, recorded.candidate)
        code, from_pg = replay(recorded, capsys, recorded.candidate, "--events", "postgres", "--database-url",
                               db.gateway_dsn(), "--batch", "3")  # paged: three rows at a time
    assert code == 0
    drop = ("since", "until", "seconds")
    assert {k: v for k, v in from_pg.items() if k not in drop} == {k: v for k, v in from_sqlite.items()
                                                                    if k not in drop}


def test_scan_pages_every_row_in_order_within_the_window(recorded: Recorded) -> None:
    from otel.events import EventStore

    async def scanned(default: bool, **window: str) -> list[str]:
        store = SqliteEventStore(recorded.state / "events.db")
        try:
            # The SQLite store's own scan, and the contract's default (paging `query`) on the same rows.
            pages = EventStore.scan(store, batch=3, **window) if default else store.scan(batch=3, **window)
            return [r.id async for page in pages for r in page]
        finally:
            await store.close()

    in_order = [r.id for r in sorted(recorded.rows, key=lambda r: (r.created_at, r.id))]
    middle = sorted(r.created_at for r in recorded.rows)[3]
    for default in (False, True):
        assert asyncio.run(scanned(default)) == in_order
        assert asyncio.run(scanned(default, since=middle)) == in_order[3:]
        assert asyncio.run(scanned(default, until=middle)) == in_order[:3]


def test_a_decision_api_answer_is_replayed_like_a_tool_call(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Another enforcement point's question (POST /v1/data) is a recorded decision too: replay decides
    the very request it asked, principal and entities included, under the candidate."""
    import httpx

    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies, ignore=shutil.ignore_patterns("tests"))
    config = GatewayConfig(policies=str(policies), state_dir=str(tmp_path / "state"), exceptions=str(tmp_path / "no"))
    query = {"input": {"principal": 'Ops::User::"u1"', "action": "echo.comment", "resource": 'Ops::Provider::"echo"',
                       "entities": [{"uid": {"type": "Ops::User", "id": "u1"},
                                     "parents": [{"type": "Ops::Role", "id": "ops_viewer"}]}]}}

    async def ask(gw: RunningGateway) -> str:
        async with httpx.AsyncClient(base_url=gw.url, headers={"Authorization": f"Bearer {gw.token('ops_admin')}"}) \
                as http:
            answer = (await http.post("/v1/data/opsgate/authz", json=query)).json()
        assert answer["result"]["allow"] is False
        rows = await gw.services.audit.store.query(tool="decide", limit=10)  # type: ignore[union-attr]
        (row,) = rows
        assert row.payload["_request"]["principal"] == {"type": "Ops::User", "id": "u1"}  # type: ignore[index]
        return row.id

    with running_gateway(config) as gw:
        event_id = asyncio.run(ask(gw))
    candidate = tmp_path / "candidate"
    shutil.copytree(policies, candidate)
    (candidate / "candidate.cedar").write_text(CANDIDATE)
    code = main(["policy", "replay", "--bundle", str(candidate), "--exceptions", str(tmp_path / "no"), "--since",
                 "1h", "--state-dir", str(tmp_path / "state"), "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["not_replayable"] == 0
    assert [(f["direction"], f["tool"], f["examples"]) for f in out["flips"]] == [
        ("deny-to-allow", "opsgate.decide", [event_id])]
