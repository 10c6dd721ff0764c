"""Whether a storage error means the disk is full, and the words an operator needs then.

Invariant: an error's own words are never replaced, only followed by an explanation. A full disk
(SQLITE_FULL, ENOSPC, EDQUOT) is explained as what is full (the filesystem holding the store,
named by its mount point, with its free and total bytes) and what to free (space on that
filesystem, never the audit files themselves, which are the rows and the intents of calls cut
short). Any other error is left as it is.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_full(exc: BaseException) -> bool:
    """Whether `exc` says the disk (or the quota) is full."""
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    if isinstance(exc, sqlite3.Error):
        # The primary result code is the low byte of the extended one.
        return (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_FULL
    return False


def explain(exc: BaseException, store: Path) -> str:
    """`exc`'s own words; for a full disk, followed by what is full and what to free."""
    text = str(exc)
    return f"{text}; {what_is_full(store)}" if is_full(exc) else text


def what_is_full(store: Path) -> str:
    """What is full when `store` (a file or a directory) cannot grow, and what to free."""
    where = store if store.is_dir() else store.parent
    mount = _mount_point(where)
    try:
        st = os.statvfs(where)
        room = f" ({_size(st.f_bavail * st.f_frsize)} free of {_size(st.f_blocks * st.f_frsize)})"
    except OSError:
        room = ""
    return (f"the filesystem mounted at {mount} is full{room}: free space on it (or grow it); do not delete "
            f"the audit files under {where} to make room, they are the audit trail")


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
