"""The omega database: Postgres (Supabase) and the embedded SQLite twin, behind one small face.

    fetch(viewer, table, columns, where, order_by, ascending, limit) -> rows
    insert_proposal(viewer, row) -> the stored row

Identifiers come only from providers.omega.model (checked before any SQL is built, then quoted);
values are always bound parameters. Nothing here decides who may read what: the provider has
asked the policy first, and the database applies row-level security on top.

Postgres: per request, inside one transaction, exactly what PostgREST does —
`SET LOCAL ROLE authenticated` (or `anon`) and `set_config('request.jwt.claims', <claims>, true)` —
so auth.uid() is the caller and RLS applies as under Supabase. The login role is an
authenticator (member of anon and authenticated only), holding no privilege of its own.
SQLite has no roles: the backend adds the same row filter RLS would (user_id = the caller)
to every user-scoped table, and shows an anon viewer no user rows at all.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import uuid
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import asyncpg
import msgspec

from providers.omega.model import TABLES, user_scoped

SEED = Path(__file__).resolve().parents[2] / "supabase" / "seed" / "omega_demo.sql"
SQLITE_SCHEMA = Path(__file__).with_name("sqlite_schema.sql")


class Viewer(msgspec.Struct, frozen=True):
    """Whose eyes the database sees through: PostgREST's role and JWT claims."""

    role: Literal["anon", "authenticated"]
    claims: dict[str, Any] = {}

    @property
    def user_id(self) -> str | None:
        return self.claims.get("sub") if self.role == "authenticated" else None


class QueryError(Exception):
    """The database failed (unreachable, refused, bad value): QUERY_FAILED for the caller."""


Where = list[tuple[str, Any]]  # (column, value): equality, None meaning IS NULL


class Database(Protocol):
    async def fetch(self, viewer: Viewer, table: str, columns: list[str], where: Where, order_by: str | None,
                    ascending: bool, limit: int) -> list[dict[str, Any]]: ...

    async def insert_proposal(self, viewer: Viewer, row: dict[str, Any]) -> dict[str, Any]: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


def _check(table: str, columns: list[str], where: Where, order_by: str | None) -> dict[str, str]:
    model = TABLES.get(table)
    if model is None:
        raise QueryError(f"table {table!r} is not in the omega database")
    unknown = [c for c in (*columns, *(c for c, _ in where), *([order_by] if order_by else [])) if c not in model]
    if unknown:
        raise QueryError(f"{table} has no column {unknown[0]!r}")
    return model


def _q(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


def _out(value: Any, kind: str) -> Any:
    """A database value as JSON: uuids and times as strings, JSON blobs decoded, booleans real."""
    if value is None:
        return None
    if kind == "json":
        return json.loads(value) if isinstance(value, str) else value
    if kind == "bool":
        return bool(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _rows(raw: list[Any], columns: list[str], model: dict[str, str]) -> list[dict[str, Any]]:
    return [{c: _out(r[i], model[c]) for i, c in enumerate(columns)} for r in raw]


# -- Postgres ------------------------------------------------------------------------------------


def _pg_text(value: Any) -> str:
    """A filter value as Postgres renders the column as text (filters compare `col::text`), so any
    value is a harmless string parameter, never a cast error."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class PostgresDatabase:
    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def _acquire_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            async with self._lock:
                if self._pool is None:
                    self._pool = await asyncpg.create_pool(self.url, min_size=0, max_size=4, timeout=5,
                                                           command_timeout=10)
        return self._pool

    async def _run(self, viewer: Viewer, sql: str, params: list[Any]) -> list[Any]:
        try:
            pool = await self._acquire_pool()
            async with pool.acquire() as conn, conn.transaction():
                # PostgREST's per-request preamble; the role name is one of two literals.
                await conn.execute("set local role " + ("authenticated" if viewer.role == "authenticated" else "anon"))
                await conn.execute("select set_config('request.jwt.claims', $1, true)", json.dumps(viewer.claims))
                return await conn.fetch(sql, *params)
        except (TimeoutError, asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as e:
            raise QueryError(f"{type(e).__name__}: {e}") from None

    async def fetch(self, viewer: Viewer, table: str, columns: list[str], where: Where, order_by: str | None,
                    ascending: bool, limit: int) -> list[dict[str, Any]]:
        model = _check(table, columns, where, order_by)
        params: list[Any] = []
        conds = []
        for col, value in where:
            if value is None:
                conds.append(f"{_q(col)} is null")
            else:
                params.append(_pg_text(value))
                conds.append(f"{_q(col)}::text = ${len(params)}")
        sql = f"select {', '.join(_q(c) for c in columns)} from public.{_q(table)}"
        if conds:
            sql += " where " + " and ".join(conds)
        if order_by:
            sql += f" order by {_q(order_by)} {'asc' if ascending else 'desc'} nulls last"
        params.append(int(limit))
        sql += f" limit ${len(params)}"
        return _rows(await self._run(viewer, sql, params), columns, model)

    async def insert_proposal(self, viewer: Viewer, row: dict[str, Any]) -> dict[str, Any]:
        cols = list(row)
        model = TABLES["pulse_improvements"]
        values = [json.dumps(row[c]) if model[c] == "json" else row[c] for c in cols]
        casts = {"uuid": "::uuid", "json": "::jsonb"}
        placeholders = ", ".join(f"${i + 1}{casts.get(model[c], '')}" for i, c in enumerate(cols))
        back = ["id", *cols, "created_at"]
        sql = (f"insert into public.pulse_improvements ({', '.join(_q(c) for c in cols)}) values ({placeholders}) "
               f"returning {', '.join(_q(c) for c in back)}")
        return _rows(await self._run(viewer, sql, values), back, model)[0]

    async def ping(self) -> None:
        await self._run(Viewer("anon"), "select 1", [])

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


# -- SQLite --------------------------------------------------------------------------------------


class SqliteDatabase:
    def __init__(self, path: str | Path, *, seed: bool = True) -> None:
        self.path = Path(path)
        self.seed = seed
        self._ready = False
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=5, isolation_level=None)
        if not self._ready:
            with self._lock:
                if not self._ready:
                    conn.executescript(SQLITE_SCHEMA.read_text())
                    empty = conn.execute("select count(*) from pulse_constraints").fetchone()[0] == 0
                    if self.seed and empty:
                        conn.executescript("begin;" + SEED.read_text() + "commit;")
                    self._ready = True
        return conn

    def _exec(self, sql: str, params: list[Any]) -> list[Any]:
        try:
            conn = self._connect()
            try:
                return conn.execute(sql, params).fetchall()
            finally:
                conn.close()
        except sqlite3.Error as e:
            raise QueryError(f"{type(e).__name__}: {e}") from None

    async def fetch(self, viewer: Viewer, table: str, columns: list[str], where: Where, order_by: str | None,
                    ascending: bool, limit: int) -> list[dict[str, Any]]:
        model = _check(table, columns, where, order_by)
        params: list[Any] = []
        conds = []
        if user_scoped(table):  # what RLS does on Postgres: own rows only, none for anon
            if viewer.user_id is None:
                conds.append("0 = 1")
            else:
                conds.append('"user_id" = ?')
                params.append(viewer.user_id)
        for col, value in where:
            if value is None:
                conds.append(f"{_q(col)} is null")
            else:
                conds.append(f"{_q(col)} = ?")
                params.append(value)
        sql = f"select {', '.join(_q(c) for c in columns)} from {_q(table)}"
        if conds:
            sql += " where " + " and ".join(conds)
        if order_by:
            sql += f" order by {_q(order_by)} is null, {_q(order_by)} {'asc' if ascending else 'desc'}"
        sql += " limit ?"
        params.append(int(limit))
        return _rows(await asyncio.to_thread(self._exec, sql, params), columns, model)

    async def insert_proposal(self, viewer: Viewer, row: dict[str, Any]) -> dict[str, Any]:
        # The checks Postgres's insert policy makes.
        if viewer.user_id is None or row.get("user_id") != viewer.user_id or row.get("status") != "proposed":
            raise QueryError("new row violates the proposal policy for pulse_improvements")
        model = TABLES["pulse_improvements"]
        full = {"id": str(uuid.uuid4()), **row,
                "created_at": datetime.now().astimezone().isoformat(timespec="seconds")}
        cols = list(full)
        values = [json.dumps(full[c]) if model[c] == "json" else full[c] for c in cols]
        sql = (f"insert into pulse_improvements ({', '.join(_q(c) for c in cols)}) "
               f"values ({', '.join('?' for _ in cols)}) returning {', '.join(_q(c) for c in cols)}")
        return _rows(await asyncio.to_thread(self._exec, sql, values), cols, model)[0]

    async def ping(self) -> None:
        await asyncio.to_thread(self._exec, "select 1", [])

    async def close(self) -> None:
        return None


__all__ = ["Database", "PostgresDatabase", "QueryError", "SqliteDatabase", "Viewer", "Where"]
