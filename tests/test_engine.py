"""The decision engine on real bundles: loading, refusing, deciding, failing closed, reloading."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from engine import BundleError, Engine, Entity, Request, Uid, load_bundle
from tests.conftest import NOW, POLICIES

USER = Uid.of("User", "7d9f4c1e-0000-4000-8000-000000000001")


def call(action: str, role: str | None, provider: str | None = None, args: dict | None = None) -> Request:
    parents = (Uid.of("Role", role),) if role else ()
    ctx = {"args": {"version": "1.0", **args}} if args is not None else {}
    return Request(USER, action, Uid.of("Provider", provider or action.split(".")[0]), ctx,
                   (Entity(USER, parents),))


def egress(provider: str, host: str, scheme: str = "https", port: int = 443) -> Request:
    return Request(Uid.of("Provider", provider), "egress", Uid.of("Host", host), {"scheme": scheme, "port": port})


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.from_dir(POLICIES, clock=lambda: NOW)


def write(bundle: Path, name: str, text: str) -> None:
    (bundle / name).write_text(text)


# -- the canonical bundle --------------------------------------------------------------------


@pytest.mark.parametrize(("role", "action", "allowed"), [
    ("ops_viewer", "socket.findings.list", True),
    ("ops_viewer", "socket.scan.repo", False),
    ("ops_viewer", "sentry.issue.update", False),
    ("ops_operator", "socket.scan.repo", True),
    ("ops_operator", "sentry.issue.update", True),
    ("ops_operator", "sentry.issue.comment", False),
    ("ops_operator", "sentry.issue.create_external", False),
    ("ops_admin", "sentry.issue.create_external", True),
    ("ops_admin", "socket.pr.comment_markdown", True),
    (None, "socket.findings.list", False),
    ("root", "socket.findings.list", False),
])
def test_roles_follow_the_constitution(engine: Engine, role: str | None, action: str, allowed: bool) -> None:
    assert engine.decide(call(action, role)).allowed is allowed


def test_decision_carries_everything_an_audit_row_needs(engine: Engine) -> None:
    d = engine.decide(call("socket.findings.list", "ops_viewer"))
    assert d.allowed and d.reasons == ("rbac.viewer.read",)
    assert d.bundle_revision == engine.bundle.revision and len(d.bundle_revision) == 16
    assert len(d.decision_id) == 36 and d.decision_id[14] == "7"  # UUIDv7
    assert d.mode == "enforce" and d.shadow is None and d.errors == () and d.latency_us > 0
    assert engine.decide(call("socket.findings.list", "ops_viewer")).decision_id != d.decision_id


def test_a_provider_may_not_call_tools(engine: Engine) -> None:
    d = engine.decide(Request(Uid.of("Provider", "socket"), "sentry.issues.list", Uid.of("Provider", "sentry")))
    assert not d.allowed and d.reasons == ("independence.no-provider-calls",)


@pytest.mark.parametrize(("provider", "host", "scheme", "port", "allowed"), [
    ("sentry", "sentry.io", "https", 443, True),
    ("sentry", "o4507.ingest.sentry.io", "https", 443, True),
    ("sentry", "ingest.sentry.io", "https", 443, False),  # *.x does not match x itself
    ("sentry", "evilsentry.io", "https", 443, False),
    ("sentry", "sentry.io.evil.com", "https", 443, False),
    ("sentry", "sentry.io", "http", 80, False),
    ("sentry", "sentry.io", "https", 8443, False),
    ("sentry", "api.socket.dev", "https", 443, False),  # another provider's host
    ("socket", "api.socket.dev", "https", 443, True),
    ("netdata", "eu.app.netdata.cloud", "https", 443, True),
    ("netdata", "127.0.0.1", "https", 443, False),
])
def test_egress_allowlist(engine: Engine, provider: str, host: str, scheme: str, port: int,
                          allowed: bool) -> None:
    assert engine.decide(egress(provider, host, scheme, port)).allowed is allowed


def test_tiers_come_from_policy(engine: Engine) -> None:
    viewer = engine.decide(call("socket.findings.list", "ops_viewer"))
    assert [(t.bucket, t.limit, t.period_s) for t in viewer.tiers] == [("reads", 100, 3600)]
    operator = engine.decide(call("socket.scan.repo", "ops_operator"))
    assert [(t.bucket, t.limit, t.period_s) for t in operator.tiers] == [("scans", 50, 3600)]
    assert engine.decide(call("socket.scan.repo", "ops_admin")).tiers == ()  # unlimited, still decided
    assert engine.decide(call("socket.scan.repo", "ops_viewer")).tiers == ()  # denied: no tier needed


def test_args_are_typed_and_invalid_args_deny(engine: Engine) -> None:
    ok = engine.decide(call("socket.scan.repo", "ops_operator", args={"repo": "web", "manifests": {"x": 1}}))
    assert ok.allowed  # `manifests` (free-form object) is not part of the Cedar type: dropped, not an error
    missing = engine.decide(call("socket.scan.repo", "ops_operator", args={}))
    assert not missing.allowed and "repo" in missing.errors[0]
    wrong = engine.decide(call("socket.scan.repo", "ops_operator", args={"repo": 5}))
    assert not wrong.allowed and wrong.errors


def test_unknown_action_and_bad_entities_deny_without_raising(engine: Engine) -> None:
    d = engine.decide(call("socket.drop_database", "ops_admin"))
    assert not d.allowed and "does not exist" in d.errors[0]
    bad = Request(USER, "socket.findings.list", Uid.of("Provider", "socket"), {},
                  (Entity(USER, (Uid.of("Provider", "socket"),)),))  # a User cannot be in a Provider
    d = engine.decide(bad)
    assert not d.allowed and d.errors and d.errors[0].startswith("invalid request entities")


def test_the_clock_must_be_timezone_aware(engine: Engine) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        engine.decide(call("socket.findings.list", "ops_viewer"), now=NOW.replace(tzinfo=None))


# -- failing closed ----------------------------------------------------------------------------

OVERFLOW = "context has args && context.args has limit && context.args.limit * 4611686018427387904 > 1"


def test_an_erroring_forbid_denies(bundle_dir: Path) -> None:
    write(bundle_dir, "extra.cedar", f'@id("limit.cap")\nforbid (principal, action, resource) when {{ {OVERFLOW} }};\n')
    engine = Engine.from_dir(bundle_dir, clock=lambda: NOW)
    fine = engine.decide(call("socket.findings.list", "ops_viewer", args={"limit": 0}))
    assert fine.allowed and fine.errors == ()
    # limit=2 overflows: Cedar itself would skip the forbid and ALLOW. We must not.
    d = engine.decide(call("socket.findings.list", "ops_viewer", args={"limit": 2}))
    assert not d.allowed
    assert d.reasons == ("limit.cap",)
    assert "overflow" in d.errors[0] and "limit.cap" in d.errors[0]


def test_an_erroring_permit_grants_nothing_but_does_not_deny(bundle_dir: Path) -> None:
    write(bundle_dir, "extra.cedar",
          f'@id("viewer.maybe-scan")\npermit (principal, action == Ops::Action::"socket.findings.list", resource)'
          f" when {{ {OVERFLOW} }};\n")
    engine = Engine.from_dir(bundle_dir, clock=lambda: NOW)
    d = engine.decide(call("socket.findings.list", "ops_viewer", args={"limit": 2}))
    assert d.allowed and d.reasons == ("rbac.viewer.read",) and d.errors
    d = engine.decide(call("socket.findings.list", None, args={"limit": 2}))
    assert not d.allowed and d.reasons == ()


def test_dryrun_policies_report_without_enforcing(bundle_dir: Path) -> None:
    write(bundle_dir, "candidate.cedar",
          '@id("candidate.no-scans")\n@mode("dryrun")\nforbid (principal, action in Ops::Action::"scan", resource);\n')
    engine = Engine.from_dir(bundle_dir, clock=lambda: NOW)
    d = engine.decide(call("socket.scan.repo", "ops_operator"))
    assert d.allowed and d.mode == "dryrun"
    assert d.shadow is not None and not d.shadow.allowed and d.shadow.reasons == ("candidate.no-scans",)
    other = engine.decide(call("socket.findings.list", "ops_operator"))
    assert other.allowed and other.mode == "enforce" and other.shadow is None


def test_time_conditions_use_the_injected_clock(bundle_dir: Path) -> None:
    write(bundle_dir, "freeze.cedar", '@id("freeze.2027")\nforbid (principal, action in Ops::Action::"scan", resource)'
          ' when { context.now >= datetime("2027-01-01T00:00:00Z") };\n')
    engine = Engine.from_dir(bundle_dir, clock=lambda: NOW)
    assert engine.decide(call("socket.scan.repo", "ops_operator")).allowed
    later = NOW.replace(year=2027)
    assert not engine.decide(call("socket.scan.repo", "ops_operator"), now=later).allowed


# -- refusing bad bundles ------------------------------------------------------------------------


@pytest.mark.parametrize(("file", "text", "expect"), [
    ("extra.cedar", "permit (principal, action, resource);", "no @id"),
    ("extra.cedar", '@id("rbac.viewer.read")\npermit (principal, action, resource);', "duplicate @id"),
    ("extra.cedar", '@id("typo")\npermit (principal, action, resource) when { context.nwo > 1 };', "nwo"),
    ("extra.cedar",
     '@id("typo2")\npermit (principal in Ops::Role::"ops_viewer", action in Ops::Action::"raed", resource);', "raed"),
    ("extra.cedar", '@id("x")\npermit (principal, action, resource', "does not parse"),
    ("extra.cedar", '@id("x")\n@mode("audit")\npermit (principal, action, resource);', "@mode must be one of"),
    ("extra.cedar", '@id("x")\npermit (principal == ?principal, action, resource);', "templates"),
    ("tiers/extra.cedar", '@id("t")\n@bucket("b")\npermit (principal, action, resource);', "@limit"),
    ("tiers/extra.cedar", '@id("t")\n@limit("0/hour")\n@bucket("b")\npermit (principal, action, resource);', "@limit"),
    ("tiers/extra.cedar", '@id("t")\n@limit("5/hour")\n@bucket("b")\nforbid (principal, action, resource);',
     "must be a permit"),
    ("provider-allowlist.yaml", "socket:\n  - '*.com'\n", "too broad"),
    ("provider-allowlist.yaml", "socket:\n  - 'a*.socket.dev'\n", "leftmost label"),
    ("provider-allowlist.yaml", "socket:\n  - 'ftp://socket.dev'\n", "is not a host"),
    ("provider-allowlist.yaml", "socket: api.socket.dev\n", "expected a list"),
])
def test_a_bad_bundle_is_refused_with_a_located_message(bundle_dir: Path, file: str, text: str, expect: str) -> None:
    write(bundle_dir, file, text)
    with pytest.raises(BundleError) as err:
        load_bundle(bundle_dir)
    messages = [str(i) for i in err.value.issues]
    assert any(file in m and expect in m for m in messages), messages


def test_every_problem_is_listed_not_just_the_first(bundle_dir: Path) -> None:
    write(bundle_dir, "a.cedar", "permit (principal, action, resource);")
    write(bundle_dir, "b.cedar", '@id("b")\npermit (principal, action, resource) when { context.nope };')
    with pytest.raises(BundleError) as err:
        load_bundle(bundle_dir)
    files = {i.file for i in err.value.issues}
    assert {"a.cedar", "b.cedar"} <= files
    b_issue = next(i for i in err.value.issues if i.file == "b.cedar")
    assert b_issue.policy_id == "b" and "`b`" in b_issue.message  # positional ids mapped back to @id


def test_revision_is_a_content_hash(bundle_dir: Path) -> None:
    first = load_bundle(bundle_dir).revision
    assert load_bundle(bundle_dir).revision == first
    write(bundle_dir, "rbac.cedar", (bundle_dir / "rbac.cedar").read_text() + "\n// a comment changes the content\n")
    assert load_bundle(bundle_dir).revision != first


# -- reloading ---------------------------------------------------------------------------------


def test_a_bad_reload_keeps_the_last_good_bundle(bundle_dir: Path) -> None:
    engine = Engine.from_dir(bundle_dir, clock=lambda: NOW)
    good = engine.bundle.revision
    write(bundle_dir, "broken.cedar", "permit (principal, action, resource);")
    ok, issues = engine.reload()
    assert not ok and issues and engine.bundle.revision == good
    assert engine.decide(call("socket.findings.list", "ops_viewer")).allowed
    assert engine.status()["last_reload_error"]
    (bundle_dir / "broken.cedar").unlink()
    write(bundle_dir, "lockdown.cedar", '@id("lockdown")\nforbid (principal, action, resource);\n')
    ok, _ = engine.reload()
    assert ok and engine.bundle.revision != good and engine.status()["last_reload_error"] is None
    d = engine.decide(call("socket.findings.list", "ops_viewer"))
    assert not d.allowed and d.reasons == ("lockdown",) and d.bundle_revision == engine.bundle.revision


def test_reload_is_atomic_under_concurrent_decisions(bundle_dir: Path) -> None:
    """Decisions racing a swap are each wholly from one revision: never the old revision's id with
    the new bundle's verdict or vice versa."""
    engine = Engine.from_dir(bundle_dir, clock=lambda: NOW)
    open_rev = engine.bundle.revision
    write(bundle_dir, "lockdown.cedar", '@id("lockdown")\nforbid (principal, action, resource);\n')
    seen: list[tuple[str, bool]] = []
    stop = threading.Event()

    def hammer() -> None:
        req = call("socket.findings.list", "ops_viewer")
        while not stop.is_set():
            d = engine.decide(req)
            seen.append((d.bundle_revision, d.allowed))

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(6):
            if i % 2:
                write(bundle_dir, "lockdown.cedar", '@id("lockdown")\nforbid (principal, action, resource);\n')
            else:
                (bundle_dir / "lockdown.cedar").unlink()
            assert engine.reload()[0]
    finally:
        stop.set()
        for t in threads:
            t.join()
    revisions = {rev for rev, _ in seen}
    assert open_rev in revisions and len(revisions) == 2
    assert all(allowed == (rev == open_rev) for rev, allowed in seen)
