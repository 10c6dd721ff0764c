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
first (status `interrupted`) to this process's intent log, `<journal>.owners/<owner>.<n>.intents`,
with one `write(2)`, no transaction and no fsync. Once written it is in the kernel,
so it survives the process dying in any way (kill -9), which is what `interrupted` rows are for;
a power loss can lose the intents of calls in flight at that instant (their answers were never
released). The owner holds an exclusive `flock` on `<owner>.lock` while it lives; the kernel
drops it when the process dies, however it dies. A store opening the journal takes the locks
it can (dead owners), inserts their intents if absent (an outcome already stored has the same
id and wins) and deletes their files. So gateways sharing a state dir, and `opsgate events`
reading it, never touch a live gateway's intents. A log rolls over to a new file past
ROTATE_BYTES; a rolled file is deleted once every intent in it has its outcome committed.

Records are self-delimiting, so a record cut short never costs another one. Each is written as
`"\n" <crc32 of the JSON, 8 hex digits> " " <the event as JSON>`: it begins a line of its own
(JSON text holds no raw newline, so nothing inside a record, caller-supplied arguments included,
can begin a line), and a line is a record only if its checksum matches. When the disk fills, a
`write(2)` can take part of a record: the log is cut back (`ftruncate`) to its last whole record
and the call fails. Should the cut not happen (the process dies between the two, or it fails),
the fragment is a line of its own that recovery skips, and the next record still begins a new
line. Recovery therefore keeps every whole record, whatever fragments lie between them. Lines
beginning with `{` are records of the earlier format (bare JSON lines, no checksum) left by an
older gateway at upgrade: they are read as before; a line that format merged is still lost (it
cannot be split safely, as arguments may hold JSON).

A reserve keeps the audit trail writable a little longer than everything else on a full disk:
each log holds `reserve_bytes` (default 256 KiB) allocated beyond its end with
`fallocate(FALLOC_FL_KEEP_SIZE)`, topped up as records use it. SQLite's WAL, or anything else
writing to the same filesystem, takes the last free pages first; the log's records, a refused
call's row among them, still land in the reserve. Where the filesystem cannot preallocate, there
is no reserve and nothing else changes. Cutting the log back (above) releases its reserve, which
is taken again at once if there is room.

A full disk (otel/events/space.py) is reported as what it is, with what to free, wherever it
shows: a failed write to the log, a failed COMMIT (`transact` keeps SQLite's own error, not the
ROLLBACK's), and at opening; `health` is down while the log cannot take a record. A store that
cannot open its files because the disk is full does not fail: it refuses every write, saying
why, and opens (recovering dead owners' intents) once it can, trying every RETRY_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import sqlite3
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from ctypes import CDLL, c_int, c_longlong, get_errno
from pathlib import Path
from typing import Any, Literal

import msgspec

from otel.events.base import EventStoreUnavailable
from otel.events.model import UUID_TEXT, RunEvent
from otel.events.space import explain, is_full

log = logging.getLogger("opsgate.events")

Durability = Literal["disk", "process"]
DURABILITY: dict[str, str] = {"disk": "full", "process": "normal"}

_encode = msgspec.json.Encoder().encode
_decode_event = msgspec.json.Decoder(RunEvent).decode


def connect(path: Path, durability: Durability, *, busy_timeout_ms: int = 5000) -> sqlite3.Connection:
    """A writer connection in WAL mode at the chosen durability (raises sqlite3.Error or OSError)."""
    if durability not in DURABILITY:
        raise ValueError(f"durability must be one of {sorted(DURABILITY)}, got {durability!r}")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000)
    try:
        conn.execute(f"pragma busy_timeout={int(busy_timeout_ms)}")
        mode = conn.execute("pragma journal_mode=wal").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"journal_mode is {mode!r}, WAL is required")
        conn.execute(f"pragma synchronous={DURABILITY[durability]}")
    except BaseException:
        # Closed now, not whenever the traceback holding it is collected: a store retrying the
        # open (a full disk) must not pile up half-open connections, their files and locks.
        conn.close()
        raise
    return conn


def transact(conn: sqlite3.Connection, sql: str, rows: Iterable[Sequence[Any]]) -> None:
    """`sql` once per row, in ONE write transaction; raises the sqlite3.Error that failed it.

    A COMMIT refused for a full disk has already been rolled back by SQLite, so a ROLLBACK after
    it fails too ("cannot rollback - no transaction is active"): that second error must never
    hide the first, which is the one an operator can act on."""
    if conn.in_transaction:  # a rollback that failed earlier left one open
        conn.execute("rollback")
    conn.execute("begin immediate")
    try:
        conn.executemany(sql, rows)
        conn.execute("commit")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):  # the error being raised is the one that matters
                conn.execute("rollback")
        raise


class IntentLog:
    """This store instance's intents (see the module docstring)."""

    ROTATE_BYTES = 4 << 20
    PROBE_BYTES = 4096  # what `probe` asks room for: more than a typical record
    RESERVE_BYTES = 256 << 10

    def __init__(self, journal: Path, *, reserve_bytes: int = RESERVE_BYTES) -> None:
        self.dir = journal.with_name(journal.name + ".owners")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.id = str(uuid.uuid4())
        with contextlib.ExitStack() as undo:  # on a full disk any step may fail: leave nothing behind
            # Lock under a temporary name, then rename: no other process ever sees this owner's
            # lock file unlocked (it would take the owner for dead and recover its live intents).
            new = self.dir / f".new-{self.id}"
            lock = _lock(new, wait=True)
            assert lock is not None
            undo.callback(os.close, lock)
            undo.callback(new.unlink, missing_ok=True)
            os.rename(new, self.dir / f"{self.id}.lock")
            undo.callback((self.dir / f"{self.id}.lock").unlink, missing_ok=True)
            self._fd = self._open(0)
            undo.pop_all()
        self._lock_fd = lock
        self._gen = 0
        self._size = 0  # bytes of whole records in the current file
        self._reserve = reserve_bytes
        self._reserved_to = 0  # the current file's bytes allocated (records and reserve)
        self._top_up()
        # event id -> the generations (files) holding its lines: the intent, and with durability
        # "process" its outcome too (written behind, see SqliteEventStore.append)
        self._open_ids: dict[str, list[int]] = {}
        self._counts: dict[int, int] = {0: 0}  # open lines per generation

    def write(self, event: RunEvent) -> None:
        """Append one record: an intent, or an outcome not yet committed (raises OSError, the log
        left as it was, if it cannot be written). The last record of an id is the one recovery keeps."""
        body = _encode(event)
        self._append(b"\n%08x %s" % (zlib.crc32(body), body))
        self._open_ids.setdefault(event.id, []).append(self._gen)
        self._counts[self._gen] += 1
        if self._size >= self.ROTATE_BYTES:
            with contextlib.suppress(OSError):  # the old file's reserve goes back to the filesystem
                os.ftruncate(self._fd, self._size)
            os.close(self._fd)
            old, self._gen, self._size, self._reserved_to = self._gen, self._gen + 1, 0, 0
            self._fd = self._open(self._gen)
            self._counts[self._gen] = 0
            self._drop_if_done(old)
            self._top_up()
        elif self._reserved_to - self._size < self._reserve // 2:
            self._top_up()

    def probe(self) -> None:
        """Raise OSError unless PROBE_BYTES more can be written to the log now. What it writes is
        blank lines, which recovery skips, and it is cut back off at once."""
        before = self._size
        self._append(b"\n" * self.PROBE_BYTES)
        with contextlib.suppress(OSError):  # left there, blank lines are harmless
            os.ftruncate(self._fd, before)
            self._size, self._reserved_to = before, before
        self._top_up()

    def _append(self, data: bytes) -> None:
        """All of `data` at the end of the log, or none of it: when the disk fills mid-record, the
        part written is cut back off and the cause (ENOSPC) raised."""
        done = 0
        try:
            while done < len(data):
                n = os.write(self._fd, data[done:])  # after a short write, the next one raises the cause
                if n == 0:
                    raise OSError(errno.EIO, f"write(2) to the intent log in {self.dir} wrote nothing")
                done += n
        except OSError:
            if done:
                self._cut()
            raise
        self._size += done

    def _cut(self) -> None:
        """Cut the log back to its last whole record. Should that fail, the fragment stays (the
        next record still begins a line of its own) and counts as part of the file, so that a
        later cut never reaches into the records written after it."""
        try:
            os.ftruncate(self._fd, self._size)
            self._reserved_to = self._size
        except OSError:
            with contextlib.suppress(OSError):
                self._size = os.fstat(self._fd).st_size
        self._top_up()

    def _top_up(self) -> None:
        """Allocate the reserve beyond the log's end again, where the filesystem has room (see the
        module docstring); never an error: without room the reserve is what is left of it."""
        if self._reserve <= 0 or _fallocate is None:
            return
        end = self._size + self._reserve
        if _fallocate(self._fd, _KEEP_SIZE, c_longlong(self._size), c_longlong(self._reserve)) == 0:
            self._reserved_to = end
        elif get_errno() in (errno.EOPNOTSUPP, errno.ENOSYS):
            self._reserve = 0  # this filesystem cannot: no reserve, and no more attempts

    def done(self, ids: list[str]) -> None:
        """These calls' outcomes are committed: their intents are no longer needed."""
        for event_id in ids:
            for gen in self._open_ids.pop(event_id, ()):
                self._counts[gen] -= 1
                self._drop_if_done(gen)

    def recover(self, write: Callable[[list[RunEvent]], None]) -> int:
        """Hand the calls in dead owners' logs to `write` (one transaction), then forget those
        owners; returns how many calls. If `write` raises, the owners are left as they were, for
        the next attempt (this store's or another's)."""
        dead = self.dead_owners()
        try:
            events = [e for owner in dead for e in self.read(owner)]
            write(events)
        except BaseException:
            _unlock(dead)
            raise
        self.release(dead)
        return len(events)

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
        """A dead owner's calls, oldest first, each as its last record: the outcome if one was
        written behind, else the intent (fragments and damaged records are skipped)."""
        files = sorted(self.dir.glob(f"{owner}.*.intents"), key=lambda f: int(f.name.split(".")[1]))
        events: dict[str, RunEvent] = {}
        for f in files:
            for event in _records(f.read_bytes()):
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


_KEEP_SIZE = 1  # FALLOC_FL_KEEP_SIZE: allocate past the end without changing the file's size


def _libc_fallocate() -> Any:
    try:
        fn = CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):  # not Linux: no reserve
        return None
    fn.argtypes = (c_int, c_int, c_longlong, c_longlong)
    fn.restype = c_int
    return fn


_fallocate = _libc_fallocate()


def _records(data: bytes) -> Iterator[RunEvent]:
    """The whole records in a log's bytes, in order (see the module docstring)."""
    for line in data.split(b"\n"):
        if line[:1] == b"{":  # the earlier format: a bare JSON line
            body = line
        elif line[8:9] == b" " and line[:8] == b"%08x" % zlib.crc32(line[9:]):
            body = line[9:]
        else:  # blank, or a fragment a failed write or a crash left
            continue
        with contextlib.suppress(msgspec.DecodeError, msgspec.ValidationError):
            yield _decode_event(body)


def _lock(path: Path, *, wait: bool) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _unlock(dead: dict[str, int]) -> None:
    for fd in dead.values():
        os.close(fd)


class Journaled:
    """What a store keeping an IntentLog (`self._intents`) beside its local database (`self.path`)
    shares: the SQLite store and the Postgres outbox. Mixed in before EventStore.

    The intent hooks, and opening the local files (`_open_files`, run by `_open_or_wait` at
    construction): on a full disk the store starts anyway, refuses every write saying what is
    full (`_ensure_open`), and tries again every RETRY_S on its event loop until it opens."""

    journals_intents = True
    RETRY_S = 1.0  # between attempts to open the local files while they cannot be opened
    path: Path
    _intents: IntentLog
    _closed: bool
    _what = "the event store"  # the store's name in messages
    _unopened: str | None = "not opened yet"  # why the local files are not open; None once they are
    _reopening: asyncio.Task[None] | None = None
    _journal_failure: str | None = None  # why the last write to the intent log failed

    # -- opening ------------------------------------------------------------------------------

    def _open_files(self) -> None:
        """Open the local database and the intent log and recover dead owners' intents; all or
        nothing. Ends by setting `_unopened = None`. Runs on `_files_pool` once a store exists."""
        raise NotImplementedError

    def _files_pool(self) -> ThreadPoolExecutor:
        """The thread the local database's writer connection lives on."""
        raise NotImplementedError

    def _opened(self) -> None:
        """Called on the event loop when the files open after a wait (the outbox starts shipping)."""
        return None

    def _open_or_wait(self) -> None:
        """Open the local files now; if the disk is full, wait for space instead of failing (see
        the class docstring). Any other failure raises EventStoreUnavailable naming the path."""
        try:
            self._open_files()
        except (sqlite3.Error, OSError) as exc:
            if not is_full(exc, self.path):
                raise EventStoreUnavailable(f"cannot open {self._what} at {self.path}: {exc}") from exc
            self._unopened = self._cannot_open(exc)
            log.error("%s", self._unopened)

    def _cannot_open(self, exc: BaseException) -> str:
        return (f"cannot open {self._what} at {self.path}: {explain(exc, self.path)}. Until it opens every call "
                f"is refused (EVENT_STORE_UNAVAILABLE); it is tried again every {self.RETRY_S:g} s")

    def _ensure_open(self) -> None:
        """Raise EventStoreUnavailable, saying why, while the local files are not open (and keep
        trying to open them)."""
        if self._unopened is None:
            return
        self._keep_trying()
        raise EventStoreUnavailable(self._unopened)

    async def start(self) -> None:
        self._keep_trying()

    def _keep_trying(self) -> None:
        if self._unopened is not None and not self._closed and (self._reopening is None or self._reopening.done()):
            self._reopening = asyncio.get_running_loop().create_task(self._reopen(), name="opsgate-events-reopen")

    async def _reopen(self) -> None:
        loop = asyncio.get_running_loop()
        while self._unopened is not None and not self._closed:
            await asyncio.sleep(self.RETRY_S)
            try:
                await loop.run_in_executor(self._files_pool(), self._open_files)
            except (sqlite3.Error, OSError) as exc:
                self._unopened = self._cannot_open(exc)
                continue
            log.warning("%s at %s is open: calls are served again", self._what, self.path)
            self._opened()

    async def _stop_reopening(self) -> bool:
        """Stop trying to open; returns whether the files are open (then the caller closes them)."""
        if self._reopening is not None:
            self._reopening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reopening
            # An attempt may still be running on the pool's thread: let it finish first.
            await asyncio.get_running_loop().run_in_executor(self._files_pool(), lambda: None)
        return self._unopened is None

    # -- the intent hooks ---------------------------------------------------------------------

    def _begin(self, event: RunEvent) -> None:
        self._ensure_open()
        self._journal(event, "start")

    def _journal(self, event: RunEvent, what: str) -> None:
        """One record in the intent log: from here `event` survives the process dying."""
        try:
            self._intents.write(event)
        except OSError as exc:
            why = explain(exc, self.path)
            self._journal_failure = f"cannot write the intent log beside {self.path}: {why}"
            raise EventStoreUnavailable(f"cannot record the call's {what} beside {self.path}: {why}") from exc
        self._journal_failure = None

    def _journal_health(self, report: dict[str, Any]) -> dict[str, Any]:
        """`report`, down if the intent log's last write failed and it still has no room."""
        if self._journal_failure is not None and self._unopened is None:
            try:
                self._intents.probe()
            except OSError:
                return {**report, "status": "down", "error": self._journal_failure}
            self._journal_failure = None
        return report

    def _committed(self, events: list[RunEvent]) -> None:
        self._intents.done([e.id for e in events])


__all__ = ["DURABILITY", "Durability", "IntentLog", "Journaled", "connect", "transact"]
