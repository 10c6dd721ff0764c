"""Run the real gateway under uvicorn on a loopback port, in a thread, for end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from gateway.config import GatewayConfig
from gateway.serve import build_app, demo_user_id, mint_token
from gateway.services import Services
from tests.conftest import ROOT


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
def running_gateway(config: GatewayConfig, providers: list[Any] | None = None,
                    port: int | None = None) -> Iterator[RunningGateway]:
    app, services, secret = build_app(config, providers=providers)
    with serving_app(app, "gateway", port=port) as url:
        yield RunningGateway(url, services, secret, config.auth_issuer)


@contextlib.contextmanager
def serving_app(app: Any, what: str = "app", port: int | None = None) -> Iterator[str]:
    """Run an ASGI app under uvicorn on a free loopback port (or `port`), in a thread, until the block
    ends; yields its base URL. The app sees the real socket peer (uvicorn's proxy_headers off, as
    `opsgate serve` runs it)."""
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                           proxy_headers=False))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class GatewayProcess:
    """A gateway running as a child process (its output in `log`)."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.log = log

    def log_tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
        return "\n".join(lines[-n:])

    def health(self) -> dict[str, Any]:
        """The readiness report (rate limiter, events with the outbox): uncached and anonymous,
        unlike GET /health, whose detail needs a token and is a cached probe of every provider."""
        return httpx.get(self.url + "/health/ready", timeout=10).json()


@contextlib.contextmanager
def serving_process(module_argv: list[str], port: int, log: Path, name: str, *,
                    own_group: bool = False, start_s: float = 30) -> Iterator[GatewayProcess]:
    """`python -m <module_argv>` serving on `port`, yielded once GET /health/live answers;
    terminated (killed if it will not stop) afterwards. `own_group`: in a process group of its own
    (as a terminal's job is: Ctrl-C reaches every process in it), ended as a group."""
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", *module_argv], cwd=ROOT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=own_group)
    gw = GatewayProcess(proc, f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + start_s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"gateway {name} exited with {proc.returncode}:\n{gw.log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(gw.url + "/health/live", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"gateway {name} not live after {start_s:g} s:\n{gw.log_tail()}")
            time.sleep(0.05)
        yield gw
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if own_group:  # whatever of the group outlived its leader
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def refusal_code(result: Any) -> str | None:
    """The stable code of a refusal the gateway answered as the tool's result (isError with
    `error: {code, ...}`: what the model can correct); None for any other result."""
    error = (result.structured_content or {}).get("error") if result.is_error else None
    return error.get("code") if isinstance(error, dict) else None


async def call(gw: RunningGateway, role: str | None, tool: str, args: dict[str, Any]) -> Any:
    """The tool's MCP result, or the gateway's error code when the call was refused (as a JSON-RPC
    error, or as an isError result with a code)."""
    try:
        async with gw.client(gw.token(role)) as c:
            result = await c.call_tool(tool, args)
    except BaseException as e:
        return code_of(e)
    return refusal_code(result) or result


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
