"""What the egress guard costs per request: the SDK's EgressClient (a policy decision per request,
the connected-address check per new connection) against a plain httpx.AsyncClient, both
fetching from the same loopback server, keep-alive on. Also a cold connection each time.

    .venv/bin/python bench/egress.py [--requests N] [--rounds R]

Rounds alternate guarded and plain so noise on this shared machine hits both.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import Engine, load_bundle  # noqa: E402
from gateway.runtime import GatewayRuntime  # noqa: E402
from providers.echo import EchoProvider  # noqa: E402


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else delayed ACKs put 40 ms on every keep-alive request

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


async def run(client_of: Any, url: str, n: int, fresh: bool) -> list[float]:
    times = []
    client = client_of()
    for _ in range(n):
        if fresh:
            await client.aclose()
            client = client_of()
        t = time.perf_counter()
        r = await client.get(url)
        times.append((time.perf_counter() - t) * 1e6)
        assert r.status_code == 200
    await client.aclose()
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "policies"
        shutil.copytree(ROOT / "policies", bundle, ignore=shutil.ignore_patterns("tests"))
        with (bundle / "provider-allowlist.yaml").open("a") as f:
            f.write(f"echo:\n  - http://127.0.0.1:{port}\n")
        provider = EchoProvider()
        provider.bind(GatewayRuntime(Engine(load_bundle(bundle))))
    url = f"http://127.0.0.1:{port}/"
    results: dict[str, list[float]] = {}
    for _ in range(a.rounds):
        for name, factory, fresh in (("plain, keep-alive", httpx.AsyncClient, False),
                                     ("guarded, keep-alive", provider.http, False),
                                     ("plain, new connection", httpx.AsyncClient, True),
                                     ("guarded, new connection", provider.http, True)):
            results.setdefault(name, []).extend(asyncio.run(run(factory, url, a.requests, fresh)))
    for name, times in results.items():
        p50, p90 = statistics.median(times), statistics.quantiles(times, n=10)[-1]
        print(f"{name:26s} p50 {p50:7.0f} µs   p90 {p90:7.0f} µs")
    server.shutdown()


if __name__ == "__main__":
    main()
