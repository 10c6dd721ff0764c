"""A gateway process for bench/gateway.py: `governed` is the real app (authentication, decision,
tier, limiter, tracing set up as by default) without the audit store, which bench/events.py
measures; `bare` the same MCP transport and endpoint with all of that taken out."""

from __future__ import annotations

import argparse
from typing import Any

from litestar import Litestar, asgi
from litestar.types import Receive, Scope, Send
from mcp import types

from bench.harness import serve_forever
from gateway.config import GatewayConfig
from gateway.mcp_app import McpEndpoint, build_server, caller_from_scope, session_manager
from gateway.pipeline import to_result
from gateway.registry import Registry
from gateway.serve import build_app
from providers.echo import EchoProvider
from providers.sdk import CallContext


class Anyone:
    id = "00000000-0000-4000-8000-000000000000"
    role = "ops_admin"


class BarePipeline:
    """Calls the echo tool directly: what serving costs without governance."""

    def __init__(self) -> None:
        self.registry = Registry([EchoProvider()])

    def list_tools(self, caller: Any) -> types.ListToolsResult:
        # The same list the governed server gives (unfiltered): the client looks tools up in it.
        return types.ListToolsResult(tools=[types.Tool(name=t.name, description=t.tool.description,
                                                       input_schema=t.input_schema) for t in self.registry.tools])

    async def call_tool(self, caller: Any, name: str, arguments: Any, out: Any = None,
                        peer: Any = None) -> types.CallToolResult:
        tool = self.registry.get(name).tool  # type: ignore[union-attr]
        args = tool.input(**(arguments or {}))
        return to_result(await tool.handler(CallContext(caller.id, name, ""), args))


def bare_app(config: GatewayConfig) -> Litestar:
    import contextlib

    server = build_server(BarePipeline(), caller_from_scope, version="bare")  # type: ignore[arg-type]
    manager = session_manager(server, allowed_hosts=list(config.allowed_hosts),
                              allowed_origins=list(config.allowed_origins), max_body_bytes=config.max_body_bytes)

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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--serve", choices=("governed", "bare"), required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--policies", required=True)
    p.add_argument("--state-dir", required=True)
    a = p.parse_args()
    config = GatewayConfig(port=a.port, policies=a.policies, state_dir=a.state_dir)
    if a.serve == "bare":
        app = bare_app(config)
    else:
        # The same one provider as `bare` serves: the comparison is governance, not how many
        # tools a listing carries.
        app, services, _ = build_app(config, providers=[EchoProvider()])
        services.pipeline.audit = None  # issue 3's governance; the store is issue 4's, in bench/events.py
    serve_forever(app, a.port)


if __name__ == "__main__":
    main()
