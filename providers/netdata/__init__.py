"""The Netdata provider (see provider.py)."""

from providers.netdata.provider import NetdataProvider

__all__ = ["NetdataProvider"]
