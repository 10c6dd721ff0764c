"""Deviation exceptions in the engine: approved runtime grants work until their expiry instant and
no longer; anything unfiled, unapproved, tampered, self-approved, over 90 days or waiving rules 1-4 is
refused; keys count only through the approvers.pub chain; what the gateway vouches for (Trust:
revocations from the audit trail, the pinned root) is honoured, and without it nothing is granted."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest

from engine import Engine, Entity, Request, Uid
from engine.exceptions import (
    PUBLIC_KEYS,
    Trust,
    active_build_waivers,
    endorse,
    find,
    new_private_key,
    public_key_line,
    read_chain,
    scan,
)
from gateway.exception_lifecycle import Refused, approve, revoke
from gateway.ratelimit import MemoryLimiter
from tests.conftest import NOW, POLICIES
from tests.exception_fixtures import (
    ADMIN,
    ADMIN_ACTOR,
    KEY,
    REQUESTER,
    Actor,
    file,
    file_and_approve,
    forge_approval,
    forge_filing,
    raw_spec,
    write_raw,
)

AGENT = "http://agent-7.lan:19999"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def egress(provider: str, host: str, scheme: str = "http", port: int = 19999) -> Request:
    return Request(Uid.of("Provider", provider), "egress", Uid.of("Host", host), {"scheme": scheme, "port": port})


def user(uid: str, role: str) -> tuple[Uid, tuple[Entity, ...]]:
    u = Uid.of("User", uid)
    return u, (Entity(u, (Uid.of("Role", role),)),)


def call(uid: str, role: str, tool: str) -> Request:
    principal, entities = user(uid, role)
    return Request(principal, tool, Uid.of("Provider", tool.split(".")[0]), {}, entities)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "exceptions"


@pytest.fixture
def engine_at(root: Path) -> Callable[[Clock], Engine]:
    return lambda clock: Engine.from_dir(POLICIES, exceptions=root, clock=clock)


def states(engine: Engine) -> dict[str, object]:
    """The exceptions' part of the engine's status that says what is in force."""
    s = engine.status()["exceptions"]
    return {k: s[k] for k in ("active", "expired", "refused")}


def test_netdata_egress_waiver_denied_before_approval_allowed_after_denied_a_second_after_expiry(
        root: Path, engine_at: Callable[[Clock], Engine]) -> None:
    exception_id = file(root, "netdata", 5, {"hosts": [AGENT]}, days=30)
    clock = Clock(NOW)
    engine = engine_at(clock)
    assert not engine.decide(egress("netdata", "agent-7.lan")).allowed  # filed, not approved

    approve(root, exception_id, ADMIN_ACTOR, KEY, NOW)
    assert not engine.decide(egress("netdata", "agent-7.lan")).allowed  # not loaded until a reload
    assert engine.reload() == (True, ())
    assert states(engine) == {"active": [exception_id], "expired": [], "refused": {}}
    d = engine.decide(egress("netdata", "agent-7.lan"))
    assert d.allowed and d.exceptions_applied == (exception_id,)
    assert d.reasons == (f"exception:{exception_id}:egress:{AGENT}",)

    # only what it grants: the same host for another provider, another host, another port, https
    assert not engine.decide(egress("sentry", "agent-7.lan")).allowed
    assert not engine.decide(egress("netdata", "agent-8.lan")).allowed
    assert not engine.decide(egress("netdata", "agent-7.lan", port=80)).allowed
    assert not engine.decide(egress("netdata", "agent-7.lan", scheme="https", port=443)).allowed
    assert engine.decide(egress("netdata", "app.netdata.cloud", "https", 443)).exceptions_applied == ()

    expires = NOW + timedelta(days=30)
    clock.now = expires - timedelta(seconds=1)
    assert engine.decide(egress("netdata", "agent-7.lan")).allowed
    revision = engine.bundle.revision
    clock.now = expires + timedelta(seconds=1)
    d = engine.decide(egress("netdata", "agent-7.lan"))
    assert not d.allowed and d.exceptions_applied == ()
    assert engine.bundle.revision == revision  # no reload happened
    assert states(engine) == {"active": [], "expired": [exception_id], "refused": {}}
    clock.now = expires
    assert not engine.decide(egress("netdata", "agent-7.lan")).allowed  # it ends at that instant


def test_editing_an_approved_bundle_voids_the_exception(root: Path, engine_at: Callable[[Clock], Engine]) -> None:
    exception_id = file_and_approve(root, "netdata", 5, {"hosts": [AGENT]})
    engine = engine_at(Clock(NOW))
    assert engine.decide(egress("netdata", "agent-7.lan")).allowed
    spec = root / exception_id / "exception.yaml"
    spec.write_text(spec.read_text().replace(AGENT, "http://agent-7.lan:22"))
    assert engine.reload()[0]
    assert not engine.decide(egress("netdata", "agent-7.lan", port=22)).allowed
    assert not engine.decide(egress("netdata", "agent-7.lan")).allowed
    refused = engine.status()["exceptions"]["refused"][exception_id]
    assert "edited after approval" in refused and "void" in refused
    record = find(root, exception_id)
    assert record is not None and record.state(NOW) == "invalid"
    # a README edit voids it too: the signature covers the whole bundle
    other = file_and_approve(root, "sentry", 5, {"hosts": ["http://relay.lan:9000"]})
    (root / other / "README.md").write_text("# changed after approval\n")
    assert "edited after approval" in " ".join(find(root, other).problems)  # type: ignore[union-attr]


def test_forged_or_foreign_approvals_are_refused_when_loaded(root: Path, engine_at: Callable[[Clock], Engine]) -> None:
    forged = file(root, "netdata", 5, {"hosts": [AGENT]})
    forge_approval(root, forged, expires_at=NOW + timedelta(days=30), key=new_private_key())  # key not in the repo
    altered = file(root, "sentry", 5, {"hosts": ["http://relay.lan:9000"]})
    approve(root, altered, ADMIN_ACTOR, KEY, NOW)
    path = root / altered / "approval.json"
    path.write_text(path.read_text().replace(ADMIN, REQUESTER))  # claim another approver
    engine = engine_at(Clock(NOW))
    refused = engine.status()["exceptions"]["refused"]
    assert "which exceptions/approvers.pub does not trust" in refused[forged]
    assert "does not verify" in refused[altered]
    assert not engine.decide(egress("netdata", "agent-7.lan")).allowed
    assert not engine.decide(egress("sentry", "relay.lan", port=9000)).allowed


def test_requester_cannot_approve_their_own_exception(root: Path) -> None:
    exception_id = file(root, "netdata", 5, {"hosts": [AGENT]})
    with pytest.raises(Refused) as e:
        approve(root, exception_id, Actor(REQUESTER, "ops_admin"), KEY, NOW)
    assert e.value.status == 403
    assert e.value.problems == ("the requester cannot approve their own exception; another ops_admin must",)
    assert not (root / exception_id / "approval.json").exists()


@pytest.mark.parametrize("role", ["ops_operator", "ops_viewer", None])
def test_approver_without_ops_admin_is_refused(root: Path, role: str | None) -> None:
    exception_id = file(root, "netdata", 5, {"hosts": [AGENT]})
    with pytest.raises(Refused) as e:
        approve(root, exception_id, Actor(ADMIN, role), KEY, NOW)
    assert e.value.status == 403
    assert e.value.problems == (f"the approver's role is {role or 'none'}; only an ops_admin may approve",)


def test_self_approval_forged_with_the_real_key_is_refused_when_loaded(
        root: Path, engine_at: Callable[[Clock], Engine]) -> None:
    exception_id = file(root, "netdata", 5, {"hosts": [AGENT]})
    forge_approval(root, exception_id, expires_at=NOW + timedelta(days=30), approved_by=REQUESTER)
    other = file(root, "sentry", 5, {"hosts": ["http://relay.lan:9000"]})
    forge_approval(root, other, expires_at=NOW + timedelta(days=30), role="ops_operator")
    # the approval claims a stranger filed it and the filer approved: the receipt says otherwise
    laundered = file(root, "socket", 5, {"hosts": ["http://relay.lan:9001"]})
    forge_approval(root, laundered, expires_at=NOW + timedelta(days=30), approved_by=REQUESTER, filed_by=ADMIN)
    # and an approval whose approver is its own stated filer, whatever the receipt and the YAML say
    same = file(root, "netdata", 7, {"tools": ["sentry.message.capture"]})
    forge_approval(root, same, expires_at=NOW + timedelta(days=30), approved_by=ADMIN, filed_by=ADMIN)
    engine = engine_at(Clock(NOW))
    refused = engine.status()["exceptions"]["refused"]
    assert "cannot approve their own" in refused[exception_id]
    assert "only an ops_admin may approve" in refused[other]
    assert "the approval names" in refused[laundered] and "cannot approve their own" in refused[laundered]
    assert "cannot approve their own" in refused[same]
    assert engine.status()["exceptions"]["active"] == []


def test_a_bundle_without_a_filing_receipt_is_refused_however_it_was_approved(
        root: Path, engine_at: Callable[[Clock], Engine]) -> None:
    """Item 1 at load: a hand-written exception.yaml naming any requested_by, with a correctly
    signed approval by someone else, is not in force: nobody verified who asked for it."""
    folder = write_raw(root, "mcp-exception-netdata-5", raw_spec("netdata", 5, f"  kind: egress\n  hosts: [{AGENT}]",
                                                                 requested_by=str(uuid4())))
    forge_approval(root, folder.name, expires_at=NOW + timedelta(days=30))
    engine = engine_at(Clock(NOW))
    assert "not filed by a verified identity" in engine.status()["exceptions"]["refused"][folder.name]
    assert not engine.decide(egress("netdata", "agent-7.lan")).allowed
    with pytest.raises(Refused) as e:
        approve(root, folder.name, ADMIN_ACTOR, KEY, NOW)
    assert e.value.status == 422 and "not filed by a verified identity" in e.value.problems[-1]


def test_an_edit_of_exception_yaml_after_filing_voids_the_filing(root: Path) -> None:
    exception_id = file(root, "netdata", 5, {"hosts": [AGENT]})
    spec = root / exception_id / "exception.yaml"
    spec.write_text(spec.read_text().replace(REQUESTER, str(uuid4())))
    with pytest.raises(Refused) as e:  # the filer, hidden behind a typed requested_by
        approve(root, exception_id, Actor(REQUESTER, "ops_admin"), KEY, NOW)
    assert e.value.status == 403 and "cannot approve their own" in e.value.problems[0]
    with pytest.raises(Refused) as e:  # anyone else: the request is not the one that was filed
        approve(root, exception_id, ADMIN_ACTOR, KEY, NOW)
    assert e.value.status == 422 and "edited after it was filed" in e.value.problems[0]
    record = find(root, exception_id)
    assert record is not None and record.state(NOW) == "invalid"
    # a receipt naming someone else, signed by a trusted key, does not match the YAML either
    other = file(root, "sentry", 5, {"hosts": [AGENT]})
    forge_filing(root, other, filed_by=ADMIN)
    assert any(f"but {ADMIN} filed it" in p for p in find(root, other).problems)  # type: ignore[union-attr]


def test_a_revocation_in_the_audit_trail_holds_without_the_file(root: Path) -> None:
    exception_id = file_and_approve(root, "netdata", 5, {"hosts": [AGENT]})
    trail = Trust(revoked=frozenset({exception_id}))
    engine = Engine.from_dir(POLICIES, exceptions=root, clock=Clock(NOW), exception_trust=lambda: trail)
    assert not engine.decide(egress("netdata", "agent-7.lan")).allowed
    record = find(root, exception_id, trail)
    assert record is not None and record.state(NOW) == "revoked"
    with pytest.raises(Refused) as e:
        approve(root, exception_id, ADMIN_ACTOR, KEY, NOW, trail)
    assert e.value.status == 409 and "revocation is permanent" in e.value.problems[0]
    assert active_build_waivers(5, root, NOW, trail) == set()


def test_nothing_is_granted_when_the_gateway_cannot_vouch(root: Path) -> None:
    file_and_approve(root, "netdata", 5, {"hosts": [AGENT]})
    file_and_approve(root, "socket", 9, {"tools": ["socket.scan.repo"]})
    why = Trust(unavailable="the audit store is down")
    engine = Engine.from_dir(POLICIES, exceptions=root, clock=Clock(NOW), exception_trust=lambda: why)
    assert not engine.decide(egress("netdata", "agent-7.lan")).allowed
    status = engine.status()["exceptions"]
    assert status["active"] == [] and "the audit store is down" in status["unavailable"]
    assert active_build_waivers(9, root, NOW, why) == set()


def test_approvers_pub_is_a_chain_from_its_root(root: Path) -> None:
    exception_id = file_and_approve(root, "netdata", 5, {"hosts": [AGENT]})
    second, third, stranger = new_private_key(), new_private_key(), new_private_key()
    with (root / PUBLIC_KEYS).open("a") as f:
        f.write(endorse(public_key_line(third), second) + "\n")  # endorsed by a key trusted further down
        f.write(endorse(public_key_line(second), KEY) + "\n")
        f.write(public_key_line(stranger) + "\n")  # appended, unsigned
        forged = endorse(public_key_line(stranger), KEY).split()
        f.write(" ".join([*forged[:3], endorse(public_key_line(second), KEY).split()[3]]) + "\n")  # wrong signature
        f.write(endorse(public_key_line(stranger), stranger) + "\n")  # self-endorsed
    chain = read_chain(root)
    kid = {k: public_key_line(k).split()[0] for k in (KEY, second, third, stranger)}
    assert set(chain.keys) == {kid[KEY], kid[second], kid[third]}
    assert len(chain.ignored) == 3 and all(kid[stranger] in line for line in chain.ignored)
    assert "not endorsed by a trusted key" in chain.ignored[0]
    assert "does not verify" in chain.ignored[1] and "endorses itself" in chain.ignored[2]
    # pinned: the same file is fine; a file whose root is another key trusts nothing
    assert read_chain(root, public_key_line(KEY)).keys == chain.keys
    refused = read_chain(root, public_key_line(stranger))
    assert refused.keys == {} and "was replaced or reordered" in (refused.refused or "")
    pinned = Trust(root=public_key_line(stranger))
    engine = Engine.from_dir(POLICIES, exceptions=root, clock=Clock(NOW), exception_trust=lambda: pinned)
    assert "was replaced or reordered" in engine.status()["exceptions"]["refused"][exception_id]
    assert not engine.decide(egress("netdata", "agent-7.lan")).allowed


@pytest.mark.parametrize("rule", [1, 2, 3, 4])
def test_rules_1_to_4_are_refused_when_filed(root: Path, rule: int) -> None:
    with pytest.raises(Refused) as e:
        file(root, "netdata", rule, {"kind": "egress", "hosts": [AGENT]})
    assert e.value.status == 422
    assert f"rule {rule} (" in e.value.problems[0] and "can never be waived" in e.value.problems[0]
    assert not (root / f"mcp-exception-netdata-{rule}").exists()


def test_a_rule_3_waiver_is_refused_when_loaded_whatever_the_files_say(
        root: Path, engine_at: Callable[[Clock], Engine]) -> None:
    folder = write_raw(root, "mcp-exception-netdata-3", raw_spec("netdata", 3, f"  kind: egress\n  hosts: [{AGENT}]"))
    forge_approval(root, folder.name, expires_at=NOW + timedelta(days=30))  # signed with the trusted key
    engine = engine_at(Clock(NOW))
    assert "rule 3 (event sourcing) can never be waived" in engine.status()["exceptions"]["refused"][folder.name]
    assert not engine.decide(egress("netdata", "agent-7.lan")).allowed
    with pytest.raises(Refused) as e:
        approve(root, folder.name, ADMIN_ACTOR, KEY, NOW)
    assert "can never be waived" in e.value.problems[0]


def test_an_expiry_91_days_out_is_refused(root: Path, engine_at: Callable[[Clock], Engine]) -> None:
    with pytest.raises(Refused) as e:
        file(root, "netdata", 5, {"hosts": [AGENT]}, days=91)
    assert e.value.problems == ("expires_at is 91 days after requested_at; the maximum is 90 days",)
    # written by hand, then approved: refused at approval, and at load even with a signed approval
    folder = write_raw(root, "mcp-exception-netdata-5", raw_spec("netdata", 5, f"  kind: egress\n  hosts: [{AGENT}]",
                                                                 days=91))
    with pytest.raises(Refused) as e:
        approve(root, folder.name, ADMIN_ACTOR, KEY, NOW)
    assert "the maximum is 90 days" in e.value.problems[0]
    forge_approval(root, folder.name, expires_at=NOW + timedelta(days=91))
    assert "90 days" in engine_at(Clock(NOW)).status()["exceptions"]["refused"][folder.name]
    # 90 days after the request but 91 after a (back-dated) approval: refused too
    ok = file(root, "sentry", 5, {"hosts": [AGENT]}, days=90)
    with pytest.raises(Refused) as e:
        approve(root, ok, ADMIN_ACTOR, KEY, NOW - timedelta(days=1))
    assert e.value.problems == ("expires_at is 91.0 days after approval; an exception may last at most 90 days",)


def test_rate_waiver_raises_the_limit_only_for_its_scope_and_only_until_expiry(
        root: Path, engine_at: Callable[[Clock], Engine]) -> None:
    alice, bob = "a11ce000-0000-4000-8000-000000000001", "b0b00000-0000-4000-8000-000000000002"
    exception_id = file_and_approve(root, "netdata", 8, {"bucket": "reads", "limit": "150/hour", "users": [alice]},
                                    days=10)
    clock = Clock(NOW)
    engine = engine_at(clock)
    t = {"us": 0}
    limiter = MemoryLimiter(clock=lambda: t["us"])

    def admitted(uid: str, tool: str, role: str = "ops_viewer") -> tuple[int, tuple[str, ...]]:
        """How many calls in a row the real limiter admits under the engine's tiers."""
        d = engine.decide(call(uid, role, tool))
        assert d.allowed
        n = 0
        while n < 1000 and all(o.allowed for o in limiter.hit_all_now(uid, tool.split(".")[0], d.tiers)):
            n += 1
        return n, d.exceptions_applied

    d = engine.decide(call(alice, "ops_viewer", "netdata.alerts.list"))
    assert [(x.bucket, x.limit, x.period_s) for x in d.tiers] == [("reads", 150, 3600)]
    assert admitted(alice, "netdata.alerts.list") == (150, (exception_id,))
    assert admitted(bob, "netdata.alerts.list") == (100, ())  # another user: the base tier
    assert admitted(alice, "socket.findings.list") == (100, ())  # another provider: the base tier
    assert admitted(alice, "netdata.spaces.list", "ops_admin") == (1000, ())  # unlimited stays unlimited

    clock.now = NOW + timedelta(days=10, seconds=1)  # past expiry, no reload
    d = engine.decide(call(alice, "ops_viewer", "netdata.alerts.list"))
    assert [(x.policy_id, x.limit) for x in d.tiers] == [("tier.viewer.reads", 100)]
    assert d.exceptions_applied == ()
    assert admitted(alice, "netdata.alerts.list") == (0, ())  # her hour's budget is spent
    t["us"] = 360 * 1_000_000  # six minutes: 15 calls back at 150/hour, 10 at the base 100/hour
    assert admitted(alice, "netdata.alerts.list") == (10, ())


def test_a_rate_waiver_never_lowers_or_imposes_a_limit(root: Path, engine_at: Callable[[Clock], Engine]) -> None:
    file_and_approve(root, "netdata", 8, {"bucket": "reads", "limit": "50/hour"})
    file_and_approve(root, "netdata", 8, {"bucket": "scans", "limit": "500/hour"}, suffix="scans")
    engine = engine_at(Clock(NOW))
    d = engine.decide(call("a11ce000-0000-4000-8000-000000000001", "ops_viewer", "netdata.alerts.list"))
    assert [(x.policy_id, x.limit) for x in d.tiers] == [("tier.viewer.reads", 100)] and d.exceptions_applied == ()
    d = engine.decide(call("a11ce000-0000-4000-8000-000000000001", "ops_admin", "netdata.alerts.list"))
    assert d.tiers == () and d.exceptions_applied == ()


def test_provider_call_waiver_makes_the_independence_forbid_yield_for_that_call_only(
        root: Path, engine_at: Callable[[Clock], Engine]) -> None:
    exception_id = file_and_approve(root, "socket", 7, {"tools": ["sentry.message.capture"]}, days=5)
    clock = Clock(NOW)
    engine = engine_at(clock)
    q = Request(Uid.of("Provider", "socket"), "sentry.message.capture", Uid.of("Provider", "sentry"), {})
    d = engine.decide(q)
    assert d.allowed and d.exceptions_applied == (exception_id,)
    other = Request(Uid.of("Provider", "socket"), "sentry.issues.list", Uid.of("Provider", "sentry"), {})
    assert engine.decide(other).reasons == ("independence.no-provider-calls",)
    netdata = Request(Uid.of("Provider", "netdata"), "sentry.message.capture", Uid.of("Provider", "sentry"), {})
    assert not engine.decide(netdata).allowed
    clock.now = NOW + timedelta(days=5, seconds=1)
    d = engine.decide(q)
    assert not d.allowed and d.reasons == ("independence.no-provider-calls",)


def test_revoked_exceptions_stop_at_the_next_reload(root: Path, engine_at: Callable[[Clock], Engine]) -> None:
    exception_id = file_and_approve(root, "netdata", 5, {"hosts": [AGENT]})
    engine = engine_at(Clock(NOW))
    assert engine.decide(egress("netdata", "agent-7.lan")).allowed
    with pytest.raises(Refused):
        revoke(root, exception_id, Actor(REQUESTER, "ops_operator"), "no longer needed", NOW, KEY)
    revoke(root, exception_id, ADMIN_ACTOR, "no longer needed", NOW, KEY)
    engine.reload()
    assert not engine.decide(egress("netdata", "agent-7.lan")).allowed
    assert states(engine) == {"active": [], "expired": [], "refused": {}}
    with pytest.raises(Refused) as e:
        approve(root, exception_id, ADMIN_ACTOR, KEY, NOW)
    assert e.value.status == 409


def test_build_time_waivers_for_ci_checks(root: Path) -> None:
    file_and_approve(root, "socket", 9, {"tools": ["socket.scan.repo"]})
    file_and_approve(root, "sentry", 6, {}, days=1)
    file_and_approve(root, "netdata", 10, {})
    file(root, "netdata", 9, {"tools": ["netdata.alerts.list"]})  # pending: not honoured
    assert active_build_waivers(9, root, NOW) == {"socket.scan.repo"}
    assert active_build_waivers(6, root, NOW) == {"sentry"}
    assert active_build_waivers(6, root, NOW + timedelta(days=1)) == set()  # expired
    assert active_build_waivers(10, root, NOW) == {"netdata"}
    assert active_build_waivers(9, root / "missing", NOW) == set()


def test_grant_must_match_its_rule_and_folder(root: Path) -> None:
    with pytest.raises(Refused) as e:
        file(root, "netdata", 5, {"kind": "rate_limit", "bucket": "reads", "limit": "200/hour"})
    assert "waives rule 8, not rule 5" in e.value.problems[0]
    folder = write_raw(root, "mcp-exception-sentry-5", raw_spec("netdata", 5, f"  kind: egress\n  hosts: [{AGENT}]"))
    (record,) = scan(root)
    assert record.id == folder.name and any("folder name says provider 'sentry'" in p for p in record.problems)


def test_no_exceptions_directory_changes_nothing() -> None:
    plain = Engine.from_dir(POLICIES)
    with_dir = Engine.from_dir(POLICIES, exceptions=Path("/nonexistent"))
    assert plain.bundle.revision == with_dir.bundle.revision
    assert plain.bundle.waiver_tier_ids == frozenset()
