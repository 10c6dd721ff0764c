"""Deterministic generator of large, adversarial opsgate bundles and of requests against them.

Used by the differential test (tests/test_differential.py) and the decide() benchmark
(bench/decide.py). Given the same canonical bundle (policies/), the same (n, seed) always
writes byte-identical files and the same (bundle, count, seed) always yields the same
requests, so a failure can be replayed.

Shape, and why:
- The canonical policies (policies/*.cedar) come first, so a generated bundle still means
  what opsgate means (RBAC chain, independence forbid, vault rule); N counts them.
- The rest is "realistic": mostly narrow grants (one user, one team) over a role hierarchy
  several levels deep, and "adversarial": every scope form the index knows (==, in, is,
  is ... in, action lists, unconstrained), forbids, dryrun policies, roles that exist only in
  a request (a ghost parent), and conditions that pass strict validation yet ERROR at run
  time (Long overflow, datetime overflow) in both permits and forbids.
- Conditions are written around a pinned clock (NOW) and the value pools the request
  generator draws from, so a useful share of them is true, false and erroring.
- Some user ids contain a quote or a backslash, and some requests are refused by Cedar
  (NoDecision), a few of them quoting text shaped like a policy id back in the error.
- Broad rules (any user, a base role) grow like sqrt(n), not like n: see broad_share.

Users are not in entities.json: as in the gateway, a user arrives with the request, as an
entity whose one parent is its role.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cedarpy

from engine.allowlist import domain_parents
from engine.catalogue import Tool, args_types, parse_catalogue
from engine.model import Entity, Request, Uid

CANONICAL = Path(__file__).resolve().parent.parent / "policies"
COPIED = ("schema.cedarschema", "tools.json", "entities.json", "provider-allowlist.yaml")
PER_FILE = 500
# Every generated time condition is written around this instant; pass it as `now=` to decide().
NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
BASE_ROLES = ("ops_viewer", "ops_operator", "ops_admin")
I64_MAX = 9223372036854775807

# Value pools shared by policy conditions and request arguments. The LAST value of each pool is
# "rare": requests draw it seldom, so forbids keyed on it fire seldom even at broad scope.
STRINGS: dict[str, list[str]] = {
    "repo": ["acme/api", "acme/web", "oss/lib", "acme/infra-secrets"],
    "severity": ["low", "medium", "high", "critical"],
    "status": ["open", "resolved", "ignored", "muted"],
    "query": ["is:unresolved", "level:error", "assigned:me", "release:latest"],
    "project": ["web", "api", "mobile", "billing"],
    "level": ["info", "warning", "error", "fatal"],
    "state": ["open", "ignored", "resolved", "blocked"],
    "priority": ["low", "medium", "high", "urgent"],
    "integration": ["github", "jira", "linear", "pagerduty"],
    "space_id": ["sp-prod", "sp-stage", "sp-dev", "sp-secret"],
    "room_id": ["room-a", "room-b", "room-c", "room-x"],
}
DEFAULT_STRINGS = ["alpha", "beta", "prod", "staging", "zz-rare"]
SETS: dict[str, list[str]] = {
    "purls": ["pkg:npm/left-pad@1.3.0", "pkg:pypi/requests@2.32.0", "pkg:npm/react@19.0.0",
              "pkg:npm/evil@6.6.6"],
    "contexts": ["system.cpu", "system.ram", "disk.space", "net.packets"],
}
LONGS: dict[str, list[int]] = {
    "limit": [-1, 0, 1, 10, 25, 50, 100, 150, 200, 1000],
    "points": [1, 60, 300, 600, 1200, 5000],
    "after": [1794700000, 1794740000, 1794744000, 1700000000],
    "before": [1794744000, 1794750000, 0, 1800000000],
}
EXTRA_HOSTS = ("api.socket.dev", "socket.dev", "evil-socket.dev", "sentry.io", "ingest.sentry.io",
               "o4507.ingest.sentry.io", "evilingest.sentry.io", "app.netdata.cloud", "eu.netdata.cloud",
               "netdata.cloud", "10.0.0.7", "evil.example")
PORTS = (443, 443, 443, 443, 443, 443, 443, 80, 8080, 19999, 65000)
DRYRUN_FORBID = """forbid (
  principal in Ops::Role::"ops_viewer",
  action in Ops::Action::"read",
  resource
)
when { context has args && context.args has limit && context.args.limit >= 50 }"""
DRYRUN_PERMIT = """permit (
  principal in Ops::Role::"ops_operator",
  action in [Ops::Action::"create", Ops::Action::"comment"],
  resource
)"""


@dataclass(frozen=True)
class GeneratedBundle:
    """What was written, and the population requests are drawn from."""

    root: Path
    n: int                              # policies in *.cedar (canonical ones included)
    seed: int
    policy_ids: tuple[str, ...]
    forbid_ids: tuple[str, ...]
    dryrun_ids: tuple[str, ...]
    roles: tuple[str, ...]              # every Ops::Role in entities.json
    ghost_roles: tuple[str, ...]        # roles policies name that exist only as a request parent
    users: tuple[str, ...]
    user_role: dict[str, str | None]    # None: the user arrives without an entity
    providers: tuple[str, ...]
    tools: tuple[Tool, ...]
    hosts: tuple[str, ...]


# -- policies ---------------------------------------------------------------------------------

def _cedar(s: str) -> str:
    return json.dumps(s)


def _action(a: str) -> str:
    return f"Ops::Action::{_cedar(a)}"


def _datetime(d: datetime) -> str:
    return f'datetime("{d.strftime("%Y-%m-%dT%H:%M:%SZ")}")'


class _PolicyWriter:
    """Writes one policy at a time; all randomness comes from one seeded Random."""

    def __init__(self, rng: random.Random, n: int, tools: tuple[Tool, ...], types: dict[str, Any],
                 roles: list[str], ghosts: list[str], users: list[str], providers: list[str],
                 hosts: list[str]) -> None:
        self.rng = rng
        # Share of tool policies at broad principal scope (a base role, `is`, unconstrained): 22%
        # in small bundles, then growing like sqrt(n) in number. What grows with a real bundle
        # is per-user and per-team grants; nobody writes thousands of organisation-wide rules,
        # and every broad rule lands in (nearly) every slice.
        self.broad_share = min(0.22, (20 + 2 * n ** 0.5) / n)
        self.broad_scale = self.broad_share / 0.22  # the same shrinking for egress and mixed lists
        self.tools = tools
        self.roles = roles
        self.teams = [r for r in roles if r not in BASE_ROLES]
        self.ghosts = ghosts
        self.users = users
        self.providers = providers
        self.hosts = hosts
        # No top-level domains: nobody allows or forbids "*.net", and it would put every
        # generated host's policies in every egress slice.
        self.domains = sorted({d for h in hosts for d in domain_parents(h) if "." in d})
        self.kinds = sorted({t.kind for t in tools})
        # Field name -> Cedar type, over every tool. A name typed differently by two tools could
        # not be used under one `has` guard, so it is left out (none is, today).
        fields: dict[str, Any] = {}
        clash: set[str] = set()
        self.tool_fields: dict[str, dict[str, Any]] = {}
        for t in tools:
            record = types[t.name][1]
            self.tool_fields[t.name] = {k: ft for k, (ft, _req) in record.items()}
            for k, (ft, _req) in record.items():
                if fields.setdefault(k, ft) != ft:
                    clash.add(k)
        self.field_types = {k: v for k, v in fields.items() if k not in clash}

    # -- conditions ---------------------------------------------------------------------------

    def _fields(self, tools: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for t in tools:
            out.update({k: v for k, v in self.tool_fields[t].items() if k in self.field_types})
        return out

    @staticmethod
    def _guard(field: str) -> str:
        # Strict validation demands both guards (`args` is optional in the context, and most
        # fields are optional); for a tool lacking the field `has` types as False and the rest
        # of the conjunction is not type-checked for it.
        return f"context has args && context.args has {field}"

    def _when_time(self) -> str:
        r = self.rng.random()
        if r < 0.7:
            d = NOW + timedelta(days=self.rng.randint(-60, 60), hours=self.rng.randint(0, 23))
            return f"context.now {self.rng.choice(['<', '>'])} {_datetime(d)}"
        if r < 0.85:
            return f'context.now.toTime() {self.rng.choice(["<", ">="])} duration("{self.rng.randint(1, 23)}h")'
        return f'context.now.offset(duration("-{self.rng.randint(1, 90)}d")) < {_datetime(NOW)}'

    def _when_arg(self, fields: dict[str, Any], rare: bool) -> str | None:
        if not fields:
            return None
        name = self.rng.choice(sorted(fields))
        t = fields[name]
        g = self._guard(name)
        if t == "String":
            pool = STRINGS.get(name, DEFAULT_STRINGS)
            if rare:
                return f"{g} && context.args.{name} == {_cedar(pool[-1])}"
            r = self.rng.random()
            if r < 0.6:
                return f"{g} && context.args.{name} == {_cedar(self.rng.choice(pool[:-1]))}"
            if r < 0.8:
                return f'{g} && context.args.{name} like "{self.rng.choice(pool)[:3]}*"'
            return g
        if t == "Long":
            pool = LONGS.get(name, [0, 5, 100])
            if rare:
                return f"{g} && context.args.{name} >= {max(pool)}"
            return f"{g} && context.args.{name} {self.rng.choice(['<', '>', '=='])} {self.rng.choice(pool)}"
        if isinstance(t, tuple) and t[0] == "Set" and t[1] == "String":
            pool = SETS.get(name, DEFAULT_STRINGS)
            if rare:
                return f"{g} && context.args.{name}.contains({_cedar(pool[-1])})"
            vals = ", ".join(_cedar(v) for v in self.rng.sample(pool[:-1], 2))
            return f"{g} && context.args.{name}.{self.rng.choice(['containsAny', 'containsAll'])}([{vals}])"
        return g

    def _when_error(self, fields: dict[str, Any]) -> str:
        """A condition that passes strict validation and errors at run time for some requests."""
        longs = [k for k, v in fields.items() if v == "Long"]
        others = [k for k, v in fields.items() if v != "Long" and k != "version"]
        r = self.rng.random()
        if longs and r < 0.65:
            f = self.rng.choice(longs)
            g = self._guard(f)
            return self.rng.choice([
                f"{g} && context.args.{f} + {I64_MAX} > 0",             # overflows when f > 0
                f"{g} && context.args.{f} * 4611686018427387904 > 1",   # overflows when |f| >= 2
                f"{g} && -context.args.{f} - {I64_MAX} < 0",            # overflows when f > 1
                f"{g} && context.args.{f} > 100 && context.args.{f} * {I64_MAX} > 0",
            ])
        guard = self._guard(self.rng.choice(others)) if others and r < 0.9 else "context has args"
        return self.rng.choice([
            f'{guard} && context.now.offset(duration("{I64_MAX}ms")) > context.now',
            f'{guard} && context.now.durationSince(datetime("1970-01-01")).toMilliseconds() * 10000000 > 0',
        ])

    def _conditions(self, effect: str, broad: bool, tools: list[str]) -> list[str]:
        """`when`/`unless` clauses. Policies at broad scope only fire (forbids) or error (both) on
        rare values, so that the mix of outcomes survives at 10,000 policies."""
        fields = self._fields(tools)
        rng = self.rng
        r = rng.random()
        rare = self._when_arg(fields, rare=True) or f"context.now < {_datetime(NOW - timedelta(days=400))}"
        if effect == "forbid" and broad:
            if r < 0.3 and fields:
                return [f"when {{ {rare} && ({self._when_error(fields)}) }}"]
            return [f"when {{ {rare} }}"]
        if effect == "forbid":
            if r < 0.2:
                return []
            if r < 0.45:
                return [f"when {{ {self._when_error(fields)} }}"] if fields else [f"when {{ {self._when_time()} }}"]
        elif r < 0.4 and not broad:  # a broad permit without a condition would grant nearly everything
            return []
        elif r < 0.55 and fields:
            error = self._when_error(fields)
            return [f"when {{ {rare} && ({error}) }}" if broad else f"when {{ {error} }}"]
        clauses = []
        arg = self._when_arg(fields, rare=False) if rng.random() < 0.7 else None
        # A broad permit whose tools share no argument must not fall back to a clock test: that is
        # true half the time and would grant nearly everything (the outcome mix would collapse).
        clauses.append(f"when {{ {arg or (rare if broad else self._when_time())} }}")
        if rng.random() < 0.25:
            choice = rng.random()
            if choice < 0.4:
                clauses.append(f'unless {{ principal in Ops::Role::{_cedar(rng.choice(self.roles))} }}')
            elif choice < 0.7:
                clauses.append(f"unless {{ {self._when_time()} }}")
            else:
                clauses.append(f"unless {{ {self._when_arg(fields, rare=True) or self._when_time()} }}")
        if rng.random() < 0.15:
            clauses.append(f"when {{ resource == Ops::Provider::{_cedar(rng.choice(self.providers))} "
                           f"|| {self._when_time()} }}")
        return clauses

    # -- scopes -------------------------------------------------------------------------------

    def _tool_action(self) -> tuple[str, list[str]]:
        """-> (action scope, tools it covers)."""
        rng = self.rng
        r = rng.random()
        if r < 0.40:
            t = rng.choice(self.tools)
            return f"action == {_action(t.name)}", [t.name]
        if r < 0.65:
            k = rng.choice(self.kinds)
            return f"action in {_action(k)}", [t.name for t in self.tools if t.kind == k]
        if r < 0.85:
            picks: list[str] = rng.sample([t.name for t in self.tools], rng.randint(1, 3))
            picks += rng.sample(self.kinds, rng.randint(0, 1))
            covered = {t.name for t in self.tools if t.name in picks or t.kind in picks}
            return f"action in [{', '.join(_action(a) for a in picks)}]", sorted(covered)
        if r < 0.90:
            return f"action in {_action('call')}", [t.name for t in self.tools]
        return "action", [t.name for t in self.tools]

    def _tool_principal(self) -> tuple[str, bool]:
        """-> (principal scope, broad?)."""
        rng = self.rng
        if rng.random() < self.broad_share:
            r = rng.random()
            if r < 0.35:
                return f"principal in Ops::Role::{_cedar(rng.choice(BASE_ROLES))}", True
            if r < 0.55:
                return "principal is Ops::User", True
            if r < 0.70:
                return "principal is Ops::Provider", True
            if r < 0.80:
                return f"principal is Ops::User in Ops::Role::{_cedar(rng.choice(BASE_ROLES))}", True
            return "principal", True
        r = rng.random() * 0.78
        if r < 0.38:
            return f"principal == Ops::User::{_cedar(rng.choice(self.users))}", False
        if r < 0.58:
            return f"principal in Ops::Role::{_cedar(rng.choice(self.teams))}", False
        if r < 0.64:
            return f"principal is Ops::User in Ops::Role::{_cedar(rng.choice(self.teams))}", False
        if r < 0.67:
            return f"principal in Ops::User::{_cedar(rng.choice(self.users))}", False
        if r < 0.69:
            return f"principal in Ops::Role::{_cedar(rng.choice(self.ghosts))}", False
        return f"principal == Ops::Provider::{_cedar(rng.choice(self.providers))}", False

    def _provider_resource(self, tools: list[str]) -> str:
        rng = self.rng
        r = rng.random()
        own = sorted({t.split(".", 1)[0] for t in tools})
        if r < 0.35:
            p = rng.choice(own) if len(own) <= 3 and rng.random() < 0.8 else rng.choice(self.providers)
            return f"resource == Ops::Provider::{_cedar(p)}"
        if r < 0.40:
            return f"resource in Ops::Provider::{_cedar(rng.choice(self.providers))}"
        if r < 0.45:
            return "resource is Ops::Provider"
        return "resource"

    def tool_policy(self, effect: str) -> str:
        action, tools = self._tool_action()
        principal, broad = self._tool_principal()
        resource = self._provider_resource(tools)
        clauses = self._conditions(effect, broad or action == "action", tools)
        return f"{effect} (\n  {principal},\n  {action},\n  {resource}\n)" + "".join(f"\n{c}" for c in clauses)

    def egress_policy(self, effect: str) -> str:
        rng = self.rng
        r = rng.random()
        principal = (rng.choice(["principal", "principal is Ops::Provider"]) if r < 0.3 * self.broad_scale
                     else f"principal == Ops::Provider::{_cedar(rng.choice(self.providers))}")
        r = rng.random()
        if r < 0.5:
            resource = f"resource == Ops::Host::{_cedar(rng.choice(self.hosts))}"
        elif r < 0.8:
            resource = f"resource in Ops::Domain::{_cedar(rng.choice(self.domains))}"
        elif r < 0.92:
            resource = f"resource is Ops::Host in Ops::Domain::{_cedar(rng.choice(self.domains))}"
        else:
            resource = rng.choice(["resource", "resource is Ops::Host"])
        broad = resource in ("resource", "resource is Ops::Host") or not principal.startswith("principal ==")
        r = rng.random()
        if effect == "forbid" and (broad or r < 0.3):
            cond = "context.port > 8000 && context.port * 4611686018427387904 > 0"  # errors above 8000
            if broad:
                cond = f"context.port == 65000 && ({cond})"
        elif broad or r < 0.6:  # a broad permit is only ever for one exact scheme and port
            cond = f"context.scheme == {_cedar(rng.choice(['https', 'http']))} && context.port == {rng.choice(PORTS)}"
        elif r < 0.8:
            cond = f"context.port {rng.choice(['<', '>'])} {rng.choice([100, 1024, 9000])}"
        else:
            cond = self._when_time()
        return f'{effect} (\n  {principal},\n  action == Ops::Action::"egress",\n  {resource}\n)\nwhen {{ {cond} }}'

    def secret_policy(self, effect: str) -> str:
        rng = self.rng
        p = rng.choice(self.providers)
        principal = f"principal == Ops::Provider::{_cedar(p)}" if rng.random() < 0.7 else "principal"
        resource = (f"resource == Ops::Secret::{_cedar(p + '/' + rng.choice(['token', 'root', 'webhook']))}"
                    if rng.random() < 0.5 else f"resource in Ops::Provider::{_cedar(p)}")
        cond = self._when_time() if effect == "permit" or rng.random() < 0.5 else "resource in principal"
        return (f'{effect} (\n  {principal},\n  action == Ops::Action::"read_secret",\n  {resource}\n)'
                f"\nwhen {{ {cond} }}")

    def mixed_policy(self, effect: str) -> str:
        """An action list across kinds with different contexts: only `now` (or a guarded arg)
        may be read, and the index files it under every listed action."""
        rng = self.rng
        picks = ["egress", *rng.sample(self.kinds, 2)]
        if rng.random() < self.broad_scale:
            principal = rng.choice(["principal", "principal is Ops::Provider"])
        else:  # valid although a user can never egress: the listed tool actions apply to users
            principal = rng.choice([f"principal == Ops::User::{_cedar(rng.choice(self.users))}",
                                    f"principal in Ops::Role::{_cedar(rng.choice(self.teams))}"])
        covered = [t.name for t in self.tools if t.kind in picks]
        if effect == "forbid":
            cond = self._when_arg(self._fields(covered), rare=True) or self._when_time()
        else:  # `has` on a context record that lacks the attribute types as False, as for args
            arg = self._when_arg(self._fields(covered), rare=False) or "context has args"
            cond = f"(context has port && context.port == {rng.choice([8080, 19999])}) || ({arg})"
        return (f"{effect} (\n  {principal},\n  action in [{', '.join(_action(a) for a in picks)}],\n  resource\n)"
                f"\nwhen {{ {cond} }}")


def _roles(rng: random.Random, n: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Team roles below the canonical chain: some nested in other teams, a few in two parents."""
    teams = [f"team-{i}" for i in range(max(4, n // 40))]
    ents = []
    for i, t in enumerate(teams):
        r = rng.random()
        if i > 0 and r < 0.35:
            parents = [rng.choice(teams[:i])]
            if rng.random() < 0.2:
                parents.append(rng.choice(BASE_ROLES[:2]))
        elif r < 0.9:
            parents = [rng.choices(BASE_ROLES, weights=(6, 4, 1))[0]]
        else:
            parents = ["ops_viewer", "ops_operator"]
        ents.append({"uid": {"type": "Ops::Role", "id": t}, "attrs": {},
                     "parents": [{"type": "Ops::Role", "id": p} for p in parents]})
    return ents, teams


def generate(dir: str | Path, n: int, seed: int) -> GeneratedBundle:
    """Write a complete bundle with `n` policies in *.cedar files under `dir` (created or
    emptied of *.cedar first) and return what it contains."""
    root = Path(dir)
    rng = random.Random(f"policygen:{n}:{seed}")
    root.mkdir(parents=True, exist_ok=True)
    for f in root.glob("*.cedar"):
        f.unlink()
    for name in COPIED:
        shutil.copyfile(CANONICAL / name, root / name)
    shutil.rmtree(root / "tiers", ignore_errors=True)
    shutil.copytree(CANONICAL / "tiers", root / "tiers")

    cat, issues = parse_catalogue((root / "tools.json").read_bytes(), "tools.json")
    assert not issues, issues
    types = args_types(cat)
    # The canonical policies about tool calls, egress and secrets: what generated requests ask.
    # Pulse Omega's table policies (omega.cedar) decide `query`/`propose` on Table entities, which
    # no generated request names; they would sit in no slice and only pad the count.
    canonical_text = "\n".join(f.read_text() for f in sorted(CANONICAL.glob("*.cedar")) if f.name != "omega.cedar")
    canonical = json.loads(cedarpy.policies_to_json_str(canonical_text))["staticPolicies"].values()
    if n < len(canonical):
        raise ValueError(f"n must be at least {len(canonical)} (the canonical policies)")

    role_ents, teams = _roles(rng, n)
    base_ents = json.loads((CANONICAL / "entities.json").read_text())
    (root / "entities.json").write_text(json.dumps(base_ents + role_ents, indent=1) + "\n")
    ghosts = [f"ghost-{i}" for i in range(3)]
    # Every 7th user id carries a quote or a backslash: legal in Cedar, and a trap for any code
    # that turns uids into strings two different ways.
    users = [f"u{i}" + ('"q' if i % 14 == 3 else "\\q" if i % 14 == 10 else "") for i in range(max(8, n // 3))]
    # Role of each user: mostly teams, some base roles, a few ghosts, a few without an entity.
    user_role: dict[str, str | None] = {}
    for u in users:
        r = rng.random()
        user_role[u] = (rng.choice(teams) if r < 0.57 else rng.choice(BASE_ROLES) if r < 0.93
                        else rng.choice(ghosts) if r < 0.97 else None)
    providers = sorted({*cat.providers, "omega"})
    zones = max(3, n // 200)  # ~4 generated hosts per zone
    hosts = sorted({*EXTRA_HOSTS, *(f"h{i}.z{rng.randrange(zones)}.example.net" for i in range(max(6, n // 50)))})

    w = _PolicyWriter(rng, n, cat.tools, types, [*BASE_ROLES, *teams], ghosts, users, providers, hosts)
    texts = [canonical_text]
    ids = [p["annotations"]["id"] for p in canonical]
    forbids = [p["annotations"]["id"] for p in canonical if p["effect"] == "forbid"]
    # Dryrun: ~1% of the policies, from 100 up. Random ones seldom change an outcome, so the first
    # two are rules a team might trial, each flipping a few percent of decisions.
    fixed = [("forbid", DRYRUN_FORBID), ("permit", DRYRUN_PERMIT)] if n // 100 >= 2 else []
    first = len(ids) + len(fixed)
    dryrun = {*range(len(ids), first), *rng.sample(range(first, n), n // 100 - len(fixed))} if n >= 100 else set()
    dryrun_ids = []
    for i in range(len(ids), n):
        if i < first:
            effect, body = fixed[i - len(ids)]
            pid = f"gen.{i:05d}.trial.{effect}"
            texts.append(f'@id({_cedar(pid)})\n@mode("dryrun")\n{body};\n')
            ids.append(pid)
            dryrun_ids.append(pid)
            forbids += [pid] if effect == "forbid" else []
            continue
        effect = "forbid" if rng.random() < 0.25 else "permit"
        r = rng.random()
        family = "tool" if r < 0.82 else "egress" if r < 0.92 else "secret" if r < 0.95 else "mixed"
        body = getattr(w, f"{family}_policy")(effect)
        pid = f"gen.{i:05d}.{family}.{effect}"
        ann = f"@id({_cedar(pid)})\n"
        if i in dryrun:
            ann += '@mode("dryrun")\n'
            dryrun_ids.append(pid)
        texts.append(f"{ann}{body};\n")
        ids.append(pid)
        if effect == "forbid":
            forbids.append(pid)
    # The canonical text counts as the first file's first policies; then PER_FILE per file.
    head = len(canonical)
    chunks = [[texts[0], *texts[1:PER_FILE - head + 1]]]
    rest = texts[PER_FILE - head + 1:]
    chunks += [rest[i:i + PER_FILE] for i in range(0, len(rest), PER_FILE)]
    for k, chunk in enumerate(chunks):
        (root / f"gen-{k:03d}.cedar").write_text("\n".join(chunk))
    return GeneratedBundle(root=root, n=n, seed=seed, policy_ids=tuple(ids), forbid_ids=tuple(forbids),
                           dryrun_ids=tuple(dryrun_ids), roles=(*BASE_ROLES, *teams), ghost_roles=tuple(ghosts),
                           users=tuple(users), user_role=user_role, providers=tuple(providers), tools=cat.tools,
                           hosts=tuple(hosts))


# -- requests ---------------------------------------------------------------------------------

def _value(rng: random.Random, name: str, schema: dict[str, Any]) -> Any:
    """A value valid for one JSON Schema property, drawn from the shared pools."""
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        pool = STRINGS.get(name, DEFAULT_STRINGS)
        return pool[-1] if rng.random() < 0.04 else rng.choice(pool[:-1])
    if kind == "integer":
        return rng.choice(LONGS.get(name, [0, 5, 100]))
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "array":
        pool = SETS.get(name, DEFAULT_STRINGS)
        items = rng.sample(pool[:-1], rng.randint(0, 2))
        return [*items, pool[-1]] if rng.random() < 0.05 else items
    if kind == "object":  # free-form: Cedar cannot type it, the engine projects it away
        return {"package.json": "{}", "depth": rng.randint(0, 3)}
    return None


def _args(rng: random.Random, tool: Tool) -> dict[str, Any]:
    props: dict[str, Any] = tool.input_schema.get("properties", {})
    required = set(tool.input_schema.get("required", ()))
    out = {}
    for name, sub in props.items():
        if name in required or rng.random() < 0.5:
            out[name] = _value(rng, name, sub)
    return out


def _user_entities(gen: GeneratedBundle, user: str) -> tuple[Entity, ...]:
    role = gen.user_role[user]
    return () if role is None else (Entity(Uid.of("User", user), (Uid.of("Role", role),)),)


def _malformed(rng: random.Random, gen: GeneratedBundle) -> Request:
    """A request Cedar refuses (NoDecision): a wrong-typed argument, a user asking for egress,
    an egress context without its port. Some wrong-typed arguments carry text that looks like a
    policy id, which Cedar echoes back in its error message."""
    r = rng.random()
    if r < 0.6:
        user = rng.choice(gen.users)
        tool = rng.choice(gen.tools)
        args: dict[str, Any] = {**_args(rng, tool), "version": 1}
        if rng.random() < 0.5:
            strings = [k for k, v in tool.input_schema.get("properties", {}).items()
                       if v.get("type") == "string" and k != "version"]
            if strings:
                args[rng.choice(strings)] = f"policy `{rng.choice(gen.forbid_ids)}`"
        return Request(Uid.of("User", user), tool.name, Uid.of("Provider", tool.provider), {"args": args},
                       _user_entities(gen, user))
    if r < 0.8:
        user = rng.choice(gen.users)
        return Request(Uid.of("User", user), "egress", Uid.of("Host", rng.choice(gen.hosts)),
                       {"scheme": "https", "port": 443}, _user_entities(gen, user))
    return Request(Uid.of("Provider", rng.choice(gen.providers)), "egress", Uid.of("Host", rng.choice(gen.hosts)),
                   {"scheme": "https"})


def random_requests(gen: GeneratedBundle, count: int, seed: int) -> list[Request]:
    """Requests as the gateway builds them: a user with its role as parent entity calling a tool
    of a provider, with arguments valid for the tool's input schema (or none: tools/list);
    providers calling tools (rule 7), reaching hosts (rule 5) and reading secrets (rule 4);
    and ~4% that Cedar refuses outright."""
    rng = random.Random(f"requests:{gen.n}:{gen.seed}:{seed}")
    out: list[Request] = []
    for _ in range(count):
        r = rng.random()
        if r < 0.04:
            out.append(_malformed(rng, gen))
            continue
        if r < 0.76:
            user = rng.choice(gen.users)
            tool = rng.choice(gen.tools)
            provider = tool.provider if rng.random() < 0.92 else rng.choice(gen.providers)
            ctx = {"args": _args(rng, tool)} if rng.random() < 0.85 else {}
            out.append(Request(Uid.of("User", user), tool.name, Uid.of("Provider", provider), ctx,
                               _user_entities(gen, user)))
        elif r < 0.84:
            tool = rng.choice(gen.tools)
            out.append(Request(Uid.of("Provider", rng.choice(gen.providers)), tool.name,
                               Uid.of("Provider", tool.provider), {"args": _args(rng, tool)}))
        elif r < 0.96:
            out.append(Request(Uid.of("Provider", rng.choice(gen.providers)), "egress",
                               Uid.of("Host", rng.choice(gen.hosts)),
                               {"scheme": rng.choice(["https", "https", "https", "http"]), "port": rng.choice(PORTS)}))
        else:
            principal = rng.choice(gen.providers)
            owner = principal if rng.random() < 0.7 else rng.choice(gen.providers)
            secret = Uid.of("Secret", f"{owner}/{rng.choice(['token', 'root', 'webhook'])}")
            out.append(Request(Uid.of("Provider", principal), "read_secret", secret, {},
                               (Entity(secret, (Uid.of("Provider", owner),)),)))
    return out


__all__ = ["NOW", "GeneratedBundle", "generate", "random_requests"]
