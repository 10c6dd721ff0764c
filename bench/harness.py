"""What the gateway benchmarks share: gateway processes on loopback, one token they all accept,
real mcp client sessions, paired sampling at concurrency 1, CPU time per process, percentiles.

Paired sampling: one call to each server in turn (the order rotating), so the i-th samples of
every server share this shared machine's mood of that moment; the median of the per-pair
differences estimates what one server adds over another far more steadily than a difference
of two medians taken minutes apart. CPU time per call (all threads of the server process) is
not inflated by descheduling, and is reported beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_policies(tmp: Path) -> Path:
    """The canonical bundle, with the viewer's tier kept (the limiter runs on every call) but made
    too large to trip."""
    policies = tmp / "policies"
    shutil.copytree(ROOT / "policies", policies, ignore=shutil.ignore_patterns("tests"))
    tiers = policies / "tiers" / "rate-tiers.cedar"
    tiers.write_text(re.sub(r'@limit\("100/hour"\)', '@limit("1000000000/hour")', tiers.read_text()))
    return policies


def shared_token(states: Sequence[Path]) -> str:
    """One development signing key in every state dir's vault, and a viewer token signed by it."""
    from gateway.serve import DEV_SECRET, demo_user_id, mint_token
    from providers.sdk.vault import EmbeddedVault, get_or_create

    secret = "bench-" + secrets.token_hex(24)  # pragma: allowlist secret

    async def share(state: Path) -> None:
        vault = EmbeddedVault(state / "vault")
        try:
            await get_or_create(vault, DEV_SECRET, lambda: secret)
        finally:
            await vault.close()

    for state in states:
        asyncio.run(share(state))
    return mint_token(secret.encode(), issuer="opsgate-dev", user_id=demo_user_id("ops_viewer"), role="ops_viewer")


def start(module: str, mode: str, *, policies: Path, state: Path,
          extra: Sequence[str] = ()) -> tuple[subprocess.Popen[bytes], str]:
    """`python -m <module> --serve <mode> --port P --policies ... --state-dir ... <extra>`, once it listens."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", module, "--serve", mode, "--port", str(port),
                             "--policies", str(policies), "--state-dir", str(state), *extra],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    # A fleet listens before its workers serve: it says when they all do (bench/gateway_server.py).
    serving = state / "serving" if "--workers" in extra else None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            if serving is None or serving.exists():
                return proc, f"http://127.0.0.1:{port}/mcp"
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{module} {mode} server did not start")


def stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(10)


@dataclass(frozen=True)
class Servers:
    token: str  # a viewer token every server accepts
    urls: dict[str, str]  # mode -> MCP endpoint
    pids: dict[str, int]


@contextlib.contextmanager
def servers(module: str, modes: Sequence[str], tmp: Path, extra: Sequence[str] = ()) -> Iterator[Servers]:
    """One `start(module, mode)` server per mode, on the bench bundle, each with its own state dir
    sharing one signing key; stopped on exit. `extra`: more arguments for every server."""
    policies = bench_policies(tmp)
    tag = "-".join(a.strip("-") for a in extra)
    states = {mode: tmp / f"state-{mode}{'-' + tag if tag else ''}" for mode in modes}
    token = shared_token(list(states.values()))
    started: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    try:
        for mode in modes:
            started[mode] = start(module, mode, policies=policies, state=states[mode], extra=extra)
        yield Servers(token, {m: url for m, (_, url) in started.items()},
                      {m: proc.pid for m, (proc, _) in started.items()})
    finally:
        stop([proc for proc, _ in started.values()])


def server(app: Any, port: int) -> Any:
    """The uvicorn.Server every bench server runs (one process, or each worker of a fleet)."""
    import logging

    import uvicorn

    logging.getLogger("mcp").setLevel(logging.WARNING)
    return uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", loop="uvloop",
                                         http="httptools"))


def serve_forever(app: Any, port: int) -> None:
    server(app, port).run()


async def answered(call: Awaitable[T], unavailable: list[str] | None) -> T | None:
    """The call's result; with `unavailable`, None for a call the gateway refused because its rate
    limiter did not answer in time (the limiter fails closed), the reason listed there."""
    from mcp.shared.exceptions import MCPError

    try:
        return await call
    except MCPError as e:
        data = e.error.data if isinstance(e.error.data, dict) else {}
        if unavailable is None or not data.get("limiter_error"):
            raise
        unavailable.append(data["limiter_error"])
        return None


@contextlib.asynccontextmanager
async def session(url: str, token: str, unavailable: list[str] | None = None) -> AsyncIterator[Any]:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with http, Client(streamable_http_client(url, http_client=http), mode="auto") as c:
        for _ in range(3):
            await answered(c.call_tool("echo.ping", {"message": "warm"}), unavailable)
        yield c


class Caller:
    """A client session's calls, each with a message it has not sent before: no cache may answer
    a call from an identical earlier one."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.n = 0

    async def timed(self) -> float:
        self.n += 1
        t = time.perf_counter_ns()
        await self.client.call_tool("echo.ping", {"message": f"m{self.n}"})
        return (time.perf_counter_ns() - t) / 1e6


def cpu_ms(pid: int) -> float:
    """CPU time (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


async def paired(urls: dict[str, str], pids: dict[str, int], token: str, n: int,
                 cpu: dict[str, float]) -> dict[str, list[float]]:
    """Concurrency 1: one call to each server in turn, the order rotating, n times. Adds each
    server's CPU time over the n calls to `cpu`."""
    modes = list(urls)
    lat: dict[str, list[float]] = {m: [] for m in modes}
    async with contextlib.AsyncExitStack() as stack:
        callers = {m: Caller(await stack.enter_async_context(session(urls[m], token))) for m in modes}
        before = {m: cpu_ms(pids[m]) for m in modes}
        for i in range(n):
            for mode in modes[i % len(modes):] + modes[:i % len(modes)]:
                lat[mode].append(await callers[mode].timed())
        for m in modes:
            cpu[m] += cpu_ms(pids[m]) - before[m]
    return lat


async def loaded(url: str, token: str, n: int, concurrency: int,
                 unavailable: list[str] | None = None) -> tuple[list[float], float]:
    """n calls from `concurrency` sessions at once: the latencies of those answered, and answered
    calls/s. With `unavailable`, a call the gateway refused because its rate limiter did not answer
    in time is listed there instead of ending the run (the limiter fails closed)."""
    latencies: list[float] = []

    async def worker() -> None:
        async with session(url, token, unavailable) as c:
            caller = Caller(c)
            for _ in range(n // concurrency):
                latency = await answered(caller.timed(), unavailable)
                if latency is not None:
                    latencies.append(latency)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, len(latencies) / (time.perf_counter() - start)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


def paired_added(xs: list[float], base: list[float]) -> float:
    """The median of the per-pair differences (see the module docstring)."""
    return median([a - b for a, b in zip(xs, base, strict=True)])


__all__ = ["Caller", "Servers", "bench_policies", "cpu_ms", "free_port", "loaded", "median", "paired", "paired_added",
           "pct", "serve_forever", "server", "servers", "session", "shared_token", "start", "stop"]
