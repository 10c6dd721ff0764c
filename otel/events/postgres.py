"""Postgres / Supabase event store (asyncpg): `ops.run_events` from supabase/migrations/.

Each group-committed batch is ONE statement in one transaction: `insert .. select from
unnest(<one array per column>) on conflict (id) do nothing`, so replays are no-ops. Measured
(batches of 64 and 512, same machine): unnest ~= jsonb_populate_recordset of one JSON
parameter (within noise), both ~15% faster than `executemany`. Two batches may be in flight
on two pooled connections, so events that arrive during one commit need not wait for it.

Every database operation is bounded by `timeout` (default 2 s), and handing its connection
back to the pool by `timeout` again: an unreachable or stalled database becomes
`EventStoreUnavailable` promptly instead of holding tool calls. Connections are
made lazily, so a store built while the database is down starts working when it comes back.

Connect as a login role that is a member of `opsgate_gateway` (INSERT and SELECT only).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from otel.events.base import EventRejected, EventStore, EventStoreUnavailable, Query
from otel.events.model import RawEvent, RunEvent, from_row, to_row, utc_timestamp
from otel.events.paging import Cursor, Filters, Page

_PARAM_TYPES = ("text",) * 6 + ("int",) + ("text",) * 8  # the order of _COLUMNS
_IDENT = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?")
_COLUMNS = (
    "id, provider, tool, caller_id, payload, result, duration_ms, created_at,"
    " decision, policy_ids, bundle_revision, exception_ids, trace_id, span_id, client_addr"
)
_SELECT = (
    "id::text, provider, tool, caller_id::text, payload::text, result::text, duration_ms, created_at,"
    " decision, policy_ids, bundle_revision, exception_ids, trace_id, span_id, host(client_addr)"
)
# Rejections are about the data (class 22 data exception, class 23 integrity violation);
# anything else (connection, timeout, privilege, server) means "not now".
_REJECT = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
_encode = msgspec.json.Encoder().encode


def _heard(release: asyncio.Future[None]) -> None:
    """Take a finished release's outcome, so a failure is not reported as never retrieved."""
    if not release.cancelled():
        release.exception()


class PostgresEventStore(EventStore):
    """`PostgresEventStore(dsn_or_pool, *, table="ops.run_events")`. A pool passed in is not closed."""

    name = "postgres"
    writers = 2

    def __init__(
        self,
        dsn_or_pool: str | asyncpg.Pool,
        *,
        table: str = "ops.run_events",
        timeout: float = 2.0,
        max_batch: int = 1000,
        pool_size: int = 4,
    ) -> None:
        super().__init__(max_batch=max_batch)
        if not _IDENT.fullmatch(table):
            raise ValueError(f"table must be a plain [schema.]name, got {table!r}")
        self.table = table
        self._timeout = timeout
        self._pool_size = max(pool_size, self.writers + 1)
        self._owns_pool = not isinstance(dsn_or_pool, asyncpg.Pool)
        self._dsn = dsn_or_pool if self._owns_pool else None
        self._pool: asyncpg.Pool | None = None if self._owns_pool else dsn_or_pool
        self._pool_lock = asyncio.Lock()
        # Arrays of text, cast by the server: no per-value encoding work in Python, no codec setup
        # needed on a pool handed in. Lists travel as JSON text, since Postgres arrays cannot be ragged.
        self._insert = (
            f"insert into {table} ({_COLUMNS})"
            " select id::uuid, provider, tool, caller_id::uuid, payload::jsonb, result::jsonb, duration_ms,"
            " created_at::timestamptz, decision, array(select jsonb_array_elements_text(policy_ids::jsonb)),"
            " bundle_revision, array(select jsonb_array_elements_text(exception_ids::jsonb)), trace_id, span_id,"
            " client_addr::inet"
            f" from unnest({', '.join(f'${i}::{t}[]' for i, t in enumerate(_PARAM_TYPES, 1))}) as u({_COLUMNS})"
            " on conflict (id) do nothing"
        )

    async def _get_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._pool_lock:
                if self._pool is None:
                    # min_size=0: no connection now; each acquire connects on demand, so the store
                    # recovers by itself once the database is reachable again.
                    self._pool = await asyncpg.create_pool(
                        self._dsn,
                        min_size=0,
                        max_size=self._pool_size,
                        timeout=self._timeout,
                        command_timeout=self._timeout,
                    )
        return self._pool

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; getting it and the work done with it are bounded by `timeout`.

        The connection goes back to the pool outside that bound, in a task of its own. asyncpg
        shields a release from cancellation, so a release interrupted by our deadline (asyncpg's
        command timeout and ours can fire together on a stalled database) or by shutdown would go
        on alone and fail later with nobody to hear it: "exception was never retrieved". Its
        failure needs no handling: asyncpg has already terminated the connection, and the pool
        connects afresh on the next acquire.
        """
        pool: asyncpg.Pool | None = None
        conn: asyncpg.Connection | None = None
        try:
            async with asyncio.timeout(self._timeout):
                pool = await self._get_pool()
                conn = await pool.acquire()
                yield conn
        finally:
            if pool is not None and conn is not None:
                release = asyncio.ensure_future(pool.release(conn, timeout=self._timeout))
                release.add_done_callback(_heard)
                with contextlib.suppress(Exception):
                    await asyncio.shield(release)

    async def _write_batch(self, events: list[RunEvent]) -> None:
        columns = [list(c) for c in zip(*map(to_row, events), strict=True)]
        try:
            async with self._connection() as conn, conn.transaction():
                await conn.execute(self._insert, *columns)
        except _REJECT as exc:
            raise EventRejected(f"Postgres refused the event: {exc}") from exc
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise EventStoreUnavailable(f"Postgres event store: {type(exc).__name__}: {exc}") from exc

    async def _query(self, q: Query) -> list[RunEvent]:
        where: list[str] = []
        args: list[Any] = []

        def bind(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if q.decision is not None and q.decision != "allow":
            where.append("decision <> 'allow'")  # a constant term, so the partial denials index applies
        for column, value, cast in (
            ("provider", q.provider, "text"),
            ("tool", q.tool, "text"),
            ("caller_id", q.caller_id, "uuid"),
            ("decision", q.decision, "text"),
            ("trace_id", q.trace_id, "text"),
        ):
            if value is not None:
                where.append(f"{column} = {bind(value)}::{cast}")
        if q.since is not None:
            where.append(f"created_at >= {bind(datetime.fromisoformat(q.since))}")
        if q.until is not None:
            where.append(f"created_at < {bind(datetime.fromisoformat(q.until))}")
        order = "desc" if q.newest_first else "asc"
        try:
            async with self._connection() as conn:
                if q.after_id is not None:
                    cursor = await conn.fetchrow(
                        f"select created_at, id from {self.table} where id = $1::uuid", q.after_id
                    )
                    if cursor is None:
                        raise ValueError(f"after_id {q.after_id} is not a stored event")
                    op = "<" if q.newest_first else ">"
                    where.append(f"(created_at, id) {op} ({bind(cursor[0])}, {bind(cursor[1])})")
                sql = f"select {_SELECT} from {self.table}"
                if where:
                    sql += " where " + " and ".join(where)
                sql += f" order by created_at {order}, id {order} limit {bind(q.limit)}"
                rows = await conn.fetch(sql, *args)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise EventStoreUnavailable(f"Postgres event store: {type(exc).__name__}: {exc}") from exc
        return [_event(r) for r in rows]

    async def scan(self, *, since: str | datetime | None = None, until: str | datetime | None = None,
                   batch: int = 5000) -> AsyncIterator[list[RawEvent]]:
        sql = (f"select id::text, provider, tool, created_at, decision, policy_ids, bundle_revision, payload::text"
               f" from {self.table} where (created_at, id) > ($1, $2::uuid) and created_at < $3"
               f" order by created_at, id limit $4")
        start = datetime.fromisoformat(utc_timestamp(since)) if since is not None else datetime.min.replace(tzinfo=UTC)
        end = datetime.fromisoformat(utc_timestamp(until)) if until is not None else datetime.max.replace(tzinfo=UTC)
        cursor: tuple[datetime, str] = (start, "00000000-0000-0000-0000-000000000000")
        while True:
            try:
                async with self._connection() as conn:
                    rows = await conn.fetch(sql, *cursor, end, batch)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise EventStoreUnavailable(f"Postgres event store: {type(exc).__name__}: {exc}") from exc
            if not rows:
                return
            yield [RawEvent(r[0], r[1], r[2], utc_timestamp(r[3]), r[4], list(r[5]), r[6], r[7]) for r in rows]
            if len(rows) < batch:
                return
            cursor = (rows[-1][3], rows[-1][0])

    async def _page(self, f: Filters, limit: int, cursor: Cursor | None, newer: bool, budget: int) -> Page:
        where, extra = _terms(f)
        op, order = (">", "asc") if newer else ("<", "desc")
        if cursor is not None:
            where.append((f"(created_at, id) {op} ({{}}, {{}}::uuid)", (_at(cursor.created_at), cursor.id)))
        ordered = f"order by created_at {order}, id {order}"
        if extra:  # JSON filters look only at the `budget` rows next in the indexed range
            inner = f"select * from {self.table} {{where}} {ordered} limit {{}}"
            sql, args = _render(f"select {_SELECT} from ({inner}) as examined {{extra}} {ordered} limit {{}}",
                                where, extra, budget, limit + 1)
            last, last_args = _render(f"select created_at, id::text from ({inner}) as examined {ordered}"
                                      " offset {} limit 1", where, [], budget, budget - 1)
        else:
            sql, args = _render(f"select {_SELECT} from {self.table} {{where}} {ordered} limit {{}}", where, [],
                                limit + 1)
        try:
            async with self._connection() as conn:
                rows = await conn.fetch(sql, *args)
                edge = await conn.fetchrow(last, *last_args) if extra and len(rows) <= limit else None
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise EventStoreUnavailable(f"Postgres event store: {type(exc).__name__}: {exc}") from exc
        events = [_event(r) for r in rows[:limit]]
        if len(rows) > limit:
            return Page(events, Cursor.of(events[-1]))
        if edge is not None:
            boundary = Cursor(utc_timestamp(edge[0]), edge[1])
            return Page(events, boundary, boundary.created_at)
        return Page(events)

    async def _get(self, event_id: str) -> RunEvent | None:
        try:
            async with self._connection() as conn:
                row = await conn.fetchrow(f"select {_SELECT} from {self.table} where id = $1::uuid", event_id)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise EventStoreUnavailable(f"Postgres event store: {type(exc).__name__}: {exc}") from exc
        return None if row is None else _event(row)

    async def _probe(self) -> None:
        try:
            async with self._connection() as conn:
                await conn.fetchval(f"select 1 from {self.table} limit 1")
        except TimeoutError:
            raise EventStoreUnavailable(f"Postgres did not answer within {self._timeout} s") from None

    async def _close(self) -> None:
        if self._owns_pool and self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), self._timeout)
            except TimeoutError:
                self._pool.terminate()


def _event(r: Any) -> RunEvent:
    return from_row(r, ids=list, stamp=utc_timestamp)


Term = tuple[str, tuple[Any, ...]]  # SQL with a {} per value, and the values


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _terms(f: Filters) -> tuple[list[Term], list[Term]]:
    """WHERE terms of a page (otel/events/paging.py): on indexed columns, and inside the JSON."""
    where: list[Term] = []
    if f.decision is not None and f.decision != "allow":
        where.append(("decision <> 'allow'", ()))  # a constant term, so the partial denials index applies
    for term, value in (("provider = {}::text", f.provider), ("tool = {}::text", f.tool),
                        ("caller_id = {}::uuid", f.caller_id), ("decision = {}::text", f.decision),
                        ("created_at >= {}", None if f.since is None else _at(f.since)),
                        ("created_at < {}", None if f.until is None else _at(f.until))):
        if value is not None:
            where.append((term, (value,)))
    extra = [(term, (value,)) for term, value in (
        ("result->>'status' = {}::text", f.status), ("payload->'_request'->>'role' = {}::text", f.role),
        ("{}::text = any(policy_ids)", f.policy_id), ("{}::text = any(exception_ids)", f.exception_id))
        if value is not None]
    return where, extra


def _render(template: str, where: list[Term], extra: list[Term], *tail: Any) -> tuple[str, list[Any]]:
    """`template` with its `{where}` and `{extra}` clauses filled in and each bare `{}` bound to the
    next value of `tail`, all as `$n` parameters in the order they appear."""
    args: list[Any] = []
    rest = iter(tail)

    def mark(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    def clause(terms: list[Term]) -> str:
        parts = [sql.format(*(mark(v) for v in values)) for sql, values in terms]
        return ("where " + " and ".join(parts)) if parts else ""

    out = []
    for piece in re.split(r"(\{where\}|\{extra\}|\{\})", template):
        out.append(clause(where) if piece == "{where}" else clause(extra) if piece == "{extra}"
                   else mark(next(rest)) if piece == "{}" else piece)
    return "".join(out), args


async def apply_migrations(conn: asyncpg.Connection, directory: str | Path) -> list[str]:
    """Apply every `*.sql` in `directory` in filename order (Supabase CLI order), each in its own
    transaction. Returns the file names applied. No bookkeeping table: our migrations are
    re-runnable; production uses `supabase db push`."""
    applied = []
    for path in sorted(Path(directory).glob("*.sql")):
        async with conn.transaction():
            await conn.execute(path.read_text())
        applied.append(path.name)
    return applied


__all__ = ["PostgresEventStore", "apply_migrations"]
