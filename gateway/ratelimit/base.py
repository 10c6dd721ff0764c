"""The rate limiter contract and the GCRA arithmetic every backend shares.

Invariants every backend keeps:

- GCRA (generic cell rate algorithm, as in redis-cell). A tier of `limit` calls per
  `period_s` has emission interval T = period/limit and burst tolerance tau = period - T:
  a fresh key admits exactly `limit` calls at once, then one more every T. There is no
  window edge, so no double burst: in any span of D seconds at most `limit + floor(D/T)`
  calls are admitted (which is up to 2*limit - 1 over a whole period_s: the full burst plus
  what regenerated meanwhile; GCRA bounds rate and burst, not a count per sliding window).
- All time arithmetic is in integer microseconds. T is rounded down to a whole
  microsecond and the capacity is taken as `limit * T` (not `period`), so the burst is
  exactly `limit` for every limit; the rounding errs by under 1 µs per call in the
  caller's favour.
- One call that matches several tiers is charged all-or-nothing (`hit_all`): when any
  tier denies, none is charged.
- The state of a key is one number, its theoretical arrival time (TAT). `TAT - now` is the
  part of the period already used, so a key is full when TAT <= now and can be forgotten.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, NamedTuple

import msgspec

from engine.model import Tier

US = 1_000_000  # microseconds per second
UNAVAILABLE = "rate limiter unavailable"  # how every backend-unreachable error begins


class LimitKey(msgspec.Struct, frozen=True):
    """Whose budget: one user at one provider. The tier supplies the bucket."""

    user: str
    provider: str


class Outcome(msgspec.Struct, frozen=True):
    """The verdict for one tier.

    `remaining` is how many further calls of cost 1 would be admitted now; `reset_s` is
    the time until the budget is full again; `retry_after_s` is 0 when allowed and >= 1
    when denied. In `hit_all` a call is admitted only if every outcome is allowed; when one
    denies, the others may still say `allowed=True` (they had room) but nothing was charged
    and their numbers are the uncharged budget.

    `error` explains a denial that waiting alone will not cure in the usual way (backend
    unreachable, a tier with no budget, a cost above the limit). `failed_open` marks an
    admission made without consulting the backend because it was unreachable and the
    bucket is configured to fail open.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_s: int
    retry_after_s: int
    bucket: str
    period_s: int
    error: str | None = None
    failed_open: bool = False

    @property
    def unavailable(self) -> bool:
        """The backend could not be asked: the numbers are placeholders, not the budget."""
        return self.error is not None and self.error.startswith(UNAVAILABLE)


class Gcra(NamedTuple):
    """A tier in integer microseconds: `interval` is T, `capacity` is limit*T (tau + T)."""

    interval: int
    capacity: int

    @classmethod
    def of(cls, tier: Tier) -> Gcra:
        period_us = max(tier.period_s, 1) * US
        if tier.limit < 1:
            # The engine hands out limit 0 when it cannot read a tier: no call may conform.
            return cls(period_us, -1)
        interval = max(period_us // tier.limit, 1)
        return cls(interval, interval * tier.limit)


def conforms(g: Gcra, tat: int, now: int, cost: int) -> bool:
    """Would `cost` more calls fit? `tat` is already max(stored TAT, now)."""
    return tat + cost * g.interval - now <= g.capacity


def ceil_s(us: int) -> int:
    return -(-us // US)


def outcome(tier: Tier, tat: int, now: int, cost: int, *, charged: bool) -> Outcome:
    """Describe one tier given its TAT before this call (>= now) and whether it was charged.

    Backends decide admission themselves (Redis does it inside its script); this only
    reports, with the same arithmetic, so every backend reports identically.
    """
    g = Gcra.of(tier)
    ok = conforms(g, tat, now, cost)
    used = tat + cost * g.interval - now if ok and charged else tat - now
    remaining = max((g.capacity - used) // g.interval, 0)
    if ok:
        return Outcome(True, tier.limit, remaining, ceil_s(used), 0, tier.bucket, tier.period_s)
    error = None
    if g.capacity < 0:
        error = f"rate tier {tier.policy_id!r} allows no calls (limit {tier.limit})"
    elif cost * g.interval > g.capacity:
        error = f"cost {cost} exceeds rate tier {tier.policy_id!r} limit {tier.limit}"
    if error is not None:
        # Waiting will not help; the period is the honest "come back no sooner than".
        return Outcome(False, tier.limit, 0, ceil_s(used), tier.period_s, tier.bucket, tier.period_s, error)
    retry_us = tat + cost * g.interval - g.capacity - now
    return Outcome(False, tier.limit, remaining, ceil_s(used), max(ceil_s(retry_us), 1),
                   tier.bucket, tier.period_s)


def check_cost(cost: int) -> None:
    if not isinstance(cost, int) or cost < 1:
        raise ValueError(f"cost must be a positive int, got {cost!r}")


class Limiter(ABC):
    """A rate limiter backend. Implementations must be safe to share between asyncio tasks."""

    name: str

    async def hit(self, key: LimitKey, tier: Tier, *, cost: int = 1) -> Outcome:
        """Charge `cost` calls to one tier, if they fit."""
        (result,) = await self.hit_all(key.user, key.provider, (tier,), cost=cost)
        return result

    @abstractmethod
    async def hit_all(
        self, user: str, provider: str, tiers: Sequence[Tier], *, cost: int = 1
    ) -> list[Outcome]:
        """Charge every tier or none: admitted iff every returned outcome is allowed.

        Outcomes are in the order of `tiers`. No tiers means unlimited: an empty list.
        """

    @abstractmethod
    async def health(self) -> dict[str, Any]:
        """`{"backend": ..., "ok": bool, "error": str | None, ...}`, checked live."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections. The limiter must not be used afterwards."""


def admitted(outcomes: Sequence[Outcome]) -> bool:
    """The call goes ahead iff every tier allowed it (no tiers: unlimited)."""
    return all(o.allowed for o in outcomes)


__all__ = ["UNAVAILABLE", "US", "Gcra", "LimitKey", "Limiter", "Outcome", "admitted", "ceil_s", "check_cost",
           "conforms", "outcome"]
