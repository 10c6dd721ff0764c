"""A small real HTTP server on a free loopback port, in a thread, for imitating an upstream API.

Subclasses implement `handle(req) -> Reply`. Tests can steer every imitation the same way:
`force(status, body, headers, path=...)` answers matching requests with a fixed reply (a
`{auth}` in a string body is replaced by the request's Authorization header, to imitate an
upstream careless enough to echo credentials), `delay_s` slows every answer (degraded health),
and `requests` records what was asked.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-encoded unless bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def q(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default


@dataclass
class Forced:
    reply: Reply
    path: str | None  # a path prefix, or every path


class Imitation:
    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.delay_s = 0.0
        self._forced: list[Forced] = []
        self._lock = threading.Lock()
        imitation = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(self.command, parts.path, parse_qs(parts.query, keep_blank_values=True),
                            {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length) if length else b"")
                reply = imitation.dispatch(seen)
                if imitation.delay_s:
                    time.sleep(imitation.delay_s)
                body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    headers = {"Content-Type": "application/json", **reply.headers}
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a health budget)
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Imitation:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Imitation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def force(self, status: int, body: Any = None, headers: dict[str, str] | None = None, *,
              path: str | None = None) -> None:
        with self._lock:
            self._forced.append(Forced(Reply(status, body, headers or {}), path))

    def reset(self) -> None:
        with self._lock:
            self._forced.clear()
            self.requests.clear()
        self.delay_s = 0.0

    def dispatch(self, req: Seen) -> Reply:
        with self._lock:
            self.requests.append(req)
            forced = next((f for f in self._forced if f.path is None or req.path.startswith(f.path)), None)
        if forced is not None:
            body = forced.reply.body
            if isinstance(body, dict):
                auth = req.headers.get("authorization", "")
                body = {k: v.replace("{auth}", auth) if isinstance(v, str) else v for k, v in body.items()}
            return Reply(forced.reply.status, body, forced.reply.headers)
        return self.handle(req)

    def handle(self, req: Seen) -> Reply:
        raise NotImplementedError


__all__ = ["Imitation", "Reply", "Seen"]
