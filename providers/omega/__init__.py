"""The Pulse Omega observer provider (served as `omega.<tool>`; see README "Pulse Omega")."""

from providers.omega.config import OmegaConfig
from providers.omega.provider import OmegaProvider

__all__ = ["OmegaConfig", "OmegaProvider"]
