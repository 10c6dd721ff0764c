"""Rate limiting: GCRA arithmetic, exactness under concurrency, the shared Redis budget across
processes, failing closed, and the HTTP headers.

Redis tests use the real server at 127.0.0.1:6379 (db 0) with a unique key prefix per test.
They skip when it is unreachable, except under CI=true, where they fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis

from engine.model import Tier
from gateway.ratelimit import (
    Limiter,
    LimitKey,
    MemoryLimiter,
    Outcome,
    RedisLimiter,
    admitted,
    rate_limit_headers,
    retry_after_s,
)
from gateway.ratelimit.headers import sf_string
from gateway.ratelimit.redis import redis_key

ROOT = Path(__file__).resolve().parent.parent

S = 1_000_000  # µs
KEY = LimitKey("alice", "omega")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FakeClock:
    """Microseconds, moved by hand."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.us = int(start_s * S)

    def __call__(self) -> int:
        return self.us

    def at(self, seconds: float) -> None:
        self.us = int(seconds * S)

    def advance(self, seconds: float) -> None:
        self.us += round(seconds * S)


def tier(bucket: str = "reads", limit: int = 10, period_s: int = 60) -> Tier:
    return Tier(policy_id=f"tier.{bucket}", bucket=bucket, limit=limit, period_s=period_s)


async def burst(limiter: Limiter, n: int, t: Tier, key: LimitKey = KEY) -> list[Outcome]:
    return [await limiter.hit(key, t) for _ in range(n)]


# --- Redis plumbing ------------------------------------------------------------------------



@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    p = f"opsgate:rl:test:{uuid.uuid4().hex[:12]}"
    yield p
    r = redis.Redis.from_url(redis_url)
    for k in r.scan_iter(match=f"{p}:*", count=1000):
        r.delete(k)
    r.close()


@pytest.fixture
async def rlimiter(redis_url: str, prefix: str) -> AsyncIterator[RedisLimiter]:
    lim = RedisLimiter(redis_url, prefix=prefix, timeout_s=2.0)
    yield lim
    await lim.close()


@pytest.fixture
async def sync_redis(redis_url: str) -> AsyncIterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    yield r
    r.close()


@pytest.fixture(params=["memory", "redis"])
async def any_limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    """Semantics both backends must share (without a fake clock: periods are long)."""
    if request.param == "memory":
        yield MemoryLimiter()
        return
    url = request.getfixturevalue("redis_url")
    lim = RedisLimiter(url, prefix=request.getfixturevalue("prefix"), timeout_s=2.0)
    yield lim
    await lim.close()


pytestmark = pytest.mark.anyio


# --- GCRA arithmetic (memory limiter, injected clock) ----------------------------------------


async def test_burst_is_exactly_the_limit_then_exact_retry_after() -> None:
    clock = FakeClock()
    lim = MemoryLimiter(clock=clock)
    t = tier(limit=10, period_s=60)  # T = 6 s
    outs = await burst(lim, 10, t)
    assert all(o.allowed for o in outs)
    assert [o.remaining for o in outs] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
    assert [o.reset_s for o in outs] == [6, 12, 18, 24, 30, 36, 42, 48, 54, 60]
    assert all(o.retry_after_s == 0 for o in outs)

    denied = await lim.hit(KEY, t)
    assert not denied.allowed
    assert (denied.remaining, denied.retry_after_s, denied.reset_s, denied.error) == (0, 6, 60, None)

    clock.advance(5.9)
    denied = await lim.hit(KEY, t)
    assert not denied.allowed and denied.retry_after_s == 1  # 0.1 s rounds up, never 0
    clock.advance(0.1)  # exactly T after the burst
    assert (await lim.hit(KEY, t)).allowed
    assert not (await lim.hit(KEY, t)).allowed

    clock.advance(60)  # idle a full period: full budget again
    assert sum(o.allowed for o in await burst(lim, 12, t)) == 10


async def test_no_double_burst_at_a_window_edge() -> None:
    clock = FakeClock()
    lim = MemoryLimiter(clock=clock)
    t = tier(limit=10, period_s=60)
    clock.at(59)
    assert sum(o.allowed for o in await burst(lim, 10, t)) == 10
    clock.at(61)  # a fixed window would have reset at t=60 and admitted 10 more
    assert sum(o.allowed for o in await burst(lim, 10, t)) == 0
    clock.at(65)
    assert sum(o.allowed for o in await burst(lim, 10, t)) == 1
    clock.at(119)  # one more every 6 s: 71, 77, ..., 113
    assert sum(o.allowed for o in await burst(lim, 10, t)) == 9


async def test_gcra_bound_holds_for_any_arrival_pattern() -> None:
    """Admitted calls in any span of D seconds <= limit + floor(D / T); long-run rate limit/period."""
    rng = random.Random(7)
    clock = FakeClock(0)
    lim = MemoryLimiter(clock=clock)
    t = tier(limit=7, period_s=60)
    interval = 60 * S // 7
    admitted_at: list[int] = []
    for _ in range(3000):
        clock.advance(rng.choice([0, 0, 0, 0.001, 0.5, 3, 9]))
        if (await lim.hit(KEY, t)).allowed:
            admitted_at.append(clock.us)
    for i in range(len(admitted_at)):
        for j in range(i, min(i + 40, len(admitted_at))):
            assert j - i + 1 <= 7 + (admitted_at[j] - admitted_at[i]) // interval
    span = admitted_at[-1] - admitted_at[0]
    assert len(admitted_at) <= 7 + span // interval


async def test_odd_limits_burst_exactly() -> None:
    # Limits that do not divide the period: the burst is still exactly `limit`.
    for limit, period in [(7, 60), (3, 1), (999, 1), (100_000, 1), (13, 86_400)]:
        lim = MemoryLimiter(clock=FakeClock())
        outs = await burst(lim, limit + 2, tier(limit=limit, period_s=period))
        assert sum(o.allowed for o in outs) == limit, (limit, period)


async def test_hit_all_is_all_or_nothing_in_memory() -> None:
    lim = MemoryLimiter(clock=FakeClock())
    reads, per_tool = tier("reads", 5, 60), tier("omega.query", 2, 60)
    for _ in range(2):
        assert admitted(await lim.hit_all("alice", "omega", [reads, per_tool]))
    outs = await lim.hit_all("alice", "omega", [reads, per_tool])
    assert not admitted(outs)
    assert outs[0].allowed and outs[0].remaining == 3  # had room, was not charged
    assert not outs[1].allowed and outs[1].retry_after_s == 30
    # "reads" really was not charged: three more calls fit it alone.
    assert sum(o.allowed for o in await burst(lim, 5, reads, LimitKey("alice", "omega"))) == 3


async def test_same_bucket_different_periods_are_two_budgets() -> None:
    lim = MemoryLimiter(clock=FakeClock())
    per_min, per_hour = tier("reads", 3, 60), tier("reads", 5, 3600)
    results = [admitted(await lim.hit_all("u", "p", [per_min, per_hour])) for _ in range(4)]
    assert results == [True, True, True, False]


async def test_limit_zero_and_cost_above_limit_always_deny() -> None:
    lim = MemoryLimiter(clock=FakeClock())
    zero = Tier(policy_id="tier.broken", bucket="reads", limit=0, period_s=1)  # what the engine emits
    out = await lim.hit(KEY, zero)
    assert not out.allowed and out.error and "allows no calls" in out.error and out.retry_after_s == 1
    out = await lim.hit(KEY, tier(limit=3), cost=4)
    assert not out.allowed and out.error and "exceeds" in out.error
    with pytest.raises(ValueError):
        await lim.hit(KEY, tier(), cost=0)
    assert await lim.hit_all("u", "p", []) == []


async def test_cost_charges_several_units() -> None:
    lim = MemoryLimiter(clock=FakeClock())
    t = tier(limit=10, period_s=60)
    assert (await lim.hit(KEY, t, cost=7)).remaining == 3
    out = await lim.hit(KEY, t, cost=4)
    assert not out.allowed and out.retry_after_s == 6 and out.remaining == 3


async def test_memory_is_bounded_by_live_keys() -> None:
    clock = FakeClock()
    lim = MemoryLimiter(clock=clock, sweep_at=100)
    t = tier(limit=5, period_s=10)
    for i in range(1000):
        await lim.hit(LimitKey(f"user{i}", "p"), t)
        clock.advance(0.1)  # each key is full again 2 s after its one call
    assert len(lim) <= 200
    assert (await lim.health())["ok"]


# --- exactness under concurrency -----------------------------------------------------------


async def test_memory_exact_under_200_concurrent_tasks() -> None:
    lim = MemoryLimiter()
    t = tier(limit=50, period_s=3600)
    outs = await asyncio.gather(*(lim.hit(KEY, t) for _ in range(200)))
    assert sum(o.allowed for o in outs) == 50


def test_memory_exact_across_threads() -> None:
    lim = MemoryLimiter()
    t = tier(limit=50, period_s=3600)
    counts: list[int] = []
    start = threading.Barrier(4)

    def worker() -> None:
        async def run() -> int:
            outs = await asyncio.gather(*(lim.hit(KEY, t) for _ in range(100)))
            return sum(o.allowed for o in outs)

        start.wait()
        counts.append(asyncio.run(run()))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(counts) == 50


# --- both backends -----------------------------------------------------------------------


async def test_both_backends_burst_then_deny(any_limiter: Limiter) -> None:
    t = tier(limit=4, period_s=60)  # T = 15 s
    outs = await burst(any_limiter, 6, t)
    assert [o.allowed for o in outs] == [True] * 4 + [False] * 2
    assert [o.remaining for o in outs] == [3, 2, 1, 0, 0, 0]
    assert outs[-1].retry_after_s == 15  # nowhere near a second has passed
    assert outs[-1].reset_s == 60


async def test_both_backends_all_or_nothing(any_limiter: Limiter) -> None:
    reads, per_tool = tier("reads", 5, 3600), tier("omega.query", 2, 3600)
    verdicts = [admitted(await any_limiter.hit_all("alice", "omega", [reads, per_tool])) for _ in range(4)]
    assert verdicts == [True, True, False, False]
    outs = await burst(any_limiter, 5, reads, LimitKey("alice", "omega"))
    assert sum(o.allowed for o in outs) == 3


async def test_both_backends_keys_cannot_collide(any_limiter: Limiter) -> None:
    t = tier("a:b", limit=1, period_s=3600)
    # Every pair below would share a key under naive "user:provider:bucket" joining.
    parties = [("a:b", "c", "d"), ("a", "b:c", "d"), ("a", "b", "c:d"), ("a:b:c", "", "d"),
               ("a}", "{b", "d"), ("a%3Ab", "c", "d"), ("a", "b}:{c", "d")]
    for user, provider, bucket in parties:
        out = await any_limiter.hit(LimitKey(user, provider), tier(bucket, limit=1, period_s=3600))
        assert out.allowed, (user, provider, bucket)
    assert (await any_limiter.hit(LimitKey("x", "y"), t)).allowed
    assert not (await any_limiter.hit(LimitKey("x", "y"), t)).allowed


def test_redis_keys_are_escaped() -> None:
    assert redis_key("opsgate:rl", "a:b", "c", tier("d")) == "opsgate:rl:{a%3Ab:c}:d:60"
    assert redis_key("opsgate:rl", "a", "b:c", tier("d")) == "opsgate:rl:{a:b%3Ac}:d:60"
    assert redis_key("opsgate:rl", "}{", "%", tier("x y")) == "opsgate:rl:{%7D%7B:%25}:x%20y:60"


# --- Redis: the shared budget ---------------------------------------------------------------

WORKER = """
import asyncio, json, sys, time
from engine.model import Tier
from gateway.ratelimit import LimitKey, RedisLimiter

async def main(url, prefix, tasks):
    lim = RedisLimiter(url, prefix=prefix, timeout_s=10.0)
    tier = Tier(policy_id="tier.shared", bucket="shared", limit=100, period_s=3600)
    await lim.health()  # connect before the start signal
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.time()
    outs = await asyncio.gather(*(lim.hit(LimitKey("u", "p"), tier) for _ in range(tasks)))
    ended = time.time()
    errors = sorted({o.error for o in outs if o.error})
    print(json.dumps({"admitted": sum(o.allowed for o in outs), "denied": sum(not o.allowed for o in outs),
                      "errors": errors, "span": [started, ended]}), flush=True)
    await lim.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def test_two_processes_share_one_budget_exactly(redis_url: str, prefix: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-c", WORKER, redis_url, prefix, "300"]
    procs = [subprocess.Popen(argv, cwd=ROOT, env=env, text=True, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        for p in procs:  # both are connected and waiting: release them together
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(r["errors"] == [] for r in results), results
    assert sum(r["admitted"] for r in results) == 100, results
    assert sum(r["denied"] for r in results) == 500, results
    a, b = (r["span"] for r in results)
    assert min(a[1], b[1]) > max(a[0], b[0]), "the two processes did not hammer at the same time"


async def test_redis_exact_under_concurrency_in_one_process(rlimiter: RedisLimiter) -> None:
    t = tier(limit=50, period_s=3600)
    outs = await asyncio.gather(*(rlimiter.hit(KEY, t) for _ in range(200)))
    assert sum(o.allowed for o in outs) == 50


async def test_redis_ttl_is_time_until_full(rlimiter: RedisLimiter, sync_redis: redis.Redis) -> None:
    t = tier(limit=10, period_s=60)
    await rlimiter.hit(KEY, t)
    ttl = sync_redis.pttl(rlimiter.key(KEY.user, KEY.provider, t))
    assert 5_000 < ttl <= 6_000  # one call used T = 6 s of the period
    await burst(rlimiter, 9, t)
    ttl = sync_redis.pttl(rlimiter.key(KEY.user, KEY.provider, t))
    assert 59_000 < ttl <= 60_000
    await rlimiter.hit(KEY, t)  # a denial writes nothing
    assert sync_redis.pttl(rlimiter.key(KEY.user, KEY.provider, t)) <= ttl


async def test_redis_uses_the_server_clock(rlimiter: RedisLimiter, sync_redis: redis.Redis) -> None:
    t = tier(limit=4, period_s=60)
    await burst(rlimiter, 4, t)
    secs, micros = sync_redis.time()
    server_now = secs * S + micros
    tat = int(sync_redis.get(rlimiter.key(KEY.user, KEY.provider, t)))
    # The stored TAT is the server's "now" plus the 60 s used, to within this test's runtime.
    assert 59 * S < tat - server_now <= 60 * S
    # Denied: retry after = TAT + T - capacity - now, now being the server's at the call.
    secs, micros = sync_redis.time()
    before = secs * S + micros
    denied = await rlimiter.hit(KEY, t)
    secs, micros = sync_redis.time()
    after = secs * S + micros
    ceil_s = lambda us: -(-us // S)  # noqa: E731
    assert ceil_s(tat - 45 * S - after) <= denied.retry_after_s <= ceil_s(tat - 45 * S - before)


async def test_redis_falls_back_to_eval_on_noscript(rlimiter: RedisLimiter) -> None:
    rlimiter._sha = "0" * 40  # as if Redis had restarted and lost its script cache
    outs = await burst(rlimiter, 3, tier(limit=2, period_s=60))
    assert [o.allowed for o in outs] == [True, True, False]


# --- Redis unreachable ----------------------------------------------------------------------

DEAD = "redis://127.0.0.1:1/0"  # nothing listens on port 1


async def test_unreachable_redis_fails_closed_with_a_clear_error() -> None:
    lim = RedisLimiter(DEAD, timeout_s=0.5)
    try:
        started = time.monotonic()
        out = await lim.hit(KEY, tier())
        assert time.monotonic() - started < 1.5
        assert not out.allowed and not out.failed_open
        assert out.error is not None and out.error.startswith("rate limiter unavailable: ")
        assert out.unavailable and out.retry_after_s >= 1
        health = await lim.health()
        assert health["ok"] is False and health["error"].startswith("rate limiter unavailable: ")
        assert health["on_unavailable"] == "fail closed"
    finally:
        await lim.close()


async def test_unreachable_redis_fails_open_only_for_configured_buckets() -> None:
    lim = RedisLimiter(DEAD, fail_open_buckets=frozenset({"reads"}), timeout_s=0.5)
    try:
        out = await lim.hit(KEY, tier("reads"))
        assert out.allowed and out.failed_open and out.unavailable
        out = await lim.hit(KEY, tier("writes"))
        assert not out.allowed and not out.failed_open
        # One fail-closed bucket in the call denies it all.
        outs = await lim.hit_all("alice", "omega", [tier("reads"), tier("writes")])
        assert not admitted(outs) and not any(o.failed_open for o in outs)
        assert (await lim.health())["fail_open_buckets"] == ["reads"]
    finally:
        await lim.close()


async def test_silent_redis_times_out_and_fails_closed() -> None:
    """A server that accepts and never answers: the call is bounded by timeout_s."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    lim = RedisLimiter(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
    try:
        started = time.monotonic()
        out = await lim.hit(KEY, tier())
        assert time.monotonic() - started < 1.0
        assert not out.allowed and out.error and "Timeout" in out.error
        assert (await lim.health())["ok"] is False
    finally:
        await lim.close()
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


class Proxy:
    """A TCP relay to the real Redis that can be cut and restored on the same port."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()
        self.writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_redis_outage_and_recovery(redis_url: str, prefix: str) -> None:
    target = urlparse(redis_url)
    proxy = Proxy(target.hostname or "127.0.0.1", target.port or 6379)
    await proxy.start()
    lim = RedisLimiter(f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix, timeout_s=0.5)
    t = tier(limit=3, period_s=3600)
    try:
        assert (await lim.hit(KEY, t)).allowed
        assert (await lim.health())["ok"]

        await proxy.stop()
        out = await lim.hit(KEY, t)
        assert not out.allowed and out.unavailable
        health = await lim.health()
        assert health["ok"] is False and health["error"].startswith("rate limiter unavailable")

        await proxy.start()  # same port
        assert (await lim.health())["ok"] is True
        # The budget survived the outage: one used before, two left, then denied.
        outs = await burst(lim, 3, t)
        assert [o.allowed for o in outs] == [True, True, False]
    finally:
        await lim.close()
        if proxy.server is not None and proxy.server.is_serving():
            await proxy.stop()


# --- headers -------------------------------------------------------------------------------


def out(bucket: str, *, allowed: bool = True, limit: int = 100, remaining: int = 50, reset_s: int = 30,
        retry: int = 0, period_s: int = 3600, error: str | None = None, failed_open: bool = False) -> Outcome:
    return Outcome(allowed, limit, remaining, reset_s, retry, bucket, period_s, error, failed_open)


def test_headers_one_allowed() -> None:
    assert rate_limit_headers([out("reads")]) == {
        "RateLimit-Policy": '"reads";q=100;w=3600',
        "RateLimit": '"reads";r=50;t=30',
    }


def test_headers_one_denied() -> None:
    denied = out("reads", allowed=False, remaining=0, reset_s=3600, retry=36)
    assert rate_limit_headers([denied]) == {
        "RateLimit-Policy": '"reads";q=100;w=3600',
        "RateLimit": '"reads";r=0;t=36',
        "Retry-After": "36",
    }


def test_headers_two_allowed() -> None:
    outs = [out("reads"), out("omega.query", limit=10, remaining=9, reset_s=6, period_s=60)]
    assert rate_limit_headers(outs) == {
        "RateLimit-Policy": '"reads";q=100;w=3600, "omega.query";q=10;w=60',
        "RateLimit": '"reads";r=50;t=30, "omega.query";r=9;t=6',
    }


def test_headers_two_denied_take_the_longest_retry() -> None:
    outs = [out("reads", allowed=False, remaining=0, reset_s=3600, retry=36),
            out("omega.query", allowed=False, limit=10, remaining=0, reset_s=60, retry=6, period_s=60)]
    assert rate_limit_headers(outs) == {
        "RateLimit-Policy": '"reads";q=100;w=3600, "omega.query";q=10;w=60',
        "RateLimit": '"reads";r=0;t=36, "omega.query";r=0;t=6',
        "Retry-After": "36",
    }
    assert retry_after_s(outs) == 36 and retry_after_s([out("reads")]) is None


def test_headers_one_denied_one_with_room() -> None:
    outs = [out("reads", remaining=3, reset_s=1440),
            out("omega.query", allowed=False, limit=2, remaining=0, reset_s=3600, retry=1800)]
    assert rate_limit_headers(outs) == {
        "RateLimit-Policy": '"reads";q=100;w=3600, "omega.query";q=2;w=3600',
        "RateLimit": '"reads";r=3;t=1440, "omega.query";r=0;t=1800',
        "Retry-After": "1800",
    }


def test_headers_when_the_backend_was_unavailable() -> None:
    err = "rate limiter unavailable: ConnectionError: refused"
    closed = out("reads", allowed=False, remaining=0, reset_s=0, retry=1, error=err)
    assert rate_limit_headers([closed]) == {"RateLimit-Policy": '"reads";q=100;w=3600', "Retry-After": "1"}
    opened = out("reads", remaining=0, reset_s=0, error=err, failed_open=True)
    assert rate_limit_headers([opened]) == {"RateLimit-Policy": '"reads";q=100;w=3600'}
    assert rate_limit_headers([]) == {}


def test_policy_names_are_valid_sf_strings() -> None:
    assert sf_string('a"b\\c') == '"a\\"b\\\\c"'
    assert sf_string("café\n") == '"caf%C3%A9%0A"'


def test_the_redis_timeout_is_a_setting(tmp_path: Path) -> None:
    """A saturated host needs more than the default 0.25 s: the setting reaches the limiter, and a
    timeout that could never succeed is refused with the key's path."""
    from gateway.config.loader import ConfigError, load
    from gateway.serve import build_services

    (tmp_path / "opsgate.toml").write_text('limiter = "redis"\nredis_timeout_s = 2.5\n'
                                           f'policies = "{ROOT / "policies"}"\nstate_dir = "state"\n')
    config = load(config_file=str(tmp_path / "opsgate.toml")).config
    services, _ = build_services(config)
    assert services.limiter.timeout_s == 2.5
    (tmp_path / "opsgate.toml").write_text("redis_timeout_s = 0\n")
    with pytest.raises(ConfigError) as refused:
        load(config_file=str(tmp_path / "opsgate.toml"))
    assert "redis_timeout_s" in str(refused.value)
