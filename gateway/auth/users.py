"""Where the freshness check asks whether a token's user still may act: banned, deleted, or gone.

A token stays valid until it expires; this lets the gateway refuse a user who was banned or deleted
after the token was issued. The Authenticator caches answers briefly; directories do not cache.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    import asyncpg

UserStatus = Literal["active", "banned", "deleted", "unknown"]

_IDENT = re.compile(r"[a-z_][a-z0-9_$]*")


class UserDirectory(Protocol):
    async def status(self, user_id: str) -> UserStatus:
        """The user's status now. May raise on I/O failure; the caller then fails closed."""
        ...


def _quote_table(table: str) -> str:
    parts = table.split(".")
    if not 1 <= len(parts) <= 2 or not all(_IDENT.fullmatch(p) for p in parts):
        raise ValueError(f"not a plain [schema.]table name: {table!r}")
    return ".".join(f'"{p}"' for p in parts)


class PostgresUserDirectory:
    """Reads Supabase's `auth.users` (or a table with the same columns: id uuid, banned_until
    timestamptz, deleted_at timestamptz). A ban counts while `banned_until > now()`."""

    def __init__(self, pool: asyncpg.Pool, *, table: str = "auth.users", timeout_s: float = 2.0) -> None:
        self._pool = pool
        self._timeout = timeout_s
        self._sql = (
            "select deleted_at is not null as deleted, coalesce(banned_until > now(), false) as banned"
            f" from {_quote_table(table)} where id = $1"
        )

    async def status(self, user_id: str) -> UserStatus:
        row = await self._pool.fetchrow(self._sql, uuid.UUID(user_id), timeout=self._timeout)
        if row is None:
            return "unknown"
        if row["deleted"]:
            return "deleted"
        return "banned" if row["banned"] else "active"


class LazyPostgresUserDirectory:
    """A PostgresUserDirectory whose pool is opened on first use (from synchronous set-up code);
    a failure to connect is an error of that lookup, which the authenticator turns into a refusal."""

    def __init__(self, dsn: str, *, table: str = "auth.users", timeout_s: float = 2.0) -> None:
        self._dsn, self._table, self._timeout = dsn, table, timeout_s
        self._inner: PostgresUserDirectory | None = None

    async def status(self, user_id: str) -> UserStatus:
        if self._inner is None:
            import asyncpg  # only when freshness is configured

            pool = await asyncpg.create_pool(self._dsn, min_size=1, max_size=4, timeout=self._timeout)
            self._inner = PostgresUserDirectory(pool, table=self._table, timeout_s=self._timeout)
        return await self._inner.status(user_id)


class StaticUserDirectory:
    """A test double: statuses from a mapping (absent ids are "unknown"); `error` makes every lookup
    raise it. `lookups` counts calls."""

    def __init__(self, statuses: Mapping[str, UserStatus] | None = None, *,
                 error: Exception | None = None) -> None:
        self.statuses: dict[str, UserStatus] = dict(statuses or {})
        self.error = error
        self.lookups = 0

    async def status(self, user_id: str) -> UserStatus:
        self.lookups += 1
        if self.error is not None:
            raise self.error
        return self.statuses.get(user_id, "unknown")


__all__ = ["PostgresUserDirectory", "StaticUserDirectory", "UserDirectory", "UserStatus"]
