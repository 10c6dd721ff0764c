"""SQLite event store: the embedded default (`make run`, single hosts).

Durability (otel/events/journal.py): `durability="process"` (the default) releases a caller once
its outcome is in this process's intent log, which survives any death of the gateway process
but not a power loss, and commits the row behind (WAL, synchronous=NORMAL); `durability="disk"`
(synchronous=FULL) releases it only when the row's commit is fsync'd, which survives power loss.
Intents (`begin`) and outcomes not yet committed go to the per-process intent log beside the
database and become rows (`interrupted` when only the intent is there) when a store next opens it
after their process died.

A full disk is named as such, with what to free (otel/events/journal.py, space.py): in a failed
commit, in `health`, and at opening, where the store does not fail but refuses every call until
there is room to open it.

Written behind: while a commit fails, outcomes keep going to the log (nothing is lost) and are
retried every RETRY_S, but `begin` refuses, so no tool runs until the store commits again;
likewise past `max_behind` outcomes not yet committed. `query` first waits for the outcomes
already handed in, so a gateway reads its own writes.
One writer connection on one dedicated thread (SQLite allows one writer; the
event loop never blocks on fsync), fed by the shared group-commit queue: one transaction and
one fsync per batch. Reads use a second connection on another thread (WAL readers do not
block the writer). Same logical columns as `ops.run_events`; JSON and lists are JSON text;
`created_at` is canonical UTC text, which sorts as time. Triggers make the table append-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from otel.events.base import EventRejected, EventStore, EventStoreError, EventStoreUnavailable, Query
from otel.events.journal import Durability, IntentLog, Journaled, connect, transact
from otel.events.model import RawEvent, RunEvent, from_row, to_row, utc_timestamp
from otel.events.paging import Cursor, Filters, Page
from otel.events.space import explain

log = logging.getLogger("opsgate.events")

COLUMNS = (
    "id, provider, tool, caller_id, payload, result, duration_ms, created_at,"
    " decision, policy_ids, bundle_revision, exception_ids, trace_id, span_id, client_addr"
)

SCHEMA = """
create table if not exists run_events (
    id text primary key,
    provider text not null,
    tool text not null,
    caller_id text,
    payload text,
    result text,
    duration_ms integer,
    created_at text not null,
    decision text not null,
    policy_ids text not null default '[]',
    bundle_revision text,
    exception_ids text not null default '[]',
    trace_id text,
    span_id text,
    client_addr text
);
create index if not exists run_events_created_at_idx on run_events (created_at, id);
create index if not exists run_events_caller_idx on run_events (caller_id, created_at);
create index if not exists run_events_provider_tool_idx on run_events (provider, tool, created_at);
create index if not exists run_events_denials_idx on run_events (decision, created_at) where decision <> 'allow';
create index if not exists run_events_trace_idx on run_events (trace_id) where trace_id is not null;
create trigger if not exists run_events_no_update before update on run_events
begin select raise(abort, 'run_events is append-only: UPDATE is not allowed'); end;
create trigger if not exists run_events_no_delete before delete on run_events
begin select raise(abort, 'run_events is append-only: DELETE is not allowed'); end;
"""

_INSERT = f"insert or ignore into run_events ({COLUMNS}) values ({', '.join('?' * 15)})"
# Columns added after a store's table was first created (supabase/migrations has the same, dated).
_ADDED = {"client_addr": "text"}
_encode = msgspec.json.Encoder().encode
_decode_ids = msgspec.json.Decoder(list[str]).decode


class SqliteEventStore(Journaled, EventStore):
    """`SqliteEventStore(path)`; fails at construction, with the path named, if it cannot write,
    unless for a full disk: then it waits for space (see Journaled)."""

    name = "sqlite"
    _what = "the SQLite event store"
    CHECKPOINT_EVERY = 2000  # rows written between WAL checkpoints

    RETRY_S = 1.0  # between attempts to commit outcomes written behind while commits fail (and to open)

    def __init__(self, path: str | Path, *, max_batch: int = 1000, busy_timeout_ms: int = 5000,
                 durability: Durability = "process", max_behind: int = 100_000,
                 log_reserve_bytes: int = IntentLog.RESERVE_BYTES) -> None:
        super().__init__(max_batch=max_batch)
        self.path = Path(path)
        self._log_reserve = log_reserve_bytes
        self.durability = durability
        self.max_behind = max_behind
        if durability == "process":  # nobody waits for these commits: let answers go out first
            self.linger_s = 0.002
        self._behind: set[asyncio.Future[None]] = set()  # outcomes handed in, commit not yet settled
        self._unshipped: dict[str, RunEvent] = {}  # outcomes whose commit failed, retried
        self._behind_error: str | None = None
        self._retry: asyncio.Task[None] | None = None
        self._busy_timeout_ms = busy_timeout_ms
        self.recovered = 0  # intents of dead owners read when the files opened
        self._unchecked = 0
        self._ckpt: asyncio.Future[None] | None = None
        # One thread per connection: sqlite3 connections are not for concurrent use.
        self._wpool = ThreadPoolExecutor(1, thread_name_prefix="opsgate-events-write")
        self._rpool = ThreadPoolExecutor(1, thread_name_prefix="opsgate-events-read")
        self._open_or_wait()

    def _open_files(self) -> None:
        with contextlib.ExitStack() as undo:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            wconn = connect(self.path, self.durability, busy_timeout_ms=self._busy_timeout_ms)
            undo.callback(wconn.close)
            wconn.executescript(SCHEMA)
            _add_columns(wconn)
            intents = IntentLog(self.path, reserve_bytes=self._log_reserve)
            undo.callback(intents.close)
            # Dead processes' intents become their `interrupted` rows unless the call's outcome is
            # already stored (same id); this also proves we can take the write lock now.
            recovered = intents.recover(lambda events: transact(wconn, _INSERT, [to_row(e) for e in events]))
            # Checkpoints fsync: keep them off the loop and out of callers' commits (see _write_batch).
            wconn.execute("pragma wal_autocheckpoint=0")
            cconn = self._connect(self._busy_timeout_ms)
            undo.callback(cconn.close)
            rconn = self._connect(self._busy_timeout_ms)
            undo.callback(rconn.close)
            rconn.execute("pragma query_only=1")
            undo.pop_all()
        self._wconn, self._cconn, self._rconn, self._intents = wconn, cconn, rconn, intents
        self.recovered = recovered
        self._unopened = None

    def _files_pool(self) -> ThreadPoolExecutor:
        return self._wpool

    def _connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000)
        conn.execute(f"pragma busy_timeout={int(busy_timeout_ms)}")
        return conn

    # -- durability "process": outcomes written behind --------------------------------------

    async def append(self, event: RunEvent) -> None:
        if self.durability != "process":
            return await super().append(event)
        self._accept(event, "append")
        self._ensure_open()
        self._journal(event, "outcome")  # recovery inserts it should the process die before the commit
        future = self._enqueue(event)  # not awaited: the commit follows behind
        self._behind.add(future)
        future.add_done_callback(lambda f: self._settled_behind(f, event))

    def _begin(self, event: RunEvent) -> None:
        self._ensure_open()
        if self.durability == "process":
            if self._behind_error is not None:
                raise EventStoreUnavailable(f"the SQLite event store at {self.path} cannot commit "
                                            f"({self._behind_error}); no tool runs until it can")
            if self._waiting() >= self.max_behind:
                raise EventStoreUnavailable(f"{self._waiting()} outcomes are waiting for their commit to "
                                            f"{self.path}; no tool runs until fewer are")
        super()._begin(event)

    def _waiting(self) -> int:
        """Outcomes written behind whose commit has not succeeded yet (in flight or to retry)."""
        return len(self._behind) + len(self._unshipped)

    def _settled_behind(self, future: asyncio.Future[None], event: RunEvent) -> None:
        self._behind.discard(future)
        error = None if future.cancelled() else future.exception()
        if error is None:
            return
        # Still in the intent log, so not lost; commit it again until that works.
        self._unshipped[event.id] = event
        if self._behind_error is None:
            log.error("commits to %s are failing; outcomes are kept in the intent log, retried every %g s, "
                      "and no tool runs meanwhile: %s", self.path, self.RETRY_S, error)
        self._behind_error = f"{type(error).__name__}: {error}"
        if self._retry is None or self._retry.done():
            self._retry = asyncio.get_running_loop().create_task(self._retry_unshipped())

    async def _retry_unshipped(self) -> None:
        while self._unshipped and not self._closed:
            await asyncio.sleep(self.RETRY_S)
            events = list(self._unshipped.values())
            try:
                await self._write_batch(events)
            except EventStoreError as exc:
                self._behind_error = f"{type(exc).__name__}: {exc}"
                continue
            self._committed(events)
            for e in events:
                self._unshipped.pop(e.id, None)
        if not self._unshipped and self._behind_error is not None:
            log.warning("commits to %s work again: the outcomes kept in the intent log are stored", self.path)
            self._behind_error = None

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every outcome handed in so far has its commit settled (not the retries), or
        `timeout_s` passed. Callable from another event loop (a reader on another thread)."""
        pending = set(self._behind)
        if not pending:
            return
        loop = asyncio.get_running_loop()
        if all(f.get_loop() is loop for f in pending):
            await asyncio.wait(pending, timeout=timeout_s)
            return
        deadline = loop.time() + timeout_s  # futures of the owner's loop: watch, do not await them
        while any(not f.done() for f in pending) and loop.time() < deadline:
            await asyncio.sleep(0.002)

    async def _query(self, q: Query) -> list[RunEvent]:
        self._ensure_open()
        await self.flush()  # read your own writes
        return await asyncio.get_running_loop().run_in_executor(self._rpool, self._query_sync, q)

    async def health(self) -> dict[str, Any]:
        await self.flush()
        report = self._journal_health(await super().health())
        if self.durability == "process":
            report["behind"] = self._waiting()
            if self._behind_error is not None:
                report["status"] = "down"
                report["error"] = f"commits failing, outcomes kept in the intent log: {self._behind_error}"
        return report

    # -- writing --------------------------------------------------------------------------------

    async def _write_batch(self, events: list[RunEvent]) -> None:
        self._ensure_open()
        rows = [to_row(e) for e in events]
        await asyncio.get_running_loop().run_in_executor(self._wpool, self._write_sync, rows)
        self._unchecked += len(rows)
        if self._unchecked >= self.CHECKPOINT_EVERY and (self._ckpt is None or self._ckpt.done()):
            self._unchecked = 0
            self._ckpt = asyncio.get_running_loop().run_in_executor(self._rpool, self._checkpoint)

    def _write_sync(self, rows: list[tuple[Any, ...]]) -> None:
        try:
            transact(self._wconn, _INSERT, rows)
        except sqlite3.IntegrityError as exc:
            raise EventRejected(f"SQLite refused the event: {exc}") from exc
        except sqlite3.Error as exc:
            raise EventStoreUnavailable(f"SQLite event store at {self.path}: {explain(exc, self.path)}") from exc

    def _checkpoint(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # busy or failing: the WAL grows until the next attempt
            self._cconn.execute("pragma wal_checkpoint(passive)").fetchall()

    def _query_sync(self, q: Query) -> list[RunEvent]:
        where: list[str] = []
        args: list[Any] = []
        if q.decision is not None and q.decision != "allow":
            where.append("decision <> 'allow'")  # a constant term, so the partial denials index applies
        for column, value in (
            ("provider", q.provider),
            ("tool", q.tool),
            ("caller_id", q.caller_id),
            ("decision", q.decision),
            ("trace_id", q.trace_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if q.since is not None:
            where.append("created_at >= ?")
            args.append(q.since)
        if q.until is not None:
            where.append("created_at < ?")
            args.append(q.until)
        try:
            if q.after_id is not None:
                cursor = self._rconn.execute(
                    "select created_at, id from run_events where id = ?", (q.after_id,)
                ).fetchone()
                if cursor is None:
                    raise ValueError(f"after_id {q.after_id} is not a stored event")
                where.append(f"(created_at, id) {'<' if q.newest_first else '>'} (?, ?)")
                args.extend(cursor)
            order = "desc" if q.newest_first else "asc"
            sql = f"select {COLUMNS} from run_events"
            if where:
                sql += " where " + " and ".join(where)
            sql += f" order by created_at {order}, id {order} limit ?"
            rows = self._rconn.execute(sql, [*args, q.limit]).fetchall()
        except sqlite3.Error as exc:
            raise EventStoreUnavailable(f"SQLite event store at {self.path}: {exc}") from exc
        return [_event(r) for r in rows]

    async def scan(self, *, since: str | datetime | None = None, until: str | datetime | None = None,
                   batch: int = 5000) -> AsyncIterator[list[RawEvent]]:
        await self.flush()  # read your own writes
        bounds = (utc_timestamp(since) if since is not None else "", utc_timestamp(until) if until is not None else "~")
        cursor = (bounds[0], "")
        loop = asyncio.get_running_loop()
        while True:
            rows = await loop.run_in_executor(self._rpool, self._scan_sync, bounds[1], cursor, batch)
            if not rows:
                return
            yield [RawEvent(r[0], r[1], r[2], r[3], r[4], _decode_ids(r[5]), r[6], r[7]) for r in rows]
            if len(rows) < batch:
                return
            cursor = (rows[-1][3], rows[-1][0])

    def _scan_sync(self, until: str, cursor: tuple[str, str], batch: int) -> list[Any]:
        # Canonical UTC text sorts as time; "~" sorts after any timestamp. The cursor starts at
        # (since, ""), below every id at that instant, so `since` is inclusive.
        try:
            return self._rconn.execute(
                "select id, provider, tool, created_at, decision, policy_ids, bundle_revision, payload"
                " from run_events where (created_at, id) > (?, ?) and created_at < ?"
                " order by created_at, id limit ?", (*cursor, until, batch)).fetchall()
        except sqlite3.Error as exc:
            raise EventStoreUnavailable(f"SQLite event store at {self.path}: {exc}") from exc

    async def _page(self, filters: Filters, limit: int, cursor: Cursor | None, newer: bool, budget: int) -> Page:
        self._ensure_open()
        await self.flush()  # read your own writes
        return await asyncio.get_running_loop().run_in_executor(
            self._rpool, self._page_sync, filters, limit, cursor, newer, budget)

    def _page_sync(self, f: Filters, limit: int, cursor: Cursor | None, newer: bool, budget: int) -> Page:
        where, args = _indexed(f)
        if cursor is not None:  # spelled so that the time range narrows whichever index serves
            op = ">" if newer else "<"
            where.append(f"created_at {op}= ? and (created_at {op} ? or id {op} ?)")
            args += [cursor.created_at, cursor.created_at, cursor.id]
        order = "asc" if newer else "desc"
        extra, extra_args = _unindexed(f)
        try:
            boundary = None
            if extra:  # the last row this page may examine; JSON filters look no further
                edge = self._rconn.execute(
                    f"select created_at, id from run_events {_where(where)} order by created_at {order}, id {order}"
                    " limit 1 offset ?", [*args, budget - 1]).fetchone()
                if edge is not None:
                    boundary = Cursor(edge[0], edge[1])
                    op = "<" if newer else ">"
                    where.append(f"created_at {op}= ? and (created_at {op} ? or id {op}= ?)")
                    args += [boundary.created_at, boundary.created_at, boundary.id]
            rows = self._rconn.execute(
                f"select {COLUMNS} from run_events {_where(where + extra)} order by created_at {order}, id {order}"
                " limit ?", [*args, *extra_args, limit + 1]).fetchall()
        except sqlite3.Error as exc:
            raise EventStoreUnavailable(f"SQLite event store at {self.path}: {exc}") from exc
        events = [_event(r) for r in rows[:limit]]
        if len(rows) > limit:
            return Page(events, Cursor.of(events[-1]))
        if boundary is not None:
            return Page(events, boundary, boundary.created_at)
        return Page(events)

    async def _get(self, event_id: str) -> RunEvent | None:
        self._ensure_open()
        await self.flush()

        def read() -> Any:
            try:
                return self._rconn.execute(f"select {COLUMNS} from run_events where id = ?", (event_id,)).fetchone()
            except sqlite3.Error as exc:
                raise EventStoreUnavailable(f"SQLite event store at {self.path}: {exc}") from exc

        row = await asyncio.get_running_loop().run_in_executor(self._rpool, read)
        return None if row is None else _event(row)

    async def _probe(self) -> None:
        self._ensure_open()
        await asyncio.get_running_loop().run_in_executor(self._rpool, self._probe_sync)

    def _probe_sync(self) -> None:
        self._rconn.execute("select 1 from run_events limit 1").fetchall()

    async def _close(self) -> None:
        if self._retry is not None:  # what it had not committed stays in the log for the next opener
            self._retry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry
        if await self._stop_reopening():
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._wpool, self._wconn.close)
            if self._ckpt is not None:
                await self._ckpt
            await loop.run_in_executor(self._rpool, self._rconn.close)
            await loop.run_in_executor(self._rpool, self._cconn.close)
            self._intents.close()
        self._wpool.shutdown()
        self._rpool.shutdown()


def _add_columns(conn: sqlite3.Connection) -> None:
    """Bring a table created by an older gateway up to COLUMNS (`alter table` appends; rows already
    there read NULL in the new columns)."""
    have = {row[1] for row in conn.execute("pragma table_info(run_events)")}
    for name, kind in _ADDED.items():
        if name not in have:
            conn.execute(f"alter table run_events add column {name} {kind}")


def _indexed(f: Filters) -> tuple[list[str], list[Any]]:
    """WHERE terms on the indexed columns (otel/events/paging.py)."""
    where: list[str] = []
    args: list[Any] = []
    if f.decision is not None and f.decision != "allow":
        where.append("decision <> 'allow'")  # a constant term, so the partial denials index applies
    for column, value in (("provider", f.provider), ("tool", f.tool), ("caller_id", f.caller_id),
                          ("decision", f.decision)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if f.since is not None:
        where.append("created_at >= ?")
        args.append(f.since)
    if f.until is not None:
        where.append("created_at < ?")
        args.append(f.until)
    return where, args


def _unindexed(f: Filters) -> tuple[list[str], list[Any]]:
    """WHERE terms inside the JSON columns: evaluated only on the rows a page may examine."""
    where: list[str] = []
    args: list[Any] = []
    for term, value in (("json_extract(result, '$.status') = ?", f.status),
                        ("json_extract(payload, '$._request.role') = ?", f.role),
                        ("exists (select 1 from json_each(run_events.policy_ids) where value = ?)", f.policy_id),
                        ("exists (select 1 from json_each(run_events.exception_ids) where value = ?)", f.exception_id)):
        if value is not None:
            where.append(term)
            args.append(value)
    return where, args


def _where(terms: list[str]) -> str:
    return ("where " + " and ".join(terms)) if terms else ""


def _event(r: Any) -> RunEvent:
    return from_row(r, ids=_decode_ids, stamp=str)


__all__ = ["SqliteEventStore"]
