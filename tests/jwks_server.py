"""A real loopback HTTP server for JWKS documents, for tests: port 0, one thread, counts requests.

    with JwksServer({"keys": [...]}) as srv:
        srv.url; srv.requests; srv.jwks = {...}  # switch keys; srv.delay_s = 0.2  # slow answers
        srv.held.clear()  # answers wait until srv.held.set(): a fetch stays in flight as long as a test needs
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JwksServer:
    def __init__(self, jwks: dict[str, Any] | None = None, *,
                 path: str = "/auth/v1/.well-known/jwks.json") -> None:
        self.jwks: dict[str, Any] = jwks if jwks is not None else {"keys": []}
        self.path = path
        self.status = 200
        self.delay_s = 0.0
        self.held = threading.Event()
        self.held.set()
        self._requests = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="jwks-server",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path}"

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with srv._lock:
                    srv._requests += 1
                if srv.delay_s:
                    time.sleep(srv.delay_s)
                srv.held.wait(30)
                body = json.dumps(srv.jwks).encode() if self.path == srv.path else b"{}"
                self.send_response(srv.status if self.path == srv.path else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.held.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
