"""The local journal both embedded stores keep beside their rows: SQLite set-up for a chosen
durability, and the intents of calls in flight, which become `interrupted` rows after a crash.

Durability (what a released answer survives):

    "disk"     every commit is fsync'd before callers are released (WAL, synchronous=FULL):
               the row survives power loss and kernel crashes, for one fsync per group commit on
               the call's path.
    "process"  every outcome has reached the operating system before its caller is released: the
               row survives the gateway dying in any way (kill -9, OOM, a crash), not a power loss
               or kernel crash, which may lose the lines and commits of the last seconds (SQLite
               syncs at each checkpoint; the kernel writes back within seconds). The outcome goes
               to this process's intent log (one write(2), as the intent did) and the caller is
               released; the SQLite commit (WAL, synchronous=NORMAL) follows behind, group-
               committed off the event loop. No fsync and no transaction on the call's path.
               The default. (The Postgres outbox commits its own journal at synchronous=NORMAL
               before it releases a caller, and ships behind.)

Intents: before a tool runs, `begin` appends the row the call will get if its process dies
first (status `interrupted`) to this process's intent log, `<journal>.owners/<owner>.<n>.intents`:
one `write(2)` of one JSON line, no transaction and no fsync. Once written it is in the kernel,
so it survives the process dying in any way (kill -9), which is what `interrupted` rows are for;
a power loss can lose the intents of calls in flight at that instant (their answers were never
released). The owner holds an exclusive `flock` on `<owner>.lock` while it lives; the kernel
drops it when the process dies, however it dies. A store opening the journal takes the locks
it can (dead owners), inserts their intents if absent (an outcome already stored has the same
id and wins) and deletes their files. So gateways sharing a state dir, and `opsgate events`
reading it, never touch a live gateway's intents. A log rolls over to a new file past
ROTATE_BYTES; a rolled file is deleted once every intent in it has its outcome committed.
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

from otel.events.base import EventStoreUnavailable
from otel.events.model import UUID_TEXT, RunEvent

Durability = Literal["disk", "process"]
DURABILITY: dict[str, str] = {"disk": "full", "process": "normal"}

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


class IntentLog:
    """This store instance's intents (see the module docstring)."""

    ROTATE_BYTES = 4 << 20

    def __init__(self, journal: Path) -> None:
        self.dir = journal.with_name(journal.name + ".owners")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.id = str(uuid.uuid4())
        # Lock under a temporary name, then rename: no other process ever sees this owner's
        # lock file unlocked (it would take the owner for dead and recover its live intents).
        lock = _lock(self.dir / f".new-{self.id}", wait=True)
        assert lock is not None
        os.rename(self.dir / f".new-{self.id}", self.dir / f"{self.id}.lock")
        self._lock_fd = lock
        self._gen = 0
        self._fd = self._open(0)
        self._size = 0
        # event id -> the generations (files) holding its lines: the intent, and with durability
        # "process" its outcome too (written behind, see SqliteEventStore.append)
        self._open_ids: dict[str, list[int]] = {}
        self._counts: dict[int, int] = {0: 0}  # open lines per generation

    def write(self, event: RunEvent) -> None:
        """Append one line: an intent, or an outcome not yet committed (raises OSError if it
        cannot be written). The last line of an id is the one recovery keeps."""
        line = _encode(event) + b"\n"
        if os.write(self._fd, line) != len(line):
            raise OSError(f"short write to the intent log in {self.dir}")
        self._open_ids.setdefault(event.id, []).append(self._gen)
        self._counts[self._gen] += 1
        self._size += len(line)
        if self._size >= self.ROTATE_BYTES:
            os.close(self._fd)
            old, self._gen, self._size = self._gen, self._gen + 1, 0
            self._fd = self._open(self._gen)
            self._counts[self._gen] = 0
            self._drop_if_done(old)

    def done(self, ids: list[str]) -> None:
        """These calls' outcomes are committed: their intents are no longer needed."""
        for event_id in ids:
            for gen in self._open_ids.pop(event_id, ()):
                self._counts[gen] -= 1
                self._drop_if_done(gen)

    def dead_owners(self) -> dict[str, int]:
        """Owners with a lock or intent files whose process is gone, each with its lock now held by us."""
        owners = {f.name.split(".")[0] for f in self.dir.iterdir()
                  if f.suffix in (".lock", ".intents") and UUID_TEXT.fullmatch(f.name.split(".")[0])}
        dead: dict[str, int] = {}
        for owner in sorted(owners - {self.id}):
            fd = _lock(self.dir / f"{owner}.lock", wait=False)
            if fd is not None:
                dead[owner] = fd
        return dead

    def read(self, owner: str) -> list[RunEvent]:
        """A dead owner's calls, oldest first, each as its last line: the outcome if one was
        written behind, else the intent (a line cut short by a crash is skipped)."""
        files = sorted(self.dir.glob(f"{owner}.*.intents"), key=lambda f: int(f.name.split(".")[1]))
        events: dict[str, RunEvent] = {}
        for f in files:
            for line in f.read_bytes().splitlines():
                with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
                    event = _decode_event(line)
                    events[event.id] = event
        return list(events.values())

    def release(self, dead: dict[str, int]) -> None:
        """Forget dead owners whose intents are now rows (call after that commit)."""
        for owner, fd in dead.items():
            for f in self.dir.glob(f"{owner}.*.intents"):
                f.unlink(missing_ok=True)
            (self.dir / f"{owner}.lock").unlink(missing_ok=True)
            os.close(fd)

    def close(self) -> None:
        """Stop. Intents still open (calls cut short by the shutdown) stay for the next opener."""
        if self._lock_fd < 0:
            return
        os.close(self._fd)
        if not self._open_ids:
            for f in self.dir.glob(f"{self.id}.*.intents"):
                f.unlink(missing_ok=True)
            (self.dir / f"{self.id}.lock").unlink(missing_ok=True)
        os.close(self._lock_fd)
        self._lock_fd = -1

    def _open(self, gen: int) -> int:
        return os.open(self.dir / f"{self.id}.{gen}.intents", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def _drop_if_done(self, gen: int) -> None:
        if gen != self._gen and self._counts[gen] == 0:
            del self._counts[gen]
            (self.dir / f"{self.id}.{gen}.intents").unlink(missing_ok=True)


def _lock(path: Path, *, wait: bool) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Journaled:
    """The intent hooks of a store that keeps an IntentLog (`self._intents`) beside its local
    database (`self.path`): the SQLite store and the Postgres outbox. Mixed in before EventStore."""

    journals_intents = True
    path: Path
    _intents: IntentLog

    def _begin(self, event: RunEvent) -> None:
        self._journal(event, "start")

    def _journal(self, event: RunEvent, what: str) -> None:
        """One line in the intent log: from here `event` survives the process dying."""
        try:
            self._intents.write(event)
        except OSError as exc:
            raise EventStoreUnavailable(f"cannot record the call's {what} beside {self.path}: {exc}") from exc

    def _committed(self, events: list[RunEvent]) -> None:
        self._intents.done([e.id for e in events])


__all__ = ["DURABILITY", "Durability", "IntentLog", "Journaled", "connect"]
