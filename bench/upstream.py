"""What governing an upstream MCP server costs: a no-op tool called directly on the upstream versus
through the governed gateway (authentication, decision, tier, limiter, audit row, the adapter's
pooled session), by the same `mcp` client.

    .venv/bin/python bench/upstream.py [--json] [--calls N] [--rounds R]

Streamable HTTP: the upstream is its own process (uvicorn, uvloop, httptools; stateless JSON
answers), and so is the gateway. Concurrency 1 is sampled in pairs, a call to each in turn
(bench/harness.py), so "paired added p50" is the median of per-pair differences; concurrency 16
measures throughput, the two alternating in blocks. The stdio upstream is reported too: the
same no-op server as a child of the client (direct) or of the gateway (through it).
Targets (issue 15): the gateway adds <= 1 ms at p50 over calling the upstream directly (c=1);
governed throughput >= 60% of direct (c=16).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import bench_policies, cpu_ms, median, paired_added, pct, shared_token, start, stop  # noqa: E402

LOADED = 16
MODES = ("governed", "direct")


def declare(policies: Path, name: str, decl: dict[str, Any], allow: list[str]) -> None:
    (policies / "upstreams").mkdir(exist_ok=True)
    (policies / "upstreams" / f"{name}.yaml").write_text(yaml.safe_dump(decl))
    if allow:
        allowlist = yaml.safe_load((policies / "provider-allowlist.yaml").read_text())
        allowlist[name] = allow
        (policies / "provider-allowlist.yaml").write_text(yaml.safe_dump(allowlist))


def pin(policies: Path, state: Path, name: str) -> None:
    from gateway.cli import main as opsgate

    if opsgate(["upstream", "pin", name, "--policies", str(policies), "--state-dir", str(state)]) != 0:
        raise RuntimeError(f"pinning {name} failed")


@contextlib.asynccontextmanager
async def client(target: Any, token: str) -> AsyncIterator[Any]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    if isinstance(target, str):
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
        async with http, Client(streamable_http_client(target, http_client=http), mode="auto") as c:
            yield c
    else:
        async with Client(target, mode="auto") as c:
            yield c


class Caller:
    def __init__(self, c: Any, tool: str) -> None:
        self.c, self.tool, self.n = c, tool, 0

    async def timed(self) -> float:
        self.n += 1
        t = time.perf_counter_ns()
        r = await self.c.call_tool(self.tool, {"message": f"m{self.n}"})
        assert not r.is_error, r
        return (time.perf_counter_ns() - t) / 1e6


async def paired(targets: dict[str, tuple[Any, str]], token: str, n: int, pids: dict[str, int],
                 cpu: dict[str, float]) -> dict[str, list[float]]:
    lat: dict[str, list[float]] = {m: [] for m in targets}
    async with contextlib.AsyncExitStack() as stack:
        callers = {}
        for m, (target, tool) in targets.items():
            callers[m] = Caller(await stack.enter_async_context(client(target, token)), tool)
            for _ in range(5):
                await callers[m].timed()  # warm: sessions open, listings cached
        before = {m: cpu_ms(pid) for m, pid in pids.items()}
        modes = list(targets)
        for i in range(n):
            for m in modes[i % 2:] + modes[:i % 2]:
                lat[m].append(await callers[m].timed())
        for m, pid in pids.items():
            cpu[m] += cpu_ms(pid) - before[m]
    return lat


async def loaded(target: Any, tool: str, token: str, n: int) -> tuple[list[float], float]:
    latencies: list[float] = []

    async def worker() -> None:
        async with client(target, token) as c:
            caller = Caller(c, tool)
            await caller.timed()
            for _ in range(n // LOADED):
                latencies.append(await caller.timed())

    t = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(LOADED)))
    return latencies, len(latencies) / (time.perf_counter() - t)


def cell(lat: dict[str, list[float]], cpu: dict[str, float] | None = None) -> dict[str, Any]:
    g, d = lat["governed"], lat["direct"]
    out = {"governed_p50_ms": pct(g, 0.5), "direct_p50_ms": pct(d, 0.5), "added_p50_ms": pct(g, 0.5) - pct(d, 0.5),
           "paired_added_p50_ms": paired_added(g, d), "governed_p99_ms": pct(g, 0.99), "direct_p99_ms": pct(d, 0.99)}
    if cpu is not None:
        out["gateway_cpu_ms_per_call"] = cpu["governed"] / len(g)
    return out


def measure(calls: int, rounds: int) -> dict[str, Any]:
    from mcp import StdioServerParameters

    tmp = Path(tempfile.mkdtemp(prefix="opsgate-bench-upstream-"))
    procs = []
    try:
        policies = bench_policies(tmp)
        up_proc, up_url = start("bench.upstream_server", "upstream", policies=policies, state=tmp / "unused")
        procs.append(up_proc)
        base = up_url.rsplit("/", 1)[0]
        up_url += "/"  # Starlette's mount answers /mcp with a redirect to /mcp/
        declare(policies, "up", {"transport": "http", "url": up_url, "pool": LOADED,
                                 "tools": {"noop": {"kind": "read"}}}, [base])
        declare(policies, "upio", {"transport": "stdio", "command": sys.executable, "cwd": str(ROOT),
                                   "args": ["-m", "bench.upstream_server", "--stdio"], "pool": 1,
                                   "tools": {"noop": {"kind": "read"}}}, [])
        states = {"http": tmp / "state-http", "stdio": tmp / "state-stdio"}
        token = shared_token(list(states.values()))
        pin(policies, states["http"], "up")
        pin(policies, states["http"], "upio")
        gw_proc, gw_url = start("bench.upstream_server", "gateway", policies=policies, state=states["http"])
        procs.append(gw_proc)

        http_lat: dict[str, list[float]] = {m: [] for m in MODES}
        cpu = {"governed": 0.0}
        tput: dict[str, list[float]] = {m: [] for m in MODES}
        targets = {"governed": (gw_url, "up.noop"), "direct": (up_url, "noop")}
        for r in range(rounds):
            for m, xs in asyncio.run(paired(targets, token, calls // rounds, {"governed": gw_proc.pid}, cpu)).items():
                http_lat[m] += xs
            for m in MODES[r % 2:] + MODES[:r % 2]:
                _, rate = asyncio.run(loaded(*targets[m], token, calls // rounds))
                tput[m].append(rate)
        stdio_lat: dict[str, list[float]] = {m: [] for m in MODES}
        child = StdioServerParameters(command=sys.executable, args=["-m", "bench.upstream_server", "--stdio"],
                                      cwd=str(ROOT))
        stdio_targets = {"governed": (gw_url, "upio.noop"), "direct": (child, "noop")}
        for m, xs in asyncio.run(paired(stdio_targets, token, calls // 2, {}, {})).items():
            stdio_lat[m] += xs
    finally:
        stop(procs)
        shutil.rmtree(tmp, ignore_errors=True)
    c1 = cell(http_lat, cpu)
    gt, dt = median(tput["governed"]), median(tput["direct"])
    c16 = {"governed_calls_s": gt, "direct_calls_s": dt, "throughput_ratio": gt / dt}
    return {"calls": calls, "rounds": rounds, "http_c1": c1, f"http_c{LOADED}": c16, "stdio_c1": cell(stdio_lat),
            "targets": {"the gateway adds <= 1 ms at p50 (paired, c=1)": c1["paired_added_p50_ms"] <= 1.0,
                        f"governed throughput >= 60% of direct (c={LOADED})": c16["throughput_ratio"] >= 0.6}}


def render(r: dict[str, Any]) -> str:
    c1, c16, s1 = r["http_c1"], r[f"http_c{LOADED}"], r["stdio_c1"]
    lines = ["| transport | c | governed p50 | direct p50 | added p50 | paired added | governed p99 | direct p99 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, c in (("streamable HTTP", c1), ("stdio", s1)):
        lines.append(f"| {name} | 1 | {c['governed_p50_ms']:.2f} ms | {c['direct_p50_ms']:.2f} ms | "
                     f"{c['added_p50_ms']:.2f} ms | {c['paired_added_p50_ms']:.2f} ms | "
                     f"{c['governed_p99_ms']:.2f} ms | {c['direct_p99_ms']:.2f} ms |")
    lines.append(f"\nstreamable HTTP, c={LOADED}: governed {c16['governed_calls_s']:.0f} calls/s, direct "
                 f"{c16['direct_calls_s']:.0f} calls/s ({c16['throughput_ratio']:.0%}); gateway CPU per call "
                 f"{c1['gateway_cpu_ms_per_call']:.2f} ms")
    lines += [f"{'met' if ok else 'NOT met'}: {name}" for name, ok in r["targets"].items()]
    return "\n".join(lines)


def main() -> None:
    import logging

    logging.getLogger("httpx2").setLevel(logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=1200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    result = measure(a.calls, a.rounds)
    print(json.dumps(result, indent=1) if a.json else render(result))


if __name__ == "__main__":
    main()
