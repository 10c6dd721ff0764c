"""Secret stores (constitution rule 4): one async contract, two backends side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from providers.sdk.vault.base import (
    MIN_VALUE_LEN,
    SecretInfo,
    SecretNotFound,
    Vault,
    VaultError,
    check_name,
    check_value,
    get_or_create,
)
from providers.sdk.vault.embedded import EmbeddedVault
from providers.sdk.vault.supabase import SupabaseVault

Backend = Literal["embedded", "supabase"]


def open_vault(backend: Backend, *, state_dir: str | Path, database_url: str) -> Vault:
    """The embedded vault under `<state_dir>/vault`, or Supabase Vault at `database_url`."""
    if backend == "embedded":
        return EmbeddedVault(Path(state_dir) / "vault")
    if backend == "supabase":
        return SupabaseVault(database_url)
    raise VaultError(f"unknown vault backend {backend!r} (embedded or supabase)")


__all__ = ["MIN_VALUE_LEN", "Backend", "EmbeddedVault", "SecretInfo", "SecretNotFound", "SupabaseVault", "Vault",
           "VaultError", "check_name", "check_value", "get_or_create", "open_vault"]
