"""Constitution rule 3: every tool call leaves exactly one `ops.run_events` row, committed before
the caller sees any answer: allowed, denied, rate-limited, invalid, failed upstream or crashed.

When the row cannot be committed the caller gets EVENT_STORE_UNAVAILABLE instead of the answer,
and while the store has failed recently no tool runs at all: an operation nobody can audit is
an operation nobody may perform.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from gateway.errors import Code, GatewayError
from otel.events import EventRejected, EventStore, EventStoreError, RunEvent, new_event_id, utc_timestamp

log = logging.getLogger("opsgate.audit")

Redact = Callable[[Any], Any]
SpanIds = Callable[[], tuple[str | None, str | None]]


def _identity(value: Any) -> Any:
    return value


def _no_span() -> tuple[str | None, str | None]:
    return None, None


class Audit:
    # After a failed append, refuse to run tools for this long before trying the store again.
    COOLDOWN_S = 1.0

    def __init__(self, store: EventStore, *, redact: Redact = _identity, span_ids: SpanIds = _no_span,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._redact = redact
        self._span_ids = span_ids
        self._clock = clock
        self._failed_at: float | None = None

    def ensure_available(self) -> None:
        """Refuse before a tool runs while the store is known to be failing."""
        if self._failed_at is not None and self._clock() - self._failed_at < self.COOLDOWN_S:
            raise GatewayError(Code.EVENT_STORE_UNAVAILABLE,
                               "the audit store is unavailable; no tool runs until it is back")

    async def record(self, *, caller_id: str | None, tool: str, arguments: Any, decision: Any,
                     result: dict[str, Any], duration_ms: int) -> str:
        """Append one event and wait for its commit; returns its id. Raises EVENT_STORE_UNAVAILABLE."""
        provider, _, local = tool.partition(".")
        trace_id, span_id = self._span_ids()
        if decision is not None and decision.mode == "dryrun" and decision.shadow is not None:
            result = {**result, "dryrun": {"allowed": decision.shadow.allowed,
                                           "policy_ids": list(decision.shadow.reasons)}}
        event = RunEvent(
            id=new_event_id(), provider=provider or "unknown", tool=local or tool, caller_id=caller_id,
            payload=self._redact({"args": arguments}), result=self._redact(result), duration_ms=duration_ms,
            created_at=utc_timestamp(),
            decision="none" if decision is None else ("allow" if decision.allowed else "deny"),
            policy_ids=list(decision.reasons) if decision is not None else [],
            bundle_revision=decision.bundle_revision if decision is not None else None,
            exception_ids=list(decision.exceptions_applied) if decision is not None else [],
            trace_id=trace_id, span_id=span_id)
        try:
            await self.store.append(event)
        except (EventStoreError, ValueError) as e:
            self._failed_at = self._clock()
            why = "rejected the event" if isinstance(e, EventRejected | ValueError) else "is unreachable"
            log.error("audit store %s for %s (%s): %s", why, tool, event.id, type(e).__name__)
            raise GatewayError(Code.EVENT_STORE_UNAVAILABLE, f"the audit store {why}; the call's answer is "
                               "withheld because it could not be recorded") from None
        self._failed_at = None
        return event.id


__all__ = ["Audit"]
