"""Rate limiting of tool calls by the engine's rate tiers.

The engine decides which tiers apply to a call (`Decision.tiers`); a `Limiter` charges the
call to all of them or to none, by GCRA (no double burst at window edges):

    outcomes = await limiter.hit_all(user, provider, decision.tiers)
    if not admitted(outcomes):          # RATE_LIMIT, retry after retry_after_s(outcomes)
        ...
    rate_limit_headers(outcomes)        # RateLimit-Policy, RateLimit, Retry-After

Backends: `MemoryLimiter` (embedded default, exact within one process) and `RedisLimiter`
(one budget shared by every replica; fails closed when Redis is unreachable unless a
bucket is configured to fail open).
"""

from gateway.ratelimit.base import UNAVAILABLE, Limiter, LimitKey, Outcome, admitted
from gateway.ratelimit.headers import rate_limit_headers, retry_after_s
from gateway.ratelimit.memory import MemoryLimiter
from gateway.ratelimit.redis import RedisLimiter

__all__ = ["UNAVAILABLE", "LimitKey", "Limiter", "MemoryLimiter", "Outcome", "RedisLimiter", "admitted",
           "rate_limit_headers", "retry_after_s"]
