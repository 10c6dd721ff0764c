"""The gateway's HTTP edge: who the client is, and whether the request names a host we serve.

Invariants:
- Every HTTP request gets its ClientView (gateway.edge.forwarded) in `scope["state"]` and its
  client address bound for the audit trail while it is served, before any route sees it.
- `/mcp`, `/v1/*` and `/console*` answer only a Host in `allowed_hosts` (421 otherwise) and a browser Origin
  in `allowed_origins` (403 otherwise), decided by parsed scheme, host and port
  (gateway.edge.hosts) before authentication, before the mcp SDK and before any body is read.
  The Host checked is the one the client named: a trusted proxy's forwarded host, else the
  request's own. Each refusal is counted into the audit trail (gateway.edge.refusals).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from litestar.types import ASGIApp, Receive, Scope, Send

from gateway.edge.current import bound_client
from gateway.edge.forwarded import ClientView, TrustedProxies
from gateway.edge.hosts import AllowedHosts
from gateway.edge.refusals import REQUEST, Refusals
from gateway.edge.resource import ProtectedResource

VIEW_KEY = "opsgate.client"
GUARDED = ("/mcp", "/v1/", "/console")  # the MCP endpoint, every route under /v1/, the console


@dataclass(frozen=True)
class Edge:
    """The edge's settings, built once from the configuration (gateway.serve.edge_of)."""

    allowed: AllowedHosts
    proxies: TrustedProxies
    resource: ProtectedResource

    def base_url(self, scope: Scope) -> str | None:
        """The resource's base URL for this request (gateway.edge.resource): the public URL, or this
        connection's own Host once allowed (never a forwarded one)."""
        host = _own_host(scope)
        scheme = str(scope.get("scheme", "http"))
        return self.resource.base_url(scheme, host, self.allowed.host_ok(host, scheme))

    def challenge(self, scope: Scope, *, presented: bool, description: str | None = None) -> str:
        return self.resource.challenge(self.base_url(scope), presented=presented, description=description)


def view_of(scope: Scope) -> ClientView | None:
    return scope.get("state", {}).get(VIEW_KEY)  # type: ignore[no-any-return]


def _own_host(scope: Scope) -> str | None:
    hosts = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"host"]
    return hosts[0] if len(hosts) == 1 else None


def _origin(scope: Scope) -> tuple[bool, str | None]:
    """(exactly one or no Origin header, its value)."""
    origins = [v.decode("latin-1") for k, v in scope.get("headers", ()) if k == b"origin"]
    return len(origins) <= 1, origins[0] if origins else None


def _guarded(scope: Scope) -> bool:
    """Decided by the route Litestar matched (this runs after routing), not by the request's path
    text: a mount sees only the remainder of its path, and a path spelled another way
    (`/%761/status`) still routes to the same handler."""
    handler = scope.get("route_handler")
    templates = [scope.get("path_template") or "", *getattr(handler, "paths", ())]
    return any(t == GUARDED[0] or t.startswith(GUARDED[1:]) for t in templates)


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, edge: Edge, refusals: Refusals | None = None) -> None:
        self.app, self.edge, self.refusals = app, edge, refusals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        view = self.edge.proxies.view(scope)  # type: ignore[arg-type]
        scope.setdefault("state", {})[VIEW_KEY] = view  # type: ignore[typeddict-unknown-key]
        with bound_client(view.address):
            refusal = self._refusal(scope, view) if _guarded(scope) else None
            if refusal is not None:
                status, reason, message = refusal
                if self.refusals is not None:
                    self.refusals.note(REQUEST, reason, view.address)
                await _answer(send, status, message)
                return
            await self.app(scope, receive, send)

    def _refusal(self, scope: Scope, view: ClientView) -> tuple[int, str, str] | None:
        if not self.edge.allowed.host_ok(view.host, view.scheme):
            return 421, "host_not_allowed", "the Host header names a host this gateway does not serve"
        single, origin = _origin(scope)
        if not single or not self.edge.allowed.origin_ok(origin):
            return 403, "origin_not_allowed", "requests from this Origin are not allowed"
        return None


async def _answer(send: Send, status: int, message: str) -> None:
    body = json.dumps({"status_code": status, "detail": message}).encode()
    headers: list[tuple[bytes, bytes]] = [(b"content-type", b"application/json"),
                                          (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["GUARDED", "VIEW_KEY", "Edge", "EdgeMiddleware", "view_of"]
