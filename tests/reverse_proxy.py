"""A small loopback reverse proxy for tests, standing in for the TLS-terminating proxy in front of a
production gateway (nginx, Caddy, a cloud load balancer).

    ReverseProxy(upstream="http://127.0.0.1:8080", family="x-forwarded", client="203.0.113.7",
                 public_host="mcp.insightpulseai.com")

It forwards every request to `upstream` and, like a proxy configured to, says where the request
came from: `client` is the address it claims to have seen the request from (the test's real client
is on loopback too, so the proxy speaks for an internet client), appended to any X-Forwarded-For
the client sent (family "x-forwarded", also setting X-Forwarded-Proto and -Host), or as one more
RFC 7239 `Forwarded` element (family "forwarded"). The Host it sends upstream is the upstream's
own (nginx's default `proxy_pass` behaviour), so the public name arrives only in forwarded headers.
"""

from __future__ import annotations

from typing import Any

import httpx

HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade",
              b"proxy-authorization", b"proxy-authenticate", b"host", b"content-length"}


class ReverseProxy:
    def __init__(self, upstream: str, *, family: str, client: str, public_host: str, proto: str = "https") -> None:
        self.upstream, self.family, self.client = upstream, family, client
        self.public_host, self.proto = public_host, proto

    def _forwarded(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        def values(name: bytes) -> list[str]:
            return [v.decode("latin-1") for k, v in headers if k == name]

        if self.family == "x-forwarded":
            chain = ", ".join([*values(b"x-forwarded-for"), self.client])
            kept = [(k, v) for k, v in headers if not k.startswith(b"x-forwarded-")]
            return [*kept, (b"x-forwarded-for", chain.encode()), (b"x-forwarded-proto", self.proto.encode()),
                    (b"x-forwarded-host", self.public_host.encode())]
        client = f'"[{self.client}]"' if ":" in self.client else self.client
        element = f"for={client};proto={self.proto};host={self.public_host}"
        chain = ", ".join([*values(b"forwarded"), element])
        return [*((k, v) for k, v in headers if k != b"forwarded"), (b"forwarded", chain.encode())]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = self._forwarded([(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP])
        url = self.upstream + scope["raw_path"].decode() + (f"?{scope['query_string'].decode()}"
                                                             if scope["query_string"] else "")
        async with httpx.AsyncClient(timeout=30) as upstream:
            r = await upstream.request(scope["method"], url, headers=headers, content=body)
        out = [(k.encode(), v.encode()) for k, v in r.headers.items() if k.encode() not in HOP_BY_HOP]
        await send({"type": "http.response.start", "status": r.status_code,
                    "headers": [*out, (b"content-length", str(len(r.content)).encode())]})
        await send({"type": "http.response.body", "body": r.content})


__all__ = ["ReverseProxy"]
