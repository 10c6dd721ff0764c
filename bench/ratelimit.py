"""Micro-bench of one limiter call: memory vs Redis, one tier and two tiers, p50/p99.

    .venv/bin/python bench/ratelimit.py [--n 5000] [--redis redis://127.0.0.1:6379/0]

Sequential calls (latency, not throughput) on budgets too large to run out. Redis keys go
under a throwaway prefix and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import redis

from engine.model import Tier
from gateway.ratelimit import Limiter, MemoryLimiter, RedisLimiter

ONE = (Tier("tier.reads", "reads", 10**9, 3600),)
TWO = (*ONE, Tier("tier.tool", "omega.query", 10**9, 60))


async def measure(limiter: Limiter, tiers: tuple[Tier, ...], n: int) -> list[float]:
    for _ in range(min(n, 200)):  # warm up: connections, script cache
        await limiter.hit_all("bench", "p", tiers)
    samples = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        await limiter.hit_all(f"user{i % 100}", "p", tiers)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return samples


def report(name: str, us: list[float]) -> None:
    q = statistics.quantiles(us, n=100)
    print(f"{name:<22} p50 {q[49]:8.1f} µs   p99 {q[98]:8.1f} µs   (n={len(us)})")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = ap.parse_args()

    mem = MemoryLimiter()
    report("memory, 1 tier", await measure(mem, ONE, args.n))
    report("memory, 2 tiers", await measure(mem, TWO, args.n))

    prefix = f"opsgate:rl:bench:{uuid.uuid4().hex[:8]}"
    rl = RedisLimiter(args.redis, prefix=prefix, timeout_s=1.0)
    health = await rl.health()
    if not health["ok"]:
        print(f"redis: skipped ({health['error']})")
        return
    try:
        report("redis, 1 tier", await measure(rl, ONE, args.n))
        report("redis, 2 tiers", await measure(rl, TWO, args.n))
    finally:
        await rl.close()
        r = redis.Redis.from_url(args.redis)
        for k in r.scan_iter(match=f"{prefix}:*", count=1000):
            r.delete(k)
        r.close()


if __name__ == "__main__":
    asyncio.run(main())
