"""Health (constitution rule 6): every provider's health() at once, each bounded in time.

    GET /health        anonymous: {"status"} only, the worst of every part; with a token whose role
                       may `opsgate.health` (any ops role): each provider's report, limiter, events,
                       policy. Both from one cached probe (gateway/health_cache.py): no number of
                       callers, anonymous or not, makes the gateway probe its vendors more often
                       than once per `health_cache_s`.
    GET /health/live   the process answers
    GET /health/ready  a bundle is active, the rate limiter and the audit store answer (503 otherwise)
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import msgspec
from litestar import Request, Response, get

from gateway.health_cache import HealthCache
from gateway.routes.guards import authorize
from gateway.services import Services
from providers.sdk import HealthStatus, ProviderBase, now_iso

RANK = {"ok": 0, "degraded": 1, "down": 2}


async def bounded_health(provider: ProviderBase, timeout_s: float) -> HealthStatus:
    start = time.perf_counter()
    try:
        return await asyncio.wait_for(provider.health(), timeout_s)
    except TimeoutError:
        return HealthStatus(provider.name, "degraded", int((time.perf_counter() - start) * 1000), now_iso(),
                            f"no answer within {timeout_s:g}s")
    except Exception as e:  # a provider whose health() itself breaks is down, not a gateway crash
        return HealthStatus(provider.name, "down", int((time.perf_counter() - start) * 1000), now_iso(),
                            f"{type(e).__name__}: {e}")


async def aggregate(services: Services, timeout_s: float) -> dict[str, Any]:
    providers = list(services.registry.providers.values())
    reports = await asyncio.gather(*(bounded_health(p, timeout_s) for p in providers))
    limiter = await services.limiter_health()
    events = await services.events_health()
    worst = max((r.status for r in reports), key=RANK.__getitem__, default="ok")
    if not limiter.get("ok", False) or events.get("status") != "ok":
        worst = max(worst, "degraded", key=RANK.__getitem__)
    return {"status": worst, "providers": msgspec.to_builtins(reports), "rate_limiter": limiter, "events": events,
            "policy": {"revision": services.engine.bundle.revision,
                       "last_reload_error": services.engine.status()["last_reload_error"]}}


@get("/health")
async def health(request: Request[Any, Any, Any]) -> dict[str, Any]:
    cache: HealthCache[dict[str, Any]] = request.app.state.health_cache
    if request.headers.get("authorization") is None:
        report, _ = await cache.get()
        return {"status": report["status"]}
    await authorize(request, "opsgate.health")  # 401 or 403 before any probe
    report, age = await cache.get()
    return {**report, "age_s": round(age, 3)}


@get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


@get("/health/ready")
async def ready(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    services: Services = request.app.state.services
    limiter = await services.limiter_health()
    events = await services.events_health()
    # "degraded" events: the Postgres outbox is journaling while the database is away; calls still work.
    ok = bool(limiter.get("ok", False)) and events.get("status") in ("ok", "degraded")
    return Response({"status": "ok" if ok else "not ready", "rate_limiter": limiter, "events": events,
                     "revision": services.engine.bundle.revision}, status_code=200 if ok else 503)


ROUTES = [health, live, ready]
__all__ = ["ROUTES", "aggregate", "bounded_health"]
