"""HTTP rate-limit headers, IETF draft-ietf-httpapi-ratelimit-headers-11.

    RateLimit-Policy: "reads";q=100;w=3600, "omega.query";q=10;w=60
    RateLimit: "reads";r=50;t=30, "omega.query";r=0;t=6
    Retry-After: 6

Both fields are Structured Field Lists (RFC 9651) of String items with Integer
parameters, serialised the canonical way (members joined by ", "). The policy name is the
tier's bucket. `t` is the effective window: for a tier with quota left it is the time
until the budget is full again (with GCRA more quota trickles back before that, so `r`
over `t` never overstates the rate), for an exhausted tier the time until one call fits.
No `pk` parameter: it would reveal the user. An outcome whose backend could not be asked
has no known quota and is left out of `RateLimit`, but its policy is still advertised.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from gateway.ratelimit.base import Outcome


@functools.lru_cache(maxsize=1024)  # bucket names: few, and on every response
def sf_string(text: str) -> str:
    """An RFC 9651 sf-string. Characters it cannot carry (outside printable ASCII) are
    percent-encoded as UTF-8, so an odd bucket name never breaks a response."""
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            out.append("".join(f"%{b:02X}" for b in ch.encode()))
    out.append('"')
    return "".join(out)


def retry_after_s(outcomes: Sequence[Outcome]) -> int | None:
    """Seconds until every denying tier would admit the call, or None when none denied."""
    denied = [o.retry_after_s for o in outcomes if not o.allowed]
    return max(denied) if denied else None


def rate_limit_headers(outcomes: Sequence[Outcome]) -> dict[str, str]:
    """`RateLimit-Policy`, `RateLimit` and, when denied, `Retry-After` for one call's outcomes."""
    if not outcomes:
        return {}
    headers = {"RateLimit-Policy": ", ".join(
        f"{sf_string(o.bucket)};q={o.limit};w={o.period_s}" for o in outcomes)}
    known = [o for o in outcomes if not o.unavailable]
    if known:
        headers["RateLimit"] = ", ".join(
            f"{sf_string(o.bucket)};r={o.remaining};t={o.reset_s if o.allowed else o.retry_after_s}"
            for o in known)
    retry = retry_after_s(outcomes)
    if retry is not None:
        headers["Retry-After"] = str(retry)
    return headers


__all__ = ["rate_limit_headers", "retry_after_s", "sf_string"]
