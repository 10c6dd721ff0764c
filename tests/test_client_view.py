"""What an MCP client sees (issue 14), with the real mcp client over real HTTP in both client modes:
log messages at the level the client asked for, tool listings paged by an opaque cursor that only
resumes its own listing, cache hints marking listings private, and schemas that describe every
argument.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

from gateway.config import GatewayConfig
from providers.echo import EchoProvider
from tests.conftest import POLICIES
from tests.harness import RunningGateway, running_gateway

pytestmark = pytest.mark.anyio

MODES = ["auto", "legacy"]
GUARD_S = 20  # only against a hang: every wait below ends on an event
# A tier of two calls an hour on echo.scan, so the second call is the budget's last (a warning).
TIGHT_TIER = """
@id("tier.test.echo-scan")
@limit("2/hour")
@bucket("echo-scan-test")
permit (principal, action == Ops::Action::"echo.scan", resource);
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """The default providers (40 tools for an admin), listed three to a page."""
    config = GatewayConfig(policies=str(POLICIES), state_dir=str(tmp_path_factory.mktemp("state")), tools_page_size=3)
    with running_gateway(config) as running:
        yield running


@pytest.fixture
def tight(tmp_path: Path) -> Iterator[RunningGateway]:
    """Echo only, with TIGHT_TIER added to the shipped policies."""
    bundle = tmp_path / "policies"
    shutil.copytree(POLICIES, bundle, ignore=shutil.ignore_patterns("tests"))
    with (bundle / "tiers" / "rate-tiers.cedar").open("a") as f:
        f.write(TIGHT_TIER)
    config = GatewayConfig(policies=str(bundle), state_dir=str(tmp_path / "state"))
    with running_gateway(config, providers=[EchoProvider()]) as running:
        yield running


class Heard:
    """The log messages a client received, and a way to wait for one."""

    def __init__(self) -> None:
        self.messages: list[types.LoggingMessageNotificationParams] = []
        self._arrived = anyio.Event()

    async def __call__(self, params: types.LoggingMessageNotificationParams) -> None:
        self.messages.append(params)
        self._arrived.set()
        self._arrived = anyio.Event()

    async def until(self, fragment: str) -> types.LoggingMessageNotificationParams:
        with anyio.fail_after(GUARD_S):
            while True:
                found = [m for m in self.messages if fragment in str(m.data)]
                if found:
                    return found[0]
                await self._arrived.wait()


@contextlib.asynccontextmanager
async def client(gw: RunningGateway, role: str, mode: str, *, responses: list[httpx2.Response] | None = None,
                 **options: Any) -> AsyncIterator[Client]:
    get_stream = anyio.Event()

    async def hook(response: httpx2.Response) -> None:
        if responses is not None:
            responses.append(response)
        if response.request.method == "GET" and response.status_code == 200:
            get_stream.set()  # the session's GET stream is open: 2025 notices have a way in

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {gw.token(role)}"}, timeout=30,
                              event_hooks={"response": [hook]})
    async with http, Client(streamable_http_client(gw.url + "/mcp", http_client=http), mode=mode, **options) as c:
        if mode == "legacy":
            with anyio.fail_after(GUARD_S):
                await get_stream.wait()
        yield c


def call_response(responses: list[httpx2.Response]) -> httpx2.Response:
    """The HTTP response that carried the last tools/call."""
    return next(r for r in reversed(responses)
                if r.request.method == "POST" and b'"tools/call"' in r.request.content)


# -- logging ---------------------------------------------------------------------------------------


async def test_a_2026_request_that_asks_for_log_messages_gets_them_with_its_answer(tight: RunningGateway) -> None:
    heard, responses = Heard(), []
    async with client(tight, "ops_operator", "auto", responses=responses, logging_callback=heard,
                      log_level="info") as c:
        result = await c.call_tool("echo.scan", {"message": "hi"})
        assert not result.is_error
        decided = await heard.until("allowed by")
        budget = await heard.until("echo-scan-test")
    assert decided.level == "info" and decided.logger == "opsgate" and "rbac." in decided.data
    assert budget.level == "info" and "1 of 2 left" in budget.data
    answer = call_response(responses)
    # The notices rode the call's own response, which became a stream; its rate-limit headers are there.
    assert answer.headers["content-type"].startswith("text/event-stream")
    assert '"echo-scan-test";r=1' in answer.headers["RateLimit"]


async def test_a_2026_request_that_does_not_ask_hears_nothing(tight: RunningGateway) -> None:
    heard, responses = Heard(), []
    async with client(tight, "ops_operator", "auto", responses=responses, logging_callback=heard) as c:
        await c.call_tool("echo.scan", {"message": "hi"})
    answer = call_response(responses)
    assert answer.headers["content-type"] == "application/json"  # a JSON answer carries no notice
    assert "RateLimit" in answer.headers and heard.messages == []


async def test_2026_log_messages_below_the_level_asked_for_are_not_sent(tight: RunningGateway) -> None:
    heard, responses = Heard(), []
    async with client(tight, "ops_operator", "auto", responses=responses, logging_callback=heard,
                      log_level="warning") as c:
        await c.call_tool("echo.scan", {"message": "1"})
        # Only info notices for the first call: nothing to send, so the answer stayed JSON.
        assert call_response(responses).headers["content-type"] == "application/json"
        await c.call_tool("echo.scan", {"message": "2"})
        last = await heard.until("0 of 2 left")
    assert last.level == "warning"
    assert {m.level for m in heard.messages} == {"warning"}


async def test_logging_set_level_is_answered_and_governs_a_2025_session(tight: RunningGateway) -> None:
    heard = Heard()
    async with client(tight, "ops_operator", "legacy", logging_callback=heard) as c:
        with pytest.warns(MCPDeprecationWarning):
            assert isinstance(await c.set_logging_level("info"), types.EmptyResult)
        await c.call_tool("echo.scan", {"message": "1"})
        assert (await heard.until("1 of 2 left")).level == "info"
        assert (await heard.until("allowed by")).level == "info"
        with pytest.warns(MCPDeprecationWarning):
            await c.set_logging_level("warning")
        before = len(heard.messages)
        await c.call_tool("echo.scan", {"message": "2"})
        assert (await heard.until("0 of 2 left")).level == "warning"
    # After "warning" only the warning came (the info notices of that call would have come first).
    assert [m.level for m in heard.messages[before:]] == ["warning"]


async def test_set_level_is_not_a_2026_method(gw: RunningGateway) -> None:
    """2026-07-28 has no logging/setLevel (a request's `_meta` carries its level), so the method is
    unknown there, as the protocol defines."""
    async with client(gw, "ops_viewer", "auto") as c:
        with pytest.raises(MCPError) as err, pytest.warns(MCPDeprecationWarning):
            await c.set_logging_level("info")
    assert err.value.error.code == -32601


# -- paging and cache hints ------------------------------------------------------------------------


async def all_pages(c: Client) -> tuple[list[types.Tool], list[types.ListToolsResult]]:
    pages = [await c.list_tools()]
    while pages[-1].next_cursor is not None:
        assert len(pages) < 100, "the cursor does not advance"
        pages.append(await c.list_tools(cursor=pages[-1].next_cursor))
    return [t for p in pages for t in p.tools], pages


@pytest.mark.parametrize("mode", MODES)
async def test_a_long_listing_pages_by_cursor_to_exactly_the_callers_tools(gw: RunningGateway, mode: str) -> None:
    async with client(gw, "ops_admin", mode) as c:
        tools, pages = await all_pages(c)
    names = [t.name for t in tools]
    assert len(pages) == 14 and all(len(p.tools) == 3 for p in pages[:-1]) and len(pages[-1].tools) == 1
    assert len(names) == len(set(names)) == 40
    assert set(names) == {t.name for t in gw.services.pipeline.visible_tools(_Caller("admin", "ops_admin"))}
    if mode == "auto":  # 2026-07-28 carries cache hints: a listing is the caller's own
        assert all(p.cache_scope == "private" and p.ttl_ms == 1000 for p in pages)
    async with client(gw, "ops_viewer", mode) as c:
        viewer, _ = await all_pages(c)
    assert {t.name for t in viewer} < set(names) and not any(t.name.endswith(".comment") for t in viewer)


class _Caller:
    def __init__(self, id: str, role: str) -> None:
        self.id, self.role = id, role


@pytest.mark.parametrize("mode", MODES)
async def test_a_cursor_resumes_only_its_own_listing(gw: RunningGateway, mode: str) -> None:
    """Made-up, altered, another caller's and pre-reload cursors are refused as invalid params (-32602,
    the spec's code for an invalid cursor), never answered from some listing."""
    async with client(gw, "ops_admin", mode) as c:
        cursor = (await c.list_tools()).next_cursor
    assert cursor is not None
    import base64

    raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    version, offset, binding = raw.split(":")
    altered = base64.urlsafe_b64encode(f"{version}:{int(offset) + 3}:{binding}".encode()).decode().rstrip("=")
    hostile = {"made up": "bm90IGEgY3Vyc29y", "not base64": "%%%", "altered offset": altered, "huge": "A" * 5000}
    async with client(gw, "ops_admin", mode) as c:
        for label, bad in hostile.items():
            with pytest.raises(MCPError) as err:
                await c.list_tools(cursor=bad)
            assert (err.value.error.code, err.value.error.data["code"]) == (-32602, "INVALID_INPUT"), label
    # Another user of the same role, and the same user under another role, cannot resume it.
    other = gw.token("ops_admin", user_id="5d3c9a1e-7b2f-4e60-9c84-1f0a2b3c4d5e")
    for token in (other, gw.token("ops_viewer", user_id=_demo("ops_admin"))):
        async with _client_with_token(gw, token, mode) as c:
            with pytest.raises(MCPError) as err:
                await c.list_tools(cursor=cursor)
        assert err.value.error.data["code"] == "INVALID_INPUT" and "another caller" in err.value.error.message


@pytest.mark.parametrize("mode", MODES)
async def test_a_cursor_cut_before_a_policy_reload_is_refused(tight: RunningGateway, mode: str,
                                                              tmp_path: Path) -> None:
    """After a reload the listing may differ: the old cursor is refused, a fresh listing works."""
    tight.services.pipeline.page_size = 2
    async with client(tight, "ops_admin", mode) as c:
        cursor = (await c.list_tools()).next_cursor
    assert cursor is not None
    with (tmp_path / "policies" / "rbac.cedar").open("a") as f:
        f.write('\n@id("test.reloaded")\nforbid (principal, action, resource) when { false };\n')
    before = tight.services.engine.bundle.revision
    assert tight.services.engine.reload()[0] and tight.services.engine.bundle.revision != before
    async with client(tight, "ops_admin", mode) as c:
        with pytest.raises(MCPError) as err:
            await c.list_tools(cursor=cursor)
        assert err.value.error.data["code"] == "INVALID_INPUT" and "reloaded" in err.value.error.message
        assert len((await all_pages(c))[0]) == 7


def _demo(role: str) -> str:
    from gateway.serve import demo_user_id

    return demo_user_id(role)


@contextlib.asynccontextmanager
async def _client_with_token(gw: RunningGateway, token: str, mode: str) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with http, Client(streamable_http_client(gw.url + "/mcp", http_client=http), mode=mode) as c:
        yield c


# -- schemas ---------------------------------------------------------------------------------------


async def test_every_argument_of_every_served_tool_is_described(gw: RunningGateway) -> None:
    async with client(gw, "ops_admin", "auto") as c:
        tools, _ = await all_pages(c)
    undescribed = [f"{t.name}.{name}" for t in tools for name, prop in t.input_schema["properties"].items()
                   if not prop.get("description", "").strip()]
    assert undescribed == []
    assert all(t.description for t in tools)


# -- the demo says who is who ----------------------------------------------------------------------


def test_serve_prints_each_demo_users_id_and_ready_once_it_accepts_connections(tmp_path: Path) -> None:
    """`make run` (`opsgate serve --demo-tokens`): each token with the user id it carries (what Omega's
    userId wants), then `ready <url>`, printed only once the server takes connections: the first request
    right after it is answered, with no retry."""
    import os
    import subprocess
    import sys
    import threading

    import httpx
    import jwt

    from tests.conftest import ROOT

    argv = [sys.executable, "-m", "gateway.cli", "serve", "--demo-tokens", "--port", "0", "--policies", str(POLICIES),
            "--exceptions", str(ROOT / "exceptions"), "--state-dir", str(tmp_path / "state")]
    proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    guard = threading.Timer(60, proc.kill)  # only against a hang: the loop below ends on `ready`
    guard.start()
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        while not (lines and lines[-1].startswith("ready ")):
            line = proc.stdout.readline()
            assert line, f"serve exited before `ready`:\n{''.join(lines)}"
            lines.append(line.rstrip("\n"))
        url = lines[-1].split()[1]
        assert httpx.get(url.removesuffix("/mcp") + "/health/live", timeout=10).status_code == 200
        users = {}
        for line in lines:
            fields = line.split()
            if len(fields) == 4 and fields[1] == "user":
                role, _, user_id, token = fields
                assert jwt.decode(token, options={"verify_signature": False})["sub"] == user_id
                users[role] = (user_id, token)
        assert set(users) == {"ops_viewer", "ops_operator", "ops_admin"}
        user_id, token = users["ops_viewer"]
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "omega.get_state", "arguments": {"userId": user_id},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {}}}}
        answer = httpx.post(url, json=body, timeout=30, headers={
            "Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call", "Mcp-Name": "omega.get_state"}).json()
        assert answer["result"]["structuredContent"]["result"]["user_id"] == user_id, answer
    finally:
        guard.cancel()
        proc.terminate()
        proc.wait(15)


# -- a call its client gives up on ------------------------------------------------------------------


class Stuck(EchoProvider):
    """Echo whose `scan` starts and then waits until the test lets it go."""

    def __init__(self) -> None:
        import threading

        self.started, self.release = threading.Event(), threading.Event()

    async def _echo(self, ctx: Any, args: Any) -> dict[str, str]:
        if ctx.tool != "echo.scan":
            return await super()._echo(ctx, args)
        self.started.set()
        await anyio.to_thread.run_sync(self.release.wait, abandon_on_cancel=True)
        return {"message": "released"}


async def test_a_call_whose_client_leaves_its_stream_still_leaves_its_row(tmp_path: Path) -> None:
    """A 2026-07-28 request that asks for log messages may be answered as a stream, and the SDK cancels
    its handler when the client goes away: the call still leaves exactly one row, status cancelled."""
    import httpx

    stuck = Stuck()
    user = "6f1d2c3b-4a5e-4f60-8a7b-9c0d1e2f3a4b"
    with running_gateway(GatewayConfig(policies=str(POLICIES), state_dir=str(tmp_path)), providers=[stuck]) as gw:
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "echo.scan", "arguments": {"message": "x"},
            "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                      "io.modelcontextprotocol/clientCapabilities": {}, types.LOG_LEVEL_META_KEY: "info"}}}
        headers = {"Authorization": f"Bearer {gw.token('ops_operator', user_id=user)}",
                   "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28",
                   "Mcp-Method": "tools/call", "Mcp-Name": "echo.scan"}
        try:
            async with httpx.AsyncClient(timeout=30) as http, anyio.create_task_group() as tg:
                tg.start_soon(lambda: http.post(gw.url + "/mcp", json=body, headers=headers))
                with anyio.fail_after(GUARD_S):
                    await anyio.to_thread.run_sync(stuck.started.wait)
                tg.cancel_scope.cancel()  # the client leaves: its connection closes mid-call
            with anyio.fail_after(GUARD_S):
                while not (rows := await gw.services.audit.store.query(caller_id=user, limit=10)):
                    await anyio.sleep(0.05)
        finally:
            stuck.release.set()
    assert [(r.tool, r.decision, r.result["status"]) for r in rows] == [("scan", "allow", "cancelled")]
