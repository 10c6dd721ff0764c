"""A policy bundle: everything one decision needs, loaded from a directory and checked whole.

Layout (see policies/README.md):
    schema.cedarschema        Cedar schema (namespace Ops) with the `// @tool-actions` marker
    tools.json                tool catalogue -> one action per tool (engine.catalogue)
    entities.json             static entities in Cedar's JSON format (roles and their hierarchy)
    provider-allowlist.yaml   rule 5 hostname allowlist -> egress policies (engine.allowlist)
    *.cedar                   authorization policies
    tiers/*.cedar             rate-tier policies (permits carrying @limit and @bucket)
    upstreams/<name>.yaml     upstream MCP servers and their pinned tools (engine.upstreams)

A bundle with any problem is refused as a whole with every problem listed (BundleError);
its revision is the sha256 of every file it was built from. The only I/O is reading files.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import cedarpy
import msgspec

from engine import allowlist, catalogue, upstreams
from engine.guards import guard_of
from engine.index import Key, PolicySets, Slicer, policy_set_json, request_keys, scope_keys, uid_key
from engine.memo import reads_of
from engine.model import BundleError, Issue

POLICY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/*@+-]{0,199}$")
LIMIT = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)s?\s*$")
PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600,
           "d": 86400, "day": 86400}
MODES = ("enforce", "dryrun")
ROLE_TYPE = "Ops::Role"


class PolicyRecord(msgspec.Struct, frozen=True):
    id: str
    file: str
    effect: str
    mode: str
    est: str  # the policy in Cedar's JSON form, compact
    annotations: dict[str, str]
    scope: tuple[tuple[Key, ...], tuple[Key, ...], tuple[Key, ...]]  # index keys: principal, action, resource

    @property
    def fragment(self) -> str:
        return f"{json.dumps(self.id)}:{self.est}"

    @property
    def marker_fragment(self) -> str:
        """The policy as a permit. A dryrun policy is evaluated in this form alongside the enforced
        ones: whether its marker is among an Allow's reasons says whether it would be satisfied,
        and as a permit it cannot deny anything (engine.split)."""
        marker = json.dumps({**json.loads(self.est), "effect": "permit"}, separators=(",", ":"))
        return f"{json.dumps(self.id)}:{marker}"


def parse_limit(text: str) -> tuple[int, int] | None:
    """`"100/hour"` -> (100, 3600); `"30/1m"` -> (30, 60)."""
    m = LIMIT.match(text)
    if not m or int(m[1]) < 1:
        return None
    return int(m[1]), int(m[2] or 1) * PERIODS[m[3]]


class Bundle:
    """A loaded, validated, indexed bundle. Immutable once built; swapped whole on reload."""

    def __init__(self, *, root: Path, revision: str, schema_text: str, schema: cedarpy.Schema,
                 catalogue: catalogue.Catalogue, policies: list[PolicyRecord], tiers: list[PolicyRecord],
                 static_entities: list[dict[str, Any]], args_types: dict[str, Any],
                 sets: PolicySets | None = None, exceptions: Any = None,
                 upstreams: tuple[upstreams.Upstream, ...] = ()) -> None:
        self.root = root
        self.upstreams = upstreams  # declared upstream MCP servers with their pins (engine.upstreams)
        self.exceptions = exceptions  # engine.exceptions.Compiled, or None without an exceptions directory
        self.revision = revision
        self.schema_text = schema_text
        self.schema = schema
        self.catalogue = catalogue
        self.policies = policies
        self.tiers = tiers
        self.args_types = args_types
        self.static_entities = static_entities
        self.by_id = {p.id: p for p in (*policies, *tiers)}
        self.sets = sets if sets is not None else PolicySets()
        # One evaluation answers "allowed?", "which tiers?" and "what would the dryrun policies
        # do?": tier policies and dryrun markers are permits, so Cedar's Allow reasons list every
        # satisfied one, while only enforced forbids can deny (engine.split).
        dryrun = [p for p in policies if p.mode == "dryrun"]
        self.tier_ids = frozenset(t.id for t in tiers)
        # Rate-limit waivers (rule 8 exceptions): tiers that replace, never add (engine.waive_tiers).
        self.waiver_tier_ids = frozenset(t.id for t in tiers if "exception" in t.annotations)
        self.tier_cache: dict[tuple[str, str], Any] = {}  # (policy id, action) -> engine Tier
        self.dryrun_ids = frozenset(p.id for p in dryrun)
        enforced = [p for p in policies if p.mode == "enforce"]
        ordered = (*enforced, *tiers, *dryrun)
        ests = [json.loads(r.est) for r in ordered]
        self.enforce = Slicer([*(r.fragment for r in (*enforced, *tiers)), *(r.marker_fragment for r in dryrun)],
                              [r.scope for r in ordered], self.sets, [guard_of(e) for e in ests],
                              [reads_of(e) for e in ests])
        self.static_parents = {uid_key(e["uid"]): [uid_key(p) for p in e["parents"]] for e in static_entities}
        self.static_entities_json = json.dumps(static_entities)
        self.static_entities_handle = cedarpy.Entities.from_json_str(self.static_entities_json, schema)
        self.entity_epoch = 0  # set by Engine.reload: unchanged while schema and static entities are
        self.action_ancestors: dict[str, frozenset[Key]] = {}
        groups = sorted(k[1] for k in self.enforce.action_keys if k and k[0] == "in")
        self._group_probe = cedarpy.PolicySet.from_json_str(json.dumps({"staticPolicies": {
            k: {"effect": "permit", "principal": {"op": "All"}, "resource": {"op": "All"}, "conditions": [],
                "action": {"op": "in", "entity": _uid_of_key(k)}} for k in groups
        }, "templates": {}, "templateLinks": []}))
        self._schema_entities = cedarpy.Entities.from_json_str("[]", schema)
        for tool in catalogue.tools:
            self.ancestors_of_action(tool.name)

    def reference_sets(self) -> dict[str, cedarpy.PolicySet]:
        """Unsliced sets built straight from the records (for differential tests and benchmarks):
        enforced authorization policies, those plus the dryrun ones, and the tier policies."""
        def build(records: Iterable[PolicyRecord]) -> cedarpy.PolicySet:
            return cedarpy.PolicySet.from_json_str(policy_set_json(r.fragment for r in records))
        return {"enforce": build(p for p in self.policies if p.mode == "enforce"),
                "everything": build(self.policies), "tiers": build(self.tiers)}

    def ancestors_of_action(self, action: str) -> frozenset[Key]:
        """The index keys of an action: itself, and every action group it is in as the schema
        defines them (engine.index.request_keys).

        Asked of Cedar itself (one probe per action, cached) so the index can never disagree
        with the hierarchy Cedar evaluates.
        """
        found = self.action_ancestors.get(action)
        if found is None:
            me = {"type": "Ops::Action", "id": action}
            res = cedarpy.is_authorized({"principal": me, "action": me, "resource": me, "context": {}},
                                        self._group_probe, self._schema_entities)
            found = request_keys(uid_key(me), "Ops::Action", res.diagnostics.reasons)
            self.action_ancestors[action] = found
        return found

    def effect_of(self, policy_id: str) -> str | None:
        record = self.by_id.get(policy_id)
        return record.effect if record else None

    def status(self, now: datetime | None = None) -> dict[str, Any]:
        return {"revision": self.revision, "root": str(self.root), "policies": len(self.policies),
                "dryrun_policies": len(self.dryrun_ids), "tier_policies": len(self.tiers),
                "tools": len(self.catalogue.tools),
                "exceptions": self.exceptions.status(now) if self.exceptions is not None and now is not None
                else {"active": [], "expired": [], "refused": {}, "unavailable": None, "approvers": {}}}


def _uid_of_key(key: str) -> dict[str, str]:
    head, _, rest = key.partition('::"')
    return {"type": head, "id": rest[:-1]}


def bundle_files(root: Path) -> list[Path]:
    """Every file whose content defines the bundle (and so its revision)."""
    files = [root / "schema.cedarschema", root / "tools.json", root / "entities.json",
             root / "provider-allowlist.yaml"]
    files += sorted(root.glob("*.cedar")) + sorted((root / "tiers").glob("*.cedar"))
    files += upstreams.upstream_files(root)
    return [f for f in files if f.is_file()]


def _read(root: Path, name: str, issues: list[Issue], required: bool = True) -> bytes:
    path = root / name
    if not path.is_file():
        if required:
            issues.append(Issue(name, "missing (required in every bundle)"))
        return b""
    return path.read_bytes()


def _parse_policies(text: str, file: str, tier: bool, seen: dict[str, str],
                    issues: list[Issue]) -> tuple[list[PolicyRecord], dict[str, str]]:
    """-> (records, positional id -> @id) for one file; problems go to `issues`."""
    try:
        doc = json.loads(cedarpy.policies_to_json_str(text))
    except ValueError as e:
        issues.append(Issue(file, f"does not parse: {e}"))
        return [], {}
    if doc.get("templates"):
        issues.append(Issue(file, "templates (?principal/?resource slots) are not supported"))
    records, positional = [], {}
    for pos, est in doc["staticPolicies"].items():
        ann = est.get("annotations") or {}
        pid = ann.get("id")
        if not pid:
            issues.append(Issue(file, "policy has no @id annotation (every policy needs a unique @id)", pos))
            continue
        if not POLICY_ID.match(pid):
            issues.append(Issue(file, "@id must be 1-200 of [A-Za-z0-9._:/*@+-], starting alphanumeric", pid))
            continue
        if pid in seen:
            issues.append(Issue(file, f"duplicate @id (also in {seen[pid]})", pid))
            continue
        seen[pid] = file
        positional[pos] = pid
        mode = ann.get("mode", "enforce")
        if mode not in MODES:
            issues.append(Issue(file, f"@mode must be one of {MODES}, got {mode!r}", pid))
        if tier:
            if est["effect"] != "permit":
                issues.append(Issue(file, "a tier policy must be a permit (it selects a limit, it grants nothing)",
                                    pid))
            if "limit" not in ann or parse_limit(ann["limit"]) is None:
                issues.append(Issue(file, '@limit("N/period") is required, period one of s, m, h, d', pid))
            if not ann.get("bucket"):
                issues.append(Issue(file, '@bucket("name") is required', pid))
        elif "limit" in ann or "bucket" in ann:
            issues.append(Issue(file, "@limit/@bucket only mean something in tiers/*.cedar", pid))
        try:
            scope = (tuple(scope_keys(est["principal"])), tuple(scope_keys(est["action"])),
                     tuple(scope_keys(est["resource"])))
        except ValueError as e:
            issues.append(Issue(file, str(e), pid))
            continue
        records.append(PolicyRecord(pid, file, est["effect"], mode, json.dumps(est, separators=(",", ":")),
                                    {k: str(v) for k, v in ann.items()}, scope))
    return records, positional


def _validate(text: str, file: str, schema: cedarpy.Schema, positional: dict[str, str],
              issues: list[Issue]) -> None:
    result = cedarpy.validate_policies(text, schema, release_gil=True)
    for err in result.errors:
        pid = positional.get(err.policy_id, err.policy_id)
        message = err.error.replace(f"`{err.policy_id}`", f"`{pid}`")
        issues.append(Issue(file, message, pid))


def load_bundle(root: str | Path, *, extra_policies: Iterable[tuple[str, str]] = (),
                sets: PolicySets | None = None, exceptions: str | Path | None = None,
                now: datetime | None = None, exception_trust: Any = None) -> Bundle:
    """Load, validate and index the bundle at `root`. Raises BundleError listing every problem.

    `extra_policies` are (file label, Cedar text) pairs compiled in alongside the files. `sets` is
    the compiled-PolicySet cache to share with the bundle this one replaces. `exceptions` is the
    deviation exceptions directory: the runtime grants of those approved, verified and (at `now`)
    unexpired are compiled in (engine.exceptions); one that fails a check is refused on its own
    and listed in the status, it never refuses the bundle. `exception_trust` (engine.exceptions.Trust)
    is what the gateway vouches for beyond the files: revocations and the pinned approvers' root.
    """
    root = Path(root)
    issues: list[Issue] = []
    if not root.is_dir():
        raise BundleError([Issue(str(root), "not a directory")])

    digest = hashlib.sha256()
    for f in bundle_files(root):
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    extra = list(extra_policies)
    for label, text in extra:
        digest.update(label.encode() + b"\0" + text.encode() + b"\0")
    revision = digest.hexdigest()[:16]

    cat, cat_issues = catalogue.parse_catalogue(_read(root, "tools.json", issues), "tools.json")
    issues += cat_issues
    declared, upstream_tools = upstreams.load_upstreams(root, issues)
    if upstream_tools:
        taken = {t.name for t in cat.tools}
        issues += [Issue("upstreams", f"{t.name} is also in tools.json") for t in upstream_tools
                   if t.name in taken]
        cat = catalogue.Catalogue(tools=(*cat.tools, *upstream_tools))
    types = catalogue.args_types(cat)
    schema_text, splice_issues = catalogue.splice_schema(
        _read(root, "schema.cedarschema", issues).decode(), catalogue.render_actions(cat, types), "schema.cedarschema")
    issues += splice_issues
    try:
        schema = cedarpy.Schema.from_str(schema_text)
    except ValueError as e:
        raise BundleError([*issues, Issue("schema.cedarschema", f"invalid schema: {e}")]) from None

    waivers = _exceptions(exceptions, schema, now, exception_trust)
    allow_text, allow_providers, allow_issues = allowlist.compile_allowlist(
        _read(root, "provider-allowlist.yaml", issues), "provider-allowlist.yaml")
    issues += allow_issues

    sources: list[tuple[str, str, bool]] = [("provider-allowlist.yaml", allow_text, False)]
    sources += [(f.name, f.read_text(), False) for f in sorted(root.glob("*.cedar"))]
    sources += [(f"tiers/{f.name}", f.read_text(), True) for f in sorted((root / "tiers").glob("*.cedar"))]
    sources += [(label, text, False) for label, text in extra]
    if waivers is not None:
        from engine.exceptions import apply_carve_outs

        sources = [(f, apply_carve_outs(t, waivers.carve_outs), tier) for f, t, tier in sources]
        sources += waivers.policies
        for label, text, _ in waivers.policies:
            digest.update(label.encode() + b"\0" + text.encode() + b"\0")
        revision = digest.hexdigest()[:16]

    seen: dict[str, str] = {}
    policies: list[PolicyRecord] = []
    tiers: list[PolicyRecord] = []
    for file, text, is_tier in sources:
        records, positional = _parse_policies(text, file, is_tier, seen, issues)
        if records:
            _validate(text, file, schema, positional, issues)
        (tiers if is_tier else policies).extend(records)

    static = _static_entities(root, cat, allow_providers, schema, issues)
    if issues:
        raise BundleError(issues)
    return Bundle(root=root, revision=revision, schema_text=schema_text, schema=schema, catalogue=cat,
                  policies=policies, tiers=tiers, static_entities=static, args_types=types, sets=sets,
                  exceptions=waivers, upstreams=tuple(declared))


def _exceptions(directory: str | Path | None, schema: cedarpy.Schema, now: datetime | None, trust: Any) -> Any:
    if directory is None or not Path(directory).is_dir():
        return None
    from engine.exceptions import REPOSITORY_ONLY, compile_exceptions  # engine.exceptions imports this module

    return compile_exceptions(directory, schema, now, trust if trust is not None else REPOSITORY_ONLY)


def _static_entities(root: Path, cat: catalogue.Catalogue, allow_providers: list[str],
                     schema: cedarpy.Schema, issues: list[Issue]) -> list[dict[str, Any]]:
    raw = _read(root, "entities.json", issues, required=False) or b"[]"
    try:
        ents = json.loads(raw)
        assert isinstance(ents, list)
    except (ValueError, AssertionError):
        issues.append(Issue("entities.json", "expected a JSON array of Cedar entities"))
        return []
    known = {uid_key(e["uid"]) for e in ents if isinstance(e, dict) and "uid" in e}
    for p in sorted({*cat.providers, *allow_providers}):
        uid = {"type": "Ops::Provider", "id": p}
        if uid_key(uid) not in known:
            ents.append({"uid": uid, "attrs": {}, "parents": []})
    for e in ents:
        e.setdefault("attrs", {})
        e.setdefault("parents", [])
    try:
        cedarpy.Entities.from_json_str(json.dumps(ents), schema)
    except ValueError as e:
        issues.append(Issue("entities.json", f"entities do not conform to the schema: {e}"))
    return ents


__all__ = ["Bundle", "PolicyRecord", "bundle_files", "load_bundle", "parse_limit"]
