"""`opsgate stdio` driven by the real mcp client over stdin/stdout of a real child process.

The caller is whoever holds the token in MCP_VIEWER_JWT: it is verified on every request, so a
missing, expired or expiring token refuses calls UNAUTHENTICATED. The child gets a minimal
environment: PATH, HOME, PYTHONPATH and the caller's own token, nothing else of ours (the mcp
SDK adds the non-secret LOGNAME, SHELL, TERM and USER from this process when set); the signing
key stays in the embedded vault under --state-dir.

Both client modes work over stdio: `legacy` (initialize handshake, 2025-11-25) and `auto`
(server/discover, 2026-07-28).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError

from gateway.config import GatewayConfig
from gateway.registry import Registry
from gateway.serve import default_providers, mint_token, signing_key
from tests.conftest import POLICIES, ROOT

pytestmark = pytest.mark.anyio

MODES = ["legacy", "auto"]
PROTOCOL = {"legacy": "2025-11-25", "auto": "2026-07-28"}
# What a viewer sees: every read-kind tool of the default providers (echo, omega, ...).
READ_TOOLS = {t.name for t in Registry(default_providers()).tools if t.tool.kind == "read"}
ISSUER = GatewayConfig().auth_issuer
SDK_INHERITED = {"LOGNAME", "SHELL", "TERM", "USER"}  # mcp.client.stdio.DEFAULT_INHERITED_ENV_VARS


class Stdio:
    """One state dir (so one embedded vault and dev signing key) for every child of this module."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / "state"
        self.secret = signing_key(GatewayConfig(state_dir=str(self.state)))

    def token(self, role: str | None, **kw: Any) -> str:
        return mint_token(self.secret, issuer=ISSUER, user_id=str(uuid.uuid4()), role=role, **kw)

    def env(self, token: str | None) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": os.environ.get("HOME", str(self.root)),
               "PYTHONPATH": str(ROOT)}
        if token is not None:
            env["MCP_VIEWER_JWT"] = token
        return env

    def params(self, token: str | None) -> StdioServerParameters:
        args = ["-m", "gateway.cli", "stdio", "--policies", str(POLICIES), "--state-dir", str(self.state)]
        # cwd outside the repository: the child must need nothing but its arguments and env.
        return StdioServerParameters(command=sys.executable, args=args, env=self.env(token), cwd=str(self.root))

    @contextlib.asynccontextmanager
    async def client(self, token: str | None, mode: str) -> AsyncIterator[Client]:
        with anyio.fail_after(30):
            async with Client(self.params(token), mode=mode) as c:
                assert c.session.protocol_version == PROTOCOL[mode]
                yield c


@pytest.fixture(scope="module")
def stdio(tmp_path_factory: pytest.TempPathFactory) -> Stdio:
    return Stdio(tmp_path_factory.mktemp("stdio"))


def code_of(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, MCPError), repr(exc)
    return exc.error.data["code"]


async def refused(call: Any) -> str:
    with pytest.raises(MCPError) as err:
        await call
    return code_of(err.value)


@pytest.mark.parametrize("mode", MODES)
async def test_viewer_lists_and_calls_only_the_read_tools(stdio: Stdio, mode: str) -> None:
    async with stdio.client(stdio.token("ops_viewer"), mode) as c:
        listed = await c.list_tools()
        assert {t.name for t in listed.tools} == READ_TOOLS
        result = await c.call_tool("echo.ping", {"message": "over stdio"})
        assert not result.is_error and result.structured_content["message"] == "over stdio"
        assert await refused(c.call_tool("echo.scan", {"message": "x"})) == "FORBIDDEN"


@pytest.mark.parametrize("mode", MODES)
async def test_operator_can_scan(stdio: Stdio, mode: str) -> None:
    async with stdio.client(stdio.token("ops_operator"), mode) as c:
        result = await c.call_tool("echo.scan", {"message": "hello"})
    assert not result.is_error
    assert result.structured_content == {"message": "hello", "tool": "echo.scan"}


@pytest.mark.parametrize("mode", MODES)
async def test_without_a_token_every_call_is_unauthenticated(stdio: Stdio, mode: str) -> None:
    async with stdio.client(None, mode) as c:
        assert await refused(c.list_tools()) == "UNAUTHENTICATED"
        for tool in ("echo.ping", "echo.health", "echo.scan"):
            assert await refused(c.call_tool(tool, {})) == "UNAUTHENTICATED"


@pytest.mark.parametrize("mode", MODES)
async def test_an_expired_token_is_unauthenticated(stdio: Stdio, mode: str) -> None:
    async with stdio.client(stdio.token("ops_admin", ttl_s=-3600), mode) as c:
        assert await refused(c.call_tool("echo.ping", {})) == "UNAUTHENTICATED"
        assert await refused(c.list_tools()) == "UNAUTHENTICATED"


async def test_a_token_that_expires_mid_session_stops_working(stdio: Stdio) -> None:
    """The token is checked on every request, not once at start-up (the verifier allows 30 s of
    clock skew, so a token whose `exp` is 22 s past is accepted for 7 to 8 s more)."""
    minted = time.time()
    token = stdio.token("ops_viewer", ttl_s=-22)
    async with stdio.client(token, "legacy") as c:
        assert not (await c.call_tool("echo.ping", {})).is_error
        assert time.time() - minted < 7, "too slow to start to test expiry mid-session"
        await anyio.sleep(max(0.0, minted + 8.5 - time.time()))
        assert await refused(c.call_tool("echo.ping", {})) == "UNAUTHENTICATED"


def children_running(state_dir: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if b"stdio" in argv and str(state_dir).encode() in argv:
                pids.append(int(entry.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to read the child's environment")
async def test_the_child_environment_holds_no_secret_but_the_callers_token(stdio: Stdio) -> None:
    token = stdio.token("ops_viewer")
    async with stdio.client(token, "legacy") as c:
        assert not (await c.call_tool("echo.ping", {})).is_error
        (pid,) = children_running(stdio.state)
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    names = {k.decode() for k in env}
    assert {"PATH", "HOME", "PYTHONPATH", "MCP_VIEWER_JWT"} <= names <= {
        "PATH", "HOME", "PYTHONPATH", "MCP_VIEWER_JWT", *SDK_INHERITED}, names
    assert env[b"MCP_VIEWER_JWT"] == token.encode() and env[b"PYTHONPATH"] == str(ROOT).encode()
    assert stdio.secret not in raw  # the signing key is read from the vault, never passed in


@pytest.mark.parametrize("mode", MODES)
async def test_log_messages_over_stdio_at_the_level_asked_for(stdio: Stdio, mode: str) -> None:
    """2025 over stdio: after logging/setLevel the call's notices come on the connection; 2026-07-28:
    when the request's `_meta` asks for them. Both at or above the level asked for."""
    from mcp import types
    from mcp.shared.exceptions import MCPDeprecationWarning

    heard: list[types.LoggingMessageNotificationParams] = []
    arrived = anyio.Event()

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        heard.append(params)
        if "left in bucket" in str(params.data):
            arrived.set()

    options: dict[str, Any] = {"logging_callback": on_log, **({"log_level": "info"} if mode == "auto" else {})}
    with anyio.fail_after(30):
        async with Client(stdio.params(stdio.token("ops_viewer")), mode=mode, **options) as c:
            if mode == "legacy":
                with pytest.warns(MCPDeprecationWarning):
                    assert isinstance(await c.set_logging_level("info"), types.EmptyResult)
            assert not (await c.call_tool("echo.ping", {"message": "hi"})).is_error
            await arrived.wait()
    assert {m.logger for m in heard} == {"opsgate"}
    assert any("allowed by rbac.viewer.read" in str(m.data) for m in heard)
    assert any("99 of 100 left in bucket 'reads'" in str(m.data) for m in heard)
