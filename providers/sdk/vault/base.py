"""The secret store contract (constitution rule 4: secrets live in a vault, never in env or code).

Backends, side by side: `embedded` (SQLite, encrypted at rest, for `make run` and single hosts)
and `supabase` (Supabase Vault over SQL). The contract is async because Supabase Vault is a
network round trip; the embedded backend answers at once.

Invariants every backend keeps:
- a value leaves the store only through `get`; `set` and `list` never return one;
- no message of a VaultError ever contains a value (it names the secret instead);
- names are lowercase snake_case (`socket_api_key`, `sentry_dsn`, `netdata_token`): the part
  before the first underscore is the provider that owns the secret (see gateway/runtime.py);
- a value shorter than MIN_VALUE_LEN is refused: the redactor cannot reliably strip shorter
  strings from logs, spans and events, so such a "secret" would leak.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Protocol

import msgspec

NAME = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)+$")
MIN_VALUE_LEN = 8  # otel.redact.MIN_SECRET_LEN: shorter values are not redacted
MAX_VALUE_LEN = 64 * 1024


class SecretInfo(msgspec.Struct, frozen=True):
    """What may be shown about a secret: never its value."""

    name: str
    version: int
    updated_at: str  # ISO 8601, UTC


class VaultError(Exception):
    """A vault problem. Its message names the secret, never its value."""


class SecretNotFound(VaultError):
    pass


def check_name(name: str) -> None:
    if not isinstance(name, str) or len(name) > 100 or not NAME.match(name):
        raise VaultError(f"invalid secret name {name!r}: use <provider>_<what> in lowercase snake_case, "
                         "e.g. socket_api_key")


def check_value(name: str, value: str) -> None:
    if not isinstance(value, str):
        raise VaultError(f"the value for {name!r} must be text")
    if len(value) < MIN_VALUE_LEN:
        raise VaultError(f"refusing a value shorter than {MIN_VALUE_LEN} characters for {name!r}: "
                         "it could not be redacted reliably")
    if len(value) > MAX_VALUE_LEN:
        raise VaultError(f"refusing a value longer than {MAX_VALUE_LEN} characters for {name!r}")
    if value != value.strip() or "\x00" in value:
        raise VaultError(f"the value for {name!r} has surrounding whitespace or a NUL byte (a paste accident?)")


class Vault(Protocol):
    async def get(self, name: str) -> str:
        """The value; SecretNotFound if there is none."""
        ...

    async def set(self, name: str, value: str) -> SecretInfo:
        """Store a value: version 1 for a new secret, the next version for an existing one."""
        ...

    async def create(self, name: str, value: str) -> bool:
        """Store a value only if the name is free (version 1); False if the secret already exists."""
        ...

    async def list(self) -> list[SecretInfo]:
        """Every secret's name, version and time of last change, by name."""
        ...

    async def close(self) -> None: ...


async def get_or_create(vault: Vault, name: str, make: Callable[[], str]) -> str:
    """The secret, created by `make()` on first use (generated development keys). Two processes
    starting at once both end up with the one value that was stored first."""
    try:
        return await vault.get(name)
    except SecretNotFound:
        await vault.create(name, make())
        return await vault.get(name)


__all__ = ["MIN_VALUE_LEN", "SecretInfo", "SecretNotFound", "Vault", "VaultError", "check_name", "check_value",
           "get_or_create"]
