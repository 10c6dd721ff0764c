"""The secret store contract (constitution rule 4: secrets live in a vault, never in env or code).

Backends: `embedded` (SQLite, encrypted at rest, for `make run` and single hosts) and, later,
Supabase Vault. A value is returned only by `get`; nothing else ever prints or logs one.
"""

from __future__ import annotations

import re
from typing import Protocol

import msgspec

NAME = re.compile(r"^[a-z][a-z0-9_]{1,99}$")


class SecretInfo(msgspec.Struct, frozen=True):
    name: str
    version: int
    updated_at: str


class VaultError(Exception):
    """A vault problem. Its message names the secret, never its value."""


class SecretNotFound(VaultError):
    pass


def check_name(name: str) -> None:
    if not NAME.match(name):
        raise VaultError(f"invalid secret name {name!r}: use lowercase snake_case, e.g. socket_api_key")


class Vault(Protocol):
    def get(self, name: str) -> str: ...
    def set(self, name: str, value: str) -> SecretInfo: ...
    def list(self) -> list[SecretInfo]: ...


__all__ = ["SecretInfo", "SecretNotFound", "Vault", "VaultError", "check_name"]
