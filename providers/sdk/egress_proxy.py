"""A local egress proxy for a provider's child process (an upstream MCP server run over stdio).

The child is given `HTTPS_PROXY`/`HTTP_PROXY` pointing here, and (where the host allows it) a
network namespace whose only way out is this proxy (providers.sdk.netns). Every target is asked
of the same `egress` policy as the provider's own HTTP client, under the provider's name:

- `CONNECT host:port` (HTTPS and anything else tunnelled) is decided as `https://host:port`;
- a plain HTTP request in absolute form (`GET http://host:port/path`) as `http://host:port`.

The host is canonicalised first (providers.sdk.hostnames), the name is resolved once and each
address checked as the egress client checks it (a private, loopback, link-local, ... address needs
its own allowlist entry), and the connection goes to the checked address. A refusal answers
`403` with the reason and is recorded as a `<provider>.egress` run event, like any other.
Nothing is cached: each connection is decided when it is asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Any

from providers.sdk.egress import EgressGuard, EgressRefused, Hop, _current_hop, decide
from providers.sdk.hostnames import HostRejected, parse_target

if TYPE_CHECKING:
    from providers.sdk.base import ProviderBase

log = logging.getLogger("opsgate.egress.proxy")
MAX_HEAD = 16 * 1024
HEAD_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
HOP_HEADERS = {"proxy-connection", "proxy-authorization", "connection", "keep-alive", "te", "trailer",
               "transfer-encoding", "upgrade"}


class EgressProxy:
    """An HTTP proxy (CONNECT and absolute-form requests) that lets a child out only where the
    provider's egress policy allows. Serve on TCP (`start`) or on a listening socket handed in
    (`start(sock=...)`, e.g. one opened inside the child's network namespace)."""

    def __init__(self, provider: ProviderBase) -> None:
        self.provider = provider
        self.guard = EgressGuard(provider)
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.refused = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, sock: socket.socket | None = None) -> str:
        """Start serving; returns the proxy URL a child should be given (`http://host:port`)."""
        if sock is not None:
            server = await asyncio.start_server(self._serve, sock=sock)
        else:
            server = await asyncio.start_server(self._serve, host, port)
        self._servers.append(server)
        address = server.sockets[0].getsockname()
        return f"http://{address[0]}:{address[1]}"

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        except Exception:
            log.exception("%s: egress proxy connection failed", self.provider.name)
        finally:
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        if len(head) > MAX_HEAD:
            await _answer(writer, 431, "request head too large")
            return
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            await _answer(writer, 400, "malformed request line")
            return
        url = f"https://{target}/" if method == "CONNECT" else target
        if method != "CONNECT" and not target.lower().startswith("http://"):
            await _answer(writer, 400, "only CONNECT, or plain http:// requests in absolute form, are proxied")
            return
        upstream = await self._connect(method, url, writer)
        if upstream is None:
            return
        up_reader, up_writer = upstream
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
        else:
            up_writer.write(_origin_form(method, target, version, lines[1:]))
            await up_writer.drain()
        await _pipe_both(reader, writer, up_reader, up_writer)

    async def _connect(self, method: str, url: str, writer: asyncio.StreamWriter) -> Any:
        payload: dict[str, Any] = {"method": method, "url": url.split("?", 1)[0][:200], "via": "proxy"}
        try:
            target = parse_target(url)
            payload.update(canonical_host=target.host, scheme=target.scheme, port=target.port)
        except HostRejected as e:
            error = await self.guard.refuse(e.reason, payload)
            return await self._refused(writer, error)
        verdict = decide(self.provider, target)
        if not verdict.allowed:
            error = await self.guard.refuse(verdict.message or "not on the provider's allowlist", payload, verdict)
            return await self._refused(writer, error)
        token = _current_hop.set(Hop(target, payload["url"], method, 0, None))
        try:
            addresses = await self.guard.admit_addresses(target.host, target.port, CONNECT_TIMEOUT_S)
        except EgressRefused as error:
            return await self._refused(writer, error)
        except Exception as e:
            await _answer(writer, 502, f"cannot resolve {target.host}: {type(e).__name__}")
            return None
        finally:
            _current_hop.reset(token)
        for address in addresses:  # the checked address itself, never the name again
            with contextlib.suppress(OSError, TimeoutError):
                return await asyncio.wait_for(asyncio.open_connection(address, target.port), CONNECT_TIMEOUT_S)
        await _answer(writer, 502, f"cannot connect to {target.host}:{target.port}")
        return None

    async def _refused(self, writer: asyncio.StreamWriter, error: EgressRefused) -> None:
        self.refused += 1
        await _answer(writer, 403, error.message)


def _origin_form(method: str, target: str, version: str, headers: list[str]) -> bytes:
    rest = target.split("//", 1)[1]
    path = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    kept = [h for h in headers if h and h.split(":", 1)[0].strip().lower() not in HOP_HEADERS]
    return "\r\n".join([f"{method} {path} {version}", *kept, "Connection: close", "", ""]).encode("latin-1")


async def _answer(writer: asyncio.StreamWriter, status: int, reason: str) -> None:
    body = f"opsgate egress proxy: {reason}\n".encode()
    phrase = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large",
              502: "Bad Gateway"}.get(status, "Error")
    writer.write(f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
                 f"Connection: close\r\n\r\n".encode() + body)
    with contextlib.suppress(ConnectionError):
        await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    finally:
        with contextlib.suppress(Exception):
            writer.write_eof()


async def _pipe_both(a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                     b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter) -> None:
    try:
        await asyncio.gather(_pipe(a_reader, b_writer), _pipe(b_reader, a_writer))
    except (ConnectionError, OSError):
        pass
    finally:
        b_writer.close()


__all__ = ["EgressProxy"]
