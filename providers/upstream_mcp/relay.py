"""What an upstream MCP server sends its client mid-call, relayed to the call's own client.

The upstream's client is the gateway; the client it really serves is whoever holds the session's
lease (providers.upstream_mcp.pool). So:

- server-to-client requests (sampling/createMessage, elicitation/create, roots/list) go to that
  caller through its `Peer` and the answer comes back; with no lease, no peer, or a peer that
  cannot carry a request (its protocol version or transport has no back-channel), the upstream is
  answered at once with an error saying why, so it never waits on a request nobody will answer;
- notifications (log messages, progress) go to that caller best-effort, at most
  `MAX_RELAYED` per call: a flooding upstream cannot hold a call, or the gateway, hostage;
- `tools/list_changed` triggers a re-list (drift detection), whoever holds the session;
- each server-to-client request is one `<upstream>.relay` audit row: the method, the call it came
  during, and whether the caller answered or why it was refused.

The caller's token and session never reach the upstream: it sees the gateway as its client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mcp import types
from mcp.client.session import ClientRequestContext
from mcp.shared.exceptions import MCPError

from providers.sdk.peer import PeerUnavailable
from providers.upstream_mcp.pool import Session

log = logging.getLogger("opsgate.upstream.relay")
MAX_RELAYED = 1000  # notifications relayed per call; the rest are counted and dropped
# (the call holding the session or None, the method, what became of it) -> one audit row
Record = Callable[[Any, str, dict[str, Any]], Awaitable[None]]


def _peer(session: Session) -> Any:
    holder = session.holder
    return getattr(holder, "peer", None) if holder is not None else None


def _dump(model: Any) -> dict[str, Any]:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


class Relay:
    """The callbacks one session's `mcp` Client is built with."""

    def __init__(self, upstream: str, session: Session, on_list_changed: Callable[[], Awaitable[None]],
                 record: Record | None = None) -> None:
        self.upstream = upstream
        self.session = session
        self.on_list_changed = on_list_changed
        self.record = record  # one audit row per server-to-client request, whatever became of it
        self.relayed = 0
        self.dropped = 0

    def reset(self) -> None:
        self.relayed = self.dropped = 0

    async def _forward(self, method: str, params: Any, result_type: type[Any]) -> Any:
        holder = self.session.holder
        answer = await self._ask(method, params, result_type)
        if self.record is not None:
            outcome = ({"status": "refused", "message": answer.message} if isinstance(answer, types.ErrorData)
                       else {"status": "answered"})
            await self.record(holder, method, outcome)
        return answer

    async def _ask(self, method: str, params: Any, result_type: type[Any]) -> Any:
        peer = _peer(self.session)
        why = "no call holds the session" if self.session.holder is None else "the calling client has no channel"
        if peer is None:
            return types.ErrorData(code=types.INVALID_REQUEST,
                                   message=f"opsgate: {method} from {self.upstream} cannot be relayed: {why}")
        try:
            raw = await peer.request(method, None if params is None else _dump(params))
        except PeerUnavailable as e:
            return types.ErrorData(code=types.INVALID_REQUEST,
                                   message=f"opsgate: {method} from {self.upstream} cannot be relayed: {e}")
        except MCPError as e:  # the caller said no: that is the upstream's answer too
            return e.error
        try:
            return result_type.model_validate(raw)
        except ValueError:
            return types.ErrorData(code=types.INTERNAL_ERROR, message=f"opsgate: the client's answer to {method} "
                                                                      "was not a valid result")

    async def sampling(self, context: ClientRequestContext,
                       params: types.CreateMessageRequestParams) -> types.CreateMessageResult | types.ErrorData:
        return await self._forward("sampling/createMessage", params, types.CreateMessageResult)

    async def elicitation(self, context: ClientRequestContext,
                          params: types.ElicitRequestParams) -> types.ElicitResult | types.ErrorData:
        return await self._forward("elicitation/create", params, types.ElicitResult)

    async def roots(self, context: ClientRequestContext) -> types.ListRootsResult | types.ErrorData:
        return await self._forward("roots/list", None, types.ListRootsResult)

    async def _notify(self, send: Callable[[Any], Awaitable[bool]]) -> None:
        peer = _peer(self.session)
        if peer is None:
            return
        if self.relayed >= MAX_RELAYED:
            self.dropped += 1
            return
        self.relayed += 1
        try:
            await send(peer)
        except Exception as e:  # a notification is best-effort; the call goes on
            log.debug("%s: relaying a notification failed: %s", self.upstream, type(e).__name__)

    async def logging(self, params: types.LoggingMessageNotificationParams) -> None:
        await self._notify(lambda peer: peer.notify("notifications/message", _dump(params)))

    async def progress(self, progress: float, total: float | None, message: str | None) -> None:
        await self._notify(lambda peer: peer.progress(progress, total, message))

    async def message(self, message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            await self.on_list_changed()

    def callbacks(self) -> dict[str, Any]:
        return {"sampling_callback": self.sampling, "elicitation_callback": self.elicitation,
                "list_roots_callback": self.roots, "logging_callback": self.logging,
                "message_handler": self.message, "log_level": "debug"}


__all__ = ["MAX_RELAYED", "Relay"]
