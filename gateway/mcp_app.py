"""The MCP face of the gateway: a low-level `mcp` Server whose handlers run the Pipeline, and
the ASGI endpoint that authenticates every HTTP request before the SDK sees it.

Responses are JSON (not SSE) so that a tool call's rate-limit headers, known only once the call
was governed, can still be put on the HTTP response: each handler leaves its CallResult in the
ASGI scope and the endpoint turns their rate-limit outcomes into headers when the response
starts. The one exception: a 2026-07-28 request that asks for log messages in its `_meta` goes to
a second session manager that may answer with an SSE stream, which it starts only when the
handler sends a notice (gateway/notices.py), by then governed, so the headers are known too.
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

from gateway.edge import bound_client, view_of
from gateway.errors import Code, GatewayError
from gateway.exchanges import Exchanges
from gateway.notices import LogLevels, notices_for, send_notices
from gateway.peer import CallerPeer
from gateway.pipeline import LIST_CACHE_TTL_MS, Caller, CallResult, Pipeline
from gateway.ratelimit.headers import rate_limit_headers
from otel.tracing import set_session_id

log = logging.getLogger("opsgate.mcp")

CALLER_KEY = "opsgate.caller"
CALLS_KEY = "opsgate.calls"  # the CallResults of this HTTP request: its rate-limit headers
MODERN_VERSIONS = frozenset(MODERN_PROTOCOL_VERSIONS)
LOG_OPT_IN = types.LOG_LEVEL_META_KEY.encode()

CallerOf = Callable[[ServerRequestContext[Any, Any]], Awaitable[Caller]]


async def caller_from_scope(ctx: ServerRequestContext[Any, Any]) -> Caller:
    """HTTP: the caller the endpoint authenticated for this very request."""
    request = ctx.request
    caller = request.scope.get("state", {}).get(CALLER_KEY) if request is not None else None
    if caller is None:  # cannot happen behind McpEndpoint; refuse rather than guess
        raise GatewayError(Code.UNAUTHENTICATED, "no authenticated caller").to_mcp()
    return caller


def _track(ctx: ServerRequestContext[Any, Any], out: CallResult) -> None:
    """Hand the call's outcome to the endpoint, which sends its rate-limit headers."""
    request = ctx.request
    calls = request.scope.get("state", {}).get(CALLS_KEY) if request is not None else None
    if calls is not None:
        calls.append(out)


def _client(ctx: ServerRequestContext[Any, Any]) -> str | None:
    """This request's client address (gateway.edge): bound again in each handler, since a stateful
    session serves later requests on a task that inherited the first request's context."""
    view = view_of(ctx.request.scope) if ctx.request is not None else None  # type: ignore[arg-type]
    return view.address if view is not None else None


def build_server(pipeline: Pipeline, caller_of: CallerOf, *, version: str) -> Server[Any]:
    levels = LogLevels()
    exchanges = Exchanges()  # 2026-07-28 input-required rounds of calls whose upstream asks the caller

    async def on_list_tools(ctx: ServerRequestContext[Any, Any],
                            params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        caller = await caller_of(ctx)
        try:
            return pipeline.list_tools(caller, params.cursor if params is not None else None)
        except GatewayError as e:
            raise e.to_mcp() from None

    async def on_call_tool(ctx: ServerRequestContext[Any, Any],
                           params: types.CallToolRequestParams) -> types.CallToolResult | types.InputRequiredResult:
        caller = await caller_of(ctx)
        if ctx.request is not None:
            set_session_id(ctx.request.headers.get("mcp-session-id"))
        out = CallResult()
        _track(ctx, out)
        try:
            with bound_client(_client(ctx)):
                registered = pipeline.registry.get(params.name)
                asks = params.request_state is not None or (registered is not None
                                                            and registered.provider.relays_callers)
                if asks and ctx.protocol_version in MODERN_VERSIONS:  # upstreams' questions: input-required
                    result = await exchanges.call_tool(ctx, caller.id, params, lambda peer: pipeline.call_tool(
                        caller, params.name, params.arguments, out, peer=peer))
                else:
                    result = await pipeline.call_tool(caller, params.name, params.arguments, out,
                                                      peer=CallerPeer(ctx))
        except GatewayError as e:
            raise e.to_mcp() from None
        await send_notices(ctx, levels.threshold(ctx, caller.id), notices_for(params.name, out))
        return result

    async def on_set_level(ctx: ServerRequestContext[Any, Any],
                           params: types.SetLevelRequestParams) -> types.EmptyResult:
        levels.set(ctx, (await caller_of(ctx)).id, params.level)
        return types.EmptyResult()

    async def on_list_resources(ctx: ServerRequestContext[Any, Any],
                                params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        caller = await caller_of(ctx)
        listed = pipeline.list_resources(caller)
        relayed = await pipeline.relayed_resources(caller)  # upstream MCP servers' own, under their action
        return listed.model_copy(update={"resources": [*listed.resources, *relayed], "ttl_ms": LIST_CACHE_TTL_MS,
                                         "cache_scope": "private"})

    async def on_read_resource(ctx: ServerRequestContext[Any, Any],
                               params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        caller = await caller_of(ctx)
        out = CallResult()
        _track(ctx, out)
        try:
            with bound_client(_client(ctx)):
                uri = str(params.uri)
                if pipeline.registry.resource(uri) is None and any(
                        p.relays_resource(uri) for p in pipeline.registry.providers.values()):
                    result = await pipeline.read_relayed_resource(caller, uri, out)
                else:
                    result = await pipeline.read_resource(caller, uri, out)
        except GatewayError as e:
            raise e.to_mcp() from None
        # Every read is an audited, rate-limited operation of this caller: never reused.
        return result.model_copy(update={"ttl_ms": 0, "cache_scope": "private"})

    async def on_list_prompts(ctx: ServerRequestContext[Any, Any],
                              params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=await pipeline.relayed_prompts(await caller_of(ctx)),
                                       ttl_ms=LIST_CACHE_TTL_MS, cache_scope="private")

    async def on_get_prompt(ctx: ServerRequestContext[Any, Any],
                            params: types.GetPromptRequestParams) -> types.GetPromptResult:
        caller = await caller_of(ctx)
        out = CallResult()
        _track(ctx, out)
        try:
            with bound_client(_client(ctx)):
                return await pipeline.get_relayed_prompt(caller, params.name, params.arguments, out)
        except GatewayError as e:
            raise e.to_mcp() from None

    def input_schema(name: str) -> dict[str, Any] | None:
        # Without this the SDK runs the tools/list handler on every 2026-07-28 tools/call to find
        # the schema, and ours decides visibility for every tool: a policy decision per tool per call.
        registered = pipeline.registry.get(name)
        return registered.input_schema if registered is not None else None

    server: Server[Any] = Server(
        "opsgate", version=version, on_list_tools=on_list_tools, on_call_tool=on_call_tool,
        on_list_resources=on_list_resources, on_read_resource=on_read_resource, on_list_prompts=on_list_prompts,
        on_get_prompt=on_get_prompt, get_tool_input_schema=input_schema,
        instructions="opsgate: every ops tool, decided by policy and audited.")
    # Registered directly: the constructor's `on_set_logging_level` warns that logging is deprecated
    # in 2026-07-28, where the SDK answers setLevel with "method not found" by itself anyway.
    server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, on_set_level)
    return server


Authenticate = Callable[[str | None], Awaitable[Caller]]
# A 401's WWW-Authenticate for this request: (scope, whether a token was presented, why it failed).
Challenge = Callable[[Scope, bool, str | None], str]


def _plain_challenge(scope: Scope, presented: bool, description: str | None) -> str:
    return 'Bearer error="invalid_token"' if presented else "Bearer"


class McpEndpoint:
    """ASGI app for /mcp: authenticate, then hand over to the SDK's session manager (`streaming`,
    which may answer with SSE, for 2026-07-28 requests that ask for log messages). Host and Origin
    were checked before (gateway.edge); the body is read only after authentication."""

    def __init__(self, manager: StreamableHTTPSessionManager, authenticate: Authenticate,
                 challenge: Challenge = _plain_challenge, streaming: StreamableHTTPSessionManager | None = None,
                 max_body_bytes: int = 1 << 20) -> None:
        self.manager = manager
        self.authenticate = authenticate
        self.challenge = challenge
        self.streaming = streaming
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.manager.handle_request(scope, receive, send)
            return
        header = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        try:
            caller = await self.authenticate(header)
        except GatewayError as e:
            presented = e.data.get("reason") != "missing"
            await _refuse(send, e, self.challenge(scope, presented, e.message if presented else None))
            return
        state = scope.setdefault("state", {})
        state[CALLER_KEY] = caller
        calls: list[CallResult] = []
        state[CALLS_KEY] = calls
        # The SDK binds a stateful session to the user who opened it (session-hijack guard).
        scope["user"] = AuthenticatedUser(AccessToken(token="", client_id=caller.id, scopes=[caller.role or ""],
                                                      subject=caller.id))

        async def send_with_headers(message: Any) -> None:
            limits = [o for out in calls for o in out.limits] if message["type"] == "http.response.start" else []
            if limits:
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *(
                    (k.lower().encode(), v.encode()) for k, v in rate_limit_headers(limits).items())]
            await send(message)

        manager = self.manager
        if self.streaming is not None and _modern_with_sse(scope):
            body, receive = await _peek_body(receive, self.max_body_bytes)
            if LOG_OPT_IN in body:  # a cheap test: a false hit only makes SSE possible, not used
                manager = self.streaming
        await manager.handle_request(scope, receive, send_with_headers)


def _modern_with_sse(scope: Scope) -> bool:
    """A 2026-07-28 POST whose client accepts an SSE answer."""
    headers = dict(scope["headers"])
    version = headers.get(b"mcp-protocol-version", b"").decode("latin-1")
    return (scope.get("method") == "POST" and version in MODERN_VERSIONS
            and b"text/event-stream" in headers.get(b"accept", b""))


async def _peek_body(receive: Receive, limit: int = 1 << 20) -> tuple[bytes, Receive]:
    """Read the request body (up to `limit` bytes) and a `receive` that replays it first."""
    chunks: list[bytes] = []
    size, more, first = 0, True, None
    while more and size <= limit:
        message = await receive()
        if message["type"] != "http.request":  # a disconnect: let the SDK see it
            first = message
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
    body = b"".join(chunks)
    pending: list[Any] = [{"type": "http.request", "body": body, "more_body": more}]
    if first is not None:
        pending.append(first)

    async def replay() -> Any:
        return pending.pop(0) if pending else await receive()

    return body, replay


async def _refuse(send: Send, error: GatewayError, challenge: str) -> None:
    body = json.dumps(error.to_jsonrpc()).encode()
    await send({"type": "http.response.start", "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"www-authenticate", challenge.encode("latin-1"))]})
    await send({"type": "http.response.body", "body": body})


def session_manager(server: Server[Any], *, max_body_bytes: int,
                    json_response: bool = True) -> StreamableHTTPSessionManager:
    # The SDK's DNS-rebinding guard compares Host and Origin by text prefix (it accepts
    # `http://localhost:1@evil.example`), so it stays off: gateway.edge decides both, by parsed
    # scheme, host and port, before a request reaches the SDK. Its Content-Type check still runs.
    return StreamableHTTPSessionManager(
        app=server, json_response=json_response,
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        max_request_body_size=max_body_bytes)


__all__ = ["CALLER_KEY", "McpEndpoint", "build_server", "caller_from_scope", "session_manager"]
