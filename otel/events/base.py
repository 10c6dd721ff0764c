"""The event-store contract, and the group commit every backend shares.

Invariants:
- `append` returns only after the event is durably committed. Concurrent appends are
  group-committed: every event waiting when the writer becomes free goes into ONE transaction,
  and each caller is released when that transaction commits.
- A batch is all-or-nothing. If the store is unreachable or the commit fails, every caller in
  the batch gets `EventStoreUnavailable` (the commit's outcome may be unknown: an outbox replays,
  and replay is safe because appends are idempotent by event id).
- If the database refuses the batch's *data* (a constraint, e.g. a caller_id not in
  auth.users), the batch is retried one event per transaction, so only the offending caller
  gets `EventRejected` and nobody else's audit row is lost.
- `begin(event)` records an *intent* before a tool runs: the row the call gets if the process
  dies before `append` of the same id. Stores with a local journal (`journals_intents`) write it
  to a per-process intent log (otel/events/journal.py) and, when they next open after that
  process died, insert its intents with insert-if-absent, so an outcome already stored wins.
  Other stores accept `begin` as a no-op.
- A store belongs to the event loop that first uses it.

Errors:
    EventStoreError
     ├── EventStoreUnavailable   the store could not commit (down, timeout, closed, I/O error)
     └── EventRejected           the database refused this event's data
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec

from otel.events.model import UUID_TEXT, RawEvent, RunEvent, utc_timestamp
from otel.events.paging import BUDGET, Cursor, Filters, Page, check_limit


class EventStoreError(Exception):
    """Any event-store failure."""


class EventStoreUnavailable(EventStoreError):
    """The event could not be committed now; retrying later (the outbox) is the remedy."""


class EventRejected(EventStoreError):
    """The database refused this event's data; retrying it unchanged will fail again."""


class StoreStats(msgspec.Struct, frozen=True, kw_only=True):
    events: int  # events handed to committed transactions (duplicates included)
    batches: int  # committed transactions
    largest_batch: int
    failed_batches: int


MAX_QUERY_LIMIT = 10_000


class Query(msgspec.Struct, frozen=True, kw_only=True):
    """A validated `query()` call, handed to the backend."""

    since: str | None
    until: str | None
    provider: str | None
    tool: str | None
    caller_id: str | None
    decision: str | None
    trace_id: str | None
    limit: int
    after_id: str | None
    newest_first: bool


class EventStore(ABC):
    """Append-only audit store. Backends implement `_write_batch`, `_query`, `_probe`, `_close`."""

    name = "events"
    #: How many batches may be in flight at once. SQLite has one writer; Postgres may pipeline.
    writers = 1
    #: Whether `begin` records intents that become `interrupted` rows after a crash.
    journals_intents = False
    #: Seconds a writer waits before taking a batch: for a store that writes behind its callers,
    #: so the answers go out first and more events share the transaction. 0: callers are waiting.
    linger_s = 0.0

    def __init__(self, *, max_batch: int = 1000) -> None:
        self._max_batch = max_batch
        self._pending: deque[tuple[RunEvent, asyncio.Future[None]]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        self._events = self._batches = self._largest = self._failed = 0

    # -- the contract -------------------------------------------------------------------------

    async def start(self) -> None:  # noqa: B027 - optional: most stores have nothing to start
        """Begin the store's background work now, not at its first use: an outbox ships what an
        earlier process left journaled even if no call or health check comes. Idempotent."""

    async def append(self, event: RunEvent) -> None:
        """Commit `event`; return once durable. Re-appending an id already stored is a no-op."""
        self._accept(event, "append")
        await self._enqueue(event)

    async def begin(self, event: RunEvent) -> None:
        """Record the intent `event` (the call's row should the process die before `append` of
        the same id) durably against the process dying. A no-op without a local journal."""
        self._accept(event, "begin")
        self._begin(event)

    def _accept(self, event: RunEvent, verb: str) -> None:
        if self._closed:
            raise EventStoreUnavailable(f"{self.name} store is closed")
        if not isinstance(event, RunEvent):
            raise TypeError(f"{verb}() takes a RunEvent, got {type(event).__name__}")

    def _enqueue(self, event: RunEvent) -> asyncio.Future[None]:
        """Queue `event` for the group commit; the future settles with its batch."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((event, future))
        self._start_writers().set()
        return future

    async def write_batch(self, events: list[RunEvent]) -> None:
        """Write `events` now in ONE transaction, bypassing the queue (an outbox's shipper uses
        this to keep its journal's order). Raises like `_write_batch`."""
        if self._closed:
            raise EventStoreUnavailable(f"{self.name} store is closed")
        await self._write_batch(events)

    async def query(
        self,
        *,
        since: str | datetime | None = None,
        until: str | datetime | None = None,
        provider: str | None = None,
        tool: str | None = None,
        caller_id: str | None = None,
        decision: str | None = None,
        trace_id: str | None = None,
        limit: int = 100,
        after_id: str | None = None,
        newest_first: bool = False,
    ) -> list[RunEvent]:
        """Events matching every given filter, ordered by (created_at, id).

        Oldest first by default, so `after_id` is a cursor that follows the log forwards
        (`events tail -f`, exports); `newest_first=True` reverses the order and the cursor
        walks backwards (latest N, then paging into the past). `since` is inclusive, `until`
        exclusive; both take ISO 8601 with an offset or aware datetimes. Malformed filters and
        an `after_id` that is not stored raise ValueError. Filters are always bound
        parameters, never SQL text.
        """
        if type(limit) is not int or not 1 <= limit <= MAX_QUERY_LIMIT:
            raise ValueError(f"limit must be an int in [1, {MAX_QUERY_LIMIT}]")
        for label, value in (("caller_id", caller_id), ("after_id", after_id)):
            if value is not None and not UUID_TEXT.fullmatch(value):
                raise ValueError(f"{label} must be a lowercase hyphenated UUID")
        q = Query(
            since=None if since is None else utc_timestamp(since),
            until=None if until is None else utc_timestamp(until),
            provider=provider,
            tool=tool,
            caller_id=caller_id,
            decision=decision,
            trace_id=trace_id,
            limit=limit,
            after_id=after_id,
            newest_first=bool(newest_first),
        )
        return await self._query(q)

    async def scan(self, *, since: str | datetime | None = None, until: str | datetime | None = None,
                   batch: int = 5000) -> AsyncIterator[list[RawEvent]]:
        """Every event with `since <= created_at < until`, oldest first, `batch` at a time, for readers
        of many events (`opsgate policy replay`). Pages by (created_at, id), so a long read holds no
        transaction open. Backends read rows straight into RawEvent; this default pages `query`."""
        limit = min(batch, MAX_QUERY_LIMIT)
        cursor: str | None = None
        while True:
            page = await self.query(since=since, until=until, limit=limit, after_id=cursor)
            if not page:
                return
            yield [RawEvent(e.id, e.provider, e.tool, e.created_at, e.decision, e.policy_ids, e.bundle_revision,
                            None if e.payload is None else msgspec.json.encode(e.payload)) for e in page]
            if len(page) < limit:
                return
            cursor = page[-1].id

    async def page(self, filters: Filters, *, limit: int = 50, cursor: Cursor | None = None, newer: bool = False,
                   budget: int = BUDGET) -> Page:
        """One keyset page of the trail for a reader (otel/events/paging.py): newest first from
        `cursor` (exclusive) into the past, or with `newer` the rows after it, oldest first (a live
        tail). Raises ValueError for a bad limit or budget, EventStoreUnavailable on a store failure."""
        check_limit(limit, budget)
        return await self._page(filters, limit, cursor, newer, budget)

    async def get(self, event_id: str) -> RunEvent | None:
        """The event stored under `event_id`, or None. ValueError for an id that is no UUID."""
        if not UUID_TEXT.fullmatch(event_id):
            raise ValueError("event_id must be a lowercase hyphenated UUID")
        return await self._get(event_id)

    async def _page(self, filters: Filters, limit: int, cursor: Cursor | None, newer: bool, budget: int) -> Page:
        raise NotImplementedError(f"the {self.name} store has no paged reading")

    async def _get(self, event_id: str) -> RunEvent | None:
        raise NotImplementedError(f"the {self.name} store cannot read one event")

    async def health(self) -> dict[str, Any]:
        """Constitution rule 6 shape: status ok|down, latency_ms, last_check, error; plus counters."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        error: str | None = None
        try:
            await self._probe()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        return {
            "store": self.name,
            "status": "down" if error or self._closed else "ok",
            "latency_ms": round((loop.time() - started) * 1000, 1),
            "last_check": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "error": error or ("closed" if self._closed else None),
            "pending": len(self._pending),
            **msgspec.structs.asdict(self.stats()),
        }

    async def close(self) -> None:
        """Commit what is already queued, then release resources. Later appends fail."""
        if self._closed:
            return
        self._closed = True
        if self._wakeup is not None:
            self._wakeup.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for _, future in self._pending:  # only if a writer died; never leave a caller hanging
            if not future.done():
                future.set_exception(EventStoreUnavailable(f"{self.name} store closed"))
        self._pending.clear()
        await self._close()

    def stats(self) -> StoreStats:
        return StoreStats(
            events=self._events, batches=self._batches, largest_batch=self._largest, failed_batches=self._failed
        )

    # -- what a backend provides ------------------------------------------------------------

    def _begin(self, event: RunEvent) -> None:
        """Record an intent (stores with `journals_intents`); raise EventStoreUnavailable if it cannot be."""
        return None  # no local journal: nothing outlives this process anyway

    def _committed(self, events: list[RunEvent]) -> None:
        """Called after `events` are durably committed (a journal forgets their intents)."""
        return None

    @abstractmethod
    async def _write_batch(self, events: list[RunEvent]) -> None:
        """Insert all `events` in ONE transaction, ignoring ids already stored.

        Raise EventRejected when the database refuses the data, EventStoreUnavailable otherwise.
        """

    @abstractmethod
    async def _query(self, q: Query) -> list[RunEvent]:
        """Run a validated query (timestamps already canonical UTC text)."""

    @abstractmethod
    async def _probe(self) -> None:
        """Raise if the store cannot currently serve reads and writes."""

    @abstractmethod
    async def _close(self) -> None: ...

    # -- group commit -------------------------------------------------------------------------

    def _start_writers(self) -> asyncio.Event:
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
            self._tasks = [asyncio.create_task(self._writer(), name=f"{self.name}-writer") for _ in range(self.writers)]
        return self._wakeup

    async def _writer(self) -> None:
        assert self._wakeup is not None
        while True:
            if not self._pending:
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.linger_s and not self._closed:
                await asyncio.sleep(self.linger_s)
            n = min(len(self._pending), self._max_batch)
            batch = [self._pending.popleft() for _ in range(n)]
            if self._pending:  # more than one batch queued: let a sibling writer take the rest
                self._wakeup.set()
            await self._commit(batch)

    async def _commit(self, batch: list[tuple[RunEvent, asyncio.Future[None]]]) -> None:
        first: dict[str, RunEvent] = {}
        for event, _ in batch:  # the same id twice in one batch: write it once, release both callers
            first.setdefault(event.id, event)
        unique = list(first.values())
        try:
            await self._write_batch(unique)
        except EventRejected as exc:
            if len(unique) == 1:
                self._failed += 1
                _settle(batch, exc)
                return
            for event in unique:  # isolate the offender; the others still commit
                await self._commit([(e, f) for e, f in batch if e.id == event.id])
            return
        except EventStoreError as exc:
            self._failed += 1
            _settle(batch, exc)
            return
        except Exception as exc:  # a backend bug must not strand callers
            self._failed += 1
            unavailable = EventStoreUnavailable(f"{self.name} store failed: {type(exc).__name__}: {exc}")
            unavailable.__cause__ = exc
            _settle(batch, unavailable)
            return
        self._committed(unique)
        self._batches += 1
        self._events += len(batch)
        self._largest = max(self._largest, len(batch))
        _settle(batch, None)


def _settle(batch: list[tuple[RunEvent, asyncio.Future[None]]], error: BaseException | None) -> None:
    for _, future in batch:
        if future.done():  # the caller was cancelled; its event was still written (or not) as a whole
            continue
        if error is None:
            future.set_result(None)
        else:  # one exception object per caller: tracebacks must not pile up on a shared instance
            copy = type(error)(*error.args)
            copy.__cause__ = error.__cause__ or error
            future.set_exception(copy)


__all__ = [
    "MAX_QUERY_LIMIT",
    "EventRejected",
    "EventStore",
    "EventStoreError",
    "EventStoreUnavailable",
    "Query",
    "StoreStats",
]
