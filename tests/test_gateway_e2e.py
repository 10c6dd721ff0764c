"""The real mcp client, over real HTTP, against the real gateway (uvicorn on loopback).

Both client modes: `auto` (protocol 2026-07-28, stateless) and `legacy` (initialize handshake,
2025-11-25). Every error code the gateway can produce without a provider-specific path is
driven here and asserted by its stable string code.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from gateway.config import GatewayConfig
from providers.echo import EchoProvider
from providers.sdk import ProviderBase, Tool
from tests.conftest import POLICIES
from tests.harness import RunningGateway, code_of, running_gateway, unwrap

pytestmark = pytest.mark.anyio

MODES = ["auto", "legacy"]
READ_TOOLS = {"echo.ping", "echo.health"}
OPERATOR_TOOLS = READ_TOOLS | {"echo.scan", "echo.annotate", "echo.tag"}
ALL_TOOLS = OPERATOR_TOOLS | {"echo.comment", "echo.create"}


class SlowProvider(ProviderBase):
    """Health that never answers in time: the aggregate must say degraded, not hang."""

    name = "slow"

    def tools(self) -> list[Tool]:
        return []

    async def probe(self) -> None:
        await asyncio.sleep(30)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    state = tmp_path_factory.mktemp("state")
    config = GatewayConfig(policies=str(POLICIES), state_dir=str(state), health_timeout_s=0.5)
    with running_gateway(config, providers=[EchoProvider(), SlowProvider()]) as running:
        yield running


async def call(gw: RunningGateway, token: str | None, tool: str, args: dict[str, Any] | None = None,
               mode: str = "auto") -> Any:
    async with gw.client(token, mode) as c:
        return await c.call_tool(tool, args or {})


# -- listing and calling -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("role", "expected"), [
    ("ops_viewer", READ_TOOLS), ("ops_operator", OPERATOR_TOOLS), ("ops_admin", ALL_TOOLS), (None, set()),
])
async def test_tools_list_shows_only_what_policy_allows(gw: RunningGateway, mode: str, role: str | None,
                                                        expected: set[str]) -> None:
    async with gw.client(gw.token(role), mode) as c:
        listed = await c.list_tools()
    assert {t.name for t in listed.tools} == expected
    for t in listed.tools:
        assert t.input_schema["type"] == "object" and "version" in t.input_schema["properties"]


@pytest.mark.parametrize("mode", MODES)
async def test_an_allowed_call_returns_the_tool_result(gw: RunningGateway, mode: str) -> None:
    result = await call(gw, gw.token("ops_operator"), "echo.scan", {"message": "hello"}, mode)
    assert not result.is_error
    assert result.structured_content == {"message": "hello", "tool": "echo.scan"}


@pytest.mark.parametrize("mode", MODES)
async def test_a_denied_call_names_the_decision_and_policies(gw: RunningGateway, mode: str) -> None:
    with pytest.raises(BaseException) as err:
        await call(gw, gw.token("ops_viewer"), "echo.comment", {"message": "x"}, mode)
    exc = err.value
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, MCPError) and exc.error.code == -32003
    data = exc.error.data
    assert data["code"] == "FORBIDDEN" and len(data["decision_id"]) == 36
    assert data["policy_ids"] == [] and data["bundle_revision"] == gw.services.engine.bundle.revision
    assert "ops_viewer" in exc.error.message


async def test_a_user_with_no_role_can_call_nothing(gw: RunningGateway) -> None:
    with pytest.raises(BaseException) as err:
        await call(gw, gw.token(None), "echo.ping")
    assert code_of(err.value) == "FORBIDDEN"


async def test_role_claimed_only_in_user_metadata_is_ignored(gw: RunningGateway) -> None:
    token = gw.token(None, extra={"user_metadata": {"ops_role": "ops_admin"}})
    with pytest.raises(BaseException) as err:
        await call(gw, token, "echo.create")
    assert code_of(err.value) == "FORBIDDEN"


# -- every error code --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("token", [None, "not-a-jwt", "expired"])
async def test_unauthenticated(gw: RunningGateway, mode: str, token: str | None) -> None:
    if token == "expired":
        token = gw.token("ops_admin", ttl_s=-3600)
    with pytest.raises(BaseException) as err:
        await call(gw, token, "echo.ping", mode=mode)
    assert code_of(err.value) == "UNAUTHENTICATED"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("args", "fragment"), [
    ({"message": 5}, "Expected `str`"),
    ({"unknown": 1}, "unknown field"),
    ({"version": "9.9"}, "version"),
])
async def test_invalid_input_is_a_tool_result_the_model_reads(gw: RunningGateway, mode: str, args: dict[str, Any],
                                                              fragment: str) -> None:
    """SEP-1303: arguments that do not fit the schema are the model's to fix, so they come back as
    the tool's result (isError) with the stable code, in both protocol versions."""
    result = await call(gw, gw.token("ops_admin"), "echo.ping", args, mode)
    assert result.is_error
    error = result.structured_content["error"]
    assert error["code"] == "INVALID_INPUT" and fragment in error["message"]
    assert json.loads(result.content[0].text) == result.structured_content


@pytest.mark.parametrize("mode", MODES)
async def test_unknown_tool_stays_a_protocol_error(gw: RunningGateway, mode: str) -> None:
    with pytest.raises(BaseException) as err:
        await call(gw, gw.token("ops_admin"), "echo.nope", mode=mode)
    assert code_of(err.value) == "INVALID_INPUT"
    assert unwrap(err.value).error.code == -32602


async def test_a_provider_crash_is_an_internal_error_without_details(gw: RunningGateway) -> None:
    with pytest.raises(BaseException) as err:
        await call(gw, gw.token("ops_admin"), "echo.ping", {"crash": True})
    assert code_of(err.value) == "INTERNAL_ERROR"
    assert "asked to crash" not in str(err.value)


async def test_a_tool_error_is_a_tool_result_not_a_protocol_error(gw: RunningGateway) -> None:
    result = await call(gw, gw.token("ops_admin"), "echo.ping", {"fail": True})
    assert result.is_error and result.structured_content == {"error": "echo asked to fail", "retry_after_s": 7}


@pytest.mark.parametrize("mode", MODES)
async def test_rate_limit_with_headers(tmp_path: Path, mode: str) -> None:
    """A viewer gets 100 reads an hour: the 101st is refused with RATE_LIMIT, Retry-After and the
    IETF RateLimit headers; a second user is not affected."""
    config = GatewayConfig(policies=str(POLICIES), state_dir=str(tmp_path))
    with running_gateway(config) as gw:
        responses: list[Any] = []
        token = gw.token("ops_viewer")
        async with gw.client(token, mode, responses) as c:
            for i in range(100):
                await c.call_tool("echo.ping", {"message": str(i)})
            last = responses[-1]
            assert last.headers["RateLimit-Policy"] == '"reads";q=100;w=3600'
            assert last.headers["RateLimit"].startswith('"reads";r=0;t=')
            with pytest.raises(MCPError) as err:
                await c.call_tool("echo.ping", {})
        data = err.value.error.data
        assert data["code"] == "RATE_LIMIT" and data["bucket"] == "reads"
        assert 30 <= data["retry_after_s"] <= 36  # one emission interval: 3600/100 s
        refused = next(r for r in reversed(responses) if r.request.method == "POST")
        assert int(refused.headers["Retry-After"]) == data["retry_after_s"]
        other = await call(gw, gw.token("ops_viewer", user_id="4a0e8f55-1d7c-4f39-9a3e-2b1f7c0d9e11"), "echo.ping")
        assert not other.is_error


# -- around the calls: health, status, decision API, reload, transport guards -----------------------


async def test_health_aggregates_concurrently_and_bounds_each_provider(gw: RunningGateway) -> None:
    viewer = {"Authorization": f"Bearer {gw.token('ops_viewer')}"}
    async with httpx.AsyncClient(base_url=gw.url) as http:
        body = (await http.get("/health", headers=viewer)).json()
        by_name = {p["provider"]: p for p in body["providers"]}
        assert by_name["echo"]["status"] == "ok" and by_name["echo"]["error"] is None
        assert by_name["slow"]["status"] == "degraded" and "0.5s" in by_name["slow"]["error"]
        assert set(by_name["echo"]) == {"provider", "status", "latency_ms", "last_check", "error"}
        assert body["status"] == "degraded" and body["rate_limiter"]["ok"]
        assert (await http.get("/health/live")).status_code == 200
        assert (await http.get("/health/ready")).status_code == 200


async def test_health_tool_over_mcp(gw: RunningGateway) -> None:
    result = await call(gw, gw.token("ops_viewer"), "echo.health")
    assert result.structured_content["provider"] == "echo" and result.structured_content["status"] == "ok"


async def test_decision_api_answers_explicitly(gw: RunningGateway) -> None:
    admin = {"Authorization": f"Bearer {gw.token('ops_admin')}"}
    query = {"input": {"principal": 'Ops::User::"u1"', "action": "echo.scan", "resource": 'Ops::Provider::"echo"',
                       "entities": [{"uid": {"type": "Ops::User", "id": "u1"},
                                     "parents": [{"type": "Ops::Role", "id": "ops_viewer"}]}]}}
    async with httpx.AsyncClient(base_url=gw.url, headers=admin) as http:
        full = (await http.post("/v1/data/opsgate/authz", json=query)).json()
        assert full["result"]["allow"] is False and len(full["decision_id"]) == 36
        assert full["result"]["bundle_revision"] == gw.services.engine.bundle.revision
        allow = (await http.post("/v1/data/opsgate/authz/allow", json=query)).json()
        assert allow["result"] is False
        query["input"]["entities"][0]["parents"][0]["id"] = "ops_operator"
        allow = (await http.post("/v1/data/opsgate/authz/allow", json=query)).json()
        assert allow["result"] is True
        assert (await http.post("/v1/data/nothing/here", json=query)).status_code == 404
        bad = (await http.post("/v1/data/opsgate/authz", json={"input": {"principal": "u1"}}))
        assert bad.status_code == 400
        status = (await http.get("/v1/status")).json()
        assert status["bundle"]["revision"] == gw.services.engine.bundle.revision
    async with httpx.AsyncClient(base_url=gw.url) as http:
        assert (await http.post("/v1/data/opsgate/authz", json=query)).status_code == 401
        viewer = {"Authorization": f"Bearer {gw.token('ops_viewer')}"}
        denied = await http.post("/v1/data/opsgate/authz", json=query, headers=viewer)
        assert denied.status_code == 403 and denied.json()["extra"]["code"] == "FORBIDDEN"


async def test_policy_reload_is_admin_only(gw: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.post("/v1/policy/reload", headers={"Authorization": f"Bearer {gw.token('ops_operator')}"})
        assert r.status_code == 403
        r = await http.post("/v1/policy/reload", headers={"Authorization": f"Bearer {gw.token('ops_admin')}"})
        assert r.status_code == 200 and r.json()["reloaded"] is True


async def test_dns_rebinding_guard_refuses_foreign_host_and_origin(gw: RunningGateway) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    auth = {"Authorization": f"Bearer {gw.token('ops_admin')}", "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2025-11-25"}
    async with httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.post("/mcp", json=body, headers={**auth, "Host": "evil.example:80"})
        assert r.status_code in (400, 421)
        r = await http.post("/mcp", json=body, headers={**auth, "Origin": "http://evil.example"})
        assert r.status_code in (400, 403)


async def test_oversized_and_malformed_bodies(gw: RunningGateway) -> None:
    auth = {"Authorization": f"Bearer {gw.token('ops_admin')}", "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json", "MCP-Protocol-Version": "2025-11-25"}
    async with httpx.AsyncClient(base_url=gw.url) as http:
        r = await http.post("/mcp", content=b"{" + b" " * (2 << 20) + b"}", headers=auth)
        assert r.status_code == 413
        r = await http.post("/mcp", content=b"{not json", headers=auth)
        assert r.status_code == 400 and r.json()["error"]["code"] == -32700
        r = await http.post("/mcp", content=b'{"jsonrpc": "2.0", "id": 1}', headers=auth)
        assert r.status_code == 400 and "error" in r.json()


async def test_protocol_2025_06_18_over_raw_http(gw: RunningGateway) -> None:
    """The mcp client speaks 2025-11-25 and 2026-07-28; an older client negotiates 2025-06-18."""
    headers = {"Authorization": f"Bearer {gw.token('ops_viewer')}", "Accept": "application/json, text/event-stream"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "old-client", "version": "1"}}}
    async with httpx.AsyncClient(base_url=gw.url, headers=headers) as http:
        r = await http.post("/mcp", json=init)
        assert r.status_code == 200 and r.json()["result"]["protocolVersion"] == "2025-06-18"
        session = {"Mcp-Session-Id": r.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-06-18"}
        await http.post("/mcp", json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session)
        r = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=session)
        assert {t["name"] for t in r.json()["result"]["tools"]} == READ_TOOLS
        r = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                                          "params": {"name": "echo.scan", "arguments": {}}}, headers=session)
        assert r.json()["error"]["data"]["code"] == "FORBIDDEN"


async def test_a_session_cannot_be_used_with_another_users_token(gw: RunningGateway) -> None:
    """The SDK binds a stateful session to the user who opened it (session-hijack guard)."""
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "c", "version": "1"}}}
    accept = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient(base_url=gw.url, headers=accept) as http:
        r = await http.post("/mcp", json=init, headers={"Authorization": f"Bearer {gw.token('ops_viewer')}"})
        session = {"Mcp-Session-Id": r.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
        thief = gw.token("ops_admin", user_id="9b2f0c7e-5a61-4d3e-8f10-6c2d9e4b7a15")
        r = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                            headers={**session, "Authorization": f"Bearer {thief}"})
        assert r.status_code in (403, 404) and "result" not in r.text
