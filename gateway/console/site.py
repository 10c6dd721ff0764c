"""The console's router: every page under /console, its static files, its error pages.

Invariants: every route that takes a body is guarded (a session and its CSRF token, or a sign-in
flow's CSRF token) before the body is read, and bodies are small (MAX_BODY); the Host and Origin
of every /console request are checked at the edge as for /mcp and /v1 (gateway/edge/middleware.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from litestar import Router
from litestar.exceptions import HTTPException
from litestar.static_files import create_static_files_router

from gateway.console import exceptions, health, policies, signin, trail
from gateway.console.oauth import OAuthClient
from gateway.console.pages import HERE, on_error, template_config
from gateway.console.sessions import Sessions

MAX_BODY = 64 * 1024
PATH = "/console"


@dataclass(frozen=True)
class Console:
    sessions: Sessions
    demo: Callable[[str], str] | None = None  # role -> a demo access token (only under --demo-tokens)
    oauth: OAuthClient | None = None  # sign-in with the authorization server (OAuth 2.1 + PKCE)


def console_router() -> Router:
    static = create_static_files_router(path="/static", directories=[HERE / "static"], name="console-static",
                                        cache_control=None)
    return Router(PATH, route_handlers=[*signin.ROUTES, *trail.ROUTES, *exceptions.ROUTES, *policies.ROUTES,
                                        *health.ROUTES, static],
                  exception_handlers={HTTPException: on_error, Exception: on_error},
                  request_max_body_size=MAX_BODY, include_in_schema=False)


__all__ = ["MAX_BODY", "PATH", "Console", "console_router", "template_config"]
