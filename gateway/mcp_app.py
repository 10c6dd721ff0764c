"""The MCP face of the gateway: a low-level `mcp` Server whose handlers run the Pipeline, and
the ASGI endpoint that authenticates every HTTP request before the SDK sees it.

Responses are JSON (not SSE) so that a tool call's rate-limit headers, known only after the
handler ran, can still be put on the HTTP response: the endpoint hands the handler a dict in
the ASGI scope and adds its contents when the response starts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mcp import types
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.types import Receive, Scope, Send

from gateway.errors import Code, GatewayError
from gateway.exchanges import Exchanges
from gateway.peer import CallerPeer
from gateway.pipeline import Caller, CallResult, Pipeline
from gateway.ratelimit.headers import rate_limit_headers
from otel.tracing import set_session_id

log = logging.getLogger("opsgate.mcp")

CALLER_KEY = "opsgate.caller"
HEADERS_KEY = "opsgate.headers"

CallerOf = Callable[[ServerRequestContext[Any, Any]], Awaitable[Caller]]


async def caller_from_scope(ctx: ServerRequestContext[Any, Any]) -> Caller:
    """HTTP: the caller the endpoint authenticated for this very request."""
    request = ctx.request
    caller = request.scope.get("state", {}).get(CALLER_KEY) if request is not None else None
    if caller is None:  # cannot happen behind McpEndpoint; refuse rather than guess
        raise GatewayError(Code.UNAUTHENTICATED, "no authenticated caller").to_mcp()
    return caller


def _header_sink(ctx: ServerRequestContext[Any, Any]) -> dict[str, str] | None:
    request = ctx.request
    return request.scope.get("state", {}).get(HEADERS_KEY) if request is not None else None


def build_server(pipeline: Pipeline, caller_of: CallerOf, *, version: str) -> Server[Any]:
    async def on_list_tools(ctx: ServerRequestContext[Any, Any],
                            params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        return pipeline.list_tools(await caller_of(ctx))

    exchanges = Exchanges()

    async def on_call_tool(ctx: ServerRequestContext[Any, Any],
                           params: types.CallToolRequestParams) -> types.CallToolResult | types.InputRequiredResult:
        caller = await caller_of(ctx)
        if ctx.request is not None:
            set_session_id(ctx.request.headers.get("mcp-session-id"))
        out = CallResult()
        try:
            registered = pipeline.registry.get(params.name)
            asks = params.request_state is not None or (registered is not None and registered.provider.relays_callers)
            if asks and ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:  # upstreams' questions: input-required
                return await exchanges.call_tool(ctx, caller.id, params, lambda peer: pipeline.call_tool(
                    caller, params.name, params.arguments, out, peer=peer))
            return await pipeline.call_tool(caller, params.name, params.arguments, out, peer=CallerPeer(ctx))
        except GatewayError as e:
            raise e.to_mcp() from None
        finally:
            sink = _header_sink(ctx)
            if sink is not None and out.limits:
                sink.update(rate_limit_headers(out.limits))

    async def on_list_resources(ctx: ServerRequestContext[Any, Any],
                                params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        caller = await caller_of(ctx)
        listed = pipeline.list_resources(caller)
        relayed = await pipeline.relayed_resources(caller)  # upstream MCP servers' own, under their action
        return listed.model_copy(update={"resources": [*listed.resources, *relayed]}) if relayed else listed

    async def on_read_resource(ctx: ServerRequestContext[Any, Any],
                               params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        caller = await caller_of(ctx)
        out = CallResult()
        try:
            if pipeline.registry.resource(str(params.uri)) is None and any(
                    p.relays_resource(str(params.uri)) for p in pipeline.registry.providers.values()):
                return await pipeline.read_relayed_resource(caller, str(params.uri), out)
            return await pipeline.read_resource(caller, str(params.uri), out)
        except GatewayError as e:
            raise e.to_mcp() from None
        finally:
            sink = _header_sink(ctx)
            if sink is not None and out.limits:
                sink.update(rate_limit_headers(out.limits))

    async def on_list_prompts(ctx: ServerRequestContext[Any, Any],
                              params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=await pipeline.relayed_prompts(await caller_of(ctx)))

    async def on_get_prompt(ctx: ServerRequestContext[Any, Any],
                            params: types.GetPromptRequestParams) -> types.GetPromptResult:
        caller = await caller_of(ctx)
        out = CallResult()
        try:
            return await pipeline.get_relayed_prompt(caller, params.name, params.arguments, out)
        except GatewayError as e:
            raise e.to_mcp() from None
        finally:
            sink = _header_sink(ctx)
            if sink is not None and out.limits:
                sink.update(rate_limit_headers(out.limits))

    def input_schema(name: str) -> dict[str, Any] | None:
        # Without this the SDK runs the tools/list handler on every 2026-07-28 tools/call to find
        # the schema, and ours decides visibility for every tool: a policy decision per tool per call.
        registered = pipeline.registry.get(name)
        return registered.input_schema if registered is not None else None

    return Server("opsgate", version=version, on_list_tools=on_list_tools, on_call_tool=on_call_tool,
                  on_list_resources=on_list_resources, on_read_resource=on_read_resource,
                  on_list_prompts=on_list_prompts, on_get_prompt=on_get_prompt,
                  get_tool_input_schema=input_schema,
                  instructions="opsgate: every ops tool, decided by policy and audited.")


Authenticate = Callable[[str | None], Awaitable[Caller]]


class McpEndpoint:
    """ASGI app for /mcp: authenticate, then hand over to the SDK's session manager."""

    def __init__(self, manager: StreamableHTTPSessionManager, authenticate: Authenticate) -> None:
        self.manager = manager
        self.authenticate = authenticate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.manager.handle_request(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        try:
            caller = await self.authenticate(header)
        except GatewayError as e:
            await _refuse(send, e)
            return
        state = scope.setdefault("state", {})
        state[CALLER_KEY] = caller
        extra: dict[str, str] = {}
        state[HEADERS_KEY] = extra
        # The SDK binds a stateful session to the user who opened it (session-hijack guard).
        scope["user"] = AuthenticatedUser(AccessToken(token="", client_id=caller.id, scopes=[caller.role or ""],
                                                      subject=caller.id))

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start" and extra:
                message = dict(message)
                message["headers"] = [*message.get("headers", []),
                                      *((k.lower().encode(), v.encode()) for k, v in extra.items())]
            await send(message)

        await self.manager.handle_request(scope, receive, send_with_headers)


async def _refuse(send: Send, error: GatewayError) -> None:
    body = json.dumps(error.to_jsonrpc()).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", b'Bearer error="invalid_token"')]})
    await send({"type": "http.response.body", "body": body})


def session_manager(server: Server[Any], *, allowed_hosts: list[str], allowed_origins: list[str],
                    max_body_bytes: int) -> StreamableHTTPSessionManager:
    return StreamableHTTPSessionManager(
        app=server, json_response=True,
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=True,
                                                    allowed_hosts=allowed_hosts, allowed_origins=allowed_origins),
        max_request_body_size=max_body_bytes)


__all__ = ["CALLER_KEY", "McpEndpoint", "build_server", "caller_from_scope", "session_manager"]
