"""The permission diff: what two bundles decide differently, asked of the engine, not read from text.

For every principal (each role, no role, each user a policy names under each role, each provider),
every action in either catalogue (and the gateway's own admin actions) on its provider, both
bundles decide the request that carries no arguments, at the same instant. A difference in the
outcome is a tool gained or lost; where both allow, a difference in the rate tiers (per bucket) is a
limit raised, lowered, added or lifted. Egress is decided for every provider and every host any
policy of either bundle names (allowlist entries, exception grants, hand-written forbids), and
`read_secret` for every provider and every secret named or owned by convention, so that a forbid or
an exception shows up as surely as an allowlist edit. Exceptions that come into or out of force are
listed with the policies they compiled to.

Invariants:
- Both sides are asked exactly the same requests (the union of what either bundle names); every
  row carries the deciding policy ids of each side, as `Engine.decide` reports them.
- `widens` is true when any principal gains anything: a tool, a host, a secret, a higher or lifted
  limit. It is what `--fail-on widen` checks.
- Pure: bundles in, a PermissionDiff out. Decisions that depend on arguments are not hidden, they
  are listed apart (engine/impact/arguments.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

import msgspec

from engine.allowlist import DEFAULT_PORTS
from engine.engine import Engine
from engine.guards import guard_of
from engine.impact.arguments import ArgDependence, argument_dependence
from engine.impact.source import Loaded
from engine.model import Decision, Entity, Request, Tier, Uid
from engine.policytest import UNDECLARED

PROBE_USER = "opsgate:impact-probe"  # the user whose role is probed; no policy should name it
PROBE_LABEL = "opsgate-impact-probe"  # a host below a wildcard domain; a secret owned by a provider
GATEWAY_ACTIONS = ("opsgate.decide", "opsgate.policy.reload", "opsgate.policy.diff")
NO_ROLE = "(no role)"
EXCEPTIONS = "(exceptions)"


class Side(msgspec.Struct, frozen=True, omit_defaults=True):
    """One bundle's answer: allowed, the deciding policy ids, and what else the reader needs."""

    allowed: bool
    policy_ids: tuple[str, ...] = ()
    detail: str | None = None


class Row(msgspec.Struct, frozen=True, omit_defaults=True):
    """One difference. `area` is tool, tier, egress, secret or exception; `change` is gains, loses,
    raised, lowered, added, lifted, changed, into force or out of force."""

    area: str
    principal: str
    provider: str
    target: str
    change: str
    widens: bool
    base: Side
    head: Side
    bucket: str | None = None


class Revision(msgspec.Struct, frozen=True):
    label: str
    revision: str


class PermissionDiff(msgspec.Struct, frozen=True):
    base: Revision
    head: Revision
    at: str
    widens: bool
    rows: tuple[Row, ...]
    arguments: tuple[ArgDependence, ...]
    decisions: int  # requests decided per bundle


@dataclass(frozen=True)
class _Principal:
    label: str
    uid: Uid
    entities: tuple[Entity, ...] = ()


@dataclass(frozen=True, order=True)
class _Target:
    host: str
    wildcard: bool
    scheme: str
    port: int

    @property
    def display(self) -> str:
        name = f"*.{self.host}" if self.wildcard else self.host
        return name if (self.scheme, self.port) == ("https", 443) else f"{self.scheme}://{name}:{self.port}"

    @property
    def probe(self) -> str:
        return f"{PROBE_LABEL}.{self.host}" if self.wildcard else self.host


class _Asker:
    """Both engines at one instant; counts what it asks."""

    def __init__(self, base: Loaded, head: Loaded, at: datetime) -> None:
        self.sides = (base, head)
        self.engines = (Engine(base.bundle, clock=lambda: at), Engine(head.bundle, clock=lambda: at))
        self.at = at
        self.asked = 0

    def both(self, principal: Uid, action: str, resource: Uid, entities: tuple[tuple[Entity, ...], ...],
             context: dict[str, object] | None = None) -> tuple[Decision, Decision]:
        self.asked += 1
        b, h = (e.decide(Request(principal, action, resource, context or {}, ents), now=self.at)
                for e, ents in zip(self.engines, entities, strict=True))
        return b, h


def _key_id(key: str) -> str:
    return key.partition('::"')[2][:-1]


def _named(sides: Iterable[Loaded], kind: str, index: int) -> set[str]:
    """Ids of `kind` entities that some policy's scope names (index 0 principal, 2 resource)."""
    prefix = f'Ops::{kind}::"'
    return {_key_id(k[1]) for s in sides for p in (*s.bundle.policies, *s.bundle.tiers)
            for k in p.scope[index] if k is not None and k[1].startswith(prefix)}


def _static(sides: Iterable[Loaded], kind: str) -> dict[str, list[str]]:
    """Static entities of `kind`: id -> parent keys (the first bundle that has it wins)."""
    out: dict[str, list[str]] = {}
    for s in sides:
        for e in s.bundle.static_entities:
            if e["uid"]["type"] == f"Ops::{kind}":
                out.setdefault(e["uid"]["id"], [f'{p["type"]}::"{p["id"]}"' for p in e["parents"]])
    return out


def _roles(sides: tuple[Loaded, Loaded]) -> list[str]:
    """Every role either bundle defines, lowest first (fewest ancestors), then by name."""
    roles = _static(sides, "Role")

    def depth(role: str, seen: frozenset[str] = frozenset()) -> int:
        parents = [_key_id(p) for p in roles.get(role, []) if p.startswith('Ops::Role::"')]
        return max((1 + depth(p, seen | {role}) for p in parents if p not in seen), default=0)

    return sorted(roles, key=lambda r: (depth(r), r))


def _user(uid: str, role: str | None) -> tuple[Uid, tuple[Entity, ...]]:
    user = Uid.of("User", uid)
    return user, (Entity(user, (Uid.of("Role", role),) if role else ()),)


def _principals(sides: tuple[Loaded, Loaded], providers: list[str]) -> list[_Principal]:
    roles = _roles(sides)
    out = [_Principal(role, *_user(PROBE_USER, role)) for role in roles]
    out.append(_Principal(NO_ROLE, *_user(PROBE_USER, None)))
    for user in sorted(_named(sides, "User", 0)):
        out += [_Principal(f"user:{user} as {role}", *_user(user, role)) for role in roles]
        out.append(_Principal(f"user:{user} {NO_ROLE}", *_user(user, None)))
    out += [_Principal(f"provider:{p}", Uid.of("Provider", p)) for p in providers]
    return out


def _actions(sides: tuple[Loaded, Loaded]) -> dict[str, str]:
    """Action -> the provider it is asked on: every tool of either catalogue, and the gateway's own."""
    out = {t.name: t.provider for s in sides for t in s.bundle.catalogue.tools}
    return dict(sorted({**out, **dict.fromkeys(GATEWAY_ACTIONS, "opsgate")}.items()))


def _side(d: Decision, loaded: Loaded, action: str, tiers: bool = True) -> Side:
    detail = None
    if action not in GATEWAY_ACTIONS and loaded.bundle.catalogue.get(action) is None and "." in action:
        detail = "not in the catalogue"
    elif any(UNDECLARED.search(e) for e in d.errors):
        detail = "not declared in the schema"
    elif d.errors:
        detail = "error: " + " ".join(d.errors[0].split())[:160]
    elif d.allowed and tiers:
        detail = "tiers: " + (", ".join(f"{t.bucket} {_rate(t)}" for t in d.tiers) or "unlimited")
    return Side(d.allowed, tuple(sorted(d.reasons)), detail)


def _rate(t: Tier) -> str:
    return f"{t.limit}/{t.period_s}s"


def _flip(area: str, principal: str, provider: str, target: str, b: Side, h: Side) -> Row:
    return Row(area, principal, provider, target, "gains" if h.allowed else "loses", h.allowed, b, h)


def _tool_rows(asker: _Asker, principals: list[_Principal], actions: dict[str, str]) -> Iterator[Row]:
    base, head = asker.sides
    for who in principals:
        for action, provider in actions.items():
            b, h = asker.both(who.uid, action, Uid.of("Provider", provider), (who.entities, who.entities))
            if b.allowed != h.allowed:
                yield _flip("tool", who.label, provider, action, _side(b, base, action), _side(h, head, action))
            elif b.allowed:
                yield from _tier_rows(who.label, provider, action, b.tiers, h.tiers)


def _tier_rows(principal: str, provider: str, action: str, before: tuple[Tier, ...],
               after: tuple[Tier, ...]) -> Iterator[Row]:
    """Per bucket: the limits that apply on each side (several tiers of one bucket all apply)."""
    for bucket in sorted({t.bucket for t in (*before, *after)}):
        b = sorted((t for t in before if t.bucket == bucket), key=lambda t: t.policy_id)
        a = sorted((t for t in after if t.bucket == bucket), key=lambda t: t.policy_id)
        if [(t.limit, t.period_s) for t in b] == [(t.limit, t.period_s) for t in a]:
            continue
        change, widens = _limit_change(b, a)
        yield Row("tier", principal, provider, action, change, widens,
                  Side(bool(b), tuple(t.policy_id for t in b), ", ".join(map(_rate, b)) or "no limit"),
                  Side(bool(a), tuple(t.policy_id for t in a), ", ".join(map(_rate, a)) or "no limit"), bucket)


def _limit_change(before: list[Tier], after: list[Tier]) -> tuple[str, bool]:
    if not after:
        return "lifted", True
    if not before:
        return "added", False
    # The tightest tier of a bucket is the one that bites; compare rates, then burst (the limit).
    rb = min(before, key=lambda t: t.limit / t.period_s)
    ra = min(after, key=lambda t: t.limit / t.period_s)
    if ra.limit * rb.period_s != rb.limit * ra.period_s:
        return ("raised", True) if ra.limit * rb.period_s > rb.limit * ra.period_s else ("lowered", False)
    return "changed", ra.limit > rb.limit


def _targets(sides: tuple[Loaded, Loaded]) -> list[_Target]:
    """Every egress target a policy of either bundle names, with the scheme and port it tests."""
    found: set[_Target] = set()
    for s in sides:
        for p in s.bundle.policies:
            if not any(k is None or k[1] == 'Ops::Action::"egress"' for k in p.scope[1]):
                continue
            schemes, ports = _tested(p.est)
            for k in p.scope[2]:
                if k is None or not k[1].startswith(('Ops::Host::"', 'Ops::Domain::"')):
                    continue
                wildcard = k[1].startswith("Ops::Domain")
                for scheme in schemes or {"https"}:
                    for port in ports or {DEFAULT_PORTS.get(scheme, 443)}:
                        found.add(_Target(_key_id(k[1]), wildcard, scheme, port))
    return sorted(found)


def _tested(est: str) -> tuple[set[str], set[int]]:
    """The `context.scheme == ...` and `context.port == ...` values a policy's guard tests."""
    schemes: set[str] = set()
    ports: set[int] = set()
    stack = [guard_of(est)]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        if node[0] in ("and", "or"):
            stack.extend(node[1])
        elif node[0] == "not":
            stack.append(node[1])
        elif node[0] == "eq" and node[1] == () and node[2] == "scheme" and isinstance(node[3], str):
            schemes.add(node[3])
        elif node[0] == "eq" and node[1] == () and node[2] == "port" and type(node[3]) is int:
            ports.add(node[3])
    return schemes, ports


def _egress_rows(asker: _Asker, providers: list[str], targets: list[_Target]) -> Iterator[Row]:
    base, head = asker.sides
    for p in providers:
        for t in targets:
            b, h = asker.both(Uid.of("Provider", p), "egress", Uid.of("Host", t.probe), ((), ()),
                              {"scheme": t.scheme, "port": t.port})
            if b.allowed != h.allowed:
                yield _flip("egress", f"provider:{p}", p, t.display, _side(b, base, "egress", False),
                            _side(h, head, "egress", False))


def _secrets(sides: tuple[Loaded, Loaded], providers: list[str]) -> list[tuple[str, str]]:
    """(how rows name it, the secret id asked): each secret named in either bundle, and for each
    provider one secret of its own by the naming convention (`<provider>_...`, gateway/runtime.py)."""
    named = set(_static(sides, "Secret")) | _named(sides, "Secret", 2)
    return sorted({*((s, s) for s in named), *((f"{p}_*", f"{p}_{PROBE_LABEL}") for p in providers)})


def _secret_entities(loaded: Loaded, secret: str) -> tuple[Entity, ...]:
    if any(e["uid"] == {"type": "Ops::Secret", "id": secret} for e in loaded.bundle.static_entities):
        return ()
    uid = Uid.of("Secret", secret)
    return (Entity(uid, (Uid.of("Provider", secret.split("_", 1)[0]),)),)


def _secret_rows(asker: _Asker, providers: list[str], secrets: list[tuple[str, str]]) -> Iterator[Row]:
    base, head = asker.sides
    for p in providers:
        for shown, secret in secrets:
            b, h = asker.both(Uid.of("Provider", p), "read_secret", Uid.of("Secret", secret),
                              (_secret_entities(base, secret), _secret_entities(head, secret)))
            if b.allowed != h.allowed:
                yield _flip("secret", f"provider:{p}", p, shown, _side(b, base, "read_secret", False),
                            _side(h, head, "read_secret", False))


def _exception_rows(base: Loaded, head: Loaded) -> Iterator[Row]:
    for eid in sorted({*base.exceptions, *head.exceptions}):
        b, h = base.exceptions.get(eid), head.exceptions.get(eid)
        b_on, h_on = b is not None and b.state == "in force", h is not None and h.state == "in force"
        if b_on == h_on:
            continue
        known = h or b
        assert known is not None
        yield Row("exception", EXCEPTIONS, known.provider, eid, "into force" if h_on else "out of force", False,
                  Side(b_on, b.policy_ids if b else (), b.state if b else "absent"),
                  Side(h_on, h.policy_ids if h else (), h.state if h else "absent"))


def permission_diff(base: Loaded, head: Loaded, at: datetime) -> PermissionDiff:
    """What `head` decides differently from `base` at `at`, for requests without arguments."""
    sides = (base, head)
    asker = _Asker(base, head, at)
    providers = sorted(set(_static(sides, "Provider")))
    principals = _principals(sides, providers)
    rows = [*_tool_rows(asker, principals, _actions(sides)),
            *_egress_rows(asker, providers, _targets(sides)),
            *_secret_rows(asker, providers, _secrets(sides, providers)),
            *_exception_rows(base, head)]
    order = {p.label: i for i, p in enumerate(principals)}
    area = {"tool": 0, "tier": 1, "egress": 2, "secret": 3, "exception": 4}
    rows.sort(key=lambda r: (order.get(r.principal, len(order)), r.provider, area[r.area], r.target, r.bucket or ""))
    return PermissionDiff(
        base=Revision(base.label, base.bundle.revision), head=Revision(head.label, head.bundle.revision),
        at=at.isoformat(), widens=any(r.widens for r in rows), rows=tuple(rows),
        arguments=argument_dependence(base.bundle, head.bundle), decisions=asker.asked)


__all__ = ["GATEWAY_ACTIONS", "PermissionDiff", "Revision", "Row", "Side", "permission_diff"]
