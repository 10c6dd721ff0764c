"""An httpx2 client for the `mcp` SDK's streamable HTTP transport, egress-checked as `http()` is.

The `mcp` client speaks `httpx2`; the SDK's egress checks live in an `httpx` transport
(providers.sdk.egress). This bridge is an httpx2 transport that hands every request to that very
transport: each request and each redirect hop is canonicalised and decided (`egress` on the
provider, scheme, host, port), the name is resolved once and the connection is opened to the
checked address only, and every refusal is an `ops.run_events` row. Nothing else can send: the
client is built here, without environment proxies, and its transport cannot be replaced.

The URL crosses as text and is parsed again by httpx, the parser that both decides and connects,
so the two libraries cannot disagree about where a request goes. Response bodies stream through
(an SSE response stays a stream).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
import httpx2

from providers.sdk.egress import EgressGuard, EgressTransport

if TYPE_CHECKING:
    from providers.sdk.base import ProviderBase


class _Body(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx.Response) -> None:
        self.inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner.aiter_raw():
            yield chunk

    async def aclose(self) -> None:
        await self.inner.aclose()


class EgressBridge(httpx2.AsyncBaseTransport):
    """httpx2 transport over the provider's egress-checked httpx transport."""

    def __init__(self, guard: EgressGuard) -> None:
        self.inner = EgressTransport(guard)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        timeout = request.extensions.get("timeout")
        outbound = httpx.Request(request.method, str(request.url), headers=list(request.headers.raw), content=body,
                                 extensions={"timeout": timeout} if timeout else {})
        try:
            response = await self.inner.handle_async_request(outbound)
        except httpx.TimeoutException as e:
            raise httpx2.ReadTimeout(str(e), request=request) from None
        except httpx.TransportError as e:
            raise httpx2.ConnectError(str(e), request=request) from None
        return httpx2.Response(response.status_code, headers=list(response.headers.raw), stream=_Body(response),
                               request=request, extensions={"http_version": response.extensions.get(
                                   "http_version", b"HTTP/1.1")})

    async def aclose(self) -> None:
        await self.inner.aclose()


def mcp_http_client(provider: ProviderBase, *, headers: dict[str, str] | None = None,
                    timeout: float = 30.0, read_timeout: float = 300.0) -> httpx2.AsyncClient:
    """The httpx2 client to give `mcp.client.streamable_http.streamable_http_client`."""
    return httpx2.AsyncClient(transport=EgressBridge(EgressGuard(provider)), headers=headers, trust_env=False,
                              timeout=httpx2.Timeout(timeout, read=read_timeout), follow_redirects=False)


__all__ = ["EgressBridge", "mcp_http_client"]
