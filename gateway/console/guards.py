"""Who may reach a console page, decided before a handler runs (and before any body is read).

Invariants:
- `signed_in`: a live session whose access token verifies now, exactly as a bearer token on the
  API does (gateway Services.authenticate), for a caller with an ops role; else the browser is sent
  to sign in, and a session whose token no longer verifies is deleted.
- `csrf_checked`: every POST presents the session's CSRF token (form field `_csrf`, or the
  `X-CSRF-Token` header htmx sends), compared in constant time; a missing or forged one is refused
  403 with an audit row, before the handler does anything.
- `flow_checked`: the sign-in forms (no session yet) present the double-submit token of their
  sign-in cookie (login CSRF: another site cannot read the cookie to put it in a form).
- `admin`: the caller's role is ops_admin (403 otherwise); pages that change nothing but show
  everyone's data ask for it too.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, cast

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.exceptions import HTTPException
from litestar.handlers.base import BaseRouteHandler

from gateway.console import cookies
from gateway.console.sessions import FLOW_COOKIE, SESSION_COOKIE, Opened, Sessions, same
from gateway.errors import GatewayError
from gateway.pipeline import Caller
from gateway.services import Services

log = logging.getLogger("opsgate.console")

CALLER = "opsgate.console.caller"
SESSION = "opsgate.console.session"
ADMIN = "ops_admin"


class NotSignedIn(HTTPException):
    """No live session: answered by sending the browser to the sign-in page."""

    status_code = 401


class Refused(HTTPException):
    """A console refusal (403 unless said otherwise), shown as a page."""

    status_code = 403


def _state(connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
    return connection.scope.setdefault("state", {})  # type: ignore[return-value]


def sessions_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Sessions:
    return connection.app.state.console.sessions  # type: ignore[no-any-return]


async def signed_in(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    sessions = sessions_of(connection)
    found = await sessions.get(cookies.read(connection, SESSION_COOKIE))
    if found is None:
        raise NotSignedIn(detail="sign in to use the console")
    opened, token = found
    services: Services = connection.app.state.services
    try:
        caller = await services.authenticate(f"Bearer {token}")
    except GatewayError as e:
        await sessions.close(opened.sid)  # a token that no longer verifies ends its session
        raise NotSignedIn(detail=f"your session ended: {e.message}") from None
    if caller.id != opened.record.user_id or caller.role is None:  # only if the store was tampered with
        await sessions.close(opened.sid)
        raise NotSignedIn(detail="your session ended")
    _state(connection)[CALLER] = caller
    _state(connection)[SESSION] = opened


async def _presented(connection: ASGIConnection[Any, Any, Any, Any]) -> str:
    header = connection.headers.get("x-csrf-token")
    if header:
        return header
    form = await cast(Request[Any, Any, Any], connection).form()
    value = form.get("_csrf")
    return value if isinstance(value, str) else ""


async def _refuse_csrf(connection: ASGIConnection[Any, Any, Any, Any], caller: Caller | None) -> None:
    services: Services = connection.app.state.services
    log.warning("console: a POST to %s without a valid CSRF token was refused", connection.url.path)
    if services.audit is not None:
        with contextlib.suppress(GatewayError):  # refused either way; the audit logs its store's failure
            await services.audit.record(caller_id=caller.id if caller else None, tool="opsgate.console.csrf",
                                        arguments={"path": connection.url.path}, decision=None,
                                        result={"status": "refused", "code": "CSRF",
                                                "message": "missing or invalid CSRF token"}, duration_ms=0)
    raise Refused(detail="this form has expired or did not come from the console (CSRF token missing or "
                         "invalid); reload the page and try again")


async def csrf_checked(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if connection.scope.get("method") != "POST":
        return
    opened: Opened | None = _state(connection).get(SESSION)
    presented = await _presented(connection)
    if opened is None or not presented or not same(presented, opened.record.csrf):
        await _refuse_csrf(connection, _state(connection).get(CALLER))


async def flow_checked(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    cookie = cookies.read(connection, FLOW_COOKIE) or ""
    presented = await _presented(connection)
    if len(cookie) < 32 or not presented or not same(presented, cookie):
        await _refuse_csrf(connection, None)


async def admin(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if caller_of(connection).role != ADMIN:
        raise Refused(detail="this page is for ops_admin only")


def caller_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Caller:
    caller: Caller | None = _state(connection).get(CALLER)
    if caller is None:
        raise NotSignedIn(detail="sign in to use the console")
    return caller


def session_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Opened:
    opened: Opened | None = _state(connection).get(SESSION)
    if opened is None:
        raise NotSignedIn(detail="sign in to use the console")
    return opened


__all__ = ["ADMIN", "NotSignedIn", "Refused", "admin", "caller_of", "csrf_checked", "flow_checked",
           "session_of", "sessions_of", "signed_in"]
