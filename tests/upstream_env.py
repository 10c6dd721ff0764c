"""Set-up shared by the upstream MCP server tests: a bundle declaring an upstream, pinned with the
real `opsgate upstream pin`, and the gateway serving it."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx2
import yaml
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.cli import main as opsgate
from tests.conftest import POLICIES, ROOT
from tests.harness import RunningGateway

# A kind for each fixture tool the tests call; the others stay unkinded (never served).
KINDS = {"echo": "read", "noop": "create", "media": "read", "fail": "read", "bad-output": "read", "hang": "read",
         "die": "read", "flood": "read", "oversize": "read", "sample": "read", "elicit": "read", "env": "read",
         "reach": "read", "rug": "read"}


def bundle(tmp: Path, name: str, decl: dict[str, Any], allow: list[str] = ()) -> Path:  # type: ignore[assignment]
    """A copy of the canonical bundle declaring upstream `name`; `allow` entries go to its allowlist."""
    dst = tmp / "policies"
    if not dst.exists():
        shutil.copytree(POLICIES, dst, ignore=shutil.ignore_patterns("tests"))
    (dst / "upstreams").mkdir(exist_ok=True)
    (dst / "upstreams" / f"{name}.yaml").write_text(yaml.safe_dump(decl))
    if allow:
        allowlist = yaml.safe_load((dst / "provider-allowlist.yaml").read_text())
        allowlist[name] = list(allow)
        (dst / "provider-allowlist.yaml").write_text(yaml.safe_dump(allowlist))
    return dst


def http_decl(url: str, **extra: Any) -> dict[str, Any]:
    return {"transport": "http", "url": url + "/mcp", "tools": {t: {"kind": k} for t, k in KINDS.items()},
            "timeouts": {"connect_s": 20, "call_s": 20, "list_s": 20}, **extra}


def stdio_decl(state: Path, **extra: Any) -> dict[str, Any]:
    return {"transport": "stdio", "command": sys.executable, "cwd": str(ROOT),
            "args": ["-m", "tests.upstreams.mcp_fixture", "--state", str(state)],
            "tools": {t: {"kind": k} for t, k in KINDS.items()},
            "timeouts": {"connect_s": 30, "call_s": 30, "list_s": 20}, **extra}


def pin(policies: Path, state_dir: Path, name: str, *more: str) -> int:
    return opsgate(["upstream", "pin", name, "--policies", str(policies), "--state-dir", str(state_dir), *more])


class Legacy:
    """A 2025-11-25 client (initialize, a session, its GET stream) with the given callbacks;
    `get_open` is set once the session's GET stream is established (what the gateway's
    server-to-client messages to a 2025 caller over HTTP travel on)."""

    def __init__(self, gw: RunningGateway, role: str, **callbacks: Any) -> None:
        self.get_open = anyio.Event()

        async def seen(response: httpx2.Response) -> None:
            if response.request.method == "GET" and response.status_code == 200:
                self.get_open.set()

        self.http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {gw.token(role)}"}, timeout=30,
                                       event_hooks={"response": [seen]})
        self.client = Client(streamable_http_client(gw.url + "/mcp", http_client=self.http), mode="legacy",
                             **callbacks)

    async def __aenter__(self) -> Client:
        await self.http.__aenter__()
        c = await self.client.__aenter__()
        with anyio.fail_after(30):
            await self.get_open.wait()
        return c

    async def __aexit__(self, *exc: Any) -> None:
        await self.client.__aexit__(*exc)
        await self.http.__aexit__(*exc)


__all__ = ["KINDS", "Legacy", "bundle", "http_decl", "pin", "stdio_decl"]
