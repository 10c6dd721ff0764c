"""GET /metrics: the gateway's Prometheus exposition (every metric is defined in gateway/metrics.py).

Access is `GatewayConfig.metrics`, secure by default:

    "token" (default)  `Authorization: Bearer <t>`, where t is either the vault's
                       `opsgate_metrics_token` (a static scrape credential for Prometheus's
                       `authorization.credentials_file`, compared in constant time) or an access token
                       whose role may `opsgate.metrics` (ops_admin in the shipped policies).
                       No or a wrong credential: 401; a role the policy refuses: 403.
    "open"             anyone who reaches the port (a gateway listening on a private address only)
    "off"              404
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from litestar import Request, Response, get
from litestar.exceptions import NotFoundException

from gateway.metrics import CONTENT_TYPE
from gateway.routes.guards import authorize
from gateway.services import Services
from providers.sdk.vault import SecretNotFound, VaultError

log = logging.getLogger("opsgate.metrics")

SCRAPE_TOKEN = "opsgate_metrics_token"  # a vault secret's name
MIN_SCRAPE_TOKEN_LEN = 32  # a static credential must not be guessable: `opsgate vault set` takes 8 and up


class ScrapeCredential:
    """The vault's scrape credential, read at most once per TTL_S (a rotation shows within it), so
    requests with wrong tokens cannot turn into a vault read each."""

    TTL_S = 30.0

    def __init__(self, vault: Any) -> None:
        self._vault = vault
        self._value: str | None = None
        self._read_at = float("-inf")

    async def matches(self, presented: str) -> bool:
        if time.monotonic() - self._read_at >= self.TTL_S:
            self._value, self._read_at = await self._read(), time.monotonic()
        return self._value is not None and hmac.compare_digest(self._value.encode(), presented.encode())

    async def _read(self) -> str | None:
        if self._vault is None:
            return None
        try:
            value: str = await self._vault.get(SCRAPE_TOKEN)
        except SecretNotFound:
            return None
        except VaultError as e:
            log.warning("cannot read %s from the vault: %s", SCRAPE_TOKEN, e)
            return None
        if len(value) < MIN_SCRAPE_TOKEN_LEN:
            log.warning("%s is shorter than %d characters and is not accepted; set a new one with "
                        "`opsgate vault rotate %s --generate`", SCRAPE_TOKEN, MIN_SCRAPE_TOKEN_LEN, SCRAPE_TOKEN)
            return None
        return value


async def _authorize(services: Services, request: Request[Any, Any, Any]) -> None:
    header = request.headers.get("authorization") or ""
    scheme, _, presented = header.partition(" ")
    if scheme.lower() == "bearer" and presented:
        credential = getattr(request.app.state, "scrape_credential", None)
        if credential is None:
            credential = request.app.state.scrape_credential = ScrapeCredential(services.vault)
        if await credential.matches(presented.strip()):
            return
    await authorize(request, "opsgate.metrics")  # 401 without a valid token, 403 by policy


@get("/metrics", include_in_schema=False)
async def metrics(request: Request[Any, Any, Any]) -> Response[bytes]:
    services: Services = request.app.state.services
    if services.metrics is None:
        raise NotFoundException("metrics are off (GatewayConfig.metrics)")
    if services.metrics.access == "token":
        await _authorize(services, request)
    return Response(await services.metrics.scrape(services), media_type=CONTENT_TYPE)


ROUTES = [metrics]
__all__ = ["ROUTES", "SCRAPE_TOKEN", "ScrapeCredential"]
