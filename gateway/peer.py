"""The calling client as a relaying provider may address it (providers.sdk.peer.Peer), built from
the MCP request the gateway is serving.

What can reach the caller depends on its protocol version and the gateway's transport:

- 2025-06-18, 2025-11-25 over stdio: requests on the connection; progress and logs on the request.
- 2025-06-18, 2025-11-25 over HTTP (JSON answers): requests, progress and logs on the session's GET
  stream, if the client opened one (without one: PeerUnavailable for requests, notifications lost).
- 2026-07-28: no server-to-client requests at all (this peer says PeerUnavailable at once; the
  MCP endpoint gives such callers gateway.exchanges' InputPeer instead, which asks by input-required
  rounds); progress and logs ride the request's own stream, which over HTTP is a JSON answer
  here, so they are dropped.

A request that cannot be carried fails at once with the reason (never a wait for an answer that
cannot come); one that can is bounded by `REQUEST_TIMEOUT_S`. The peer never exposes the caller's
token or session to the provider.
"""

from __future__ import annotations

from typing import Any

from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.shared.exceptions import NoBackChannelError
from mcp.shared.message import ServerMessageMetadata
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from providers.sdk.peer import PeerUnavailable

REQUEST_TIMEOUT_S = 300.0  # a person may be answering an elicitation

# method -> (request type, params type, result type, the client capability it needs)
REQUESTS: dict[str, tuple[Any, Any, Any, types.ClientCapabilities]] = {
    "sampling/createMessage": (types.CreateMessageRequest, types.CreateMessageRequestParams, types.CreateMessageResult,
                               types.ClientCapabilities(sampling=types.SamplingCapability())),
    "elicitation/create": (types.ElicitRequest, types.ElicitRequestFormParams, types.ElicitResult,
                           types.ClientCapabilities(elicitation=types.ElicitationCapability())),
    "roots/list": (types.ListRootsRequest, None, types.ListRootsResult,
                   types.ClientCapabilities(roots=types.RootsCapability())),
}


class CallerPeer:
    def __init__(self, ctx: ServerRequestContext[Any, Any]) -> None:
        self.ctx = ctx
        self.scoped = ctx.session.can_send_request  # stdio (and SSE): the request's own channel

    @property
    def protocol_version(self) -> str:
        return self.ctx.protocol_version

    async def request(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        if self.protocol_version in MODERN_PROTOCOL_VERSIONS:
            raise PeerUnavailable(f"the caller speaks {self.protocol_version}, which has no server-to-client "
                                  "requests (multi-round-trip input is not relayed yet)")
        known = REQUESTS.get(method)
        if known is None:
            raise PeerUnavailable(f"{method} is not a request the gateway relays")
        request_type, params_type, result_type, capability = known
        if not self.ctx.session.check_client_capability(capability):
            raise PeerUnavailable(f"the calling client did not declare the capability {method} needs")
        request = request_type(params=params_type.model_validate(params or {})) if params_type else request_type()
        metadata = ServerMessageMetadata(related_request_id=self.ctx.request_id) if self.scoped else None
        try:
            result = await self.ctx.session.send_request(request, result_type, REQUEST_TIMEOUT_S, metadata)
        except NoBackChannelError:
            raise PeerUnavailable("the caller's connection has no channel for server-to-client requests (over "
                                  "HTTP, open the session's GET stream)") from None
        return result.model_dump(by_alias=True, exclude_none=True, mode="json")

    async def notify(self, method: str, params: dict[str, Any] | None) -> bool:
        if method != "notifications/message" or not params:
            return False
        session = self.ctx.session
        await session.send_log_message(params.get("level", "info"), params.get("data"),  # type: ignore[call-arg]
                                       params.get("logger"),
                                       related_request_id=self.ctx.request_id if self.scoped else None)
        return True

    async def progress(self, progress: float, total: float | None, message: str | None) -> bool:
        token = (self.ctx.meta or {}).get("progress_token") or (self.ctx.meta or {}).get("progressToken")
        if token is None:
            return False
        if self.scoped or self.protocol_version in MODERN_PROTOCOL_VERSIONS:
            await self.ctx.session.report_progress(progress, total, message)
        else:  # JSON answers: the session's GET stream carries it, by the caller's token
            await self.ctx.session.send_progress_notification(token, progress, total, message)
        return True


__all__ = ["REQUEST_TIMEOUT_S", "CallerPeer"]
