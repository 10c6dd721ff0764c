"""A deviation exception's spec bundle: `exceptions/mcp-exception-{provider}-{rule}[-suffix]/`.

    exception.yaml    what is waived, for whom, why, until when (ExceptionSpec below)
    README.md         for humans: why it is needed (technical, not preference), compensating controls
    filing.json       written on filing: a signed receipt binding exception.yaml to the verified filer
    approval.json     written on approval: a signed record over the content of everything else
    revocation.json   written on revocation (the audit trail keeps it in force if the file goes)

Invariants kept here (and so wherever a spec is read: filing, approval, loading, lint):
- Rules 1-4 (gateway, RBAC, events, vault) are never waivable, whatever else the file says.
- Each grant kind belongs to exactly one rule; the folder name repeats the provider and rule.
- An expiry is at most 90 days after the request (and, checked on approval, after the approval).
Pure parsing and checking; the only I/O is reading the bundle's files.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import yaml

from engine import allowlist
from engine.bundle import parse_limit

MAX_LIFETIME = timedelta(days=90)
NEVER_WAIVABLE = {1: "single gateway", 2: "RBAC", 3: "event sourcing", 4: "vault secrets"}
RULE_NAMES = {5: "hostname allowlist", 6: "health checks", 7: "provider independence", 8: "rate limiting",
              9: "schema versioning", 10: "provider SDK", **NEVER_WAIVABLE}
FOLDER = re.compile(r"^mcp-exception-(?P<provider>[a-z][a-z0-9_]*)-(?P<rule>\d+)(?:-(?P<suffix>[a-z0-9][a-z0-9-]*))?$")
PROVIDER = re.compile(r"^[a-z][a-z0-9_]*$")
TOOL = re.compile(r"^[a-z][a-z0-9_]*\.[A-Za-z0-9_.-]+$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SPEC_FILE, README, FILING = "exception.yaml", "README.md", "filing.json"
APPROVAL, REVOCATION = "approval.json", "revocation.json"
UNSIGNED = frozenset({APPROVAL, REVOCATION})  # everything else in the folder is signed content


class _G(msgspec.Struct, tag_field="kind", forbid_unknown_fields=True, frozen=True):
    pass


class EgressGrant(_G, tag="egress"):
    """Rule 5 (runtime): extra hosts for the provider, in the allowlist's entry syntax."""

    hosts: list[str]


class HealthCheckGrant(_G, tag="health_check"):
    """Rule 6 (build time): the provider may lack its `{provider}.health` tool."""


class ProviderCallGrant(_G, tag="provider_call"):
    """Rule 7 (runtime): the provider may call these tools of other providers (action ids)."""

    tools: list[str]


class RateLimitGrant(_G, tag="rate_limit"):
    """Rule 8 (runtime): a higher limit for one bucket at this provider, optionally only for
    some users (ids) and some tools (action ids)."""

    bucket: str
    limit: str
    users: list[str] = []
    tools: list[str] = []


class SchemaChangeGrant(_G, tag="breaking_schema_change"):
    """Rule 9 (build time): these tools may change their input schema incompatibly."""

    tools: list[str]


class SdkGrant(_G, tag="sdk"):
    """Rule 10 (build time): the provider may be registered without extending ProviderBase."""


Grant = EgressGrant | HealthCheckGrant | ProviderCallGrant | RateLimitGrant | SchemaChangeGrant | SdkGrant
RULE_OF_GRANT: dict[type, int] = {EgressGrant: 5, HealthCheckGrant: 6, ProviderCallGrant: 7, RateLimitGrant: 8,
                                  SchemaChangeGrant: 9, SdkGrant: 10}
KIND_OF_RULE = {rule: cls.__struct_config__.tag for cls, rule in RULE_OF_GRANT.items()}
RUNTIME_RULES = frozenset({5, 7, 8})
BUILD_RULES = frozenset({6, 9, 10})


class ExceptionSpec(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    provider: str
    rule: int
    grant: Grant
    requested_by: str  # the requester's user id (a token's `sub`); proven by filing.json, not by this field
    justification: str
    compensating_controls: list[str]
    requested_at: datetime
    expires_at: datetime


class SpecError(Exception):
    """A spec that cannot be accepted; `problems` lists every reason, each a full sentence."""

    def __init__(self, exception_id: str, problems: list[str]) -> None:
        self.exception_id = exception_id
        self.problems = tuple(problems)
        super().__init__(f"{exception_id}: " + "; ".join(problems))


class _NoTimestamps(yaml.SafeLoader):
    """YAML without implicit timestamps: a date stays text, so a missing timezone is caught."""


_NoTimestamps.yaml_implicit_resolvers = {
    k: [r for r in v if r[0] != "tag:yaml.org,2002:timestamp"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def never_waivable(rule: object) -> str | None:
    """The refusal for rules 1-4, or None."""
    if isinstance(rule, int) and not isinstance(rule, bool) and rule in NEVER_WAIVABLE:
        return (f"rule {rule} ({NEVER_WAIVABLE[rule]}) can never be waived: the constitution allows no exceptions "
                "to rules 1-4 (gateway, RBAC, events, vault)")
    return None


def parse_spec(exception_id: str, text: str | bytes) -> ExceptionSpec:
    """Parse and check one exception.yaml. Raises SpecError listing every problem."""
    try:
        raw = yaml.load(text, Loader=_NoTimestamps)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as e:
        raise SpecError(exception_id, [f"{SPEC_FILE} is not valid YAML: {e}"]) from None
    if not isinstance(raw, dict):
        raise SpecError(exception_id, [f"{SPEC_FILE} must be a mapping"])
    rule = raw.get("rule")
    if isinstance(rule, str) and rule.isdigit():
        rule = int(rule)
    refusal = never_waivable(rule)
    if refusal:  # before anything else: no grant, signature or date makes these acceptable
        raise SpecError(exception_id, [refusal])
    try:
        spec = msgspec.convert(raw, ExceptionSpec)
    except msgspec.ValidationError as e:
        raise SpecError(exception_id, [f"{SPEC_FILE}: {e}"]) from None
    problems = check_spec(exception_id, spec)
    if problems:
        raise SpecError(exception_id, problems)
    return spec


def check_spec(exception_id: str, spec: ExceptionSpec) -> list[str]:
    problems: list[str] = []
    refusal = never_waivable(spec.rule)
    if refusal:
        return [refusal]
    m = FOLDER.match(exception_id)
    if not m:
        problems.append(f"folder name {exception_id!r} must be mcp-exception-{{provider}}-{{rule}}[-suffix]")
    elif (m["provider"], int(m["rule"])) != (spec.provider, spec.rule):
        problems.append(f"folder name says provider {m['provider']!r} rule {m['rule']}, exception.yaml says "
                        f"provider {spec.provider!r} rule {spec.rule}")
    if not PROVIDER.match(spec.provider):
        problems.append(f"provider {spec.provider!r} is not a provider name")
    if spec.rule not in RULE_NAMES:
        problems.append(f"rule {spec.rule} is not one of the constitution's rules 1-10")
    elif RULE_OF_GRANT[type(spec.grant)] != spec.rule:
        problems.append(f"a {type(spec.grant).__struct_config__.tag!r} grant waives rule "
                        f"{RULE_OF_GRANT[type(spec.grant)]}, not rule {spec.rule} "
                        f"(rule {spec.rule} takes kind {KIND_OF_RULE.get(spec.rule)!r})")
    if not UUID.match(spec.requested_by):
        problems.append("requested_by must be the requester's user id (a lowercase UUID, the token's sub)")
    if not spec.justification.strip():
        problems.append("justification is empty: say why the exception is technically needed")
    if not spec.compensating_controls or not all(c.strip() for c in spec.compensating_controls):
        problems.append("compensating_controls must list at least one control, none empty")
    for name in ("requested_at", "expires_at"):
        if getattr(spec, name).utcoffset() is None:
            problems.append(f"{name} must carry a timezone, e.g. 2026-12-01T00:00:00Z")
    if not problems:
        if spec.expires_at <= spec.requested_at:
            problems.append("expires_at must be after requested_at")
        elif spec.expires_at - spec.requested_at > MAX_LIFETIME:
            problems.append(f"expires_at is {_days(spec.expires_at - spec.requested_at)} after requested_at; "
                            "the maximum is 90 days")
    problems += _check_grant(spec)
    return problems


def _days(d: timedelta) -> str:
    return f"{d.total_seconds() / 86400:.2f} days".replace(".00 days", " days")


def _check_grant(spec: ExceptionSpec) -> list[str]:
    g, problems = spec.grant, []
    if isinstance(g, EgressGrant):
        if not g.hosts:
            problems.append("an egress grant needs at least one host")
        for host in g.hosts:
            _, issue = allowlist.compile_entry(spec.provider, host, SPEC_FILE)  # the allowlist's own parser
            if issue:
                problems.append(issue.message)
    elif isinstance(g, ProviderCallGrant | SchemaChangeGrant):
        if not g.tools:
            problems.append(f"a {g.__struct_config__.tag} grant needs at least one tool")
        for tool in g.tools:
            if not TOOL.match(tool):
                problems.append(f"{tool!r} is not a tool name (<provider>.<tool>)")
            elif isinstance(g, ProviderCallGrant) and tool.split(".", 1)[0] == spec.provider:
                problems.append(f"{tool!r} is the provider's own tool; rule 7 is about calling other providers")
            elif isinstance(g, SchemaChangeGrant) and tool.split(".", 1)[0] != spec.provider:
                problems.append(f"{tool!r} is not a tool of {spec.provider}")
    elif isinstance(g, RateLimitGrant):
        if not g.bucket.strip():
            problems.append("a rate_limit grant needs the bucket it raises")
        if parse_limit(g.limit) is None:
            problems.append(f"limit {g.limit!r} is not N/period (period s, m, h or d), e.g. 500/hour")
        problems += [f"user {u!r} is not a user id (lowercase UUID)" for u in g.users if not UUID.match(u)]
        problems += [f"{t!r} is not a tool of {spec.provider} (<provider>.<tool>)" for t in g.tools
                     if not TOOL.match(t) or t.split(".", 1)[0] != spec.provider]
    return problems


def content_digest(folder: Path) -> str:
    """sha256 over every file of the bundle except the approval and revocation records: the
    content an approval signs. Any edit, addition or removal changes it."""
    digest = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = f.relative_to(folder).as_posix()
        if rel in UNSIGNED:
            continue
        digest.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()


def spec_digest(folder: Path) -> str:
    """sha256 of exception.yaml: what a filing receipt binds to its filer."""
    return hashlib.sha256((folder / SPEC_FILE).read_bytes()).hexdigest()


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def spec_to_yaml(spec: ExceptionSpec) -> str:
    data: dict[str, Any] = msgspec.to_builtins(spec)
    data["requested_at"], data["expires_at"] = iso(spec.requested_at), iso(spec.expires_at)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


__all__ = ["APPROVAL", "BUILD_RULES", "FILING", "FOLDER", "KIND_OF_RULE", "MAX_LIFETIME", "NEVER_WAIVABLE", "README",
           "REVOCATION", "RULE_NAMES", "RULE_OF_GRANT", "RUNTIME_RULES", "SPEC_FILE", "EgressGrant",
           "ExceptionSpec", "Grant", "HealthCheckGrant", "ProviderCallGrant", "RateLimitGrant", "SchemaChangeGrant",
           "SdkGrant", "SpecError", "check_spec", "content_digest", "iso", "never_waivable", "parse_spec",
           "spec_digest", "spec_to_yaml"]
