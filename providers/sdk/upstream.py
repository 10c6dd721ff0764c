"""Small helpers every provider needs when an upstream answers badly: the standard Retry-After
header as seconds, and an upstream's words made safe for a tool error.

Vendor-specific parts (which body field carries the message, what a 403 usually means, a
vendor's own rate-limit headers) stay in each provider; what HTTP itself defines lives here once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

DEFAULT_RETRY_S = 60
MAX_DETAIL = 300


def retry_after(response: httpx.Response, default: int = DEFAULT_RETRY_S) -> int:
    """Retry-After as whole seconds (>= 1): delta-seconds or an HTTP date (RFC 9110 10.2.3);
    `default` when absent or unreadable."""
    raw = (response.headers.get("retry-after") or "").strip()
    if raw.isdigit():
        return max(1, int(raw))
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(1, int((when - datetime.now(UTC)).total_seconds() + 0.999))


def scrub(text: str, *secrets: str, mark: str = "***", limit: int = MAX_DETAIL) -> str:
    """An upstream's words with our credentials cut out (a hostile or careless upstream may echo
    the Authorization header back), shortened to something a tool error can carry."""
    for s in secrets:
        if s:
            text = text.replace(s, mark)
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = ["DEFAULT_RETRY_S", "MAX_DETAIL", "retry_after", "scrub"]
