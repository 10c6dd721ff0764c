"""The omega test databases: the embedded SQLite file and a fresh Postgres database per module
(tests/supabase_stub.sql, supabase/migrations/, the demo seed), reached by the provider through a
PostgREST-style authenticator login role that is only a member of anon and authenticated.

Inspection (`rows`, `snapshot`) goes around the provider: SQLite directly, Postgres as superuser.
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from otel.events import apply_migrations
from providers.omega import OmegaConfig
from providers.omega.db import SEED, SqliteDatabase
from providers.omega.model import TABLES
from tests.conftest import admin_sql

ROOT = Path(__file__).resolve().parent.parent
PG = "postgresql://{user}@127.0.0.1:5432/{db}"


@dataclass
class OmegaEnv:
    backend: str
    omega: OmegaConfig
    admin_dsn: str | None = None
    sqlite_path: Path | None = None
    login: str | None = None

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run `sql` (`?` placeholders) around the provider: SQLite directly, Postgres as superuser."""
        if self.backend == "sqlite":
            assert self.sqlite_path is not None
            conn = sqlite3.connect(self.sqlite_path)
            try:
                return [tuple(r) for r in conn.execute(sql, params).fetchall()]
            finally:
                conn.close()
        n = iter(range(1, 100))
        pg_sql = "".join(f"${next(n)}" if ch == "?" else ch for ch in sql)
        # Own loop in a worker thread: callers may be async tests with a loop already running.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, _pg_rows(self.admin_dsn or "", pg_sql, params)).result()

    def snapshot(self) -> dict[str, list[str]]:
        """Every row of every omega table, to prove a refused call changed nothing."""
        if self.backend == "sqlite":
            return {t: [repr(r) for r in self.rows(f"select * from {t} order by id")] for t in TABLES}
        return {t: [r[0] for r in self.rows(f"select t::text from public.{t} t order by id")] for t in TABLES}


async def _pg_rows(dsn: str, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [tuple(r) for r in await conn.fetch(sql, *params)]
    finally:
        await conn.close()


def sqlite_env(tmp: Path) -> OmegaEnv:
    path = tmp / "omega.db"
    asyncio.run(SqliteDatabase(path).ping())  # create and seed once for the module
    return OmegaEnv("sqlite", OmegaConfig(backend="sqlite", sqlite_path=str(path)), sqlite_path=path)


async def _pg_setup(db: str, login: str) -> None:
    await admin_sql(f"create database {db}")
    conn = await asyncpg.connect(PG.format(user="postgres", db=db))
    try:
        await conn.execute((ROOT / "tests" / "supabase_stub.sql").read_text())
        await apply_migrations(conn, ROOT / "supabase" / "migrations")
        await apply_migrations(conn, ROOT / "supabase" / "migrations")  # re-runnable
        await conn.execute(SEED.read_text())
        await conn.execute(SEED.read_text())  # idempotent
        # PostgREST's authenticator: may only become anon or authenticated, holds nothing itself.
        await conn.execute(f"create role {login} login noinherit in role anon, authenticated")
    finally:
        await conn.close()


async def _pg_teardown(db: str, login: str) -> None:
    await admin_sql(f"drop database if exists {db} with (force)", f"drop role if exists {login}")


def postgres_env() -> Iterator[OmegaEnv]:
    suffix = uuid.uuid4().hex[:12]
    db, login = f"omega_test_{suffix}", f"omega_auth_{suffix}"
    asyncio.run(_pg_setup(db, login))
    try:
        yield OmegaEnv("postgres", OmegaConfig(backend="postgres", database_url=PG.format(user=login, db=db)),
                       admin_dsn=PG.format(user="postgres", db=db), login=login)
    finally:
        asyncio.run(_pg_teardown(db, login))
