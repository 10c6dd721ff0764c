"""The embedded vault: secrets in SQLite, each encrypted with AES-256-GCM.

The key is a separate file created once with mode 0600 (refused if it is readable by others);
the secret's name is the GCM associated data, so a ciphertext copied onto another name does
not decrypt. Losing the key file loses the secrets: that is the point of encrypting them.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from providers.sdk.vault.base import SecretInfo, SecretNotFound, VaultError, check_name, check_value

SCHEMA = """
create table if not exists secrets (
  name text primary key,
  nonce blob not null,
  ciphertext blob not null,
  version integer not null,
  updated_at text not null
)
"""


def _load_key(path: Path) -> bytes:
    """The vault key, created 0600 on first use. A new key is written to a private temporary
    file and hard-linked into place, so a concurrent starter never reads a half-written key."""
    if not path.exists():
        key = os.urandom(32)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(key)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
            return key
        except FileExistsError:
            pass  # another process won: use its key
        finally:
            tmp.unlink(missing_ok=True)
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise VaultError(f"vault key {path} is accessible to group/others (mode {oct(mode & 0o777)}); chmod 600 it")
    key = path.read_bytes()
    if len(key) != 32:
        raise VaultError(f"vault key {path} is not 32 bytes")
    return key


def _with_retries(statement: Callable[[], object], attempts: int = 100) -> None:
    """Run a set-up statement that several processes may race for. Switching a new database to
    WAL takes an exclusive lock that SQLite may refuse at once ("database is locked") rather than
    wait for, while another starter does the same; the winner's change is what we wanted anyway."""
    for attempt in range(attempts):
        try:
            statement()
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == attempts - 1:
                raise
            time.sleep(0.05)


class EmbeddedVault:
    """`EmbeddedVault(directory)`: `vault.key` (0600) and `vault.db` in `directory` (0700).

    Its methods are coroutines only to fit the Vault contract: each is one indexed SQLite
    statement (WAL, so readers never wait for the CLI writing), done inline.
    """

    def __init__(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory = directory
        self._aead = AESGCM(_load_key(directory / "vault.key"))
        self._db = sqlite3.connect(directory / "vault.db", check_same_thread=False, isolation_level=None)
        self._db.execute("pragma busy_timeout=5000")
        _with_retries(lambda: self._db.execute("pragma journal_mode=wal"))
        _with_retries(lambda: self._db.execute(SCHEMA))
        self._lock = threading.Lock()

    async def get(self, name: str) -> str:
        check_name(name)
        with self._lock:
            row = self._db.execute("select nonce, ciphertext from secrets where name = ?", (name,)).fetchone()
        if row is None:
            raise SecretNotFound(f"secret {name!r} is not in the vault (set it with `opsgate vault set {name}`)")
        try:
            return self._aead.decrypt(row[0], row[1], name.encode()).decode()
        except InvalidTag:
            raise VaultError(f"secret {name!r} does not decrypt with this vault's key") from None

    def _sealed(self, name: str, value: str) -> tuple[bytes, bytes, str]:
        check_name(name)
        check_value(name, value)
        nonce = os.urandom(12)
        return nonce, self._aead.encrypt(nonce, value.encode(), name.encode()), \
            datetime.now(UTC).isoformat(timespec="seconds")

    async def set(self, name: str, value: str) -> SecretInfo:
        nonce, ciphertext, now = self._sealed(name, value)
        with self._lock:
            version = self._db.execute(
                "insert into secrets (name, nonce, ciphertext, version, updated_at) values (?, ?, ?, 1, ?) "
                "on conflict(name) do update set nonce = excluded.nonce, ciphertext = excluded.ciphertext, "
                "version = secrets.version + 1, updated_at = excluded.updated_at returning version",
                (name, nonce, ciphertext, now)).fetchone()[0]
        return SecretInfo(name, version, now)

    async def create(self, name: str, value: str) -> bool:
        nonce, ciphertext, now = self._sealed(name, value)
        with self._lock:
            cur = self._db.execute(
                "insert into secrets (name, nonce, ciphertext, version, updated_at) values (?, ?, ?, 1, ?) "
                "on conflict(name) do nothing", (name, nonce, ciphertext, now))
        return cur.rowcount == 1

    async def list(self) -> list[SecretInfo]:
        with self._lock:
            rows = self._db.execute("select name, version, updated_at from secrets order by name").fetchall()
        return [SecretInfo(*r) for r in rows]

    async def close(self) -> None:
        with self._lock:
            self._db.close()


__all__ = ["EmbeddedVault"]
