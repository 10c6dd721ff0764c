"""Constitution rule 3: every tool call leaves exactly one `ops.run_events` row, committed before
the caller sees any answer: allowed, denied, rate-limited, invalid, failed upstream or crashed.

Before a tool runs, `begin` journals the call's intent (durable, group-committed): if the process
dies mid-call, the intent becomes the call's row with status `interrupted`. `record` then commits
the outcome under the same id. When either cannot be committed the caller gets
EVENT_STORE_UNAVAILABLE (a tool that could not begin does not run; an answer that could not be
recorded is withheld), and while the store has failed recently no tool runs at all: an
operation nobody can audit is an operation nobody may perform. With Postgres the store is a
local outbox, so "committed" means journaled locally; a database outage is not a failure here.

A row that records a decision also keeps the request as decided (`asked`: principal, role, action,
resource, context, `now`), redacted like the payload, under the payload's reserved key `_request`:
what `opsgate policy replay` decides again (engine/impact/recorded.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec

from engine.impact import REQUEST_KEY, Asked, keep
from gateway.errors import Code, GatewayError
from otel.events import EventRejected, EventStore, EventStoreError, RunEvent, new_event_id, utc_timestamp

log = logging.getLogger("opsgate.audit")

Redact = Callable[[Any], Any]
SpanIds = Callable[[], tuple[str | None, str | None]]
ClientAddress = Callable[[], str | None]


# The row of a call whose process died between `begin` and `record` (constitution rule 3: even a
# crashed call is not a dark operation).
INTERRUPTED = {"status": "interrupted",
               "message": "the gateway stopped while this call ran; its outcome was never recorded"}


def _identity(value: Any) -> Any:
    return value


def _no_span() -> tuple[str | None, str | None]:
    return None, None


def _no_client() -> str | None:
    return None


class Audit:
    # After a failed append, refuse to run tools for this long before trying the store again.
    COOLDOWN_S = 1.0

    def __init__(self, store: EventStore, *, redact: Redact = _identity, span_ids: SpanIds = _no_span,
                 clock: Callable[[], float] = time.monotonic, client_addr: ClientAddress = _no_client) -> None:
        self.store = store
        self._redact = redact
        self._span_ids = span_ids
        self._client_addr = client_addr  # the current request's client (gateway.edge), None off HTTP
        self._clock = clock
        self._failed_at: float | None = None
        self._interrupted = redact(INTERRUPTED)  # constant: redacted once, not per call

    def ensure_available(self) -> None:
        """Refuse before a tool runs while the store is known to be failing."""
        if self._failed_at is not None and self._clock() - self._failed_at < self.COOLDOWN_S:
            raise GatewayError(Code.EVENT_STORE_UNAVAILABLE,
                               "the audit store is unavailable; no tool runs until it is back")

    async def begin(self, *, caller_id: str | None, tool: str, arguments: Any, decision: Any,
                    asked: Asked | None = None) -> RunEvent:
        """Journal that a call's tool is about to run, and wait until that is durable; returns the
        intent, which its outcome must be recorded from (`record(started=...)`: same id, same
        payload, same created_at). If the gateway dies before the outcome is recorded, this intent
        becomes the call's row, status `interrupted`. Raises EVENT_STORE_UNAVAILABLE (and the tool
        must not run) when it cannot be journaled."""
        self.ensure_available()
        event = self._event(new_event_id(), caller_id=caller_id, tool=tool, arguments=arguments, decision=decision,
                            result=None, duration_ms=0, asked=asked)
        try:
            await self.store.begin(event)
        except (EventStoreError, ValueError) as e:
            self._failed_at = self._clock()
            log.error("audit store cannot journal the start of %s (%s): %s: %s", tool, event.id, type(e).__name__, e)
            raise GatewayError(Code.EVENT_STORE_UNAVAILABLE, "the audit store cannot record this call, so it was "
                               "not run") from None
        return event

    async def record(self, *, caller_id: str | None, tool: str, arguments: Any, decision: Any,
                     result: dict[str, Any], duration_ms: int, event_id: str | None = None,
                     started: RunEvent | None = None, client_addr: str | None = None,
                     asked: Asked | None = None) -> str:
        """Append one event and wait for its commit; returns its id. Raises EVENT_STORE_UNAVAILABLE.
        `started` is what `begin` returned, if the call began (its arguments are already redacted
        there); else `event_id`, if the caller fixes the id (idempotent lifecycle rows).
        `client_addr` names the client when the row is not written for the current request. `asked`
        is the request the decision answered, kept for replay."""
        if started is not None:
            event = msgspec.structs.replace(started, result=self._redact(_with_dryrun(result, decision)),
                                            duration_ms=duration_ms)
        else:
            event = self._event(event_id or new_event_id(), caller_id=caller_id, tool=tool, arguments=arguments,
                                decision=decision, result=result, duration_ms=duration_ms, client_addr=client_addr,
                                asked=asked)
        try:
            await self.store.append(event)
        except (EventStoreError, ValueError) as e:
            self._failed_at = self._clock()
            why = "rejected the event" if isinstance(e, EventRejected | ValueError) else "is unreachable"
            log.error("audit store %s for %s (%s): %s: %s", why, tool, event.id, type(e).__name__, e)
            raise GatewayError(Code.EVENT_STORE_UNAVAILABLE, f"the audit store {why}; the call's answer is "
                               "withheld because it could not be recorded") from None
        self._failed_at = None
        return event.id

    def _event(self, event_id: str, *, caller_id: str | None, tool: str, arguments: Any, decision: Any,
               result: dict[str, Any] | None, duration_ms: int, client_addr: str | None = None,
               asked: Asked | None = None) -> RunEvent:
        """`result=None`: the intent's (`interrupted`)."""
        provider, _, local = tool.partition(".")
        trace_id, span_id = self._span_ids()
        redacted = (self._redact(_with_dryrun(result, decision)) if result is not None
                    else _with_dryrun(self._interrupted, decision))
        payload = self._redact({"args": arguments})
        kept = keep(asked, self._redact) if asked is not None and decision is not None else None
        if kept is not None:
            payload = {**payload, REQUEST_KEY: kept}
        return RunEvent(
            id=event_id, provider=provider or "unknown", tool=local or tool, caller_id=caller_id,
            payload=payload, result=redacted, duration_ms=duration_ms,
            created_at=utc_timestamp(),
            decision="none" if decision is None else ("allow" if decision.allowed else "deny"),
            policy_ids=list(decision.reasons) if decision is not None else [],
            bundle_revision=decision.bundle_revision if decision is not None else None,
            exception_ids=list(decision.exceptions_applied) if decision is not None else [],
            trace_id=trace_id, span_id=span_id,
            client_addr=client_addr if client_addr is not None else self._client_addr())


def _with_dryrun(result: dict[str, Any], decision: Any) -> dict[str, Any]:
    """A dryrun policy that would have changed the outcome shows in the row."""
    if decision is not None and decision.mode == "dryrun" and decision.shadow is not None:
        return {**result, "dryrun": {"allowed": decision.shadow.allowed, "policy_ids": list(decision.shadow.reasons)}}
    return result


__all__ = ["INTERRUPTED", "Audit"]
