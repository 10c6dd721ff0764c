"""Supabase Vault as the secret store: SQL against its public interface only.

    read    select decrypted_secret from vault.decrypted_secrets where name = $1
    create  select vault.create_secret(new_secret, new_name, new_description)
    rotate  select vault.update_secret(secret_id, new_secret, new_name, new_description)

Nothing else of the extension is touched (not `vault.secrets`, not its keys), so this works on
any Supabase project with `supabase_vault` >= 0.2.8 and on the imitation the tests build
(tests/vault_schema.sql). Values travel only as bind parameters, never in SQL text.

Supabase Vault has no version column: the version lives at the end of the description, as
"(opsgate version N)", after whatever text an operator wrote there. A secret created
elsewhere (the dashboard) counts as version 1 until opsgate rotates it.

The role in the DSN needs SELECT on `vault.decrypted_secrets` to read, and EXECUTE on the two
functions to set or rotate: the gateway only reads; `opsgate vault` writes.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from typing import Any

import asyncpg

from providers.sdk.vault.base import SecretInfo, SecretNotFound, VaultError, check_name, check_value

_VERSION = re.compile(r"\s*\(opsgate version (\d+)\)\s*$")
# Serialises writers of one name across processes, so two rotations cannot both be version N+1.
_LOCK = "select pg_advisory_xact_lock(hashtextextended('opsgate.vault:' || $1, 0))"


def version_of(description: str | None) -> int:
    m = _VERSION.search(description or "")
    return int(m.group(1)) if m else 1


def describe(description: str | None, version: int) -> str:
    text = _VERSION.sub("", description or "").strip()
    return f"{text} (opsgate version {version})".lstrip()


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="seconds")


class SupabaseVault:
    """`SupabaseVault(dsn)`: a small connection pool, opened on first use in the running event
    loop (and opened anew if used from another loop, e.g. a start-up read before serving)."""

    def __init__(self, dsn: str, *, timeout_s: float = 5.0, pool_size: int = 4) -> None:
        self._dsn = dsn
        self._timeout = timeout_s
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opening: asyncio.Lock | None = None

    async def _get_pool(self) -> asyncpg.Pool:
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._loop is loop:
            return self._pool
        if self._loop is not loop:
            self._pool, self._loop, self._opening = None, loop, asyncio.Lock()
        assert self._opening is not None
        async with self._opening:
            if self._pool is None:
                # statement_cache_size=0: Supabase's transaction pooler cannot keep prepared statements.
                self._pool = await asyncpg.create_pool(self._dsn, min_size=0, max_size=self._pool_size,
                                                       timeout=self._timeout, command_timeout=self._timeout,
                                                       statement_cache_size=0)
        return self._pool

    async def _run(self, what: str, name: str | None, work: Any) -> Any:
        """Run `work(conn)`; any database or network failure becomes a VaultError naming the
        operation and the secret. The driver's own message is left out: it could quote a value."""
        try:
            pool = await self._get_pool()
            async with pool.acquire(timeout=self._timeout) as conn:
                return await work(conn)
        except VaultError:
            raise
        except asyncpg.PostgresError as e:
            raise VaultError(f"supabase vault: {what}{f' {name!r}' if name else ''} failed: "
                             f"{type(e).__name__} (SQLSTATE {e.sqlstate})") from None
        except (OSError, TimeoutError, asyncpg.InterfaceError) as e:
            raise VaultError(f"supabase vault: {what}{f' {name!r}' if name else ''} failed: database unreachable "
                             f"({type(e).__name__})") from None

    async def get(self, name: str) -> str:
        check_name(name)

        async def work(conn: asyncpg.Connection) -> str:
            row = await conn.fetchrow("select decrypted_secret from vault.decrypted_secrets where name = $1", name)
            if row is None:
                raise SecretNotFound(f"secret {name!r} is not in Supabase Vault "
                                     f"(set it with `opsgate vault set {name} --backend supabase`)")
            if row["decrypted_secret"] is None:
                raise VaultError(f"secret {name!r} does not decrypt in Supabase Vault")
            return row["decrypted_secret"]

        return await self._run("reading", name, work)

    async def _write(self, name: str, value: str, *, only_new: bool) -> SecretInfo | None:
        check_name(name)
        check_value(name, value)

        async def work(conn: asyncpg.Connection) -> SecretInfo | None:
            async with conn.transaction():
                await conn.execute(_LOCK, name)
                row = await conn.fetchrow("select id, description from vault.decrypted_secrets where name = $1", name)
                if row is None:
                    secret_id = await conn.fetchval("select vault.create_secret($1, $2, $3)", value, name,
                                                    describe(None, 1))
                    version = 1
                elif only_new:
                    return None
                else:
                    secret_id, version = row["id"], version_of(row["description"]) + 1
                    await conn.execute("select vault.update_secret($1, $2, null, $3)", secret_id, value,
                                       describe(row["description"], version))
                updated = await conn.fetchval("select updated_at from vault.decrypted_secrets where id = $1",
                                              secret_id)
            return SecretInfo(name, version, _iso(updated))

        return await self._run("storing", name, work)

    async def set(self, name: str, value: str) -> SecretInfo:
        info = await self._write(name, value, only_new=False)
        assert info is not None
        return info

    async def create(self, name: str, value: str) -> bool:
        return await self._write(name, value, only_new=True) is not None

    async def list(self) -> list[SecretInfo]:
        async def work(conn: asyncpg.Connection) -> list[SecretInfo]:
            rows = await conn.fetch("select name, description, updated_at from vault.decrypted_secrets "
                                    "where name is not null order by name")
            return [SecretInfo(r["name"], version_of(r["description"]), _iso(r["updated_at"])) for r in rows]

        return await self._run("listing", None, work)

    async def close(self) -> None:
        pool, self._pool, self._loop = self._pool, None, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self._timeout)
            except (TimeoutError, RuntimeError):  # a pool of a loop that is gone
                pool.terminate()


__all__ = ["SupabaseVault", "describe", "version_of"]
