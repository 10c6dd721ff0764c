"""`opsgate serve --workers N`: real OS processes on one socket, one Redis budget, one scrape.

- Two workers share one rate limit exactly: a tier of LIMIT raced from two client processes over
  many connections admits exactly LIMIT; the audit trail and the metrics agree.
- Calls spread over both workers show up in every scrape's totals, whichever worker answers it.
- A worker killed with -9 is replaced; its counts stay in the totals; Ctrl-C stops every process.
- SIGHUP to the supervisor, and a reload asked over HTTP of one worker, reach every worker.
- A worker that cannot start stops the gateway (exit 1); the memory limiter is refused (exit 2).

Each fleet is `python -m gateway.cli serve --workers 2` in a process group of its own (as a
terminal job). Calls are raw stateless MCP requests (protocol 2026-07-28), each on a new
connection, so the kernel spreads them over the workers. Redis tests skip when Redis is down,
except under CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import GatewayConfig
from gateway.serve import demo_user_id, mint_token, signing_key
from otel.events import SqliteEventStore
from tests.conftest import POLICIES, ROOT
from tests.harness import GatewayProcess, free_port, serving_process

pytestmark = pytest.mark.anyio

ISSUER = GatewayConfig().auth_issuer
LIMIT = 30
CLIENTS = 2  # client processes
CALLS_PER_CLIENT = 40
CONCURRENCY = 10  # connections at once per client process
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
           "MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/call"}


# -- plumbing --------------------------------------------------------------------------------------


def copy_policies(dst: Path, *, viewer_reads: str = f"{LIMIT}/hour") -> Path:
    import shutil

    shutil.copytree(POLICIES, dst, ignore=shutil.ignore_patterns("tests"))
    tiers = dst / "tiers" / "rate-tiers.cedar"
    old = '@id("tier.viewer.reads")\n@limit("100/hour")'
    assert tiers.read_text().count(old) == 1, "the viewer's reads tier changed shape; update this test"
    tiers.write_text(tiers.read_text().replace(old, f'@id("tier.viewer.reads")\n@limit("{viewer_reads}")'))
    return dst


@contextlib.contextmanager
def fleet(tmp: Path, policies: Path, state: Path, redis_url: str, workers: int = 2) -> Iterator[GatewayProcess]:
    port = free_port()
    argv = ["gateway.cli", "serve", "--workers", str(workers), "--port", str(port), "--policies", str(policies),
            "--state-dir", str(state), "--limiter", "redis", "--redis-url", redis_url]
    # Two interpreters importing the gateway at once on a shared two-core machine: give them time.
    with serving_process(argv, port, tmp / "fleet.log", "fleet", own_group=True, start_s=120) as gw:
        yield gw


def worker_pids(supervisor: int) -> set[int]:
    pids = set()
    for child in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split():
        with contextlib.suppress(FileNotFoundError):
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():  # not the resource tracker
                pids.add(int(child))
    return pids


def calls_by_pid(state: Path) -> dict[int, float]:
    """Each process's own count of tool calls, from its multiprocess file (what a scrape sums)."""
    (directory,) = [d for d in (state / "metrics").iterdir() if d.is_dir()]
    counts = {}
    for f in directory.glob("counter_*.db"):
        values = MmapedDict.read_all_values_from_file(str(f))
        counts[int(f.stem.split("_")[1])] = sum(v for key, v, _, _ in values
                                                if json.loads(key)[1] == "opsgate_tool_calls_total")
    return counts


def scrape(url: str, token: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls)


async def raw_calls(url: str, token: str, n: int, concurrency: int, tool: str = "echo.ping") -> list[str]:
    """`n` stateless tools/call requests, `concurrency` at once, each on a new connection: each
    outcome as "OK" or the gateway's error code."""
    outcomes: list[str] = []
    left = iter(range(n))
    limits = httpx.Limits(max_keepalive_connections=0)  # a new connection per call: the kernel picks a worker

    async def one(http: httpx.AsyncClient, i: int) -> str:
        body = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
            "name": tool, "arguments": {"message": f"m{i}"}, "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}}}}
        r = await http.post(url + "/mcp", json=body, headers={**HEADERS, "Mcp-Name": tool,
                                                               "Authorization": f"Bearer {token}"})
        answer = r.json()
        if "error" in answer:
            return str(answer["error"]["data"]["code"])
        assert not answer["result"].get("isError"), answer
        return "OK"

    async def lane(http: httpx.AsyncClient) -> None:
        for i in left:
            outcomes.append(await one(http, i))

    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        await asyncio.gather(*(lane(http) for _ in range(concurrency)))
    return outcomes


def _client_process(url: str, token: str, start: Any, results: Any) -> None:
    """One racing client process: waits at the barrier with the others, then calls."""
    start.wait()
    results.put(asyncio.run(raw_calls(url, token, CALLS_PER_CLIENT, CONCURRENCY)))


def race(url: str, token: str) -> list[str]:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(CLIENTS + 1), ctx.Queue()
    procs = [ctx.Process(target=_client_process, args=(url, token, start, results)) for _ in range(CLIENTS)]
    for p in procs:
        p.start()
    start.wait(60)  # every client is up: they go together
    outcomes = [code for _ in procs for code in results.get(timeout=120)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return outcomes


def stop_like_ctrl_c(gw: GatewayProcess) -> tuple[int, set[int]]:
    """SIGINT to the whole process group, as a terminal's Ctrl-C; the supervisor's exit code and
    the worker pids it had."""
    pids = worker_pids(gw.proc.pid)
    os.killpg(gw.proc.pid, signal.SIGINT)
    return gw.proc.wait(60), pids


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_until(predicate: Any, what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        time.sleep(0.05)


# -- refusals at start ------------------------------------------------------------------------------


def test_workers_with_the_memory_limiter_are_refused(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--workers", "2", "--port", "0",
                           "--state-dir", str(tmp_path / "state")], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    assert 'needs limiter = "redis"' in done.stderr and "every worker would admit the whole limit" in done.stderr


def test_a_worker_that_cannot_start_stops_the_gateway(tmp_path: Path) -> None:
    policies = copy_policies(tmp_path / "policies")
    (policies / "broken.cedar").write_text('@id("broken")\npermit (principal, action\n')
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "serve", "--workers", "2", "--port", "0",
                           "--policies", str(policies), "--state-dir", str(tmp_path / "state"), "--limiter", "redis",
                           "--redis-url", DEAD_REDIS_URL], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "before it served; stopping the gateway" in done.stderr, done.stderr


# -- one limit, one scrape -------------------------------------------------------------------------


async def test_two_workers_share_one_limit_exactly_and_every_scrape_counts_both(tmp_path: Path,
                                                                              redis_url: str) -> None:
    policies, state = copy_policies(tmp_path / "policies"), tmp_path / "state"
    secret = signing_key(GatewayConfig(state_dir=str(state)))
    user = str(uuid.uuid4())  # a budget no earlier run has touched
    viewer = mint_token(secret, issuer=ISSUER, user_id=user, role="ops_viewer")
    admin = mint_token(secret, issuer=ISSUER, user_id=demo_user_id("ops_admin"), role="ops_admin")
    with fleet(tmp_path, policies, state, redis_url) as gw:
        outcomes = race(gw.url, viewer)
        assert sorted(set(outcomes)) == ["OK", "RATE_LIMIT"], set(outcomes)
        assert outcomes.count("OK") == LIMIT
        assert outcomes.count("RATE_LIMIT") == CLIENTS * CALLS_PER_CLIENT - LIMIT
        # Both workers served some of them. Should the kernel have handed every connection to one
        # worker, untiered admin calls go on until both have counted (no tier: the limit is untouched).
        extra = 0
        while len([n for n in calls_by_pid(state).values() if n > 0]) < 2 and extra < 400:
            extra += len(await raw_calls(gw.url, admin, 20, 10))
        by_pid = calls_by_pid(state)
        assert len([n for n in by_pid.values() if n > 0]) == 2, by_pid
        assert sum(by_pid.values()) == CLIENTS * CALLS_PER_CLIENT + extra

        for _ in range(6):  # whichever worker answers the scrape, the totals are the fleet's
            s = scrape(gw.url, admin)
            assert total(s, "opsgate_tool_calls_total", tool="echo.ping", status="ok") == LIMIT + extra
            assert total(s, "opsgate_tool_calls_total", tool="echo.ping", status="rate_limited") == \
                CLIENTS * CALLS_PER_CLIENT - LIMIT
            assert total(s, "opsgate_rate_limit_refusals_total", bucket="reads", reason="limit") == \
                CLIENTS * CALLS_PER_CLIENT - LIMIT
            assert total(s, "opsgate_tool_call_duration_seconds_count", provider="echo") == \
                CLIENTS * CALLS_PER_CLIENT + extra
            assert total(s, "opsgate_rate_limiter_up", backend="redis") == 1
        code, _ = stop_like_ctrl_c(gw)
        assert code == 0, gw.log_tail()

    # The audit trail, shared by both workers, agrees call for call.
    store = SqliteEventStore(state / "events.db")
    try:
        rows = await store.query(caller_id=user, limit=1000)
    finally:
        await store.close()
    statuses = [r.result["status"] for r in rows]
    assert len(rows) == CLIENTS * CALLS_PER_CLIENT
    assert statuses.count("ok") == LIMIT and statuses.count("rate_limited") == CLIENTS * CALLS_PER_CLIENT - LIMIT


# -- a worker dies; Ctrl-C ----------------------------------------------------------------------------


async def test_a_killed_worker_is_replaced_and_its_counts_stay(tmp_path: Path, redis_url: str) -> None:
    policies, state = copy_policies(tmp_path / "policies"), tmp_path / "state"
    secret = signing_key(GatewayConfig(state_dir=str(state)))
    admin = mint_token(secret, issuer=ISSUER, user_id=demo_user_id("ops_admin"), role="ops_admin")
    with fleet(tmp_path, policies, state, redis_url) as gw:
        supervisor = gw.proc.pid
        assert await raw_calls(gw.url, admin, 20, 5) == ["OK"] * 20
        wait_until(lambda: len(worker_pids(supervisor)) == 2, "two workers")
        counted = {pid: n for pid, n in calls_by_pid(state).items() if n > 0 and pid in worker_pids(supervisor)}
        victim = max(counted, key=counted.__getitem__)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: victim not in worker_pids(supervisor) and len(worker_pids(supervisor)) == 2,
                   "a new worker in place of the killed one")
        assert gw.proc.poll() is None, gw.log_tail()
        assert await raw_calls(gw.url, admin, 20, 5) == ["OK"] * 20  # the gateway kept serving

        s = scrape(gw.url, admin)
        assert total(s, "opsgate_tool_calls_total", status="ok") == 40  # the dead worker's 20-odd included
        assert total(s, "opsgate_worker_restarts_total") == 1
        directory = next(d for d in (state / "metrics").iterdir() if d.is_dir())
        assert not list(directory.glob(f"gauge_live*_{victim}.db"))  # its live gauges are gone
        assert "ended with signal 9; starting a new one" in gw.log_tail()

        code, pids = stop_like_ctrl_c(gw)
        assert code == 0, gw.log_tail()
        wait_until(lambda: all(gone(pid) for pid in pids), "every worker stopped")


# -- reloads reach every worker --------------------------------------------------------------------


async def test_sighup_and_an_http_reload_reach_every_worker(tmp_path: Path, redis_url: str) -> None:
    policies, state = copy_policies(tmp_path / "policies"), tmp_path / "state"
    secret = signing_key(GatewayConfig(state_dir=str(state)))
    admin = mint_token(secret, issuer=ISSUER, user_id=demo_user_id("ops_admin"), role="ops_admin")
    with fleet(tmp_path, policies, state, redis_url) as gw:

        def revisions() -> dict[str, float]:
            s = scrape(gw.url, admin)
            return {dict(ls)["revision"]: v for (n, ls), v in s.items() if n == "opsgate_policy_bundle_info"}

        wait_until(lambda: len(worker_pids(gw.proc.pid)) == 2 and len(revisions()) == 1, "two workers")
        (old,) = revisions()
        assert await raw_calls(gw.url, admin, 10, 5) == ["OK"] * 10

        lockdown = policies / "lockdown.cedar"
        lockdown.write_text('@id("lockdown")\nforbid (principal, action == Ops::Action::"echo.ping", resource);\n')
        gw.proc.send_signal(signal.SIGHUP)
        # livemax over live workers: the old revision reads 0 only once no worker has it in force.
        wait_until(lambda: revisions().get(old) == 0 and len(revisions()) == 2, "every worker on the new bundle")
        (locked,) = [r for r, v in revisions().items() if v == 1]
        assert await raw_calls(gw.url, admin, 20, 10) == ["FORBIDDEN"] * 20

        lockdown.unlink()
        r = httpx.post(gw.url + "/v1/policy/reload", headers={"Authorization": f"Bearer {admin}"}, timeout=60)
        assert r.status_code == 200 and r.json()["revision"] == old  # one worker answered ...
        wait_until(lambda: revisions().get(locked) == 0, "the other worker following the HTTP reload")
        assert await raw_calls(gw.url, admin, 20, 10) == ["OK"] * 20  # ... and every worker has it
        assert gw.proc.poll() is None
