"""Policy tests in the Cedar CLI `run-tests` format, run through the real `Engine.decide()`.

A test file (`policies/tests/*.json`) is a JSON array of

    {"name": "...",
     "request": {"principal": "Ops::User::\\"alice\\"", "action": "Ops::Action::\\"socket.scan.repo\\"",
                 "resource": "Ops::Provider::\\"socket\\"", "context": {}},
     "entities": [<Cedar JSON entities for this request>],
     "decision": "allow" | "deny", "reason": [<policy ids>], "num_errors": 0}

plus opsgate's optional fields: "now" (ISO 8601), "tiers" (["bucket:limit/period_s", ...],
the exact rate tiers), "shadow" ("allow" | "deny": the outcome with dryrun policies enforced)
and "description" (free text). Unknown fields are refused: a misspelt "teirs" must not turn
an assertion into a silent no-op.

Going through `decide()` rather than raw cedarpy matters: the tests then also cover what the
engine adds (erroring forbids deny, arguments projected to their types, host entities built
for egress, rate tiers).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from engine.bundle import Bundle
from engine.engine import Engine
from engine.model import Decision, Entity, Request, Uid

# The clock every test sees unless the test or the run pins another: fixed, so a policy with
# a date in it (an exception's expiry) gives the same result on every day the suite runs.
DEFAULT_NOW = datetime(2026, 3, 1, tzinfo=UTC)

TEST_KEYS = {"name", "description", "request", "entities", "decision", "reason", "num_errors", "now", "tiers",
             "shadow"}
REQUEST_KEYS = {"principal", "action", "resource", "context"}
ENTITY_KEYS = {"uid", "parents", "attrs"}
TIER_SPEC = re.compile(r"^.+:\d+/\d+$")
# Cedar refuses a request naming an action or entity type the schema lacks. In a test that is
# a typo, and a typo would make every "deny" expectation pass vacuously, so it fails the test.
UNDECLARED = re.compile(r"failed to build request: .*"
                        r"(does not exist in the supplied schema|is not declared in the schema)")


class TestFileError(ValueError):
    """Test files that cannot be run; `problems` has one line per problem."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(self.problems))


class TestCase(msgspec.Struct, frozen=True):
    __test__ = False  # not a pytest test class, whatever its name

    file: str
    name: str
    request: Request
    allow: bool
    reason: frozenset[str]
    num_errors: int
    now: datetime | None = None
    tiers: frozenset[str] | None = None
    shadow: bool | None = None

    @property
    def qualname(self) -> str:
        """`rbac/viewer reads`: what `--run` matches and what reports show."""
        return f"{Path(self.file).stem}/{self.name}"


class Mismatch(msgspec.Struct, frozen=True):
    field: str
    expected: Any
    actual: Any
    note: str = ""


class Result(msgspec.Struct, frozen=True):
    case: TestCase
    decision: Decision
    mismatches: tuple[Mismatch, ...]

    @property
    def passed(self) -> bool:
        return not self.mismatches


class Coverage(msgspec.Struct, frozen=True):
    total: int
    covered: tuple[str, ...]
    uncovered: tuple[str, ...]

    @property
    def percent(self) -> float:
        return 100.0 if not self.total else 100.0 * len(self.covered) / self.total

    def below(self, threshold: float) -> bool:
        # Exact comparison on counts, so 14/15 is never rounded up to pass "93.34".
        return len(self.covered) * 100 < threshold * self.total


class Report(msgspec.Struct, frozen=True):
    results: tuple[Result, ...]
    coverage: Coverage

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.results)

    @property
    def failed(self) -> int:
        return len(self.results) - self.passed


# -- parsing ------------------------------------------------------------------------------------

def parse_now(text: Any) -> datetime:
    if not isinstance(text, str):
        raise ValueError(f"now must be an ISO 8601 string, got {text!r}")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"now {text!r} is not ISO 8601 (e.g. 2026-03-01T00:00:00Z)") from None
    if when.tzinfo is None:
        raise ValueError(f"now {text!r} has no timezone (add Z or +00:00)")
    return when


def parse_uid(value: Any, what: str) -> Uid:
    """A Cedar uid as surface text (`Ops::User::"alice"`) or JSON (`{"type", "id"}`, `{"__entity": ...}`)."""
    if isinstance(value, str):
        try:
            return Uid.parse(value)
        except ValueError as e:
            raise ValueError(f"{what}: {e}") from None
    if isinstance(value, dict):
        value = value.get("__entity", value)
        kind, id_ = (value.get("type"), value.get("id")) if isinstance(value, dict) else (None, None)
        if isinstance(kind, str) and isinstance(id_, str):
            return Uid(kind, id_)
    raise ValueError(f'{what}: expected Type::"id" or {{"type": ..., "id": ...}}, got {value!r}')


def parse_action(value: Any) -> str:
    """`Ops::Action::"socket.scan.repo"` -> `socket.scan.repo`; a bare action id is accepted too."""
    if isinstance(value, str) and '::"' not in value:
        return value
    uid = parse_uid(value, "action")
    if uid.type != "Ops::Action":
        raise ValueError(f'action: expected Ops::Action::"<id>", got {uid}')
    return uid.id


def parse_entity(value: Any, where: str) -> Entity:
    if not isinstance(value, dict) or "uid" not in value:
        raise ValueError(f"{where}: expected a Cedar entity {{uid, parents, attrs}}")
    unknown = set(value) - ENTITY_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)} (expected uid, parents, attrs)")
    parents = value.get("parents", [])
    attrs = value.get("attrs", {})
    if not isinstance(parents, list) or not isinstance(attrs, dict):
        raise ValueError(f"{where}: parents must be a list and attrs an object")
    return Entity(parse_uid(value["uid"], f"{where} uid"),
                  tuple(parse_uid(p, f"{where} parent") for p in parents), attrs)


def parse_request(obj: Any, entities: Any = None) -> Request:
    """A request in the tests' surface form; also what `opsgate policy eval` reads."""
    if not isinstance(obj, dict):
        raise ValueError("request must be an object {principal, action, resource, context}")
    missing = [k for k in ("principal", "action", "resource") if k not in obj]
    if missing:
        raise ValueError(f"request is missing {', '.join(missing)}")
    context = obj.get("context", {})
    if not isinstance(context, dict):
        raise ValueError("request context must be an object")
    if "now" in context:
        raise ValueError('request context must not contain "now": the clock comes from "now"/--now')
    if entities is None:
        entities = []
    if not isinstance(entities, list):
        raise ValueError("entities must be a JSON array of Cedar entities")
    return Request(principal=parse_uid(obj["principal"], "principal"), action=parse_action(obj["action"]),
                   resource=parse_uid(obj["resource"], "resource"), context=context,
                   entities=tuple(parse_entity(e, f"entities[{i}]") for i, e in enumerate(entities)))


def _parse_case(obj: Any, file: str) -> TestCase:
    if not isinstance(obj, dict):
        raise ValueError("a test must be an object")
    unknown = set(obj) - TEST_KEYS
    if unknown:
        raise ValueError(f"unknown field(s) {sorted(unknown)}")
    missing = [k for k in ("name", "request", "decision", "reason", "num_errors") if k not in obj]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    request = obj["request"]
    if isinstance(request, dict) and set(request) - REQUEST_KEYS:
        raise ValueError(f"request has unknown field(s) {sorted(set(request) - REQUEST_KEYS)}")
    if obj["decision"] not in ("allow", "deny"):
        raise ValueError(f'decision must be "allow" or "deny", got {obj["decision"]!r}')
    reason = obj["reason"]
    if not isinstance(reason, list) or not all(isinstance(r, str) for r in reason):
        raise ValueError("reason must be a list of policy ids")
    if not isinstance(obj["num_errors"], int) or isinstance(obj["num_errors"], bool) or obj["num_errors"] < 0:
        raise ValueError("num_errors must be a non-negative integer")
    tiers = obj.get("tiers")
    if tiers is not None and (not isinstance(tiers, list)
                              or not all(isinstance(t, str) and TIER_SPEC.match(t) for t in tiers)):
        raise ValueError('tiers must be a list of "bucket:limit/period_seconds", e.g. "reads:100/3600"')
    shadow = obj.get("shadow")
    if shadow not in (None, "allow", "deny"):
        raise ValueError(f'shadow must be "allow" or "deny", got {shadow!r}')
    return TestCase(
        file=file, name=str(obj["name"]), request=parse_request(request, obj.get("entities")),
        allow=obj["decision"] == "allow", reason=frozenset(reason), num_errors=obj["num_errors"],
        now=parse_now(obj["now"]) if "now" in obj else None,
        tiers=frozenset(tiers) if tiers is not None else None,
        shadow=None if shadow is None else shadow == "allow")


def load_file(path: Path) -> list[TestCase]:
    """Every test in one file; raises TestFileError naming the file and test of each problem."""
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise TestFileError([f"{path}: invalid JSON: {e.msg} at line {e.lineno} column {e.colno}"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise TestFileError([f"{path}: cannot read: {e}"]) from None
    if not isinstance(doc, list):
        raise TestFileError([f"{path}: expected a JSON array of tests (the Cedar run-tests format)"])
    cases, problems, names = [], [], set()
    for i, obj in enumerate(doc):
        label = f"test #{i + 1}" + (f" {obj['name']!r}" if isinstance(obj, dict) and "name" in obj else "")
        try:
            case = _parse_case(obj, path.name)
        except ValueError as e:
            problems.append(f"{path}: {label}: {e}")
            continue
        if case.name in names:
            problems.append(f"{path}: {label}: duplicate test name in this file")
        names.add(case.name)
        cases.append(case)
    if problems:
        raise TestFileError(problems)
    return cases


def load_tests(files: Iterable[Path]) -> list[TestCase]:
    """Tests of several files, all problems of all files collected before raising."""
    cases: list[TestCase] = []
    problems: list[str] = []
    for f in files:
        try:
            cases += load_file(f)
        except TestFileError as e:
            problems += e.problems
    if problems:
        raise TestFileError(problems)
    return cases


# -- running ------------------------------------------------------------------------------------

def tier_spec(decision: Decision) -> frozenset[str]:
    return frozenset(f"{t.bucket}:{t.limit}/{t.period_s}" for t in decision.tiers)


def _outcome(allow: bool) -> str:
    return "allow" if allow else "deny"


def check(case: TestCase, d: Decision) -> tuple[Mismatch, ...]:
    """What differs between a test's expectations and the decision, field by field."""
    out = [Mismatch("request", "only names the schema declares", e.removeprefix("failed to build request: "),
                    "a typo? it would let a deny expectation pass vacuously")
           for e in d.errors if UNDECLARED.search(e)]
    if case.allow != d.allowed:
        out.append(Mismatch("decision", _outcome(case.allow), _outcome(d.allowed)))
    if case.reason != frozenset(d.reasons):
        out.append(Mismatch("reason", sorted(case.reason), sorted(d.reasons)))
    if case.num_errors != len(d.errors):
        out.append(Mismatch("num_errors", case.num_errors, len(d.errors)))
    if case.tiers is not None and case.tiers != tier_spec(d):
        out.append(Mismatch("tiers", sorted(case.tiers), sorted(tier_spec(d))))
    if case.shadow is not None:
        actual = d.shadow.allowed if d.shadow else d.allowed
        if case.shadow != actual:
            out.append(Mismatch("shadow", _outcome(case.shadow), _outcome(actual)))
    return tuple(out)


def coverage(bundle: Bundle, decisions: Iterable[Decision]) -> Coverage:
    """Which of the bundle's policies (authorization and tier) determined some decision.

    Determining means: among an enforced decision's reasons, or the policy of one of its
    tiers; a dryrun policy counts when it is among the reasons of a shadow outcome.
    """
    ids = [p.id for p in bundle.policies] + [t.id for t in bundle.tiers]
    seen: set[str] = set()
    for d in decisions:
        seen.update(d.reasons)
        seen.update(t.policy_id for t in d.tiers)
        if d.shadow:
            seen.update(r for r in d.shadow.reasons if r in bundle.dryrun_ids)
    return Coverage(len(ids), tuple(i for i in ids if i in seen), tuple(i for i in ids if i not in seen))


def run(engine: Engine, cases: Sequence[TestCase], now: datetime | None = None) -> Report:
    results = []
    for case in cases:
        d = engine.decide(case.request, now=case.now or now or DEFAULT_NOW)
        results.append(Result(case, d, check(case, d)))
    return Report(tuple(results), coverage(engine.bundle, (r.decision for r in results)))


__all__ = ["DEFAULT_NOW", "Coverage", "Mismatch", "Report", "Result", "TestCase", "TestFileError", "check",
           "coverage", "load_file", "load_tests", "parse_action", "parse_entity", "parse_now",
           "parse_request", "parse_uid", "run", "tier_spec"]
