"""Upstreams and health in the console: every provider's health and tools, tools awaiting review,
the rate limiter, the audit store and the outbox backlog.

    GET /console/health      any ops role (as GET /health's detail: `opsgate.health`)

Invariants:
- Provider health comes from GET /health's own cached probe (gateway/health_cache.py): opening
  this page never makes the gateway call a vendor more often than once per `health_cache_s`.
- Each part of the page is one source (SOURCES): a function of the services giving one section.
  Upstream MCP servers are one of them: what the bundle declares and pins (policy data, reviewed in
  git) beside what each adapter reports live (served tools, tools refused because their definition
  drifted from the pins and awaiting review, sessions, isolation), as `opsgate upstream check` says it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

from litestar import Request, get
from litestar.response import Template

from gateway.console.guards import caller_of, signed_in
from gateway.console.pages import render
from gateway.health_cache import HealthCache
from gateway.services import Services

Source = Callable[[Services, dict[str, Any]], Awaitable[dict[str, Any]]]


@runtime_checkable
class Reporting(Protocol):
    """An upstream adapter's own account of itself (providers.upstream_mcp UpstreamProvider.report)."""

    def report(self) -> dict[str, Any]: ...


def _declared(services: Services) -> set[str]:
    return {u.name for u in getattr(services.engine.bundle, "upstreams", ())}


async def providers(services: Services, report: dict[str, Any]) -> dict[str, Any]:
    """Each provider's health (the cached probe) and the tools it serves, each pinned or not in the
    policy catalogue; tools no catalogue entry covers are drift awaiting review (always denied)."""
    known = {t.name for t in services.engine.bundle.catalogue.tools}
    by_name = {p["provider"]: p for p in report.get("providers", [])}
    rows = []
    for name in sorted(set(services.registry.providers) - _declared(services)):
        tools = sorted(r.name for r in services.registry.tools if r.name.startswith(name + "."))
        rows.append({"name": name, "health": by_name.get(name, {"status": "unknown"}),
                     "tools": [{"name": t, "pinned": t in known} for t in tools]})
    return {"kind": "providers", "title": "Providers", "rows": rows,
            "drift": services.registry.drift(services.engine.bundle.catalogue)}


async def upstreams(services: Services, report: dict[str, Any]) -> dict[str, Any]:
    """Each upstream MCP server the bundle declares: its pins, and what its adapter reports live."""
    by_name = {p["provider"]: p for p in report.get("providers", [])}
    rows = []
    for u in sorted(getattr(services.engine.bundle, "upstreams", ()), key=lambda u: u.name):
        adapter = services.registry.providers.get(u.name)
        live: dict[str, Any] = adapter.report() if isinstance(adapter, Reporting) else {}
        pinned = [t.name for t in u.pins.tools] if u.pins is not None else []
        drifted = live.get("drifted", {})
        rows.append({"name": u.name, "transport": u.declaration.transport,
                     "health": by_name.get(u.name, {"status": "unknown"}), "pinned": pinned,
                     "pinned_at": u.pins.pinned_at if u.pins is not None else None,
                     "served": sorted(f"{u.name}.{local}" for up, local in u.served.items() if up not in drifted),
                     "unkinded": sorted(t for t in pinned if t not in u.served),
                     "drifted": drifted, "isolation": live.get("isolation"),
                     "why": live.get("why"), "sessions": live.get("sessions"), "last_error": live.get("last_error")})
    return {"kind": "upstreams", "title": "Upstream MCP servers", "rows": rows}


async def limiter(services: Services, report: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "facts", "title": "Rate limiter", "facts": await services.limiter_health()}


async def events(services: Services, report: dict[str, Any]) -> dict[str, Any]:
    facts = dict(await services.events_health())
    backlog = await services.outbox_backlog()
    facts["outbox backlog"] = "no outbox (embedded store)" if backlog is None else backlog
    return {"kind": "facts", "title": "Audit store", "facts": facts}


async def policy(services: Services, report: dict[str, Any]) -> dict[str, Any]:
    status = services.engine.status()
    return {"kind": "facts", "title": "Policy bundle", "facts": {
        "revision": status["revision"], "activated at": status["activated_at"],
        "last reload error": status["last_reload_error"] or "none"}}


SOURCES: tuple[Source, ...] = (providers, upstreams, limiter, events, policy)


@get("/health", guards=[signed_in])
async def health(request: Request[Any, Any, Any]) -> Template:
    services: Services = request.app.state.services
    services.admin_decision(caller_of(request), "opsgate.health")  # GET /health's detail needs the same
    cache: HealthCache[dict[str, Any]] = request.app.state.health_cache
    report, age = await cache.get()
    sections = [await source(services, report) for source in SOURCES]
    return render(request, "health.html", section="health", overall=report.get("status"), age=round(age, 1),
                  sections=sections)


ROUTES = [health]
__all__ = ["ROUTES", "SOURCES", "Source"]
