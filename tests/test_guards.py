"""Argument guards (engine/guards.py) drop policies from a slice before Cedar sees them. Dropping
one is only sound when Cedar would certainly find it unsatisfied WITHOUT an error: hostile
policies and hostile requests here must decide exactly as raw Cedar on the full set does."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cedarpy
import pytest

from bench.policygen import NOW
from engine import Engine, Entity, Request, Uid, load_bundle
from engine.guards import ABSENT, excluded, guard_of
from tests.test_differential import Reference

HOSTILE = """
@id("g.forbid-boom")
forbid (principal, action == Ops::Action::"echo.ping", resource)
when { context has args && context.args has message && context.args.message == "boom" };

@id("g.forbid-reversed")
forbid (principal, action == Ops::Action::"echo.ping", resource)
when { context has args && context.args has fail && true == context.args.fail };

@id("g.permit-then-error")
permit (principal, action == Ops::Action::"echo.ping", resource)
when { context has args && context.args has message && context.args.message == "go" && 1 + 9223372036854775807 > 0 };

@id("g.forbid-error-before-guard")
forbid (principal, action == Ops::Action::"echo.ping", resource)
when { 9223372036854775807 + 1 > 0 && context has args && context.args has message && context.args.message == "x" };

@id("g.forbid-unless-first")
forbid (principal, action == Ops::Action::"echo.ping", resource)
unless { context has args } when { context has args && context.args has version && context.args.version == "1.0" };

@id("g.permit-two-whens")
permit (principal, action == Ops::Action::"echo.ping", resource)
when { context has args && context.args has message && context.args.message == "hi" }
when { principal in Ops::Role::"ops_viewer" };

@id("g.forbid-no-args")
forbid (principal, action == Ops::Action::"echo.scan", resource)
when { !(context has args) };

@id("g.permit-either")
permit (principal, action in [Ops::Action::"echo.ping", Ops::Action::"egress"], resource)
when { (context has port && context.port == 8080) ||
       (context has args && context.args has message && context.args.message == "either") };

@id("g.forbid-either-then-error")
forbid (principal, action in [Ops::Action::"echo.ping", Ops::Action::"egress"], resource)
when { (context has port && context.port == 443) ||
       (context has args && context.args has message && context.args.message == "either") }
when { 9223372036854775807 + 1 > 0 };

@id("g.forbid-unless-message")
forbid (principal, action == Ops::Action::"echo.ping", resource)
unless { context has args && context.args has message };

@id("g.forbid-or-unmodelled")
forbid (principal, action == Ops::Action::"echo.ping", resource)
when { (context has args && context.args has message && context.args.message == "x") ||
       context.now > datetime("2026-11-15T00:00:00Z") };
"""

MESSAGES = [ABSENT, "boom", "go", "hi", "x", "", 5, True]
FAILS = [ABSENT, True, False, 1, 0]


def echo_requests(roles: Sequence[str | None], actions: Sequence[str], messages: Sequence[Any],
                  fails: Sequence[Any], user: Callable[[str | None], str] = lambda role: f"u-{role}") -> list[Request]:
    """Every combination as an echo request: `message`/`fail` arguments ABSENT or set, and no args
    at all for a caller without a role who sends neither (a tools/list-shaped question)."""
    out = []
    for role, action, message, fail in itertools.product(roles, actions, messages, fails):
        uid = Uid.of("User", user(role))
        entities = (Entity(uid, (Uid.of("Role", role),) if role else ()),)
        args: dict[str, Any] = {"version": "1.0"}
        if message is not ABSENT:
            args["message"] = message
        if fail is not ABSENT:
            args["fail"] = fail
        ctx = {} if message is ABSENT and fail is ABSENT and role is None else {"args": args}
        out.append(Request(uid, action, Uid.of("Provider", "echo"), ctx, entities))
    return out


def requests() -> list[Request]:
    out = echo_requests(("ops_viewer", None), ("echo.ping", "echo.scan"), MESSAGES, FAILS)
    for port, scheme in itertools.product((443, 8080, 80), ("https", "http")):
        out.append(Request(Uid.of("Provider", "sentry"), "egress", Uid.of("Host", "sentry.io"),
                           {"scheme": scheme, "port": port}))
    return out


def test_sliced_decisions_equal_raw_cedar_on_hostile_guards(bundle_dir: Path) -> None:
    (bundle_dir / "guards.cedar").write_text(HOSTILE)
    bundle = load_bundle(bundle_dir)
    engine, ref = Engine(bundle), Reference(bundle)
    dropped = 0
    for req in requests():
        d = engine.decide(req, now=NOW)
        exp = ref.decide(req, ref.full)
        assert (d.allowed, frozenset(d.reasons), frozenset(d.errors)) == (exp.allowed, exp.reasons, exp.errors), req
        fields = bundle.args_types[req.action][1] if req.action in bundle.args_types else {}
        dropped += sum(excluded(guard_of(p.est), req.context, fields) for p in bundle.policies if p.id.startswith("g."))
    assert dropped > 50  # the guards really did drop policies, or agreement proves nothing


@pytest.mark.parametrize(("cedar", "args", "out"), [
    ('context has args && context.args has message && context.args.message == "a"', ABSENT, True),
    ('context has args && context.args has message && context.args.message == "a"', {}, True),
    ('context has args && context.args has message && context.args.message == "a"', {"message": "b"}, True),
    ('context has args && context.args has message && context.args.message == "a"', {"message": "a"}, False),
    ('context has args && context.args.message == "a"', {}, False),  # would error: Cedar decides
    ('context has args && context.args has fail && context.args.fail == true', {"fail": 1}, False),  # untyped
    ('context has args && context.args has fail && context.args.fail == true', {"fail": False}, True),
    ('context.args has fail', ABSENT, False),  # would error without args
    ('1 + 9223372036854775807 > 0 && context has args', ABSENT, False),  # error first
    ('(context has args && context.args has message) || context has port', ABSENT, True),
    ('(context has args && context.args has message) || context has port', {"fail": True}, True),
    ('context has port || context.args has message', {}, True),
    ('context has port || context.args has message', ABSENT, False),  # second branch would error
    ('!(context has args) || context.args has message', {"message": "m"}, False),
    ('!(context has args && context.args has message)', {"message": "m"}, True),
    ('(context has args && context.args has message) || 1 + 9223372036854775807 > 0', ABSENT, False),
])
def test_guard_decides_only_what_is_certain(cedar: str, args: Any, out: bool) -> None:
    text = f'permit (principal, action, resource) when {{ {cedar} }};'
    est = cedarpy.policies_to_json_str(text)
    policy = next(iter(json.loads(est)["staticPolicies"].values()))
    fields = {"message": ("String", False), "fail": ("Bool", False)}
    assert excluded(guard_of(policy), {} if args is ABSENT else {"args": args}, fields) is out
