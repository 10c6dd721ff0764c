"""One conversation with Netdata: Cloud (`/api/v1|v2|v3`, `Authorization: Bearer`) or a local
Agent (`:19999`, bearer protection optional), and Netdata's error shape turned into tool errors.

Facts relied on (PROVIDER-APIS.md): Cloud errors are `{"errorCode": "ErrNotFound",
"errorMsgKey", "errorMessage", ...}`. Netdata's rate-limit headers are unverified, so a 429 is
read for a standard `Retry-After` and otherwise given a conservative default.
"""

from __future__ import annotations

from typing import Any

import httpx

from providers.sdk import ToolError
from providers.sdk.upstream import MAX_DETAIL, retry_after, scrub


def detail_of(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:MAX_DETAIL] or response.reason_phrase
    if isinstance(body, dict):
        code, message = body.get("errorCode"), body.get("errorMessage") or body.get("errorMsgKey")
        if code or message:
            return ": ".join(str(x) for x in (code, message) if x)
    return response.text.strip()[:MAX_DETAIL] or response.reason_phrase


class NetdataAPI:
    """Calls on one egress-checked client. `who` names the target in messages ("Netdata Cloud",
    "the Netdata Agent"); `secret_name` is the vault secret a 401 points to."""

    def __init__(self, client: httpx.AsyncClient, *, who: str, secret_name: str, token: str = "",
                 auth_headers: dict[str, str] | None = None) -> None:
        self.client = client
        self.who = who
        self.secret_name = secret_name
        self.token = token
        self.auth_headers = auth_headers or {}

    def error(self, response: httpx.Response, what: str) -> ToolError:
        status = response.status_code
        detail = scrub(detail_of(response), self.token)
        where = f"netdata: {what}"
        if status == 401:
            return ToolError(f"{where}: {self.who} refused the credentials (401: {detail}); check the vault secret "
                             f"{self.secret_name}")
        if status == 403:
            return ToolError(f"{where}: forbidden by {self.who} (403: {detail}); the token's scope or the account's "
                             "role in the space does not allow this")
        if status == 404:
            return ToolError(f"{where}: not found (404: {detail})")
        if status == 429:
            wait = retry_after(response)
            return ToolError(f"{where}: rate limited by {self.who} (429: {detail}); retry in {wait}s",
                             retry_after_s=wait)
        if status >= 500:
            return ToolError(f"{where}: {self.who} answered {status} ({detail}); try again later")
        return ToolError(f"{where}: {self.who} refused the request ({status}: {detail})")

    async def json(self, method: str, path: str, what: str, *, ok: tuple[int, ...] = (200,), **kwargs: Any) -> Any:
        headers = {**self.auth_headers, **kwargs.pop("headers", {})}
        try:
            response = await self.client.request(method, path, headers=headers, **kwargs)
        except httpx.TimeoutException:
            raise ToolError(f"netdata: {what}: {self.who} did not answer in time") from None
        except httpx.TransportError as e:
            raise ToolError(f"netdata: {what}: cannot reach {self.who} ({type(e).__name__})") from None
        if response.status_code not in ok:
            raise self.error(response, what)
        try:
            return response.json()
        except ValueError:
            raise ToolError(f"netdata: {what}: {self.who} answered {response.status_code} without JSON") from None


__all__ = ["NetdataAPI", "detail_of"]
