"""create_app(): the composition root. Every part of the gateway is built or handed in here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, asgi
from litestar.middleware import DefineMiddleware
from litestar.types import Receive, Scope, Send

from gateway.console import Console, console_router
from gateway.console.pages import template_config
from gateway.edge import Edge, EdgeMiddleware
from gateway.exception_trust import exceptions_ready, watch_exceptions
from gateway.health_cache import HealthCache
from gateway.mcp_app import McpEndpoint, build_server, caller_from_scope, session_manager
from gateway.routes import ROUTES
from gateway.routes.health import aggregate
from gateway.services import Services
from otel.tracing import OpsgateTracerProvider, use_provider

log = logging.getLogger("opsgate.gateway")
VERSION = "0.1.0"


def create_app(services: Services, *, edge: Edge, max_body_bytes: int = 1 << 20, health_timeout_s: float = 5.0,
               health_cache_s: float = 5.0,
               tracer_provider: OpsgateTracerProvider | None = None, console: Console | None = None) -> Litestar:
    """`console`: serve the web console at /console (gateway/console) with these sessions and sign-ins."""
    server = build_server(services.pipeline, caller_from_scope, version=VERSION)
    manager = session_manager(server, max_body_bytes=max_body_bytes)
    # 2026-07-28 requests that ask for log messages: answered JSON too, unless a notice is sent.
    streaming = session_manager(server, max_body_bytes=max_body_bytes, json_response=False)
    endpoint = McpEndpoint(manager, services.authenticate,
                           lambda scope, presented, why: edge.challenge(scope, presented=presented, description=why),
                           streaming, max_body_bytes)

    @asgi("/mcp", is_mount=True, copy_scope=True)
    async def mcp(scope: Scope, receive: Receive, send: Send) -> None:
        if tracer_provider is None:
            await endpoint(scope, receive, send)  # type: ignore[arg-type]
            return
        with use_provider(tracer_provider):  # the SDK's SERVER spans and ours go to this app's provider
            await endpoint(scope, receive, send)  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ValueError, NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, _reload, services))
        if services.audit is not None:
            await services.audit.store.start()
        await exceptions_ready(services)  # exceptions load once the audit trail can vouch for them
        watcher = asyncio.create_task(watch_exceptions(services))
        refusals = asyncio.create_task(services.refusals.run()) if services.refusals is not None else None
        await services.start_providers()
        try:
            async with manager.run(), streaming.run():
                yield
        finally:
            await services.stop_providers()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if refusals is not None:  # writes the last interval's refusal rows before the store closes
                services.refusals.stop()
                await refusals
        if services.limiter is not None:
            await services.limiter.close()
        if console is not None:
            await console.sessions.aclose()
        if services.audit is not None:
            await services.audit.store.close()
        if tracer_provider is not None:
            tracer_provider.shutdown()  # flushes a batch exporter

    handlers: list[Any] = [mcp, *ROUTES, *([console_router()] if console is not None else [])]
    app = Litestar(handlers, lifespan=[lifespan], debug=False,
                   middleware=[DefineMiddleware(EdgeMiddleware, edge=edge, refusals=services.refusals)],
                   template_config=template_config() if console is not None else None)
    app.state.console = console
    app.state.services = services
    app.state.edge = edge
    app.state.health_timeout_s = health_timeout_s
    app.state.health_cache = HealthCache(lambda: aggregate(services, health_timeout_s), max_age_s=health_cache_s)
    logging.getLogger("mcp").setLevel(logging.WARNING)  # else every stateless request logs a line
    return app


def _reload(services: Services) -> Any:
    ok, issues = services.reload_here()
    if ok:
        log.info("policy bundle reloaded: revision %s", services.engine.bundle.revision)
    else:
        log.error("policy bundle refused, keeping %s:\n%s", services.engine.bundle.revision,
                  "\n".join(str(i) for i in issues))
    return ok


__all__ = ["VERSION", "create_app"]
