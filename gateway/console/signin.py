"""Signing in and out of the console.

    GET  /console/signin            the page: token paste; the demo users (only under --demo-tokens);
                                    "Sign in with <authorization server>" when one is configured
    POST /console/signin/token      an access token, verified exactly as the API verifies a bearer token
    POST /console/signin/demo       a demo role (only under --demo-tokens)
    GET  /console/signin/oauth      start OAuth 2.1 authorization code + PKCE
    GET  /console/oauth/callback    its return: state checked, code exchanged, token verified
    POST /console/signout           the session is deleted

Invariants: a session is opened only for a token the gateway's authenticator accepts, for no longer
than the token lives; each sign-in is an ops.run_events row (tool `opsgate.console.signin`); the
sign-in forms carry the double-submit token of their cookie (login CSRF); an OAuth sign-in's cookie
is SameSite=Lax only so that the authorization server's redirect back can present it, and it holds
no credential: it names a server-side record (state, PKCE verifier) good for one callback.
"""

from __future__ import annotations

import logging
import re
import secrets
from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Redirect, Template

from gateway.console import cookies
from gateway.console.guards import csrf_checked, flow_checked, session_of, sessions_of, signed_in
from gateway.console.oauth import OAuthError
from gateway.console.pages import SECURITY_HEADERS, render, secure
from gateway.console.sessions import (
    FLOW_COOKIE,
    FLOW_TTL_S,
    OAUTH_COOKIE,
    SESSION_COOKIE,
    pkce_pair,
    same,
    token_expiry,
)
from gateway.errors import GatewayError
from gateway.services import Services

log = logging.getLogger("opsgate.console")
ROLES = ("ops_viewer", "ops_operator", "ops_admin")
MAX_TOKEN_CHARS = 16 * 1024
TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")  # secrets.token_urlsafe(32)


async def _page(request: Request[Any, Any, Any], *, error: str | None = None, status: int = 200) -> Template:
    console = request.app.state.console
    token = cookies.read(request, FLOW_COOKIE) or ""
    fresh = not TOKEN.fullmatch(token)
    if fresh:  # a double-submit token for these forms; nothing is stored
        token = secrets.token_urlsafe(32)
    page = render(request, "signin.html", status=status, section="signin", flow_csrf=token, error=error,
                  roles=ROLES if console.demo is not None else (), oauth=console.oauth is not None)
    if fresh:
        page.cookies.append(cookies.cookie(request, FLOW_COOKIE, token, FLOW_TTL_S))
    return page


@get("/signin")
async def signin_page(request: Request[Any, Any, Any]) -> Template:
    return await _page(request)


async def _open(request: Request[Any, Any, Any], token: str, how: str) -> Response[Any]:
    """A session for `token` once the gateway's authenticator accepts it; the sign-in page again if not."""
    services: Services = request.app.state.services
    try:
        caller = await services.authenticate(f"Bearer {token}")
    except GatewayError as e:
        return await _page(request, error=f"that token was refused: {e.message}", status=401)
    if caller.role is None:  # as everywhere in the gateway: no ops role, no permissions
        return await _page(request, error="that account has no ops role (app_metadata.ops_role)", status=403)
    if services.audit is not None:
        try:
            await services.audit.record(caller_id=caller.id, tool="opsgate.console.signin", arguments={"how": how},
                                        decision=None, result={"status": "signed_in", "role": caller.role},
                                        duration_ms=0)
        except GatewayError as e:
            return await _page(request, error=f"sign-in could not be recorded: {e.message}", status=503)
    sessions = sessions_of(request)
    try:
        sid, lifetime = await sessions.open(token=token, user_id=caller.id, role=caller.role,
                                            exp=token_expiry(token), how=how)
    except ValueError as e:
        return await _page(request, error=str(e), status=401)
    response: Response[Any] = Redirect("/console/trail", status_code=303, headers=SECURITY_HEADERS)
    response.cookies.extend([cookies.cookie(request, SESSION_COOKIE, sid, int(lifetime)),
                             cookies.gone(request, FLOW_COOKIE), cookies.gone(request, OAUTH_COOKIE)])
    return response


@post("/signin/token", guards=[flow_checked])
async def signin_token(request: Request[Any, Any, Any]) -> Response[Any]:
    form = await request.form()
    token = form.get("token")
    if not isinstance(token, str) or not token.strip() or len(token) > MAX_TOKEN_CHARS:
        return await _page(request, error="paste an access token", status=400)
    return await _open(request, token.strip(), "token")


@post("/signin/demo", guards=[flow_checked])
async def signin_demo(request: Request[Any, Any, Any]) -> Response[Any]:
    console = request.app.state.console
    role = (await request.form()).get("role")
    if console.demo is None:  # only a gateway started with --demo-tokens mints them
        return await _page(request, error="demo users are only offered under --demo-tokens", status=404)
    if role not in ROLES:
        return await _page(request, error="no such demo role", status=400)
    return await _open(request, console.demo(role), "demo")


def _callback_url(request: Request[Any, Any, Any]) -> str | None:
    base = request.app.state.edge.base_url(request.scope)
    return None if base is None else base + "/console/oauth/callback"


@get("/signin/oauth")
async def oauth_start(request: Request[Any, Any, Any]) -> Response[Any]:
    console = request.app.state.console
    if console.oauth is None:
        return await _page(request, error="no authorization server is configured for the console", status=404)
    redirect_uri = _callback_url(request)
    if redirect_uri is None:
        return await _page(request, error="the console's own URL cannot be told (set public_url)", status=400)
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(32)
    try:
        url = await console.oauth.authorize_url(state=state, challenge=challenge, redirect_uri=redirect_uri)
    except OAuthError as e:
        return await _page(request, error=str(e), status=502)
    fid = await console.sessions.start_flow(state=state, verifier=verifier, redirect_uri=redirect_uri)
    response: Response[Any] = Redirect(url, status_code=303, headers=SECURITY_HEADERS)
    response.cookies.append(cookies.cookie(request, OAUTH_COOKIE, fid, FLOW_TTL_S, samesite="lax"))
    return response


@get("/oauth/callback")
async def oauth_callback(request: Request[Any, Any, Any]) -> Response[Any]:
    console = request.app.state.console
    code, state, error = (request.query_params.get(k) for k in ("code", "state", "error"))
    fid = cookies.read(request, OAUTH_COOKIE)
    flow = await console.sessions.flow(fid)
    if fid and flow is not None:
        await console.sessions.end_flow(fid)  # good for one callback, whatever it brings
    if console.oauth is None or flow is None or not state:
        return await _page(request, error="this sign-in has expired or was not started here; start again", status=400)
    if not same(state, flow.state):
        return await _page(request, error="the sign-in's state does not match; start again", status=400)
    if error or not code:
        return await _page(request, error=f"the authorization server did not sign you in ({error or 'no code'})",
                           status=401)
    try:
        token = await console.oauth.exchange(code, verifier=flow.verifier, redirect_uri=flow.redirect_uri)
    except OAuthError as e:
        return await _page(request, error=str(e), status=401)
    opened = await _open(request, token, "oauth")
    if opened.status_code != 303:
        return opened
    # A page of our own moves on: the redirect chain began at another site, and a SameSite=Strict
    # cookie set in it would not be sent with a redirect that continues that chain.
    page = render(request, "moving_on.html", section="signin", to="/console/trail")
    page.cookies.extend(opened.cookies)
    return page  # type: ignore[return-value]


@post("/signout", guards=[signed_in, csrf_checked])
async def signout(request: Request[Any, Any, Any]) -> Response[Any]:
    await sessions_of(request).close(session_of(request).sid)
    response: Response[Any] = Redirect("/console/signin", status_code=303, headers=SECURITY_HEADERS)
    response.cookies.append(cookies.gone(request, SESSION_COOKIE))
    return secure(response)


@get("/")
async def home(request: Request[Any, Any, Any]) -> Response[Any]:
    return Redirect("/console/trail", status_code=303, headers=SECURITY_HEADERS)


ROUTES = [signin_page, signin_token, signin_demo, oauth_start, oauth_callback, signout, home]
__all__ = ["ROUTES"]
