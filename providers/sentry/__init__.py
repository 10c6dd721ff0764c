"""The Sentry provider (see provider.py)."""

from providers.sentry.provider import SentryProvider

__all__ = ["SentryProvider"]
