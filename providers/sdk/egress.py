"""The only HTTP client a provider gets (constitution rule 5).

Interface (stable): `EgressClient(provider, **httpx.AsyncClient kwargs)`, used as an
httpx.AsyncClient; `ProviderBase.http(**kwargs)` returns one. Refusals raise `EgressRefused`
(a `Refused` with code FORBIDDEN) and are recorded as `<provider>.egress` run events first.

Two checks, both in the transport, so nothing reaches the network without passing them:

1. Every request, and so every redirect hop (httpx sends each hop through the transport), is
   canonicalised (providers.sdk.hostnames) and asked of the gateway's policy: an `egress`
   decision on (provider, scheme, canonical host, port).
2. Every new connection resolves the name once, itself, and checks each address: a public
   address passes (the name was allowed); a loopback, private, link-local, CGNAT, multicast
   or reserved one needs an `egress` decision for that IP literal too. The socket is opened to
   exactly the checked address — no second lookup, so DNS rebinding cannot swap it — while
   TLS still verifies the certificate against the name (SNI and Host stay the name).

The client is closed to the usual escape hatches: no custom transport, mounts, proxies, unix
sockets or environment (proxy variables, .netrc); no Host header or SNI override that differs
from the URL (domain fronting).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import httpcore
import httpx

from providers.sdk.hostnames import (
    HostRejected,
    Target,
    address_class,
    canonical_host,
    canonical_ip,
    parse_target,
    safe_url,
)
from providers.sdk.runtime import Verdict
from providers.sdk.tool import Refused

if TYPE_CHECKING:
    from providers.sdk.base import ProviderBase

log = logging.getLogger("opsgate.egress")

# Per-request bookkeeping kept in the request's extensions, which httpx shares across the hops
# of one redirect chain: the safe URLs already sent, so a refusal can name its hop.
TRAIL = "opsgate.egress.trail"
# Keyword arguments that would open a path around the checks.
FORBIDDEN_KWARGS = ("transport", "mounts", "proxy", "proxies", "uds", "app")


class EgressRefused(Refused):
    """A request or connection the egress policy does not allow (code FORBIDDEN)."""

    def __init__(self, message: str, **data: Any) -> None:
        super().__init__("FORBIDDEN", message, **data)


@dataclass(frozen=True)
class Hop:
    """The request being sent, as the connection layer needs to see it."""

    target: Target
    url: str
    method: str
    hop: int
    redirected_from: str | None


_current_hop: ContextVar[Hop | None] = ContextVar("opsgate_egress_hop", default=None)


def decide(provider: ProviderBase, target: Target) -> Verdict:
    """The gateway's `egress` decision for a canonical target (raises if the provider is unbound)."""
    return provider.runtime.egress(provider.name, scheme=target.scheme, host=target.host, port=target.port)


class EgressGuard:
    """Checks requests and connections for one provider and records every refusal."""

    def __init__(self, provider: ProviderBase) -> None:
        self.provider = provider

    async def refuse(self, reason: str, payload: dict[str, Any], verdict: Verdict | None = None) -> EgressRefused:
        """Record the refusal as a run event, then return the exception to raise."""
        name = self.provider.name
        event = {"provider": name, **payload, "reason": reason}
        result = {"status": "refused", "decision_id": verdict.decision_id if verdict else None,
                  "policy_ids": list(verdict.reasons) if verdict else []}
        try:
            await self.provider.emit_event("egress", event, result)
        except Exception as e:  # the refusal stands either way; the call's own row records it too
            log.error("could not record an egress refusal for %s: %s", name, type(e).__name__)
        where = payload.get("address") or payload.get("canonical_host") or payload.get("host") or "?"
        return EgressRefused(f"{name} may not reach {where}: {reason}", reason=reason,
                             refused_by=verdict.decision_id if verdict else None)

    async def check_request(self, request: httpx.Request) -> Hop:
        trail: list[str] = request.extensions.setdefault(TRAIL, [])
        url = safe_url(request.url)
        payload: dict[str, Any] = {"method": request.method, "url": url, "host": request.url.host,
                                   "hop": len(trail), "redirected_from": trail[-1] if trail else None}
        try:
            target = parse_target(request.url)
            payload.update(canonical_host=target.host, scheme=target.scheme, port=target.port)
            self._no_fronting(request, target)
        except HostRejected as e:
            raise await self.refuse(e.reason, payload) from None
        verdict = decide(self.provider, target)
        if not verdict.allowed:
            raise await self.refuse(verdict.message or "not on the provider's allowlist", payload, verdict)
        hop = Hop(target, url, request.method, len(trail), payload["redirected_from"])
        trail.append(url)
        return hop

    @staticmethod
    def _no_fronting(request: httpx.Request, target: Target) -> None:
        """The Host header and TLS SNI must name the host being decided (no domain fronting)."""
        host_header = request.headers.get("host")
        if host_header is not None:
            try:
                fronted = parse_target(f"{target.scheme}://{host_header}/")
            except HostRejected:
                raise HostRejected("the Host header is not a valid host") from None
            if (fronted.host, fronted.port) != (target.host, target.port):
                raise HostRejected("a Host header naming another host is refused (domain fronting)")
        sni = request.extensions.get("sni_hostname")
        if sni is not None and parse_target(f"https://{sni}/").host != target.host:
            raise HostRejected("an SNI naming another host is refused (domain fronting)")

    async def admit_addresses(self, host: str, port: int, timeout: float | None) -> list[str]:
        """Resolve `host` once and return the addresses this provider may connect to, in order."""
        hop = _current_hop.get()
        payload: dict[str, Any] = {"host": host, "port": port}
        if hop is None:
            raise await self.refuse("a connection outside a checked request", payload)
        payload.update(method=hop.method, url=hop.url, canonical_host=hop.target.host, scheme=hop.target.scheme,
                       hop=hop.hop, redirected_from=hop.redirected_from)
        try:
            name, is_ip = canonical_host(host)
        except HostRejected as e:
            raise await self.refuse(e.reason, payload) from None
        if (name, port) != (hop.target.host, hop.target.port):
            raise await self.refuse("the connection does not match the checked request", payload)
        target = hop.target

        addresses = [name] if is_ip else await resolve(name, port, timeout)
        admitted: list[str] = []
        refusal: tuple[str, str, Verdict | None] | None = None
        for address in addresses:
            kind = address_class(_ip(address))
            if kind == "public":
                admitted.append(address)
                continue
            verdict = decide(self.provider, Target(target.scheme, address, port, True))
            if verdict.allowed:
                admitted.append(address)
            elif refusal is None:
                refusal = (address, kind, verdict)
        if admitted:
            if refusal is not None:  # a name answering with public and internal addresses: keep the checked ones
                log.warning("%s: %s also resolves to %s address %s; connecting only to %s", self.provider.name,
                            target.host, refusal[1], refusal[0], ", ".join(admitted))
            return admitted
        if refusal is None:
            raise httpcore.ConnectError(f"{target.host} did not resolve to any address")
        address, kind, verdict = refusal
        payload.update(address=address, address_class=kind, resolved=addresses[:8])
        raise await self.refuse(f"{target.host} resolves to {kind} address {address}, which is not allowlisted",
                                payload, verdict)


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return canonical_ip(ipaddress.ip_address(address))


async def resolve(host: str, port: int, timeout: float | None) -> list[str]:
    """All addresses of `host` (one lookup), canonical, de-duplicated, in resolver order."""
    try:
        with anyio.fail_after(timeout):
            infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
    except OSError as e:
        raise httpcore.ConnectError(f"cannot resolve {host}: {e}") from None
    seen: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(_ip(str(sockaddr[0]).split("%", 1)[0]))
        if address not in seen:
            seen.append(address)
    return seen


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network layer with the connected-address check in front of every socket."""

    def __init__(self, guard: EgressGuard, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.guard = guard
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        addresses = await self.guard.admit_addresses(host, port, timeout)
        error: Exception | None = None
        for address in addresses:  # connect to the checked address itself, never the name
            try:
                return await self.inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        assert error is not None
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise EgressRefused("unix sockets are not reachable by providers")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class EgressTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, with the request check in front and the guarded network layer below."""

    def __init__(self, guard: EgressGuard, *, verify: Any = True, cert: Any = None, http1: bool = True,
                 http2: bool = False, limits: httpx.Limits | None = None, retries: int = 0,
                 local_address: str | None = None, socket_options: Iterable[Any] | None = None) -> None:
        # Not super().__init__(): it only builds the pool below, without a way to pass the network
        # backend, and would load the CA bundle a second time. This is the same pool, guarded.
        self.guard = guard
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)  # httpx's defaults
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, cert=cert, trust_env=False),
            max_connections=limits.max_connections, max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry, http1=http1, http2=http2, retries=retries,
            local_address=local_address, socket_options=socket_options, network_backend=GuardedBackend(guard))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        hop = await self.guard.check_request(request)
        token = _current_hop.set(hop)
        try:
            return await super().handle_async_request(request)
        finally:
            _current_hop.reset(token)


class EgressClient(httpx.AsyncClient):
    """An httpx.AsyncClient whose every request, redirect hop and connection passes the provider's
    egress policy. Takes httpx.AsyncClient's keyword arguments, except those that would bypass it."""

    def __init__(self, provider: ProviderBase, **kwargs: Any) -> None:
        bypass = sorted(k for k in FORBIDDEN_KWARGS if k in kwargs)
        if bypass:
            raise TypeError(f"EgressClient does not accept {', '.join(bypass)}: providers have no other way out")
        if kwargs.pop("trust_env", False):
            raise TypeError("EgressClient does not read proxies or credentials from the environment (trust_env)")
        transport_kw = {k: kwargs.pop(k) for k in ("verify", "cert", "http1", "http2", "limits") if k in kwargs}
        self.guard = EgressGuard(provider)
        super().__init__(transport=EgressTransport(self.guard, **transport_kw), trust_env=False, **kwargs)


__all__ = ["EgressClient", "EgressGuard", "EgressRefused", "EgressTransport", "GuardedBackend", "decide"]
