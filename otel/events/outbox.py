"""A local durable outbox in front of a remote store (Postgres / Supabase): the gateway keeps
working through a database outage without losing or duplicating an event.

    store = OutboxEventStore(".opsgate/events-outbox.db", PostgresEventStore(dsn))

Invariants:
- `append` (and `begin`) return once the event is committed to the local journal (SQLite WAL
  at the chosen durability, group-committed): a tool's answer waits for the journal, never for
  the database. A database outage therefore costs the caller nothing but shipping lag.
- One shipper sends the journal to the remote store oldest first, in batches, each ONE
  transaction of `insert .. on conflict (id) do nothing` (up to SHIP_PIPELINE overlap), and
  deletes rows from the journal strictly in order, only once they and everything before them
  are committed. A crash in between re-sends them; the ids make that a no-op. So: no loss (a
  row leaves the journal only once stored), no duplicates (idempotent by id). Rows carry their
  call's `created_at`, and readers order by it, so each caller's events read back in call order.
- While the remote store is unreachable, the shipper retries with backoff; health says
  `degraded` with the backlog and the last error, and the gateway still serves.
- The journal is bounded (`max_pending` events). When it is full, `begin` (a tool about to run)
  and outcomes of calls that never began (denials, refusals) raise EventStoreUnavailable, which
  the gateway answers with EVENT_STORE_UNAVAILABLE; outcomes of calls already running are
  always journaled, so nothing is dropped. An unwritable journal raises the same.
- An event the database refuses (EventRejected: e.g. a caller_id not in auth.users) is moved to
  the journal's `rejected` table, kept, counted in health and logged; it is never dropped and
  never blocks the events behind it.
- Intents (`begin`) go to an intent log beside the journal and become `interrupted` rows,
  shipped like any other, when a store next opens the journal after their process died
  (otel/events/journal.py).
- Queries go to the remote store: events still in the journal are not visible there yet.
- A full disk is named as such, with what to free, in a failed commit and in `health`; at
  opening the outbox does not fail but refuses every call until there is room to open it, then
  ships (otel/events/journal.py).
- The shipper starts with the first call of any method on the event loop (a store is built
  before the loop runs); a gateway's readiness probes start it after a restart with a backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

from otel.events.base import EventRejected, EventStore, EventStoreError, EventStoreUnavailable, Query
from otel.events.journal import Durability, IntentLog, Journaled, connect, transact
from otel.events.model import RunEvent
from otel.events.paging import Cursor, Filters, Page
from otel.events.space import explain

log = logging.getLogger("opsgate.events.outbox")

SCHEMA = """
create table if not exists outbox (
    seq integer primary key autoincrement,
    id text not null,
    event text not null
);
create table if not exists rejected (
    id text primary key,
    event text not null,
    error text not null
);
"""

_INSERT = "insert into outbox (id, event) values (?, ?)"
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(RunEvent).decode


class OutboxEventStore(Journaled, EventStore):
    """`OutboxEventStore(journal_path, remote, *, durability="disk", max_pending=100_000)`.
    Closes `remote` when closed."""

    name = "outbox"
    _what = "the event outbox"
    RETRY_MIN_S = 0.05
    RETRY_MAX_S = 2.0
    SHIP_PIPELINE = 3  # batches in flight to the remote store

    def __init__(self, path: str | Path, remote: EventStore, *, durability: Durability = "disk",
                 max_pending: int = 100_000, max_batch: int = 1000, ship_batch: int = 1000,
                 log_reserve_bytes: int = IntentLog.RESERVE_BYTES) -> None:
        super().__init__(max_batch=max_batch)
        self.path = Path(path)
        self._log_reserve = log_reserve_bytes
        self.remote = remote
        self.durability = durability
        self.max_pending = max_pending
        self._ship_batch = ship_batch
        self.recovered = 0  # intents of dead owners journaled when the files opened
        self._backlog = self._rejected = 0
        self._open_intents: set[str] = set()
        # One thread per connection: group commits never wait behind the shipper, nor it behind them.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="opsgate-outbox")
        self._spool = ThreadPoolExecutor(1, thread_name_prefix="opsgate-outbox-ship")
        self._shipper: asyncio.Task[None] | None = None
        self._ship_wakeup: asyncio.Event | None = None
        self._shipped = 0
        self._last_error: str | None = None
        self._open_or_wait()

    def _open_files(self) -> None:
        with contextlib.ExitStack() as undo:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = connect(self.path, self.durability)
            undo.callback(conn.close)
            conn.executescript(SCHEMA)
            intents = IntentLog(self.path, reserve_bytes=self._log_reserve)
            undo.callback(intents.close)
            # Dead processes' intents are journaled and shipped like any event: where the call's
            # outcome got there first, the database keeps the outcome. This also proves we can write.
            recovered = intents.recover(lambda events: transact(
                conn, _INSERT, [(e.id, _encode(e).decode()) for e in sorted(events, key=lambda e: e.created_at)]))
            backlog = conn.execute("select count(*) from outbox").fetchone()[0]
            rejected = conn.execute("select count(*) from rejected").fetchone()[0]
            # The shipper's own connection. Its deletes need no fsync (synchronous is per
            # connection): a delete lost to a power cut only means that batch is sent again, and
            # the next fsync'd group commit makes every earlier WAL frame durable anyway.
            sconn = connect(self.path, "process")
            undo.callback(sconn.close)
            sconn.execute("pragma synchronous=off")
            undo.pop_all()
        self._conn, self._sconn, self._intents = conn, sconn, intents
        self.recovered, self._backlog, self._rejected = recovered, backlog, rejected
        self._unopened = None

    def _files_pool(self) -> ThreadPoolExecutor:
        return self._pool

    def _opened(self) -> None:
        self._start_shipper()

    # -- the contract, bounded ---------------------------------------------------------------

    async def start(self) -> None:
        self._start_shipper()

    async def begin(self, event: RunEvent) -> None:
        self._start_shipper()
        self._ensure_open()
        self._refuse_if_full()
        self._open_intents.add(event.id)
        try:
            await super().begin(event)
        except BaseException:
            self._open_intents.discard(event.id)
            raise

    async def append(self, event: RunEvent) -> None:
        self._start_shipper()
        self._ensure_open()
        began = event.id in self._open_intents
        if not began:  # an outcome of a running call is always taken: dropping it would lose an event
            self._refuse_if_full()
        await super().append(event)
        self._open_intents.discard(event.id)

    def _refuse_if_full(self) -> None:
        if self._backlog + len(self._pending) >= self.max_pending:
            raise EventStoreUnavailable(
                f"the event outbox holds {self._backlog} unshipped events (limit {self.max_pending});"
                f" {self.remote.name} has not taken them: {self._last_error or 'shipping is behind'}")

    async def health(self) -> dict[str, Any]:
        self._start_shipper()
        report = self._journal_health(await super().health())
        remote = await self.remote.health()
        shipping = "ok" if self._last_error is None else "failing"
        report["outbox"] = {"path": str(self.path), "durability": self.durability, "backlog": self._backlog,
                            "max_pending": self.max_pending, "shipped": self._shipped, "shipping": shipping,
                            "last_error": self._last_error, "rejected": self._rejected,
                            "remote": {k: remote[k] for k in ("store", "status", "latency_ms", "error")}}
        if report["status"] == "ok" and (shipping != "ok" or remote["status"] != "ok" or self._rejected):
            report["status"] = "degraded"  # the gateway still serves: events wait in the journal
            report["error"] = self._last_error or remote["error"] or f"{self._rejected} events rejected"
        return report

    async def journal_backlog(self) -> int:
        """Events in the journal now, not yet shipped: those of every process sharing it (`_backlog`
        is this process's own reckoning of what it wrote and shipped)."""
        self._start_shipper()
        return await asyncio.get_running_loop().run_in_executor(
            self._spool, lambda: self._sconn.execute("select count(*) from outbox").fetchone()[0])

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until the journal is empty (every event shipped); False on timeout."""
        self._start_shipper()
        try:
            async with asyncio.timeout(timeout):
                while self._backlog or self._pending:
                    await asyncio.sleep(0.005)
        except TimeoutError:
            return False
        return True

    # -- backend ------------------------------------------------------------------------------

    async def _write_batch(self, events: list[RunEvent]) -> None:
        self._ensure_open()
        rows = [(e.id, _encode(e).decode()) for e in events]
        await asyncio.get_running_loop().run_in_executor(self._pool, self._write_sync, rows)
        self._backlog += len(rows)
        if self._ship_wakeup is not None:
            self._ship_wakeup.set()

    def _write_sync(self, rows: list[tuple[str, str]]) -> None:
        try:
            transact(self._conn, _INSERT, rows)
        except sqlite3.Error as exc:
            raise EventStoreUnavailable(f"event outbox at {self.path}: {explain(exc, self.path)}") from exc

    async def _query(self, q: Query) -> list[RunEvent]:
        self._start_shipper()
        return await self.remote.query(**msgspec.structs.asdict(q))

    async def _page(self, filters: Filters, limit: int, cursor: Cursor | None, newer: bool, budget: int) -> Page:
        self._start_shipper()  # rows still in the journal are not visible yet, as with query()
        return await self.remote.page(filters, limit=limit, cursor=cursor, newer=newer, budget=budget)

    async def _get(self, event_id: str) -> RunEvent | None:
        self._start_shipper()
        return await self.remote.get(event_id)

    async def _probe(self) -> None:
        self._ensure_open()
        await asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: self._conn.execute("select 1 from outbox limit 1").fetchall())

    async def _close(self) -> None:
        if self._shipper is not None:
            assert self._ship_wakeup is not None
            self._ship_wakeup.set()  # it ships what it can within the remote's timeout, then stops
            with contextlib.suppress(asyncio.CancelledError):
                await self._shipper
        if await self._stop_reopening():
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._pool, self._conn.close)
            await loop.run_in_executor(self._spool, self._sconn.close)
            self._intents.close()
        self._pool.shutdown()
        self._spool.shutdown()
        await self.remote.close()

    # -- the shipper ---------------------------------------------------------------------------

    def _start_shipper(self) -> None:
        if self._unopened is not None:  # it starts once the journal opens
            self._keep_trying()
            return
        if self._shipper is None and not self._closed:
            self._ship_wakeup = asyncio.Event()
            self._shipper = asyncio.create_task(self._ship_loop(), name="opsgate-outbox-shipper")

    async def _ship_loop(self) -> None:
        """Ship the journal oldest first, up to SHIP_PIPELINE batches in flight (each its own
        transaction on its own connection), so reading the journal, the round trip and the
        remote commit of consecutive batches overlap. Rows are forgotten strictly in order, up
        to the last batch whose predecessors have all committed; after a failure everything
        not yet confirmed is sent again from there (a no-op for what had landed)."""
        assert self._ship_wakeup is not None
        loop = asyncio.get_running_loop()
        delay = self.RETRY_MIN_S
        cursor = 0  # the highest seq handed to a ship task
        inflight: deque[tuple[int, int, asyncio.Task[None]]] = deque()
        while True:
            self._ship_wakeup.clear()
            while len(inflight) < self.SHIP_PIPELINE:
                batch = await loop.run_in_executor(self._spool, self._after, cursor, self._ship_batch)
                if not batch:
                    break
                cursor = batch[-1][0]
                inflight.append((cursor, len(batch), asyncio.create_task(self._ship([e for _, e in batch]))))
            if not inflight:
                if self._closed:
                    return
                await self._ship_wakeup.wait()
                continue
            last_seq, count, task = inflight.popleft()
            try:
                await task
            except EventStoreError as exc:
                for _, _, later in inflight:  # let the rest settle; they are re-sent either way
                    with contextlib.suppress(EventStoreError):
                        await later
                inflight.clear()
                cursor = await loop.run_in_executor(self._spool, self._first_unconfirmed)
                self._last_error = f"{type(exc).__name__}: {exc}"
                if self._closed:  # leave the rest journaled for the next start
                    log.warning("event outbox closing with %d events unshipped: %s", self._backlog, exc)
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._closing()
                delay = min(delay * 2, self.RETRY_MAX_S)
                continue
            await loop.run_in_executor(self._spool, self._forget, last_seq)
            self._backlog -= count
            self._shipped += count
            self._last_error = None
            delay = self.RETRY_MIN_S

    async def _closing(self) -> None:
        while not self._closed:
            await asyncio.sleep(0.05)

    async def _ship(self, events: list[RunEvent]) -> None:
        try:
            await self.remote.write_batch(events)
            return
        except EventRejected:
            pass
        for event in events:  # isolate what the database refuses; ship everything else, in order
            try:
                await self.remote.write_batch([event])
            except EventRejected as exc:
                log.error("the event store refused event %s (%s.%s); kept in %s, table rejected: %s",
                          event.id, event.provider, event.tool, self.path, exc)
                self._rejected += await asyncio.get_running_loop().run_in_executor(
                    self._spool, self._reject, event, str(exc))

    def _after(self, cursor: int, n: int) -> list[tuple[int, RunEvent]]:
        rows = self._sconn.execute("select seq, event from outbox where seq > ? order by seq limit ?",
                                   (cursor, n)).fetchall()
        return [(seq, _decode(text)) for seq, text in rows]

    def _first_unconfirmed(self) -> int:
        """The cursor from which to send again: just before the oldest row still journaled."""
        first = self._sconn.execute("select min(seq) from outbox").fetchone()[0]
        return 0 if first is None else first - 1

    def _forget(self, last_seq: int) -> None:
        self._sconn.execute("delete from outbox where seq <= ?", (last_seq,))

    def _reject(self, event: RunEvent, error: str) -> int:
        return self._sconn.execute("insert or ignore into rejected (id, event, error) values (?, ?, ?)",
                                  (event.id, _encode(event).decode(), error)).rowcount


__all__ = ["OutboxEventStore"]
