"""Run the real gateway under uvicorn on a loopback port, in a thread, for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from gateway.config import GatewayConfig
from gateway.serve import build_app, demo_user_id, mint_token
from gateway.services import Services


def unwrap(exc: BaseException) -> MCPError:
    """The MCPError inside the exception groups the client may wrap it in."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, MCPError), repr(exc)
    return exc


def code_of(exc: BaseException) -> str:
    """The gateway's stable error code (`error.data.code`)."""
    return unwrap(exc).error.data["code"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningGateway:
    url: str
    services: Services
    secret: bytes
    issuer: str

    def token(self, role: str | None, *, user_id: str | None = None, **kw: Any) -> str:
        return mint_token(self.secret, issuer=self.issuer, user_id=user_id or demo_user_id(role or "none"),
                          role=role, **kw)

    @contextlib.asynccontextmanager
    async def client(self, token: str | None, mode: str = "auto",
                     responses: list[httpx2.Response] | None = None) -> AsyncIterator[Client]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}

        async def keep(response: httpx2.Response) -> None:
            if responses is not None:
                responses.append(response)

        http = httpx2.AsyncClient(headers=headers, event_hooks={"response": [keep]}, timeout=30)
        async with http, Client(streamable_http_client(self.url + "/mcp", http_client=http), mode=mode) as c:
            yield c


@contextlib.contextmanager
def running_gateway(config: GatewayConfig, providers: list[Any] | None = None) -> Iterator[RunningGateway]:
    port = free_port()
    app, services, secret = build_app(config, providers=providers)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("gateway did not start")
        time.sleep(0.02)
    try:
        yield RunningGateway(f"http://127.0.0.1:{port}", services, secret, config.auth_issuer)
    finally:
        server.should_exit = True
        thread.join(10)


async def call(gw: RunningGateway, role: str | None, tool: str, args: dict[str, Any]) -> Any:
    """The tool's MCP result, or the gateway's error code when the call was refused."""
    try:
        async with gw.client(gw.token(role)) as c:
            return await c.call_tool(tool, args)
    except BaseException as e:
        return code_of(e)


async def ok(gw: RunningGateway, role: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """The structured answer of a call that must succeed."""
    r = await call(gw, role, tool, args)
    assert not isinstance(r, str), r
    assert not r.is_error, r.structured_content
    return r.structured_content


async def tool_error(gw: RunningGateway, role: str, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """The structured answer of a call that must end in a tool error (the upstream failed)."""
    r = await call(gw, role, tool, args)
    assert not isinstance(r, str), r
    assert r.is_error, r.structured_content
    return r.structured_content
