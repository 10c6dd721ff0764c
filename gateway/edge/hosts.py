"""Which Host and Origin a request may name: the DNS-rebinding guard for /mcp and the admin API.

Invariants:
- A header is parsed into (scheme, host, port) by one strict parser and compared as values,
  never as text prefixes: `http://localhost:18200@evil.example` (userinfo) and
  `http://localhost:evil` (a port that is not a number) are refused before any comparison.
  Refused outright: userinfo, paths, queries, fragments, whitespace, `%`, `\\`, empty hosts,
  empty labels, ports outside 1-65535 or with signs or leading `+`, unbracketed IPv6, zone ids,
  non-ASCII text. An Origin of `null` is refused; a request without Origin (every non-browser
  client) is allowed.
- Hosts compare lowercase and without one trailing dot; IP literals compare as addresses, so
  `[0:0:0:0:0:0:0:1]` is `[::1]` and an IPv4-mapped IPv6 address is its IPv4 address.
- Patterns are parsed by the same parser, so a pattern that could never match is a start-up
  error, not a silent refusal.

Pattern syntax (allowed_hosts: `host[:port]`; allowed_origins: `scheme://host[:port]`):
- `host` is a DNS name or an IP literal (IPv6 in brackets), or `*.name`: any name with at least
  one more label in front of `name` (not `name` itself, never an IP literal).
- no port: the scheme's default port (80 for http, 443 for https), which is also what a Host or
  Origin without a port means; `:*` any port; `:8080` exactly that port.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Literal

import msgspec

Scheme = Literal["http", "https"]
DEFAULT_PORT: dict[str, int] = {"http": 80, "https": 443}
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")
_FORBIDDEN = frozenset("@/\\?#% \t\r\n,;\"'<>[]")  # brackets are handled before this check


class BadHost(ValueError):
    """A Host, Origin or pattern that does not parse; the message says why, never more."""


class Authority(msgspec.Struct, frozen=True):
    """A parsed `host[:port]`: `host` canonical (lowercase name without trailing dot, or an IP
    address in its compressed form, IPv6 without brackets); `port` None when none was given."""

    host: str
    port: int | None
    is_ip: bool

    def effective_port(self, scheme: str) -> int:
        return self.port if self.port is not None else DEFAULT_PORT[scheme]


def canonical_ip(text: str) -> str | None:
    """The address `text` spells, in its one canonical text (IPv4-mapped IPv6 as IPv4), or None."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return str(address)


def _name(text: str) -> str:
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise BadHost("not a valid host name")
    return name


def _port(text: str) -> int:
    if not _PORT.fullmatch(text) or not 0 < int(text) <= 65535:
        raise BadHost("not a valid port")
    return int(text)


def parse_authority(text: str) -> Authority:
    """`host[:port]` as in a Host header (RFC 9110 7.2), strictly. Raises BadHost."""
    if not text or not text.isascii() or not text.isprintable():
        raise BadHost("empty or not printable ASCII")
    if text.startswith("["):
        inside, sep, rest = text[1:].partition("]")
        if not sep or "%" in inside:
            raise BadHost("not a valid IPv6 literal")
        try:
            address = ipaddress.IPv6Address(inside)
        except ValueError:
            raise BadHost("not a valid IPv6 literal") from None
        if rest and not rest.startswith(":"):
            raise BadHost("junk after the IPv6 literal")
        host = canonical_ip(str(address)) or str(address)
        return Authority(host, _port(rest[1:]) if rest else None, True)
    if any(c in _FORBIDDEN for c in text):
        raise BadHost("a host may not contain userinfo, a path or special characters")
    host, sep, port = text.partition(":")
    if ":" in port:
        raise BadHost("an IPv6 literal must be in brackets")
    ip = canonical_ip(host)
    if ip is not None:
        return Authority(ip, _port(port) if sep else None, True)
    return Authority(_name(host), _port(port) if sep else None, False)


def parse_origin(text: str) -> tuple[Scheme, Authority]:
    """`scheme://host[:port]` as a browser serialises an Origin (RFC 6454), strictly. Raises BadHost
    (also for `null`)."""
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORT:
        raise BadHost("not an http(s) origin")
    return scheme, parse_authority(rest)  # type: ignore[return-value]


class HostPattern(msgspec.Struct, frozen=True):
    host: str  # canonical; for a wildcard the suffix after "*."
    port: int | Literal["*"] | None
    wildcard: bool = False

    @classmethod
    def parse(cls, text: str) -> HostPattern:
        wildcard = text.startswith("*.")
        body = text[2:] if wildcard else text
        port: int | Literal["*"] | None = None
        if body.endswith(":*"):
            body, port = body[:-2], "*"
        authority = parse_authority(body)
        if wildcard and authority.is_ip:
            raise BadHost(f"{text!r}: a wildcard names DNS names, not addresses")
        return cls(authority.host, port if port == "*" else authority.port, wildcard)

    def matches(self, authority: Authority, scheme: str) -> bool:
        if self.wildcard:
            if authority.is_ip or not authority.host.endswith("." + self.host):
                return False
        elif authority.host != self.host:
            return False
        if self.port == "*":
            return True
        want = self.port if self.port is not None else DEFAULT_PORT[scheme]
        return authority.effective_port(scheme) == want


class OriginPattern(msgspec.Struct, frozen=True):
    scheme: Scheme
    host: HostPattern

    @classmethod
    def parse(cls, text: str) -> OriginPattern:
        scheme, sep, rest = text.partition("://")
        if not sep or scheme not in DEFAULT_PORT:
            raise BadHost(f"{text!r}: an allowed origin is scheme://host[:port] with scheme http or https")
        return cls(scheme, HostPattern.parse(rest))  # type: ignore[arg-type]

    def matches(self, scheme: str, authority: Authority) -> bool:
        return scheme == self.scheme and self.host.matches(authority, scheme)


class AllowedHosts:
    """The Host values and Origins the gateway answers (see the module docstring for the syntax)."""

    def __init__(self, hosts: Iterable[str], origins: Iterable[str]) -> None:
        try:
            self.hosts = tuple(HostPattern.parse(h) for h in hosts)
            self.origins = tuple(OriginPattern.parse(o) for o in origins)
        except BadHost as e:
            raise ValueError(f"allowed_hosts / allowed_origins: {e}") from None

    def host_ok(self, host: str | None, scheme: str) -> bool:
        """A Host header value, as the client sent it over `scheme`."""
        if host is None:
            return False
        try:
            authority = parse_authority(host)
        except BadHost:
            return False
        return any(p.matches(authority, scheme) for p in self.hosts)

    def origin_ok(self, origin: str | None) -> bool:
        """An Origin header value; absent (None) is allowed: only browsers send one."""
        if origin is None:
            return True
        try:
            scheme, authority = parse_origin(origin)
        except BadHost:
            return False
        return any(p.matches(scheme, authority) for p in self.origins)


__all__ = ["DEFAULT_PORT", "AllowedHosts", "Authority", "BadHost", "HostPattern", "OriginPattern", "canonical_ip",
           "parse_authority", "parse_origin"]
