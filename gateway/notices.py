"""What the gateway tells a client about its own tool call, as `notifications/message`, and the
log level each client asked for.

Invariant: a client hears only about its own call, only when it asked, and only at or above the
level it asked for. A 2025 session asks with `logging/setLevel` (kept here per caller and session;
over stdio, the one connection); a 2026-07-28 request asks in its own `_meta`
(`io.modelcontextprotocol/logLevel`: that protocol has no setLevel, the level is per request).
Without asking, nothing is sent. A notice names the call's decision and its rate budget: never a
token, a secret, or anything about another caller.

Where notices travel:
- stdio: on the connection, ahead of the call's answer.
- HTTP, 2026-07-28: on the request's own response. The endpoint answers JSON, but a request that
  asks for log messages is served by a session manager that switches its answer to an SSE stream
  once a notice is sent (gateway.mcp_app), so they arrive with the result.
- HTTP, 2025-06-18 and 2025-11-25: a JSON answer carries only the response, so notices go on the
  session's GET stream, which clients open after initialize (the mcp client and the conformance
  suite's TypeScript client do); a session without an open GET stream does not get them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, get_args

from mcp import types
from mcp.server.context import ServerRequestContext
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from gateway.pipeline import CallResult

log = logging.getLogger("opsgate.notices")

LEVELS: tuple[types.LoggingLevel, ...] = get_args(types.LoggingLevel)  # severity ascending (RFC 5424)
LOGGER = "opsgate"


@dataclass(frozen=True)
class Notice:
    level: types.LoggingLevel
    message: str


def notices_for(tool: str, out: CallResult) -> list[Notice]:
    """The notices about a call that got past the gateway's decision (a refusal says it all in
    its error): which policy allowed it, under which exception, and what is left of its rate
    budget (a warning when this was the last call the budget had room for)."""
    d = out.decision
    if d is None or not d.allowed:
        return []
    found = [Notice("info", f"{tool}: allowed by {', '.join(d.reasons) or 'policy'} (decision {d.decision_id}, "
                            f"bundle revision {d.bundle_revision})")]
    if d.exceptions_applied:
        found.append(Notice("notice", f"{tool}: allowed under deviation exception "
                                      f"{', '.join(d.exceptions_applied)}"))
    for o in out.limits:
        if o.failed_open:
            found.append(Notice("warning", f"rate limit: bucket {o.bucket!r} was not counted (the limiter is "
                                           "unreachable and this bucket is configured to fail open)"))
        elif o.allowed:
            found.append(Notice("warning" if o.remaining == 0 else "info",
                                f"rate limit: {o.remaining} of {o.limit} left in bucket {o.bucket!r} "
                                f"(per {o.period_s} s)"))
    return found


class LogLevels:
    """The level each 2025 session asked for with logging/setLevel. Bounded: past MAX_SESSIONS the
    oldest setting is forgotten (that session then hears nothing until it asks again)."""

    MAX_SESSIONS = 10_000

    def __init__(self) -> None:
        self._levels: dict[tuple[str, str], types.LoggingLevel] = {}

    def set(self, ctx: ServerRequestContext[Any, Any], caller_id: str, level: types.LoggingLevel) -> None:
        key = (caller_id, _session_of(ctx))
        self._levels.pop(key, None)
        if len(self._levels) >= self.MAX_SESSIONS:
            del self._levels[next(iter(self._levels))]
        self._levels[key] = level

    def threshold(self, ctx: ServerRequestContext[Any, Any], caller_id: str) -> types.LoggingLevel | None:
        """The least severe level this request may be told about; None: tell it nothing."""
        if ctx.protocol_version in MODERN_PROTOCOL_VERSIONS:
            asked = (ctx.meta or {}).get(types.LOG_LEVEL_META_KEY)
            return asked if asked in LEVELS else None
        return self._levels.get((caller_id, _session_of(ctx)))


def _session_of(ctx: ServerRequestContext[Any, Any]) -> str:
    # A stdio process serves one connection; over HTTP a 2025 client is always in a session
    # (the endpoint's session manager is stateful), which the SDK binds to its user.
    return "stdio" if ctx.request is None else ctx.request.headers.get("mcp-session-id", "")


async def send_notices(ctx: ServerRequestContext[Any, Any], threshold: types.LoggingLevel | None,
                       notices: list[Notice]) -> int:
    """Send the notices at or above `threshold`; returns how many went out. A notice that cannot
    be sent is dropped (the call's answer never waits on, or fails for, a notice)."""
    if threshold is None:
        return 0
    floor = LEVELS.index(threshold)
    # 2026-07-28 and stdio: on the request's own channel; 2025 over HTTP (JSON answers): the
    # session's standalone channel, i.e. its GET stream.
    scoped = ctx.protocol_version in MODERN_PROTOCOL_VERSIONS or ctx.session.can_send_request
    sent = 0
    for n in notices:
        if LEVELS.index(n.level) < floor:
            continue
        message = types.LoggingMessageNotification(
            params=types.LoggingMessageNotificationParams(level=n.level, logger=LOGGER, data=n.message))
        try:
            await ctx.session.send_notification(message, related_request_id=ctx.request_id if scoped else None)
        except Exception as e:  # a closed stream, a gone client: the answer still goes out
            log.debug("notice dropped: %s: %s", type(e).__name__, e)
            break
        sent += 1
    return sent


__all__ = ["LEVELS", "LogLevels", "Notice", "notices_for", "send_notices"]
