"""SQLite event store: the embedded default (`make run`, single hosts).

Durability: WAL with `synchronous=FULL` by default (`durability="disk"`), so a returned `append`
survives power loss, not just a process crash; `durability="process"` (synchronous=NORMAL)
survives any death of the gateway process but not a power loss, and puts no fsync on the
call's path (see otel/events/journal.py). Intents (`begin`) go to a per-process intent log
beside the database and become `interrupted` rows when a store next opens it after their
process died.
One writer connection on one dedicated thread (SQLite allows one writer; the
event loop never blocks on fsync), fed by the shared group-commit queue: one transaction and
one fsync per batch. Reads use a second connection on another thread (WAL readers do not
block the writer). Same logical columns as `ops.run_events`; JSON and lists are JSON text;
`created_at` is canonical UTC text, which sorts as time. Triggers make the table append-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec

from otel.events.base import EventRejected, EventStore, EventStoreUnavailable, Query
from otel.events.journal import Durability, IntentLog, Journaled, connect
from otel.events.model import RunEvent, from_row, to_row

COLUMNS = (
    "id, provider, tool, caller_id, payload, result, duration_ms, created_at,"
    " decision, policy_ids, bundle_revision, exception_ids, trace_id, span_id"
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
    span_id text
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

_INSERT = f"insert or ignore into run_events ({COLUMNS}) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_encode = msgspec.json.Encoder().encode
_decode_ids = msgspec.json.Decoder(list[str]).decode


class SqliteEventStore(Journaled, EventStore):
    """`SqliteEventStore(path)`; fails at construction, with the path named, if it cannot write."""

    name = "sqlite"
    CHECKPOINT_EVERY = 2000  # rows written between WAL checkpoints

    def __init__(self, path: str | Path, *, max_batch: int = 1000, busy_timeout_ms: int = 5000,
                 durability: Durability = "disk") -> None:
        super().__init__(max_batch=max_batch)
        self.path = Path(path)
        self.durability = durability
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._wconn = connect(self.path, durability, busy_timeout_ms=busy_timeout_ms)
            self._wconn.executescript(SCHEMA)
            self._intents = IntentLog(self.path)
            self.recovered = self._recover()  # also proves we can take the write lock now
            self._unchecked = 0
            self._ckpt: asyncio.Future[None] | None = None
            # Checkpoints fsync: keep them off the loop and out of callers' commits (see _write_batch).
            self._wconn.execute("pragma wal_autocheckpoint=0")
            self._cconn = self._connect(busy_timeout_ms)
            self._rconn = self._connect(busy_timeout_ms)
            self._rconn.execute("pragma query_only=1")
        except (sqlite3.Error, OSError) as exc:
            raise EventStoreUnavailable(f"cannot open SQLite event store at {self.path}: {exc}") from exc
        # One thread per connection: sqlite3 connections are not for concurrent use.
        self._wpool = ThreadPoolExecutor(1, thread_name_prefix="opsgate-events-write")
        self._rpool = ThreadPoolExecutor(1, thread_name_prefix="opsgate-events-read")

    def _connect(self, busy_timeout_ms: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000)
        conn.execute(f"pragma busy_timeout={int(busy_timeout_ms)}")
        return conn

    def _recover(self) -> int:
        """Insert the intents of dead processes as their `interrupted` rows, unless the call's
        outcome is already stored (same id); returns how many intents were read."""
        dead = self._intents.dead_owners()
        events = [e for owner in dead for e in self._intents.read(owner)]
        self._write_sync([to_row(e) for e in events])  # also proves we can take the write lock now
        self._intents.release(dead)
        return len(events)

    async def _write_batch(self, events: list[RunEvent]) -> None:
        rows = [to_row(e) for e in events]
        if self.durability == "process":
            # No fsync in this commit (checkpoints run on the reader's thread), so it is tens of
            # microseconds of CPU: cheaper on the loop than a hop to the writer thread and back.
            # (Gateways sharing one database would make the loop wait on each other's write
            # lock here; give each its own state dir, or use durability "disk".)
            self._write_sync(rows)
        else:
            await asyncio.get_running_loop().run_in_executor(self._wpool, self._write_sync, rows)
        self._unchecked += len(rows)
        if self._unchecked >= self.CHECKPOINT_EVERY and (self._ckpt is None or self._ckpt.done()):
            self._unchecked = 0
            self._ckpt = asyncio.get_running_loop().run_in_executor(self._rpool, self._checkpoint)

    def _write_sync(self, rows: list[tuple[Any, ...]]) -> None:
        conn = self._wconn
        try:
            conn.execute("begin immediate")
            try:
                conn.executemany(_INSERT, rows)
                conn.execute("commit")
            except BaseException:
                conn.execute("rollback")
                raise
        except sqlite3.IntegrityError as exc:
            raise EventRejected(f"SQLite refused the event: {exc}") from exc
        except sqlite3.Error as exc:
            raise EventStoreUnavailable(f"SQLite event store at {self.path}: {exc}") from exc

    def _checkpoint(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # busy or failing: the WAL grows until the next attempt
            self._cconn.execute("pragma wal_checkpoint(passive)").fetchall()

    async def _query(self, q: Query) -> list[RunEvent]:
        return await asyncio.get_running_loop().run_in_executor(self._rpool, self._query_sync, q)

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

    async def _probe(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._rpool, self._probe_sync)

    def _probe_sync(self) -> None:
        self._rconn.execute("select 1 from run_events limit 1").fetchall()

    async def _close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._wpool, self._wconn.close)
        if self._ckpt is not None:
            await self._ckpt
        await loop.run_in_executor(self._rpool, self._rconn.close)
        await loop.run_in_executor(self._rpool, self._cconn.close)
        self._intents.close()
        self._wpool.shutdown()
        self._rpool.shutdown()


def _event(r: Any) -> RunEvent:
    return from_row(r, ids=_decode_ids, stamp=str)


__all__ = ["SqliteEventStore"]
