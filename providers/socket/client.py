"""One conversation with Socket's API: auth, decoding, and upstream failures as clear tool errors.

Socket answers errors as `{"error": {"message": ..., "details": ...}}` and over-limit calls
as 429 with `Retry-After: <seconds>`. Every failure becomes a ToolError saying what was being
done, what Socket said and what to do about it; the API token never appears in one (an
upstream that echoes it back gets it scrubbed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from providers.sdk import ToolError
from providers.sdk.upstream import retry_after, scrub

T = TypeVar("T")

DEFAULT_RETRY_AFTER_S = 60  # Socket's request limit is per minute
MAX_MESSAGE = 300


def seg(value: str) -> str:
    """One URL path segment, escaped (inputs are constrained too; this is the second wall)."""
    return quote(value, safe="")


def retry_after_s(response: httpx.Response) -> int:
    """Retry-After as whole seconds (>= 1); a default when absent."""
    return retry_after(response, DEFAULT_RETRY_AFTER_S)


def upstream_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict) and body["error"].get("message"):
        return str(body["error"]["message"])
    text = response.text.strip()
    return text or response.reason_phrase or "no message"


class SocketClient:
    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = http
        self._token = token

    def _scrub(self, text: str) -> str:
        return scrub(text, self._token, mark="[redacted]", limit=MAX_MESSAGE)

    def error(self, response: httpx.Response, doing: str) -> ToolError:
        status = response.status_code
        said = self._scrub(upstream_message(response))
        if status == 429:
            wait = retry_after_s(response)
            return ToolError(f"Socket rate limit while {doing}: {said} (retry after {wait}s)", retry_after_s=wait)
        if status == 401:
            return ToolError(f"Socket rejected the API token while {doing} (401: {said}); "
                             "check the vault secret socket_api_key (`opsgate vault set socket_api_key`)")
        if status == 403:
            hint = ("the token's hourly quota is spent" if "quota" in said.lower()
                    else "the token lacks the scope this call needs")
            return ToolError(f"Socket refused {doing} (403: {said}); {hint}")
        if status == 404:
            return ToolError(f"Socket found nothing while {doing} (404: {said}); check the org, repo or id")
        if status >= 500:
            wait = retry_after_s(response) if "retry-after" in response.headers else None
            return ToolError(f"Socket failed while {doing} ({status}: {said}); try again later", retry_after_s=wait)
        return ToolError(f"Socket rejected {doing} ({status}: {said})")

    async def send(self, method: str, path: str, *, doing: str, ok: tuple[int, ...] = (200, 201),
                   **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise ToolError(f"Socket did not answer in time while {doing}", retry_after_s=5) from None
        except httpx.TransportError as e:
            raise ToolError(f"Socket is unreachable while {doing} ({type(e).__name__})") from None
        if response.status_code not in ok:
            raise self.error(response, doing)
        return response

    async def get(self, path: str, type: type[T], *, doing: str, params: Mapping[str, Any] | None = None) -> T:
        response = await self.send("GET", path, doing=doing, params=params)
        return decode(response.content, type, doing)

    async def post(self, path: str, type: type[T], *, doing: str, **kwargs: Any) -> T:
        response = await self.send("POST", path, doing=doing, **kwargs)
        return decode(response.content, type, doing)


def decode(content: bytes, type: type[T], doing: str) -> T:
    try:
        return msgspec.json.decode(content, type=type)
    except msgspec.DecodeError as e:
        raise ToolError(f"Socket answered {doing} with an unexpected shape ({e})") from None


def decode_ndjson(content: bytes, type: type[T], doing: str) -> list[T]:
    """Socket's NDJSON answers: one JSON value per non-empty line."""
    return [decode(line, type, doing) for line in content.splitlines() if line.strip()]


__all__ = ["SocketClient", "decode", "decode_ndjson", "retry_after_s", "seg"]
