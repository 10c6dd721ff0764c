"""A gateway process for bench/gateway.py: `governed` is the real app (authentication, decision,
tier, limiter, metrics, tracing set up as by default) without the audit store, which bench/events.py
measures; `bare` the same MCP transport and endpoint with all of that taken out.

`--workers N` (N > 1) runs N processes of the same server on one socket under the gateway's own
supervisor (gateway/workers.py), as `opsgate serve --workers N` does; governed workers share the
Redis limiter at `--redis-url` (the memory limiter is per process), and their metrics are the
fleet's. The supervisor writes `<state-dir>/serving` once every worker serves.

The gateway's modules are imported only inside functions: prometheus_client must not be imported
before the fleet's metrics directory is named in the environment.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from bench.harness import server


class Anyone:
    id = "00000000-0000-4000-8000-000000000000"
    role = "ops_admin"


def bare_pipeline() -> Any:
    from mcp import types

    from gateway.pipeline import to_result
    from gateway.registry import Registry
    from providers.echo import EchoProvider
    from providers.sdk import CallContext

    class BarePipeline:
        """Calls the echo tool directly: what serving costs without governance."""

        def __init__(self) -> None:
            self.registry = Registry([EchoProvider()])

        def list_tools(self, caller: Any, cursor: str | None = None) -> types.ListToolsResult:
            # The same list the governed server gives (unfiltered): the client looks tools up in it.
            return types.ListToolsResult(tools=[types.Tool(name=t.name, description=t.tool.description,
                                                           input_schema=t.input_schema) for t in self.registry.tools])

        async def call_tool(self, caller: Any, name: str, arguments: Any, out: Any = None,
                            peer: Any = None) -> types.CallToolResult:
            tool = self.registry.get(name).tool  # type: ignore[union-attr]
            args = tool.input(**(arguments or {}))
            return to_result(await tool.handler(CallContext(caller.id, name, ""), args))

    return BarePipeline()


def bare_app(config: Any) -> Any:
    import contextlib

    from litestar import Litestar, asgi
    from litestar.types import Receive, Scope, Send

    from gateway.mcp_app import McpEndpoint, build_server, caller_from_scope, session_manager

    server = build_server(bare_pipeline(), caller_from_scope, version="bare")
    manager = session_manager(server, max_body_bytes=config.max_body_bytes)

    async def anyone(header: str | None) -> Any:
        return Anyone()

    endpoint = McpEndpoint(manager, anyone)

    @asgi("/mcp", is_mount=True, copy_scope=True)
    async def mcp(scope: Scope, receive: Receive, send: Send) -> None:
        await endpoint(scope, receive, send)  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> Any:
        async with manager.run():
            yield

    return Litestar([mcp], lifespan=[lifespan])


def app_for(mode: str, config: Any, metrics_dir: str | None = None) -> Any:
    from gateway.serve import build_app
    from providers.echo import EchoProvider

    if mode == "bare":
        return bare_app(config)
    # The same one provider as `bare` serves: the comparison is governance, not how many
    # tools a listing carries.
    app, services, _ = build_app(config, providers=[EchoProvider()], metrics_dir=metrics_dir)
    services.pipeline.audit = None  # issue 3's governance; the store is issue 4's, in bench/events.py
    return app


def worker(argument: tuple[str, Any], env: Any) -> Any:
    """One worker of a fleet (gateway/workers.py target)."""
    mode, config = argument
    return server(app_for(mode, config, env.metrics_dir), config.port)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--serve", choices=("governed", "bare"), required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--policies", required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    a = p.parse_args()
    if a.workers == 1:
        from gateway.config import GatewayConfig

        config = GatewayConfig(port=a.port, policies=a.policies, state_dir=a.state_dir)
        server(app_for(a.serve, config), a.port).run()
        return
    from gateway.workers import listen, metrics_dir, supervise

    directory = metrics_dir(a.state_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)  # before anything imports prometheus_client
    from gateway.config import GatewayConfig

    config = GatewayConfig(port=a.port, policies=a.policies, state_dir=a.state_dir, limiter="redis",
                           redis_url=a.redis_url, workers=a.workers)
    ready = Path(a.state_dir) / "serving"
    sys.exit(supervise(listen("127.0.0.1", a.port), workers=a.workers, target=worker, argument=(a.serve, config),
                       metrics_dir=directory, on_serving=ready.touch))


if __name__ == "__main__":
    main()
