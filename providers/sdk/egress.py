"""The only HTTP client a provider gets (constitution rule 5): every request, and every redirect
hop, is an `egress` decision by the gateway's policy before a connection is opened.

Interface (stable): `EgressClient(provider, **httpx.AsyncClient kwargs)`; use it as an
httpx.AsyncClient. Refusals raise `EgressRefused` (a `Refused` with code FORBIDDEN).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx

from providers.sdk.tool import Refused

if TYPE_CHECKING:
    from providers.sdk.base import ProviderBase


class EgressRefused(Refused):
    def __init__(self, message: str, **data: Any) -> None:
        super().__init__("FORBIDDEN", message, **data)


class EgressClient(httpx.AsyncClient):
    """An httpx.AsyncClient whose every request passes the provider's egress policy first."""

    def __init__(self, provider: ProviderBase, **kwargs: Any) -> None:
        hooks = kwargs.pop("event_hooks", {}) or {}

        async def check(request: httpx.Request) -> None:
            try:
                provider.validate_hostname(str(request.url))
            except Refused as e:
                raise EgressRefused(e.message, **e.data) from None

        hooks = {**hooks, "request": [check, *hooks.get("request", [])]}
        super().__init__(event_hooks=hooks, **kwargs)


__all__ = ["EgressClient", "EgressRefused"]
