"""A probe that traffic cannot multiply: one answer serves every caller for `max_age_s`.

GET /health runs every provider's health(), which reads vault secrets (an audit row when one is
missing) and calls the vendors' APIs. It needs no token, so without this each anonymous hit would
be one more probe of every vendor and more rows in the audit trail.

Invariants:
- At most one probe runs at a time (single flight): callers arriving while it runs wait for it
  and share its answer, however many they are.
- A probe's answer is served until `max_age_s` after it finished; the next caller after that
  starts one new probe. So probes happen at most once per `max_age_s` plus their own duration,
  whatever the traffic, per process.
- A caller that goes away does not cancel the probe others wait for. A probe that raises answers
  its waiters with the error and is not cached: the next caller tries again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class HealthCache(Generic[T]):
    def __init__(self, probe: Callable[[], Awaitable[T]], *, max_age_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._probe = probe
        self.max_age_s = max_age_s
        self._clock = clock
        self._answer: tuple[T, float] | None = None  # the last answer, and when its probe finished
        self._running: asyncio.Future[tuple[T, float]] | None = None
        self.probes = 0  # probes started, for tests and status

    async def get(self) -> tuple[T, float]:
        """The current answer and its age in seconds, probing only when it is too old."""
        answer = self._answer
        if answer is not None and self._clock() - answer[1] < self.max_age_s:
            return answer[0], self._clock() - answer[1]
        if self._running is None:
            self.probes += 1
            self._running = asyncio.ensure_future(self._run())
        value, finished = await asyncio.shield(self._running)
        return value, self._clock() - finished

    async def _run(self) -> tuple[T, float]:
        try:
            value = await self._probe()
            self._answer = (value, self._clock())
            return self._answer
        finally:
            self._running = None


__all__ = ["HealthCache"]
