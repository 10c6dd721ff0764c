"""The shared limiter: one budget for any number of gateway replicas, kept in Redis.

Why it is exact across replicas: every call is one Lua script that reads, decides and
writes all of the call's keys; Redis runs scripts one at a time. Why clocks do not matter:
the script reads the time with `redis.call('TIME')`, so the only clock is the server's.

Keys are `<prefix>:{<user>:<provider>}:<bucket>:<period_s>` with each component
percent-encoded (`:`, `{`, `}` and `%` included), so no user id or bucket can spell another
key. The braces are a Redis Cluster hash tag: all keys of one call share a slot, which a
multi-key script needs there. Each key expires when its bucket would be full again.

When Redis cannot be reached (refused, timed out, any Redis error) the call is denied with
`error="rate limiter unavailable: ..."`, unless every bucket involved is configured to fail
open. Nothing is retried: a retried script may already have charged.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from engine.model import Tier
from gateway.ratelimit.base import UNAVAILABLE, Gcra, Limiter, Outcome, check_cost, outcome

# KEYS: one per tier. ARGV: cost, then interval and capacity (µs) per key.
# Reply: {all_ok, now_us, tat_1, ..., tat_n} with each tat = max(stored, now) before this call.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local staged, order = {}, {}
local reply = {1, now}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i])
  local capacity = tonumber(ARGV[2 * i + 1])
  local tat = staged[key]
  if tat == nil then
    tat = tonumber(redis.call('GET', key) or '') or now
    order[#order + 1] = key
  end
  if tat < now then tat = now end
  reply[i + 2] = tat
  if tat + cost * interval - now > capacity then reply[1] = 0 end
  staged[key] = tat + cost * interval
end
if reply[1] == 1 then
  for _, key in ipairs(order) do
    local tat = staged[key]
    redis.call('SET', key, string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000))
  end
end
return reply
"""
GCRA_SHA = hashlib.sha1(GCRA_SCRIPT.encode()).hexdigest()


def _part(text: str) -> str:
    return quote(text, safe="")


def redis_key(prefix: str, user: str, provider: str, tier: Tier) -> str:
    """The key of one budget; injective in (user, provider, bucket, period)."""
    return f"{prefix}:{{{_part(user)}:{_part(provider)}}}:{_part(tier.bucket)}:{tier.period_s}"


class RedisLimiter(Limiter):
    """GCRA in Redis. Pass a URL (the limiter owns the client) or a `redis.asyncio.Redis`.

    A client passed in should not retry commands on its own: a retried script that had
    already run charges twice. One built from a URL has retries off, socket timeouts of
    `timeout_s` and a pool of `max_connections` that calls queue for. Every call, queueing
    included, is bounded by `timeout_s` as a whole.
    """

    name = "redis"

    def __init__(self, url_or_client: str | aioredis.Redis, *,
                 fail_open_buckets: frozenset[str] = frozenset(), timeout_s: float = 0.25,
                 prefix: str = "opsgate:rl", max_connections: int = 64) -> None:
        if isinstance(url_or_client, str):
            # A blocking pool: a burst of concurrent calls queues for a connection instead of
            # failing (the default pool raises past its size, which would fail calls closed).
            pool = aioredis.BlockingConnectionPool.from_url(
                url_or_client, max_connections=max_connections, timeout=timeout_s, socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
            self._client = aioredis.Redis.from_pool(pool)
            self._owns_client = True
        else:
            self._client = url_or_client
            self._owns_client = False
        self.fail_open_buckets = frozenset(fail_open_buckets)
        self.timeout_s = timeout_s
        self.prefix = prefix
        self._sha = GCRA_SHA

    def key(self, user: str, provider: str, tier: Tier) -> str:
        return redis_key(self.prefix, user, provider, tier)

    async def hit_all(
        self, user: str, provider: str, tiers: Sequence[Tier], *, cost: int = 1
    ) -> list[Outcome]:
        check_cost(cost)
        if not tiers:
            return []
        keys = [self.key(user, provider, t) for t in tiers]
        args: list[int] = [cost]
        for t in tiers:
            args.extend(Gcra.of(t))
        try:
            async with asyncio.timeout(self.timeout_s):
                reply = await self._run(keys, args)
        except (RedisError, OSError, TimeoutError) as exc:
            return self._unavailable(tiers, _describe(exc))
        ok, now, *tats = (int(x) for x in reply)
        return [outcome(t, tat, now, cost, charged=bool(ok)) for t, tat in zip(tiers, tats, strict=True)]

    async def _run(self, keys: list[str], args: list[int]) -> list[Any]:
        try:
            return await self._client.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:
            # Redis restarted or SCRIPT FLUSH: EVAL runs it and caches it again.
            return await self._client.eval(GCRA_SCRIPT, len(keys), *keys, *args)

    def _unavailable(self, tiers: Sequence[Tier], why: str) -> list[Outcome]:
        error = f"{UNAVAILABLE}: {why}"
        # All-or-nothing holds here too: one fail-closed bucket denies the whole call.
        if all(t.bucket in self.fail_open_buckets for t in tiers):
            return [Outcome(True, t.limit, 0, 0, 0, t.bucket, t.period_s, error, failed_open=True)
                    for t in tiers]
        return [Outcome(False, t.limit, 0, 0, 1, t.bucket, t.period_s, error) for t in tiers]

    async def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {"backend": self.name, "ok": True, "error": None,
                                  "on_unavailable": "fail closed",
                                  "fail_open_buckets": sorted(self.fail_open_buckets)}
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._client.ping()
        except (RedisError, OSError, TimeoutError) as exc:
            report.update(ok=False, error=f"{UNAVAILABLE}: {_describe(exc)}")
        return report

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "TimeoutError: no answer within the limiter's timeout"
    return f"{type(exc).__name__}: {exc}"


__all__ = ["GCRA_SCRIPT", "RedisLimiter", "redis_key"]
