"""The SDK's upstream helpers: Retry-After in both of HTTP's forms, and credentials cut out of
an upstream's words (providers put these into tool errors the caller reads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from providers.sdk.upstream import retry_after, scrub


def answer(**headers: str) -> httpx.Response:
    return httpx.Response(429, headers=headers)


@pytest.mark.parametrize(("headers", "seconds"), [
    ({"Retry-After": "7"}, 7),
    ({"Retry-After": "0"}, 1),  # never "retry now": at least a second
    ({}, 60),
    ({"Retry-After": "soon"}, 60),
    ({"Retry-After": "-5"}, 60),
])
def test_retry_after_delta_seconds_and_defaults(headers: dict[str, str], seconds: int) -> None:
    assert retry_after(answer(**headers)) == seconds


def test_retry_after_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=90)
    assert 85 <= retry_after(answer(**{"Retry-After": format_datetime(when, usegmt=True)})) <= 91
    past = datetime.now(UTC) - timedelta(hours=1)
    assert retry_after(answer(**{"Retry-After": format_datetime(past, usegmt=True)})) == 1


def test_scrub_cuts_every_secret_and_caps_the_length() -> None:
    token = "tok_" + "z" * 40
    said = f"bad token {token} (Authorization: Bearer {token}) " + "x" * 500
    out = scrub(said, token, "")
    assert token not in out and out.startswith("bad token *** (Authorization: Bearer ***)")
    assert out.endswith("...") and len(out) == 303
    assert scrub("fine", token, mark="[redacted]") == "fine"
