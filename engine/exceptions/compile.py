"""Runtime grants (rules 5, 7, 8) as Cedar, each policy tagged `@exception("<id>")` and guarded by
`context.now < datetime("<expires_at>")`, so an expired grant stops at that instant with no reload.

- rule 5 (egress): the allowlist's own permit for each host, re-identified and time-guarded.
- rule 7 (provider_call): a permit for `principal == Provider::"<p>"` on the named tool, and a
  carve-out: every forbid annotated `@rule("7")` gains `unless { <the same request> && now < expiry }`.
  A permit cannot override a forbid, so the forbid itself must yield, and only for that call.
- rule 8 (rate_limit): a tier permit with the raised `@limit` for the bucket, scoped to the provider
  (and the grant's users and tools). It grants nothing; the engine lets it *replace* the base tiers
  of the same bucket, never add a budget where none applied (engine.engine).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import cedarpy
import msgspec

from engine import allowlist
from engine.exceptions.approvers import read_chain
from engine.exceptions.inventory import PREFIX, Record, scan
from engine.exceptions.spec import APPROVAL, EgressGrant, ExceptionSpec, ProviderCallGrant, RateLimitGrant
from engine.exceptions.trust import REPOSITORY_ONLY, Trust

CARVE_OUT_RULES = ("7",)


class Compiled(msgspec.Struct):
    policies: list[tuple[str, str, bool]] = []  # (label, Cedar text, is a tier policy)
    carve_outs: dict[str, list[str]] = {}  # rule -> Cedar conditions its forbids must yield to
    active: list[str] = []  # ids in force (runtime and build-time)
    refused: dict[str, str] = {}  # approved but refused at load: id -> why
    expires_at: dict[str, datetime] = {}  # id -> expiry, for every id in `active`
    unavailable: str | None = None  # the gateway could not vouch for revocations and the root: nothing loaded
    approvers: dict[str, object] = {}  # the approvers.pub chain: root, trusted and ignored keys

    def status(self, now: datetime) -> dict[str, object]:
        """In force now (expiry is enforced per decision, so this can change without a reload)."""
        return {"active": [i for i in self.active if now < self.expires_at[i]],
                "expired": [i for i in self.active if now >= self.expires_at[i]], "refused": dict(self.refused),
                "unavailable": self.unavailable, "approvers": dict(self.approvers)}


def cedar_time(dt: datetime) -> str:
    return json.dumps(dt.astimezone(UTC).isoformat(timespec="milliseconds")[:23] + "Z")


def _head(pid: str, exception_id: str, extra: str = "") -> str:
    return f"@id({json.dumps(pid)})\n@exception({json.dumps(exception_id)})\n{extra}"


def grant_policies(exception_id: str, spec: ExceptionSpec) -> list[tuple[str, bool]]:
    """(Cedar text, is a tier policy) for each policy a runtime grant compiles to."""
    g, until = spec.grant, f"context.now < datetime({cedar_time(spec.expires_at)})"
    prov = json.dumps(spec.provider)
    out: list[tuple[str, bool]] = []
    if isinstance(g, EgressGrant):
        for host in g.hosts:
            text, issue = allowlist.compile_entry(spec.provider, host, "exception.yaml")
            if text is None:
                raise ValueError(issue.message if issue else f"bad host {host!r}")
            first, rest = text.split("\n", 1)
            assert first.startswith("@id(") and rest.rstrip().endswith("};")
            body = rest.rstrip()[:-2].rstrip().removesuffix("}")
            out.append((_head(f"exception:{exception_id}:egress:{host.strip()}", exception_id)
                        + f"{body} && {until} }};\n", False))
    elif isinstance(g, ProviderCallGrant):
        for tool in g.tools:
            target = json.dumps(tool.split(".", 1)[0])
            out.append((_head(f"exception:{exception_id}:call:{tool}", exception_id)
                        + f"permit (\n  principal == Ops::Provider::{prov},\n"
                        f"  action == Ops::Action::{json.dumps(tool)},\n  resource == Ops::Provider::{target}\n)\n"
                        f"when {{ {until} }};\n", False))
    elif isinstance(g, RateLimitGrant):
        action = ("action in [" + ", ".join(f"Ops::Action::{json.dumps(t)}" for t in g.tools) + "]"
                  if g.tools else 'action in Ops::Action::"call"')
        tier = f"@limit({json.dumps(g.limit)})\n@bucket({json.dumps(g.bucket)})\n"
        for user in g.users or [None]:
            principal = "principal" if user is None else f"principal == Ops::User::{json.dumps(user)}"
            pid = f"exception:{exception_id}:rate" + (f":{user}" if user else "")
            out.append((_head(pid, exception_id, tier)
                        + f"permit (\n  {principal},\n  {action},\n  resource == Ops::Provider::{prov}\n)\n"
                        f"when {{ {until} }};\n", True))
    return out


def carve_out(spec: ExceptionSpec) -> list[str]:
    """The requests a rule-7 grant lets through the rule's forbids, as Cedar conditions."""
    if not isinstance(spec.grant, ProviderCallGrant):
        return []
    until = f"context.now < datetime({cedar_time(spec.expires_at)})"
    return [f"(principal == Ops::Provider::{json.dumps(spec.provider)} && action == Ops::Action::{json.dumps(t)} "
            f"&& resource == Ops::Provider::{json.dumps(t.split('.', 1)[0])} && {until})" for t in spec.grant.tools]


def apply_carve_outs(text: str, carve_outs: dict[str, list[str]]) -> str:
    """`text` with `unless { <carve-outs> }` added to each forbid annotated `@rule("<rule>")` that has
    carve-outs; unchanged (byte for byte) when there is nothing to add."""
    if not any(carve_outs.values()) or "rule" not in text:
        return text
    try:
        doc = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError:
        return text  # the bundle loader reports the parse error
    changed = False
    for est in doc["staticPolicies"].values():
        rule = (est.get("annotations") or {}).get("rule")
        conds = carve_outs.get(rule or "", [])
        if est["effect"] == "forbid" and conds:
            probe = json.loads(cedarpy.policies_to_json_str(
                f"permit (principal, action, resource) when {{ {' || '.join(conds)} }};"))
            est["conditions"].append({"kind": "unless",
                                      "body": probe["staticPolicies"]["policy0"]["conditions"][0]["body"]})
            changed = True
    return cedarpy.policies_from_json_str(json.dumps(doc)) if changed else text


def compile_exceptions(root: str | Path, schema: cedarpy.Schema, now: datetime | None = None,
                       trust: Trust = REPOSITORY_ONLY) -> Compiled:
    """Compile every exception under `root` that is in force: filed by a verified identity, approved
    by another with a signature by a key the approvers.pub chain trusts, not revoked (by file or by
    the audit trail in `trust`), and (when `now` is given) not yet expired. An approved exception that
    fails any check, or whose policies do not validate against the schema, is refused: listed, never
    loaded. When the gateway could not read the audit trail or its pinned root, nothing is loaded."""
    out = Compiled(policies=[], carve_outs={}, active=[], refused={}, expires_at={})
    if trust.unavailable and _any_approval(Path(root)):  # nothing approved: nothing to hold back
        out.unavailable = f"no exception is in force: {trust.unavailable}"
        return out
    chain = read_chain(root, trust.root)
    out.approvers = chain.summary()
    for r in scan(root, trust, chain):
        if r.approval is None or r.revoked:
            continue  # pending or revoked: nothing to load, nothing wrong
        if r.problems or r.spec is None:
            out.refused[r.id] = "; ".join(r.problems)
            continue
        if now is not None and not r.active(now):
            continue  # expired
        _add(out, r, schema)
    return out


def _any_approval(root: Path) -> bool:
    return root.is_dir() and any((d / APPROVAL).exists() for d in root.iterdir() if d.name.startswith(PREFIX))


def _add(out: Compiled, r: Record, schema: cedarpy.Schema) -> None:
    assert r.spec is not None
    try:
        policies = grant_policies(r.id, r.spec)
    except ValueError as e:
        out.refused[r.id] = str(e)
        return
    cuts = carve_out(r.spec)
    for text in [t for t, _ in policies] + [f"forbid (principal, action in Ops::Action::\"call\", resource) "
                                            f"unless {{ {c} }};" for c in cuts]:
        result = cedarpy.validate_policies(text, schema)
        if not result.validation_passed:
            out.refused[r.id] = "its grant does not validate against the schema: " + "; ".join(
                e.error for e in result.errors)
            return
    out.policies += [(f"exceptions/{r.id}", text, tier) for text, tier in policies]
    for c in cuts:
        out.carve_outs.setdefault(str(r.spec.rule), []).append(c)
    out.active.append(r.id)
    out.expires_at[r.id] = r.spec.expires_at


__all__ = ["Compiled", "apply_carve_outs", "carve_out", "cedar_time", "compile_exceptions", "grant_policies"]
