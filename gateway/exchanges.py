"""Multi-round-trip input for 2026-07-28 callers: an upstream's sampling, elicitation or roots
request relayed as an `InputRequiredResult`, and the caller's answer carried back.

2026-07-28 has no server-to-client requests. A server that needs input answers `tools/call` with
`InputRequiredResult {input_requests, request_state}`; the client fulfils the requests and sends the
same `tools/call` again with `input_responses` and the echoed `request_state`. Through the gateway:

- the governed call (decision, tier, audit row) runs once, as a task, with a peer whose `request`
  parks the upstream's question; the `tools/call` being served answers it as an
  `InputRequiredResult` whose `request_state` is a fresh random token (256 bits);
- the retry is not a new call: its token must name a parked exchange of the *same caller* for the
  *same tool*, and is good once; the answers go to the parked questions and the call goes on;
- an exchange the caller does not come back to within `INPUT_TTL_S` fails its questions
  (PeerUnavailable), so the upstream gets an error answer and the call ends and is recorded;
- at most `MAX_PARKED` exchanges wait at once; past that, questions are refused at once.

Exchanges live in the process that started them: behind several workers, a retry must reach the
same one (otherwise it is refused as unknown, never misrouted).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from mcp import types
from mcp.server.context import ServerRequestContext

from gateway.errors import Code, GatewayError
from gateway.peer import REQUESTS, CallerPeer
from providers.sdk.peer import PeerUnavailable

INPUT_TTL_S = 300.0
MAX_PARKED = 1000


class Exchange:
    def __init__(self, caller_id: str, tool: str) -> None:
        self.caller_id = caller_id
        self.tool = tool
        self.task: asyncio.Task[types.CallToolResult] | None = None
        self.pending: dict[str, tuple[Any, asyncio.Future[dict[str, Any]], bool]] = {}  # key -> (request, answer, sent)
        self.wake = asyncio.Event()
        self.keys = itertools.count(1)


class InputPeer:
    """The caller as a 2026-07-28 client: questions become input requests of its `tools/call`."""

    def __init__(self, ctx: ServerRequestContext[Any, Any], exchange: Exchange, room: Callable[[], bool]) -> None:
        self.ctx = ctx
        self.exchange = exchange
        self.room = room

    @property
    def protocol_version(self) -> str:
        return self.ctx.protocol_version

    async def request(self, method: str, params: dict[str, Any] | None) -> dict[str, Any]:
        known = REQUESTS.get(method)
        if known is None:
            raise PeerUnavailable(f"{method} is not a request the gateway relays")
        request_type, params_type, _, capability = known
        if not self.ctx.session.check_client_capability(capability):
            raise PeerUnavailable(f"the calling client did not declare the capability {method} needs")
        if not self.room():
            raise PeerUnavailable("too many calls are waiting for their callers' input")
        request = request_type(params=params_type.model_validate(params or {})) if params_type else request_type()
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.exchange.pending[f"input-{next(self.exchange.keys)}"] = (request, answer, False)
        self.exchange.wake.set()
        return await answer

    async def notify(self, method: str, params: dict[str, Any] | None) -> bool:
        # on the request's own stream: carried over stdio, dropped by the SDK over HTTP (JSON answers)
        return await CallerPeer(self.ctx).notify(method, params)

    async def progress(self, progress: float, total: float | None, message: str | None) -> bool:
        return await CallerPeer(self.ctx).progress(progress, total, message)


class Exchanges:
    def __init__(self) -> None:
        self.parked: dict[str, Exchange] = {}

    def _room(self) -> bool:
        return len(self.parked) < MAX_PARKED

    async def call_tool(self, ctx: ServerRequestContext[Any, Any], caller_id: str,
                        params: types.CallToolRequestParams,
                        start: Callable[[Any], Awaitable[types.CallToolResult]]) -> Any:
        if params.request_state is not None:
            exchange = self.parked.get(params.request_state)
            if exchange is None or exchange.caller_id != caller_id or exchange.tool != params.name:
                # left in place: someone else's guess or replay must not end the rightful caller's exchange
                raise GatewayError(Code.INVALID_INPUT, "unknown, expired or foreign request_state: call the tool "
                                                       "again from the start")
            del self.parked[params.request_state]
            for key, response in (params.input_responses or {}).items():
                entry = exchange.pending.pop(key, None)
                if entry is not None and not entry[1].done():
                    entry[1].set_result(response.model_dump(by_alias=True, exclude_none=True, mode="json"))
            for key, (request, answer, _) in list(exchange.pending.items()):  # unanswered: ask again
                exchange.pending[key] = (request, answer, False)
        else:
            exchange = Exchange(caller_id, params.name)
            exchange.task = asyncio.create_task(start(InputPeer(ctx, exchange, self._room)))
        return await self._next(exchange)

    async def _next(self, exchange: Exchange) -> Any:
        assert exchange.task is not None
        while True:
            if exchange.task.done():
                return exchange.task.result()
            unsent = {k: request for k, (request, _, sent) in exchange.pending.items() if not sent}
            if unsent:
                for key in unsent:
                    request, answer, _ = exchange.pending[key]
                    exchange.pending[key] = (request, answer, True)
                token = secrets.token_urlsafe(32)
                self.parked[token] = exchange
                asyncio.get_running_loop().call_later(INPUT_TTL_S, self._expire, token)
                return types.InputRequiredResult(input_requests=unsent, request_state=token)
            exchange.wake.clear()
            waker = asyncio.create_task(exchange.wake.wait())
            try:
                await asyncio.wait([exchange.task, waker], return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:  # the caller went away before any question: the call ends with it
                exchange.task.cancel()
                raise
            finally:
                waker.cancel()

    def _expire(self, token: str) -> None:
        exchange = self.parked.pop(token, None)
        if exchange is None:
            return
        for _, answer, _ in exchange.pending.values():
            if not answer.done():
                answer.set_exception(PeerUnavailable(f"the caller did not come back with its input within "
                                                     f"{INPUT_TTL_S:g}s"))
        if exchange.task is not None:  # nobody will read the outcome; the audit row records it
            exchange.task.add_done_callback(lambda t: t.cancelled() or t.exception())


__all__ = ["INPUT_TTL_S", "MAX_PARKED", "Exchanges", "InputPeer"]
