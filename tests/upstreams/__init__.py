"""Loopback imitations of the providers' upstream APIs, faithful to PROVIDER-APIS.md: real
paths, auth headers, field names, error bodies, pagination and rate limits. Each runs as a
real HTTP server on 127.0.0.1 in a thread (`serve(app)`), so providers are tested over HTTP
through their egress-checked client exactly as in production."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from tests.harness import free_port


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run an ASGI app on a free loopback port until the block ends; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("upstream imitation did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


__all__ = ["serve"]
