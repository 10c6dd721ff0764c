"""Processes for bench/upstream.py: `upstream` is an MCP server (the `mcp` SDK's low-level Server,
stateless streamable HTTP, JSON answers) with one no-op tool; `gateway` the real governed gateway
(authentication, decision, tier, limiter, audit store) serving the upstreams its bundle declares;
`--stdio` the same no-op server over stdio, as a gateway's child or the bench's."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server


def noop_server() -> Server[Any]:
    tool = types.Tool(name="noop", description="Do nothing.", input_schema={
        "type": "object", "properties": {"message": {"type": "string"}}})

    async def on_list_tools(ctx: ServerRequestContext[Any, Any], params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[tool])

    async def on_call_tool(ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams) -> Any:
        return types.CallToolResult(content=[types.TextContent(type="text", text="ok")])

    return Server("bench-upstream", version="1.0", on_list_tools=on_list_tools, on_call_tool=on_call_tool)


def upstream_app() -> Any:
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from starlette.applications import Starlette
    from starlette.routing import Mount

    manager = StreamableHTTPSessionManager(app=noop_server(), json_response=True)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with manager.run():
            yield

    return Starlette(routes=[Mount("/mcp", app=manager.handle_request)], lifespan=lifespan)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--serve", choices=("upstream", "gateway"))
    p.add_argument("--stdio", action="store_true")
    p.add_argument("--port", type=int)
    p.add_argument("--policies")
    p.add_argument("--state-dir")
    a = p.parse_args()
    if a.stdio:
        from mcp.server.stdio import stdio_server

        server = noop_server()

        async def run() -> None:
            async with stdio_server() as (read, write):
                await server.run(read, write, server.create_initialization_options())

        asyncio.run(run())
        return
    from bench.harness import serve_forever

    if a.serve == "upstream":
        serve_forever(upstream_app(), a.port)
        return
    from gateway.config import GatewayConfig
    from gateway.serve import build_app
    from providers.echo import EchoProvider

    app, _, _ = build_app(GatewayConfig(port=a.port, policies=a.policies, state_dir=a.state_dir),
                          providers=[EchoProvider()])
    serve_forever(app, a.port)


if __name__ == "__main__":
    main()
