"""Who may reach an admin route, decided before its body is read (issue 13, item 7).

Litestar runs a route's guards after routing and before it resolves the handler's parameters, so
a request body is never read for a caller without a valid token: the 401 goes out however large a
body was announced, and says nothing about the route's schema. The 401 carries the gateway's
OAuth challenge (gateway.edge.resource); the refusal is counted into the audit trail by the
authenticator's wrapper (gateway.serve).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler

from gateway.edge import Edge
from gateway.errors import GatewayError
from gateway.mcp_app import CALLER_KEY
from gateway.pipeline import Caller
from gateway.services import Services

Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


async def authenticated(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """The bearer token is valid: the caller is kept for the handler (`caller_of`)."""
    services: Services = connection.app.state.services
    edge: Edge = connection.app.state.edge
    try:
        caller = await services.authenticate(connection.headers.get("authorization"))
    except GatewayError as e:
        presented = e.data.get("reason") != "missing"
        challenge = edge.challenge(connection.scope, presented=presented, description=e.message if presented else None)
        raise HTTPException(status_code=401, detail=e.message, extra=e.payload,
                            headers={"WWW-Authenticate": challenge}) from None
    connection.scope.setdefault("state", {})[CALLER_KEY] = caller  # type: ignore[typeddict-unknown-key]


def allowed(action: str) -> Guard:
    """Authenticated, and the policy permits the gateway action `action` (403 otherwise)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
        await authorize(connection, action)

    return guard


async def authorize(connection: ASGIConnection[Any, Any, Any, Any], action: str) -> Caller:
    """What `allowed(action)` checks, for a route that decides for itself whether a caller must
    present a token at all (GET /health, GET /metrics): 401 with the OAuth challenge, or 403."""
    await authenticated(connection, None)  # type: ignore[arg-type]  # the handler is not consulted
    services: Services = connection.app.state.services
    caller = caller_of(connection)
    services.admin_decision(caller, action)
    return caller


def caller_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    """The caller a guard of this route authenticated."""
    caller: Caller | None = connection.scope.get("state", {}).get(CALLER_KEY)
    if caller is None:  # a route without a guard asked: refuse rather than guess
        raise HTTPException(status_code=401, detail="no authenticated caller")
    return caller


__all__ = ["allowed", "authenticated", "authorize", "caller_of"]
