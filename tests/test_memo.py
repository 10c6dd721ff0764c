"""The answer memo (engine/memo.py) answers a request from an earlier one only when Cedar could not
tell them apart. Hostile policies and requests here, decided by a memoising engine in a shuffled
order with every request twice, must decide exactly as an engine that asks Cedar every time and as
raw Cedar on the full policy set; and the memo must really have answered, or agreement proves
nothing."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import engine.engine as engine_module
from bench.policygen import NOW
from engine import Engine, Entity, Request, Uid, load_bundle
from engine.guards import ABSENT
from engine.memo import READ_ALL, reads_of, trie_of
from tests.test_differential import Reference
from tests.test_guards import echo_requests

HOSTILE = """
@id("m.forbid-like")
forbid (principal, action == Ops::Action::"echo.ping", resource)
when { context has args && context.args has message && context.args.message like "*drop*" };

@id("m.permit-flag")
permit (principal, action == Ops::Action::"echo.ping", resource)
when { context has args && context.args has fail && context.args.fail };

@id("m.forbid-set")
forbid (principal, action == Ops::Action::"echo.scan", resource)
when { context has args && context.args has message && ["a", "b"].contains(context.args.message) };

@id("m.permit-role-only")
permit (principal in Ops::Role::"ops_operator", action == Ops::Action::"echo.scan", resource);

@id("m.forbid-presence")
forbid (principal, action == Ops::Action::"echo.annotate", resource)
when { context has args && context.args has message };

@id("m.permit-annotate")
permit (principal, action == Ops::Action::"echo.annotate", resource);

@id("m.permit-ping-erroring")
permit (principal in Ops::Role::"ops_operator", action == Ops::Action::"echo.ping", resource)
when { context has args && context.args has message && context.args.message == "exact"
       && 9223372036854775807 + 1 > 0 };  // errors (overflow) when the message is "exact"
"""

CLOCKED = """
@id("m.permit-until")
permit (principal, action == Ops::Action::"echo.tag", resource)
when { context.now < datetime("2026-11-15T12:00:00Z") };
"""

MESSAGES: list[Any] = [ABSENT, "", "x", "y", "drop it", "a", "b", "exact", 5, True, 2**63]
FAILS: list[Any] = [ABSENT, True, False, 1, 0]


def requests() -> list[Request]:
    # One user id under different roles: the entities must tell them apart.
    return echo_requests(("ops_viewer", "ops_operator", None), ("echo.ping", "echo.scan", "echo.annotate"),
                         MESSAGES, FAILS, user=lambda role: "u-same")


def outcome(d: Any) -> tuple[Any, ...]:
    return d.allowed, frozenset(d.reasons), frozenset(d.errors), tuple(d.tiers)


class Counter:
    def __init__(self) -> None:
        self.calls = 0
        self.real = engine_module.authorize

    def __call__(self, *a: Any) -> Any:
        self.calls += 1
        return self.real(*a)


def test_memoised_decisions_equal_cedar_on_hostile_policies(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (bundle_dir / "memo.cedar").write_text(HOSTILE)
    bundle = load_bundle(bundle_dir)
    memoised, plain, ref = Engine(bundle), Engine(load_bundle(bundle_dir), memoise=False), Reference(bundle)
    reqs = requests() * 2
    random.Random(7).shuffle(reqs)
    counter = Counter()
    monkeypatch.setattr(engine_module, "authorize", counter)
    for req in reqs:
        got = memoised.decide(req, now=NOW)
        assert outcome(got) == outcome(plain.decide(req, now=NOW)), req
        exp = ref.decide(req, ref.full)
        assert (got.allowed, frozenset(got.reasons), frozenset(got.errors)) == (exp.allowed, exp.reasons,
                                                                                 exp.errors), req
    asked_memoised = counter.calls - len(reqs)  # the plain engine asked Cedar once per request
    assert asked_memoised < len(reqs) // 2  # the memo answered: half the requests are repeats, and more hit
    # Every distinct request was asked at least once, unless what policies read made it a repeat.
    assert asked_memoised >= len({repr((r.action, r.entities)) for r in reqs})


def test_values_no_policy_reads_share_one_answer(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (bundle_dir / "memo.cedar").write_text(HOSTILE)
    eng = Engine(load_bundle(bundle_dir))
    counter = Counter()
    monkeypatch.setattr(engine_module, "authorize", counter)
    user = Uid.of("User", "u1")
    ents = (Entity(user, (Uid.of("Role", "ops_operator"),)),)
    # echo.scan's policies read message only through `contains`: every value is read, so each asks.
    for m in ("c", "d", "e"):
        assert eng.decide(Request(user, "echo.scan", Uid.of("Provider", "echo"), {"args": {"message": m}}, ents),
                          now=NOW).allowed
    assert counter.calls == 3
    for m in ("a", "b"):
        assert not eng.decide(Request(user, "echo.scan", Uid.of("Provider", "echo"), {"args": {"message": m}},
                                      ents), now=NOW).allowed
    # echo.annotate's read presence only: any message is the same request to Cedar.
    before = counter.calls
    for m in ("one", "two", "three", "four"):
        d = eng.decide(Request(user, "echo.annotate", Uid.of("Provider", "echo"), {"args": {"message": m}}, ents),
                       now=NOW)
        assert not d.allowed and "m.forbid-presence" in d.reasons
    assert counter.calls == before + 1
    assert eng.decide(Request(user, "echo.annotate", Uid.of("Provider", "echo"), {"args": {}}, ents), now=NOW).allowed


def test_a_wrongly_typed_value_is_not_answered_from_a_well_typed_one(bundle_dir: Path) -> None:
    (bundle_dir / "memo.cedar").write_text(HOSTILE)
    eng = Engine(load_bundle(bundle_dir))
    user = Uid.of("User", "u1")
    ents = (Entity(user, (Uid.of("Role", "ops_viewer"),)),)

    def ping(args: dict[str, Any]) -> Any:
        return eng.decide(Request(user, "echo.ping", Uid.of("Provider", "echo"), {"args": args}, ents), now=NOW)

    assert ping({"fail": True}).allowed
    refused = ping({"fail": 1})  # Python: 1 == True, same hash; Cedar: a Long where a Bool is declared
    assert not refused.allowed and refused.errors
    assert ping({"fail": True, "message": "x"}).allowed
    assert not ping({"fail": True, "message": 5}).allowed  # a Long where a String is declared
    assert not ping({"message": 2**63}).allowed  # beyond Cedar's Long: refused, never memoised as allowed


def test_clocked_policies_are_never_memoised(bundle_dir: Path) -> None:
    (bundle_dir / "memo.cedar").write_text(CLOCKED)
    eng = Engine(load_bundle(bundle_dir))
    user = Uid.of("User", "u1")
    req = Request(user, "echo.tag", Uid.of("Provider", "echo"), {"args": {}}, (Entity(user, ()),))
    cutoff = NOW.replace(hour=12, minute=0, second=0, microsecond=0)
    assert eng.decide(req, now=cutoff - timedelta(milliseconds=1)).allowed
    assert not eng.decide(req, now=cutoff).allowed
    assert eng.decide(req, now=cutoff - timedelta(seconds=1)).allowed


def test_a_reload_starts_a_new_memo(bundle_dir: Path) -> None:
    eng = Engine.from_dir(bundle_dir, clock=lambda: NOW)
    user = Uid.of("User", "u1")
    req = Request(user, "echo.annotate", Uid.of("Provider", "echo"), {"args": {"message": "m"}},
                  (Entity(user, (Uid.of("Role", "ops_admin"),)),))
    first = eng.decide(req)
    (bundle_dir / "memo.cedar").write_text(HOSTILE)
    assert eng.reload()[0]
    second = eng.decide(req)
    assert "m.forbid-presence" in second.reasons and not second.allowed
    assert first.allowed != second.allowed or first.reasons != second.reasons


@pytest.mark.parametrize(("cedar", "reads"), [
    ('context has args && context.args has message && context.args.message == "a"', {("args", "message")}),
    ("context has args && context.args has message", set()),  # presence only
    ('context.args.message like "*x*" || context.port == 443', {("args", "message"), ("port",)}),
    ("context.args == {}", {("args",)}),
    ("context.now < datetime(\"2026-01-01T00:00:00Z\")", {("now",)}),
    ("[context].contains(context)", {()}),  # the whole context, read as a value
    ('principal has email && principal.email like "*@acme.io"', set()),  # not the context
])
def test_reads_of_finds_every_value_read(cedar: str, reads: set[tuple[str, ...]]) -> None:
    import json

    import cedarpy

    policy = cedarpy.policies_to_json_str(f"permit (principal, action, resource) when {{ {cedar} }};")
    est = next(iter(json.loads(policy)["staticPolicies"].values()))
    assert reads_of(est) == reads


def test_a_slice_that_reads_the_clock_or_everything_has_no_memo() -> None:
    assert trie_of(frozenset({("now",)})) is None
    assert trie_of(frozenset({()})) is None
    trie = trie_of(frozenset({("args",), ("args", "message"), ("port",)}))
    assert trie == {"args": READ_ALL, "port": READ_ALL} and trie is not None and trie["args"] is READ_ALL


def test_the_memo_is_bounded_for_the_whole_bundle(bundle_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many users sending many values a policy reads (each a distinct answer) cannot grow it past
    its bound, and it still answers correctly once full."""
    from engine.memo import AnswerMemo

    monkeypatch.setattr(AnswerMemo, "MAX", 50)
    (bundle_dir / "memo.cedar").write_text(HOSTILE)
    bundle = load_bundle(bundle_dir)
    eng = Engine(bundle)
    for n in range(40):
        user = Uid.of("User", f"u{n}")
        ents = (Entity(user, (Uid.of("Role", "ops_operator"),)),)
        for m in ("a", "c", f"x{n}"):
            d = eng.decide(Request(user, "echo.scan", Uid.of("Provider", "echo"), {"args": {"message": m}}, ents),
                           now=NOW)
            assert d.allowed == (m != "a")
    assert 0 < len(bundle.enforce._answers) <= 50
