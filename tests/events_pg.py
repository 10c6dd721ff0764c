"""Test plumbing for the event-store tests: a fresh Postgres database with the Supabase stub and
our migrations, and a TCP proxy in front of the real server that a test can cut and restore,
so Postgres becomes unreachable for one store only (the shared server keeps running for the
other suites using it)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from otel.events import apply_migrations
from tests.conftest import admin_sql, require_service

ROOT = Path(__file__).resolve().parent.parent
PG = "postgresql://{user}@{host}:{port}/{db}"


@dataclass(frozen=True)
class PgDb:
    name: str
    login: str
    admin_dsn: str  # superuser: inspects what landed

    def gateway_dsn(self, port: int = 5432) -> str:
        """A LOGIN member of opsgate_gateway (INSERT and SELECT only), optionally via a proxy port."""
        return PG.format(user=self.login, host="127.0.0.1", port=port, db=self.name)


def run_sync(coro: Any) -> Any:
    """Run a coroutine on a private loop in a private thread (callable from inside a running loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _create(db: PgDb, users: list[str]) -> None:
    await admin_sql(f"create database {db.name}")
    conn = await asyncpg.connect(db.admin_dsn)
    try:
        await conn.execute((ROOT / "tests" / "supabase_stub.sql").read_text())
        await apply_migrations(conn, ROOT / "supabase" / "migrations")
        await conn.execute(f"create role {db.login} login in role opsgate_gateway")
        await conn.executemany("insert into auth.users (id, raw_app_meta_data) values ($1, '{}'::jsonb)",
                               [(u,) for u in users])
    finally:
        await conn.close()


async def _drop(db: PgDb) -> None:
    await admin_sql(f"drop database if exists {db.name} with (force)", f"drop role if exists {db.login}")


@contextlib.contextmanager
def fresh_database(users: list[str]) -> Iterator[PgDb]:
    """A uniquely named database with ops.run_events and `users` in auth.users; dropped after."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"opsgate_evx_{secrets.token_hex(4)}"
    db = PgDb(name, f"{name}_gw", PG.format(user="postgres", host="127.0.0.1", port=5432, db=name))
    try:
        run_sync(_create(db, users))
        yield db
    finally:
        run_sync(_drop(db))


async def fetch(db: PgDb, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(db.admin_dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. `cut()` refuses new connections and resets open
    ones (the database vanishes mid-transaction); `restore()` listens again on the same port.
    `stall()` keeps every connection open but drops what either side sends (a hung server or a
    silent network path: nothing fails, nothing answers); `restore()` then closes the hung
    connections, as a recovered network finds those sessions dead, and forwards again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stalled = False
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.restore()

    def stall(self) -> None:
        self._stalled = True

    def restore(self) -> None:
        if self._stalled:
            self._stalled = False
            with self._lock:
                stalled, self._open = self._open, set()
            for s in stalled:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            return
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    s.close()  # linger 0: a reset, as when a server or a network path dies
            self._open.clear()

    def close(self) -> None:
        self.cut()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, 5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # cut while connecting
                    client.close()
                    upstream.close()
                    return
                self._open.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if not self._stalled:
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()
            with self._lock:
                self._open.discard(src)
                self._open.discard(dst)


__all__ = ["PgDb", "TcpProxy", "fetch", "fresh_database", "run_sync"]
