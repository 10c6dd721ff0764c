"""Governance overhead: the same server and client with governance on (auth, decision, tier,
limiter) and off, calling a no-op tool over real HTTP with the real mcp client; and, apart,
what the durable audit store adds on top of governance.

    .venv/bin/python bench/gateway.py [--json] [--calls N] [--rounds R]

Each server runs in its own process (uvicorn, uvloop, httptools) so the client does not share
its GIL. Rounds alternate governed and bare so noise on this shared machine hits both.
Targets (issue 3): governance adds <= 0.5 ms at p50 over bare; governed throughput >= 70% of bare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.config import GatewayConfig  # noqa: E402
from gateway.serve import demo_user_id, mint_token, signing_key  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(mode: str, policies: Path, state: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.gateway_server", "--mode", mode, "--port",
                             str(port), "--policies", str(policies), "--state-dir", str(state)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"http://127.0.0.1:{port}/mcp"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{mode} server did not start")


async def run(url: str, token: str, calls: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    per_worker = calls // concurrency

    async def worker() -> None:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
        async with http, Client(streamable_http_client(url, http_client=http), mode="auto") as c:
            await c.call_tool("echo.ping", {"message": "warm"})
            for _ in range(per_worker):
                t = time.perf_counter_ns()
                await c.call_tool("echo.ping", {"message": "x"})
                latencies.append((time.perf_counter_ns() - t) / 1e6)

    start_t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, len(latencies) / (time.perf_counter() - start_t)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--calls", type=int, default=1600)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="opsgate-bench-"))
    policies = tmp / "policies"
    shutil.copytree(ROOT / "policies", policies, ignore=shutil.ignore_patterns("tests"))
    tiers = policies / "tiers" / "rate-tiers.cedar"
    # Keep the viewer's tier (so the limiter runs on every call) but make it too large to trip.
    tiers.write_text(re.sub(r'@limit\("100/hour"\)', '@limit("1000000000/hour")', tiers.read_text()))
    state = tmp / "state"
    secret = signing_key(GatewayConfig(state_dir=str(state)))
    token = mint_token(secret, issuer="opsgate-dev", user_id=demo_user_id("ops_viewer"), role="ops_viewer")
    modes = ("governed", "audited", "bare")
    servers = {mode: start(mode, policies, state) for mode in modes}
    results: dict[str, dict[int, dict[str, list[float]]]] = {
        m: {c: {"lat": [], "tput": []} for c in (1, 32)} for m in servers}
    try:
        for _ in range(a.rounds):
            for conc in (1, 32):
                for mode in modes:
                    lat, tput = asyncio.run(run(servers[mode][1], token, a.calls // a.rounds, conc))
                    results[mode][conc]["lat"] += lat
                    results[mode][conc]["tput"].append(tput)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    def median(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    report: dict[str, Any] = {"calls_per_cell": a.calls, "rounds": a.rounds, "cells": []}
    for conc in (1, 32):
        g, b, au = results["governed"][conc], results["bare"][conc], results["audited"][conc]
        gp50, bp50, ap50 = pct(g["lat"], 0.5), pct(b["lat"], 0.5), pct(au["lat"], 0.5)
        gt, bt, at = median(g["tput"]), median(b["tput"]), median(au["tput"])
        report["cells"].append({
            "concurrency": conc, "governed_p50_ms": gp50, "bare_p50_ms": bp50, "added_p50_ms": gp50 - bp50,
            "governed_p99_ms": pct(g["lat"], 0.99), "bare_p99_ms": pct(b["lat"], 0.99),
            "p50_ratio": gp50 / bp50, "governed_calls_s": gt, "bare_calls_s": bt, "throughput_ratio": gt / bt,
            "audited_p50_ms": ap50, "audited_p99_ms": pct(au["lat"], 0.99), "audit_added_p50_ms": ap50 - gp50,
            "audited_calls_s": at})
    c1 = report["cells"][0]
    c32 = report["cells"][1]
    report["targets"] = {"added_p50_ms<=0.5 (c=1)": c1["added_p50_ms"] <= 0.5,
                         "throughput>=70% (c=32)": c32["throughput_ratio"] >= 0.7}
    if a.json:
        print(json.dumps(report))
        return
    print(f"{'conc':>4} {'gov p50':>9} {'bare p50':>9} {'added':>8} {'gov p99':>9} {'bare p99':>9} "
          f"{'p50 x':>6} {'gov c/s':>8} {'bare c/s':>8} {'tput %':>7}")
    for c in report["cells"]:
        print(f"{c['concurrency']:>4} {c['governed_p50_ms']:>7.2f}ms {c['bare_p50_ms']:>7.2f}ms "
              f"{c['added_p50_ms']:>6.2f}ms {c['governed_p99_ms']:>7.2f}ms {c['bare_p99_ms']:>7.2f}ms "
              f"{c['p50_ratio']:>6.2f} {c['governed_calls_s']:>8.0f} {c['bare_calls_s']:>8.0f} "
              f"{100 * c['throughput_ratio']:>6.1f}%")
    print("\nwith the SQLite audit store committing every call (issue 4's durability):")
    print(f"{'conc':>4} {'audited p50':>12} {'p99':>9} {'added vs governed':>18} {'calls/s':>8}")
    for c in report["cells"]:
        print(f"{c['concurrency']:>4} {c['audited_p50_ms']:>10.2f}ms {c['audited_p99_ms']:>7.2f}ms "
              f"{c['audit_added_p50_ms']:>16.2f}ms {c['audited_calls_s']:>8.0f}")
    for name, ok in report["targets"].items():
        print(f"target {name}: {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
