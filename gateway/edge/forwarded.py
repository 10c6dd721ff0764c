"""Who the client is: the socket peer, or what trusted proxies say about the client behind them.

Invariants:
- Forwarded headers are believed only from a peer inside `trusted` (IPs or CIDRs); from anyone
  else they are ignored and the peer is the client, so a spoofed `X-Forwarded-For` from the
  internet changes nothing.
- The chain is walked right to left (nearest hop first): the client is the first address not
  inside `trusted`. Entries further left were written by whoever that client is and are never
  read. An entry that is not an address (`unknown`, an obfuscated identifier, junk) ends the walk
  at the proxy that forwarded it, which is then the client: we record what we know.
- Only the header family the proxies are configured to write is read (`x-forwarded`: the
  X-Forwarded-For/-Proto/-Host headers; `forwarded`: RFC 7239). A proxy writing one family passes
  the other through from the client untouched, so reading both would let a client choose.
- Addresses are canonical text (`canonical_ip`), so nothing the client wrote reaches the audit
  trail but an address; the scheme is `http` or `https`; the host is checked by the caller.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Literal

import msgspec

from gateway.edge.hosts import canonical_ip

HeaderFamily = Literal["x-forwarded", "forwarded"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_HOPS = 32  # entries read from a chain; a longer chain ends the walk where reading stopped


class ClientView(msgspec.Struct, frozen=True):
    """The request as its client made it: the client's address (None when the peer is not an IP,
    e.g. a unix socket), the scheme it used and the Host it named (None when it named none)."""

    address: str | None
    scheme: str
    host: str | None
    forwarded: bool  # whether a trusted proxy's headers supplied any of it


class _Hop(msgspec.Struct):
    address: str | None  # None: not an address (ends the walk)
    proto: str | None = None
    host: str | None = None


def _networks(trusted: Iterable[str]) -> tuple[Network, ...]:
    try:
        return tuple(ipaddress.ip_network(t.strip(), strict=False) for t in trusted)
    except ValueError as e:
        raise ValueError(f"trusted_proxies: {e}") from None


def _address(node: str) -> str | None:
    """An X-Forwarded-For entry or a Forwarded `for=` node: an address, optionally with a port
    (`1.2.3.4:5678`, `[2001:db8::1]:443`); None for anything else."""
    node = node.strip().strip('"')
    if node.startswith("["):
        node = node[1:].partition("]")[0]
    elif node.count(":") == 1:
        node = node.partition(":")[0]
    return canonical_ip(node) if "%" not in node else None


def _split(values: Sequence[str]) -> list[str]:
    return [part for value in values for part in value.split(",")]


def _x_forwarded(headers: dict[str, list[str]]) -> list[_Hop]:
    fors = _split(headers.get("x-forwarded-for", []))
    protos = [p.strip().lower() for p in _split(headers.get("x-forwarded-proto", []))]
    hosts = [h.strip() for h in _split(headers.get("x-forwarded-host", []))]
    hops = [_Hop(_address(f)) for f in fors]
    # Proto and Host lists written hop by hop line up with the For list. Otherwise (the usual case:
    # the edge proxy sets one value) the nearest proxy's value describes the request, whichever hop
    # turns out to be the client.
    for values, name in ((protos, "proto"), (hosts, "host")):
        aligned = len(values) == len(hops)
        for i, hop in enumerate(hops):
            if values:
                setattr(hop, name, values[i] if aligned else values[-1])
    return hops


def _forwarded(headers: dict[str, list[str]]) -> list[_Hop]:
    hops = []
    for element in _split(headers.get("forwarded", [])):
        pairs = dict(p.strip().partition("=")[::2] for p in element.split(";") if "=" in p)
        pairs = {k.strip().lower(): v.strip().strip('"') for k, v in pairs.items()}
        hops.append(_Hop(_address(pairs.get("for", "")), pairs.get("proto", "").lower() or None,
                         pairs.get("host") or None))
    return hops


class TrustedProxies:
    """`TrustedProxies(["10.0.0.0/8", "127.0.0.1"], "x-forwarded").view(scope)`."""

    def __init__(self, trusted: Iterable[str] = (), family: HeaderFamily = "x-forwarded") -> None:
        if family not in ("x-forwarded", "forwarded"):
            raise ValueError(f"forwarded_header must be 'x-forwarded' or 'forwarded', got {family!r}")
        self.networks = _networks(trusted)
        self.family = family

    def trusts(self, address: str | None) -> bool:
        if address is None or not self.networks:
            return False
        ip = ipaddress.ip_address(address)
        return any(ip in n for n in self.networks)

    def view(self, scope: dict[str, object]) -> ClientView:
        """The client of an ASGI HTTP scope. The server must pass the socket peer in
        `scope["client"]` untouched (uvicorn: proxy_headers=False)."""
        client = scope.get("client")
        peer = canonical_ip(str(client[0])) if isinstance(client, list | tuple) and client else None
        headers: dict[str, list[str]] = {}
        for key, value in scope.get("headers", ()):  # type: ignore[attr-defined]
            headers.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        host = headers["host"][0] if len(headers.get("host", ())) == 1 else None
        direct = ClientView(peer, str(scope.get("scheme", "http")), host, False)
        if not self.trusts(peer):
            return direct
        hops = (_x_forwarded if self.family == "x-forwarded" else _forwarded)(headers)
        if not hops:
            return direct
        return self._walk(peer, hops[-MAX_HOPS:], direct)

    def _walk(self, peer: str | None, hops: list[_Hop], direct: ClientView) -> ClientView:
        address, index = peer, len(hops)
        while index > 0 and self.trusts(address):
            hop = hops[index - 1]
            if hop.address is None:
                break
            address, index = hop.address, index - 1
        # The hop that named the client (or the last one read) describes the request it received.
        described = hops[min(index, len(hops) - 1)]
        proto = described.proto if described.proto in ("http", "https") else direct.scheme
        return ClientView(address, proto, described.host or direct.host, True)


__all__ = ["MAX_HOPS", "ClientView", "HeaderFamily", "TrustedProxies"]
