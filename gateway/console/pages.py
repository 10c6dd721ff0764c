"""Rendering console pages: one template per page, the same frame and the same headers on every answer.

Invariants:
- Every answer under /console, error pages and redirects included, carries a strict
  Content-Security-Policy (only the gateway's own scripts and styles, no inline code, no framing, no
  plugins, forms only to itself), `no-store`, `nosniff` and `same-origin` referrers (an OAuth code in a
  URL must not leak to another site; `no-referrer` would make browsers send `Origin: null`, which the
  edge refuses).
- Templates are Jinja with autoescaping on for every template: anything a user typed (a
  justification, tool arguments, policy text) is text on the page, never markup.
- A refusal renders as a page with its status; a missing session sends the browser to sign in
  (htmx requests get `HX-Redirect`, since a partial swap must not show the sign-in page inside a table).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.template import TemplateConfig

from gateway.console.guards import CALLER, SESSION, NotSignedIn

log = logging.getLogger("opsgate.console")
HERE = Path(__file__).parent
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "same-origin", "X-Frame-Options": "DENY"}
NAV = (("trail", "Audit trail"), ("exceptions", "Exceptions"), ("policies", "Policies"),
       ("health", "Upstreams and health"))


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    return env


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(engine=JinjaTemplateEngine.from_environment(_environment()))


def secure(response: Response[Any]) -> Response[Any]:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def render(request: Request[Any, Any, Any], name: str, *, status: int = 200, section: str | None = None,
           **context: Any) -> Template:
    """The page `name` in the console's frame, for the signed-in caller (if any)."""
    state = request.scope.get("state", {})
    caller, opened = state.get(CALLER), state.get(SESSION)
    console = request.app.state.console
    return Template(template_name=name, status_code=status, headers=SECURITY_HEADERS, context={
        "caller": caller, "csrf": opened.record.csrf if opened else None, "nav": NAV, "section": section,
        "how": opened.record.how if opened else None, "demo": console.demo is not None, **context})


def on_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Console refusals and failures as pages (never a traceback, never JSON)."""
    if isinstance(exc, NotSignedIn):
        if request.headers.get("hx-request"):
            return secure(Response(b"", status_code=401, headers={"HX-Redirect": "/console/signin"}))
        return secure(Redirect("/console/signin", status_code=303))
    if not isinstance(exc, HTTPException):
        log.error("console: %s %s failed", request.method, request.url.path, exc_info=exc)
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "the console failed; the gateway log says why"
    if status == 405:
        detail = "that is not something this page does"
    template = render(request, "error.html", status=status, detail=detail, status_code=status)
    return template  # type: ignore[return-value]


__all__ = ["CSP", "NAV", "SECURITY_HEADERS", "on_error", "render", "secure", "template_config"]
