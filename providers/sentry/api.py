"""One conversation with Sentry's web API (`/api/0/`): bearer auth, Link-header cursor paging,
and Sentry's error shapes turned into tool errors a caller can act on.

Facts relied on (PROVIDER-APIS.md): errors are `{"detail": "..."}`; a rate-limited answer is 429
without Retry-After but with `X-Sentry-Rate-Limit-Reset` (epoch seconds); pages are linked by
`Link: <...>; rel="next"; results="true"; cursor="0:100:0"`, and paging goes on only while the
next link says `results="true"`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import httpx

from providers.sdk import ToolError
from providers.sdk.upstream import DEFAULT_RETRY_S, MAX_DETAIL, scrub
from providers.sdk.upstream import retry_after as retry_after_header

MAX_PAGES = 100  # per call: a guard against an upstream that pages forever (empty pages, new cursors)


def detail_of(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return body["detail"]
    return response.text.strip()[:MAX_DETAIL] or response.reason_phrase


def retry_after(response: httpx.Response, *, now: float | None = None) -> int:
    """Seconds until Sentry will take the call again: Retry-After (ingest), else the rate-limit
    window's reset time, else a conservative default."""
    if response.headers.get("Retry-After"):
        return retry_after_header(response)
    reset = response.headers.get("X-Sentry-Rate-Limit-Reset")
    if reset:
        try:
            return max(1, math.ceil(float(reset) - (now if now is not None else time.time())))
        except ValueError:
            pass
    limits = response.headers.get("X-Sentry-Rate-Limits")  # ingest: "60:error;default:organization, ..."
    if limits:
        waits = [int(part.split(":", 1)[0]) for part in limits.split(",") if part.split(":", 1)[0].strip().isdigit()]
        if waits:
            return max(1, max(waits))
    return DEFAULT_RETRY_S


def upstream_error(response: httpx.Response, what: str, *secrets: str) -> ToolError:
    """Sentry's refusal as a tool error that names the cause and the fix, never a credential."""
    status = response.status_code
    detail = scrub(detail_of(response), *secrets)
    if status == 401:
        return ToolError(f"sentry: {what}: authentication failed (401: {detail}); check the vault secret "
                         "sentry_auth_token")
    if status == 403:
        return ToolError(f"sentry: {what}: forbidden (403: {detail}); the token may lack a scope "
                         "(event:read, event:write, project:read) or access to this organization")
    if status == 404:
        return ToolError(f"sentry: {what}: not found (404: {detail})")
    if status == 429:
        wait = retry_after(response)
        return ToolError(f"sentry: {what}: rate limited by Sentry (429: {detail}); retry in {wait}s",
                         retry_after_s=wait)
    if status >= 500:
        return ToolError(f"sentry: {what}: Sentry answered {status} ({detail}); try again later")
    return ToolError(f"sentry: {what}: Sentry refused the request ({status}: {detail})")


def next_cursor(response: httpx.Response) -> str | None:
    """The cursor of the next page, or None when Sentry says there are no more results."""
    nxt = response.links.get("next")
    if not nxt or nxt.get("results") != "true":
        return None
    return nxt.get("cursor") or None


class SentryAPI:
    """Calls on one egress-checked client, authenticated with one token."""

    def __init__(self, client: httpx.AsyncClient, token: str) -> None:
        self.client = client
        self.token = token

    async def send(self, method: str, url: str, what: str, *, ok: tuple[int, ...] = (200,),
                   **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        try:
            response = await self.client.request(method, url, headers=headers, **kwargs)
        except httpx.TimeoutException:
            raise ToolError(f"sentry: {what}: Sentry did not answer in time") from None
        except httpx.TransportError as e:
            raise ToolError(f"sentry: {what}: cannot reach Sentry ({type(e).__name__})") from None
        if response.status_code not in ok:
            raise upstream_error(response, what, self.token)
        return response

    async def json(self, method: str, url: str, what: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        response = await self.send(method, url, what, ok=ok, **kwargs)
        try:
            return response.json()
        except ValueError:
            raise ToolError(f"sentry: {what}: Sentry answered {response.status_code} without JSON") from None

    async def pages(self, url: str, what: str, *, params: dict[str, Any], limit: int, cursor: str = "",
                    size_param: str = "limit", page_max: int = 100) -> tuple[list[Any], str | None]:
        """Follow `rel="next"` until `limit` items or the last page. Returns the items and the
        cursor to resume from (None when the end was reached)."""
        items: list[Any] = []
        for _ in range(MAX_PAGES):
            query = {**params, size_param: min(page_max, limit - len(items))}
            if cursor:
                query["cursor"] = cursor
            response = await self.send("GET", url, what, params=query)
            try:
                page = response.json()
            except ValueError:
                raise ToolError(f"sentry: {what}: Sentry answered without JSON") from None
            if not isinstance(page, list):
                raise ToolError(f"sentry: {what}: expected a list from Sentry, got {type(page).__name__}")
            items.extend(page)
            nxt = next_cursor(response)
            if nxt is None or nxt == cursor:  # the end (or an upstream that would loop forever)
                return items[:limit], None
            cursor = nxt
            if len(items) >= limit:
                return items[:limit], cursor
        return items[:limit], cursor  # an upstream paging without end: the caller may resume


__all__ = ["SentryAPI", "next_cursor", "retry_after", "scrub", "upstream_error"]
