"""The constitution's hostname allowlist (rule 5) as Cedar `egress` policies.

`policies/provider-allowlist.yaml` maps a provider to the hosts it may reach:

    sentry:
      - sentry.io                 # exactly this host, https on 443
      - "*.ingest.sentry.io"      # any host strictly below ingest.sentry.io
      - http://agent.lan:19999    # another scheme or port must be spelled out

Each entry becomes one permit on `Ops::Action::"egress"` with id `egress:<provider>:<entry>`.
Wildcards work through the entity hierarchy, not string matching: a host entity's parents
are its proper parent domains (`o1.ingest.sentry.io` is in `Domain::"ingest.sentry.io"`,
`Domain::"sentry.io"` and `Domain::"io"`), so `*.ingest.sentry.io` is `resource in
Ops::Domain::"ingest.sentry.io"` and never matches `ingest.sentry.io` itself or
`evilingest.sentry.io`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import idna
import yaml

from engine.model import Issue

LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
ENTRY = re.compile(r"^(?:(?P<scheme>https?)://)?(?P<host>[^:/]+|\[[0-9a-f:.]+\])(?::(?P<port>\d{1,5}))?/?$")
DEFAULT_PORTS = {"https": 443, "http": 80}


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def domain_parents(host: str) -> list[str]:
    """The proper parent domains of a canonical host name; none for an IP address."""
    if is_ip(host):
        return []
    labels = host.split(".")
    return [".".join(labels[i:]) for i in range(1, len(labels))]


def host_entities(host: str) -> list[dict[str, Any]]:
    """Cedar entities for a host and its domain chain (each domain in its own parent)."""
    parents = domain_parents(host)
    ents = [{"uid": {"type": "Ops::Host", "id": host}, "attrs": {},
             "parents": [{"type": "Ops::Domain", "id": p} for p in parents]}]
    for i, d in enumerate(parents):
        ents.append({"uid": {"type": "Ops::Domain", "id": d}, "attrs": {},
                     "parents": [{"type": "Ops::Domain", "id": p} for p in parents[i + 1:]]})
    return ents


def canonical_name(name: str) -> str | None:
    """Lowercase, IDNA-encoded, no trailing dot; None if it is not a valid DNS name.

    IDNA 2008 with UTS 46 mapping, non-transitional, as httpx encodes the host it connects to.
    Python's own "idna" codec is IDNA 2003, which maps "straße.de" to "strasse.de" while the
    client goes to "xn--strae-oqa.de": an entry written that way would never match its host."""
    name = name.strip().rstrip(".")
    try:
        name = idna.encode(name, uts46=True, transitional=False).decode("ascii") if not name.isascii() \
            else name.lower()
    except idna.IDNAError:
        return None
    labels = name.split(".")
    if len(labels) < 2 or not all(LABEL.match(label) for label in labels):
        return None
    return name


def compile_entry(provider: str, entry: Any, file: str) -> tuple[str | None, Issue | None]:
    """One allowlist entry -> (its egress permit as Cedar text, None) or (None, the issue).
    Deviation exceptions granting extra hosts use it too, so both accept exactly the same syntax."""
    if not isinstance(entry, str):
        return None, Issue(file, f"{provider}: entry {entry!r} is not a string")
    m = ENTRY.match(entry.strip())
    if not m:
        return None, Issue(file, f"{provider}: {entry!r} is not a host, *.domain, or scheme://host:port")
    scheme = m["scheme"] or "https"
    port = int(m["port"]) if m["port"] else DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        return None, Issue(file, f"{provider}: {entry!r} has an invalid port")
    host = m["host"]
    wildcard = host.startswith("*.")
    if wildcard:
        host = host[2:]
    if "*" in host:
        return None, Issue(file, f"{provider}: {entry!r}: '*' is only allowed as the whole leftmost label")
    if is_ip(host):
        if wildcard:
            return None, Issue(file, f"{provider}: {entry!r}: an IP address cannot have a wildcard")
        canon = str(ipaddress.ip_address(host.strip("[]")))
    else:
        if wildcard and "." not in host.strip("."):
            return None, Issue(file, f"{provider}: {entry!r} is too broad (a wildcard needs a registered domain)")
        canon = canonical_name(host)
        if canon is None:
            return None, Issue(file, f"{provider}: {entry!r} is not a valid host name")
    target = json.dumps(canon)
    scope = f"resource in Ops::Domain::{target}" if wildcard else f"resource == Ops::Host::{target}"
    pid = f"egress:{provider}:{entry.strip()}"
    return (
        f"@id({json.dumps(pid)})\n"
        f"permit (\n  principal == Ops::Provider::{json.dumps(provider)},\n"
        f"  action == Ops::Action::\"egress\",\n  {scope}\n)\n"
        f"when {{ context.scheme == {json.dumps(scheme)} && context.port == {port} }};\n"
    ), None


def compile_allowlist(raw: bytes, file: str) -> tuple[str, list[str], list[Issue]]:
    """-> (policy text, providers named, issues)."""
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as e:
        return "", [], [Issue(file, f"invalid YAML: {e}")]
    if not isinstance(data, dict):
        return "", [], [Issue(file, "expected a mapping of provider -> list of hosts")]
    texts, issues = [], []
    for provider, entries in data.items():
        if not isinstance(entries, list):
            issues.append(Issue(file, f"{provider}: expected a list of hosts"))
            continue
        for entry in entries:
            text, issue = compile_entry(str(provider), entry, file)
            if issue:
                issues.append(issue)
            else:
                texts.append(text)
    return "\n".join(texts), [str(p) for p in data], issues


__all__ = ["canonical_name", "compile_allowlist", "compile_entry", "domain_parents", "host_entities", "is_ip"]
