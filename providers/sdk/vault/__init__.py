"""Secret stores (constitution rule 4)."""

from providers.sdk.vault.base import SecretInfo, SecretNotFound, Vault, VaultError
from providers.sdk.vault.embedded import EmbeddedVault

__all__ = ["EmbeddedVault", "SecretInfo", "SecretNotFound", "Vault", "VaultError"]
