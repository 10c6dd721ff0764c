"""A Postgres database with the Supabase Vault imitation (tests/vault_schema.sql) and two login
roles: the gateway's reader (SELECT on vault.decrypted_secrets) and an operator (plus EXECUTE on
vault.create_secret and vault.update_secret). Unique names: other suites share the server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import admin_sql, require_service

ROOT = Path(__file__).resolve().parent.parent
PG = "postgresql://{user}@127.0.0.1:5432/{db}"


@dataclass(frozen=True)
class PgVault:
    db: str
    reader: str
    operator: str

    def dsn(self, user: str = "postgres") -> str:
        return PG.format(user=user, db=self.db)


async def _setup(pg: PgVault) -> None:
    await admin_sql(f"create database {pg.db}", f"create role {pg.reader} login", f"create role {pg.operator} login")
    conn = await asyncpg.connect(pg.dsn())
    try:
        await conn.execute((ROOT / "tests" / "vault_schema.sql").read_text())
        await conn.execute((ROOT / "tests" / "vault_schema.sql").read_text())  # re-runnable
        for role in (pg.reader, pg.operator):
            await conn.execute(f"grant usage on schema vault to {role}; "
                               f"grant select on vault.decrypted_secrets to {role}; "
                               f"grant execute on function vault._crypto_aead_det_decrypt(bytea, bytea, bytea) "
                               f"to {role}")
        await conn.execute(f"grant execute on function vault.create_secret(text, text, text, uuid), "
                           f"vault.update_secret(uuid, text, text, text, uuid) to {pg.operator}")
    finally:
        await conn.close()


async def _teardown(pg: PgVault) -> None:
    await admin_sql(f"drop database if exists {pg.db} with (force)", *(f"drop role if exists {role}"
                                                                      for role in (pg.reader, pg.operator)))


def _blocking(coro: Any) -> Any:
    """Run a coroutine to completion even when called inside a running loop (module fixtures
    requested from async fixtures)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="module", name="pgvault")
def pgvault_fixture() -> Iterator[PgVault]:
    """One vault database per test module, dropped (with its roles) afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    suffix = uuid.uuid4().hex[:12]
    pg = PgVault(f"opsgate_vault_{suffix}", f"opsgate_vault_reader_{suffix}", f"opsgate_vault_operator_{suffix}")
    _blocking(_setup(pg))
    try:
        yield pg
    finally:
        _blocking(_teardown(pg))




async def clear(pg: PgVault) -> None:
    conn = await asyncpg.connect(pg.dsn())
    try:
        await conn.execute("truncate vault.secrets")
    finally:
        await conn.close()


__all__ = ["PgVault", "clear", "pgvault_fixture"]
