"""create_app(): the composition root. Every part of the gateway is built or handed in here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar, asgi
from litestar.types import Receive, Scope, Send

from gateway.mcp_app import McpEndpoint, build_server, caller_from_scope, session_manager
from gateway.routes import ROUTES
from gateway.services import Services
from otel.tracing import OpsgateTracerProvider, use_provider

log = logging.getLogger("opsgate.gateway")
VERSION = "0.1.0"


def create_app(services: Services, *, allowed_hosts: list[str], allowed_origins: list[str],
               max_body_bytes: int = 1 << 20, health_timeout_s: float = 5.0,
               tracer_provider: OpsgateTracerProvider | None = None) -> Litestar:
    server = build_server(services.pipeline, caller_from_scope, version=VERSION)
    manager = session_manager(server, allowed_hosts=allowed_hosts, allowed_origins=allowed_origins,
                              max_body_bytes=max_body_bytes)
    endpoint = McpEndpoint(manager, services.authenticate)

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
        watcher = asyncio.create_task(_watch_expiries(services))
        await services.start_providers()
        try:
            async with manager.run():
                yield
        finally:
            await services.stop_providers()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if services.limiter is not None:
            await services.limiter.close()
        if services.audit is not None:
            await services.audit.store.close()
        if tracer_provider is not None:
            tracer_provider.shutdown()  # flushes a batch exporter

    app = Litestar([mcp, *ROUTES], lifespan=[lifespan], debug=False)
    app.state.services = services
    app.state.health_timeout_s = health_timeout_s
    logging.getLogger("mcp").setLevel(logging.WARNING)  # else every stateless request logs a line
    return app


EXPIRY_CHECK_S = 30.0


async def _watch_expiries(services: Services) -> None:
    """Deviation exceptions stop working at their expiry second inside the engine (no I/O there);
    this writes the "expired" lifecycle row soon after, at start-up and every EXPIRY_CHECK_S,
    so the audit trail does not wait for the monthly review."""
    root = services.engine.exceptions_dir
    if root is None or services.audit is None:
        return
    from engine.exceptions import scan
    from gateway.exception_lifecycle import LifecycleEvents

    events = LifecycleEvents(services.audit.store)
    while True:
        try:
            await events.record_expiries(scan(root), services.clock())
        except Exception as e:  # the next round tries again; serving never depends on this
            logging.getLogger("opsgate.exceptions").warning("recording expired exceptions failed: %s",
                                                            type(e).__name__)
        await asyncio.sleep(EXPIRY_CHECK_S)


def _reload(services: Services) -> Any:
    ok, issues = services.engine.reload()
    if ok:
        log.info("policy bundle reloaded: revision %s", services.engine.bundle.revision)
    else:
        log.error("policy bundle refused, keeping %s:\n%s", services.engine.bundle.revision,
                  "\n".join(str(i) for i in issues))
    return ok


__all__ = ["VERSION", "create_app"]
