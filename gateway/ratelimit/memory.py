"""The embedded limiter: exact within one process, nothing shared between processes.

Exactness comes from doing the whole read-decide-write for all of a call's tiers under one
`threading.Lock` with no `await` inside: asyncio tasks cannot interleave in it and threads
are serialised by the lock. Memory is bounded by the live keys: a key whose TAT is in the
past is full again and carries no information, so sweeps drop it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from engine.model import Tier
from gateway.ratelimit.base import Gcra, Limiter, Outcome, check_cost, conforms, outcome

Clock = Callable[[], int]  # microseconds, monotonic


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


class MemoryLimiter(Limiter):
    """GCRA in a dict. `clock` returns integer microseconds; inject one in tests."""

    name = "memory"

    def __init__(self, *, clock: Clock = monotonic_us, sweep_at: int = 1024) -> None:
        self._clock = clock
        self._tats: dict[tuple[str, str, str, int], int] = {}
        self._lock = threading.Lock()
        self._sweep_min = sweep_at
        self._sweep_at = sweep_at

    async def hit_all(
        self, user: str, provider: str, tiers: Sequence[Tier], *, cost: int = 1
    ) -> list[Outcome]:
        return self.hit_all_now(user, provider, tiers, cost=cost)

    def hit_all_now(self, user: str, provider: str, tiers: Sequence[Tier], *, cost: int = 1) -> list[Outcome]:
        """The synchronous core of `hit_all`, for callers without an event loop."""
        check_cost(cost)
        if not tiers:
            return []
        # The period is part of the key: "reads" per minute and "reads" per hour are two
        # budgets. The limit is not: TAT - now is time used, which survives a limit change.
        keys = [(user, provider, t.bucket, t.period_s) for t in tiers]
        with self._lock:
            now = self._clock()
            staged: dict[tuple[str, str, str, int], int] = {}
            before: list[int] = []
            ok = True
            for key, tier in zip(keys, tiers, strict=True):
                tat = max(staged.get(key, self._tats.get(key, now)), now)
                before.append(tat)
                g = Gcra.of(tier)
                ok = conforms(g, tat, now, cost) and ok
                # A tier repeated on one key is charged for each occurrence: never looser.
                staged[key] = tat + cost * g.interval
            if ok:
                self._tats.update(staged)
                if len(self._tats) >= self._sweep_at:
                    self._sweep(now)
        return [outcome(t, tat, now, cost, charged=ok) for t, tat in zip(tiers, before, strict=True)]

    def _sweep(self, now: int) -> None:
        # Amortised O(1) per hit: the next sweep waits until the dict has doubled again.
        self._tats = {k: tat for k, tat in self._tats.items() if tat > now}
        self._sweep_at = max(self._sweep_min, 2 * len(self._tats))

    def __len__(self) -> int:
        return len(self._tats)

    async def health(self) -> dict[str, Any]:
        return {"backend": self.name, "ok": True, "error": None, "keys": len(self._tats)}

    async def close(self) -> None:
        with self._lock:
            self._tats.clear()


__all__ = ["Clock", "MemoryLimiter", "monotonic_us"]
