"""The local journal both embedded stores keep beside their rows: SQLite set-up for a chosen
durability, and the intents of calls in flight, which become `interrupted` rows after a crash.

Durability (what a released answer survives):

    "disk"     every commit is fsync'd before callers are released (WAL, synchronous=FULL):
               the row survives power loss and kernel crashes. The default.
    "process"  every commit has reached the operating system before callers are released (WAL,
               synchronous=NORMAL): the row survives the gateway dying in any way (kill -9, OOM,
               a crash), not a power loss or kernel crash, which may lose the commits made since
               the last WAL sync (SQLite syncs at each checkpoint; the kernel writes back within
               seconds). It costs no fsync on the call's path.

Intents: `begin` writes the row a call will get if its process dies before the outcome is
recorded; the outcome's commit deletes it. Each store instance owns its intents through an
exclusive `flock` on `<journal>.owners/<owner>.lock`, held while the process lives and released
by the kernel when it dies, however it dies. A store that opens the journal turns the intents of
every owner whose lock it can take (a dead process) into rows, so gateways sharing a state dir,
and `opsgate events` reading it, never touch the intents of a live gateway.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Literal

import msgspec

from otel.events.model import RunEvent

Durability = Literal["disk", "process"]
DURABILITY: dict[str, str] = {"disk": "full", "process": "normal"}

INTENTS_SCHEMA = """
create table if not exists run_intents (
    id text primary key,
    owner text not null,
    event text not null
);
create index if not exists run_intents_owner_idx on run_intents (owner);
"""

_encode = msgspec.json.Encoder().encode
_decode_event = msgspec.json.Decoder(RunEvent).decode


def connect(path: Path, durability: Durability, *, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A writer connection in WAL mode at the chosen durability (raises sqlite3.Error or OSError)."""
    if durability not in DURABILITY:
        raise ValueError(f"durability must be one of {sorted(DURABILITY)}, got {durability!r}")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000)
    conn.execute(f"pragma busy_timeout={int(busy_timeout_ms)}")
    mode = conn.execute("pragma journal_mode=wal").fetchone()[0]
    if mode != "wal":
        raise sqlite3.OperationalError(f"journal_mode is {mode!r}, WAL is required")
    conn.execute(f"pragma synchronous={DURABILITY[durability]}")
    return conn


def intent_rows(intents: list[RunEvent], owner: str) -> list[tuple[str, str, str]]:
    return [(e.id, owner, _encode(e).decode()) for e in intents]


class Owner:
    """This store instance's claim on its intents: an flock held until close (or death)."""

    def __init__(self, journal: Path) -> None:
        self.dir = journal.with_name(journal.name + ".owners")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.id = str(uuid.uuid4())
        self._fd = _lock(self.dir / f"{self.id}.lock", wait=True)
        assert self._fd is not None

    def dead_owners(self, conn: sqlite3.Connection) -> dict[str, int]:
        """Owners with intents in `conn` whose process is gone, each with its lock now held by us."""
        dead: dict[str, int] = {}
        for (owner,) in conn.execute("select distinct owner from run_intents").fetchall():
            if owner == self.id:
                continue
            fd = _lock(self.dir / f"{owner}.lock", wait=False)
            if fd is not None:
                dead[owner] = fd
        return dead

    def take_intents(self, conn: sqlite3.Connection, owner: str) -> list[RunEvent]:
        """The intents of a dead `owner` (call within the transaction that turns them into rows)."""
        rows = conn.execute("select event from run_intents where owner = ? order by id", (owner,)).fetchall()
        conn.execute("delete from run_intents where owner = ?", (owner,))
        return [_decode_event(r[0]) for r in rows]

    def release_dead(self, dead: dict[str, int]) -> None:
        for owner, fd in dead.items():
            with contextlib.suppress(OSError):
                os.unlink(self.dir / f"{owner}.lock")
            os.close(fd)

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.dir / f"{self.id}.lock")
            os.close(self._fd)
            self._fd = None


def _lock(path: Path, *, wait: bool) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


__all__ = ["DURABILITY", "INTENTS_SCHEMA", "Durability", "Owner", "connect", "intent_rows"]
