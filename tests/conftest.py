"""Shared fixtures. Tests use the real engine on real bundles: copies of policies/ in tmp dirs."""

from __future__ import annotations

import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    """A private copy of the canonical bundle that a test may edit."""
    dst = tmp_path / "policies"
    shutil.copytree(POLICIES, dst, ignore=shutil.ignore_patterns("tests"))
    return dst


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


# The mcp client's HTTP library logs every request at INFO; keep test output readable.
logging.getLogger("httpx2").setLevel(logging.WARNING)
logging.getLogger("httpx").setLevel(logging.WARNING)


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a local service is down, except in CI, where a missing service is a failure."""
    import socket

    try:
        socket.create_connection((host, port), 1).close()
    except OSError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"{name} is not reachable at {host}:{port}")


REDIS_URL = os.environ.get("OPSGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis; skipped when unreachable, except in CI, where that is a failure."""
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        problem = f"Redis at {REDIS_URL} unreachable: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(problem + " (CI=true: Redis tests must run)")
        pytest.skip(problem)
    return REDIS_URL


def put_secret(vault_dir: str | Path, name: str, value: str) -> None:
    """Store a secret in the embedded vault at `vault_dir` from sync or async test code (the
    vault's interface is async; this runs it on a private loop in a thread)."""
    import asyncio
    import threading

    from providers.sdk.vault import EmbeddedVault

    async def put() -> None:
        vault = EmbeddedVault(Path(vault_dir))
        try:
            await vault.set(name, value)
        finally:
            await vault.close()

    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(put())
        except BaseException as e:  # re-raised in the caller's thread
            failure.append(e)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if failure:
        raise failure[0]


async def admin_sql(*statements: str) -> None:
    """Run statements as the superuser on the `postgres` database, in order (creating and
    dropping the tests' own databases and roles)."""
    import asyncpg

    conn = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()
