"""Canonical egress targets (constitution rule 5): what a URL really points at, in one spelling.

An allowlist is only as good as the parser in front of it. The classic bypasses all exploit a
gap between the string a check looks at and the host a client connects to: userinfo
(`https://api.socket.dev@evil.com`), backslashes read differently by different parsers,
percent-encoded or Unicode look-alike hosts, and IP literals written in notations a resolver
still accepts (`2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`, `[::ffff:127.0.0.1]`).

Invariants kept here:
- A URL is parsed by httpx, the very parser the provider's client sends with, so the host we
  decide on is the host it connects to; anything that parser and a browser could read
  differently (userinfo, backslash, `%` in a host) is refused rather than interpreted.
- A host is either an IP address, decided as its canonical form (dotted quad, compressed
  IPv6, an IPv4-mapped IPv6 address as its IPv4 address), or a DNS name in lowercase ASCII
  (IDNA A-labels), without its one trailing dot, made of valid LDH labels.
- A host whose last label is numeric is an IPv4 address in the legacy `inet_aton` notation
  (as glibc and browsers read it) or it is refused; it is never looked up as a name.
- Only http and https, on ports 1-65535 (the scheme's default when none is given).

No I/O, no policy: this module says what a URL means; the engine says whether it may be reached.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}
LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$")

# IPv6 ranges that carry (or translate to) an IPv4 address or are otherwise not a plain global
# unicast destination; Python's `is_global` misses some of them (6to4, site-local).
_V6_NOT_PUBLIC = tuple(ipaddress.IPv6Network(n) for n in (
    "::/96",          # IPv4-compatible (deprecated)
    "::ffff:0:0/96",  # IPv4-mapped
    "64:ff9b::/96",   # NAT64
    "64:ff9b:1::/48",  # local-use NAT64
    "2001::/32",      # Teredo
    "2002::/16",      # 6to4
    "fec0::/10",      # site-local (deprecated)
))
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")


class HostRejected(ValueError):
    """A URL that cannot be reached as written; `reason` says why (no secret in it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Target:
    """Where a request goes: the scheme, canonical host and port the egress policy decides on."""

    scheme: str
    host: str
    port: int
    is_ip: bool


def inet_aton(labels: list[str]) -> ipaddress.IPv4Address | None:
    """The legacy IPv4 notations resolvers accept: 1-4 parts, each decimal, octal (leading 0) or
    hex (0x); the last part fills the remaining bytes (`127.1`, `2130706433`, `0x7f.0.0.1`)."""
    if not 1 <= len(labels) <= 4:
        return None
    parts = []
    for p in labels:
        try:
            if p.startswith("0x"):
                parts.append(int(p[2:], 16))  # "0x" alone is ambiguous: int("") fails -> refused
            elif len(p) > 1 and p.startswith("0"):
                parts.append(int(p, 8))
            else:
                parts.append(int(p, 10))
        except ValueError:
            return None
    *head, last = parts
    if any(n > 255 for n in head) or last >= 256 ** (4 - len(head)):
        return None
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def canonical_ip(ip: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address reaches its IPv4 address, so it is decided as that."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_class(ip: IPAddress) -> str:
    """`public` for a global unicast address; otherwise what it is (loopback, private, ...).
    Anything not `public` needs an egress decision of its own to be connected to."""
    ip = canonical_ip(ip)
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "shared (CGNAT)"
    if isinstance(ip, ipaddress.IPv6Address) and any(ip in n for n in _V6_NOT_PUBLIC):
        return "special-purpose IPv6"
    if ip.is_private:
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "reserved"
    return "public"


def canonical_host(raw: str) -> tuple[str, bool]:
    """-> (canonical host, is an IP address). `raw` is the host as the HTTP client holds it
    (httpx's `raw_host`: IDNA-encoded, IPv6 without brackets). Raises HostRejected."""
    host = raw.lower()
    if not host:
        raise HostRejected("the URL has no host")
    if ":" in host:  # only an IPv6 literal has colons in a host
        if "%" in host:
            raise HostRejected("IPv6 zone ids (scoped addresses) are not reachable by providers")
        try:
            return str(canonical_ip(ipaddress.IPv6Address(host))), True
        except ValueError:
            raise HostRejected("the host is not a valid IPv6 address") from None
    if "%" in host:
        raise HostRejected("percent-encoded hosts are refused")
    if host.endswith("."):
        host = host[:-1]
    labels = host.split(".")
    if any(not label for label in labels):
        raise HostRejected("the host has an empty label")
    if NUMERIC_LABEL.match(labels[-1]):
        ip = inet_aton(labels)
        if ip is None:
            raise HostRejected("a host ending in a number must be a valid IPv4 address")
        return str(ip), True
    if len(host) > 253 or not all(LABEL.match(label) for label in labels):
        raise HostRejected("the host is not a valid DNS name (letters, digits, hyphens; IDNA for others)")
    return host, False


def target_of(url: httpx.URL) -> Target:
    """The canonical target of a URL already parsed by httpx (a request's URL). Raises HostRejected."""
    scheme = url.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise HostRejected(f"scheme {scheme or '(none)'!r} is not allowed; only http and https")
    if url.userinfo:
        raise HostRejected("credentials or '@' in the authority (userinfo) are refused")
    try:
        raw_host = url.raw_host.decode("ascii")
    except UnicodeDecodeError:
        raise HostRejected("the host is not ASCII after IDNA encoding") from None
    host, is_ip = canonical_host(raw_host)
    port = url.port if url.port is not None else DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise HostRejected("the port is out of range")
    return Target(scheme, host, port, is_ip)


def parse_target(url: str | httpx.URL) -> Target:
    """The canonical target of a URL string, parsed exactly as the provider's HTTP client would.
    Raises HostRejected."""
    if isinstance(url, httpx.URL):
        return target_of(url)
    # Parsers disagree on backslashes (WHATWG reads `\` as `/`, httpx as a userinfo or host
    # character): a URL containing one cannot be decided without guessing, so it is refused.
    if "\\" in url:
        raise HostRejected("backslashes in a URL are refused (parsers disagree on them)")
    if url != url.strip():
        raise HostRejected("leading or trailing whitespace in a URL is refused")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as e:
        raise HostRejected(f"the URL does not parse: {e}") from None
    return target_of(parsed)


def safe_url(url: httpx.URL, limit: int = 200) -> str:
    """A URL fit for an audit row: scheme, host, port and path; never userinfo, query or fragment."""
    try:
        port = f":{url.port}" if url.port is not None else ""
        host = url.raw_host.decode("ascii", "replace")
        if ":" in host:
            host = f"[{host}]"
        text = f"{url.scheme}://{host}{port}{url.raw_path.split(b'?', 1)[0].decode('ascii', 'replace')}"
    except Exception:  # a URL we cannot even render is still worth an event, without detail
        return "(unrenderable URL)"
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["HostRejected", "IPAddress", "Target", "address_class", "canonical_host", "canonical_ip",
           "inet_aton", "parse_target", "safe_url", "target_of"]
