"""Whether a storage error means the disk is full, and the words an operator needs then.

Invariant: an error's own words are never replaced, only followed by an explanation. A full disk
is explained as what is full (the filesystem holding the store, named by its mount point, with
its free and total bytes) and what to free (space on that filesystem, never the audit files
themselves, which are the rows and the intents of calls cut short). Any other error is left as
it is. An error means a full disk when it says so (ENOSPC, EDQUOT, SQLITE_FULL), or when it is an
SQLite I/O error while the filesystem has almost no room left: SQLite does not pass the errno on,
and creating its shared-memory file on a full disk fails as "disk I/O error".
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# Below this much room an SQLite I/O error is taken for the full disk (its -shm file alone is 32 KiB).
NEARLY_FULL_BYTES = 1 << 20


def is_full(exc: BaseException, store: Path) -> bool:
    """Whether `exc`, raised writing `store`, means that the disk (or the quota) is full."""
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        primary = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF  # the low byte of the extended code
        if primary == sqlite3.SQLITE_FULL:
            return True
        if primary == sqlite3.SQLITE_IOERR:
            room = _room(store)
            return room is not None and room[0] < NEARLY_FULL_BYTES
    return False


def explain(exc: BaseException, store: Path) -> str:
    """`exc`'s own words; for a full disk, followed by what is full and what to free."""
    text = str(exc)
    return f"{text}; {what_is_full(store)}" if is_full(exc, store) else text


def what_is_full(store: Path) -> str:
    """What is full when `store` (a file or a directory) cannot grow, and what to free."""
    where = _dir(store)
    room = _room(store)
    free = f" ({_size(room[0])} free of {_size(room[1])})" if room is not None else ""
    return (f"the filesystem mounted at {_mount_point(where)} is full{free}: free space on it (or grow it); do "
            f"not delete the audit files under {where} to make room, they are the audit trail")


def _dir(store: Path) -> Path:
    return store if store.is_dir() else store.parent


def _room(store: Path) -> tuple[int, int] | None:
    """Bytes free (to an unprivileged process) and in all, on the filesystem holding `store`."""
    try:
        st = os.statvfs(_dir(store))
    except OSError:
        return None
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value, unit = n / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


__all__ = ["explain", "is_full", "what_is_full"]
