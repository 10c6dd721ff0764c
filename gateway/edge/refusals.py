"""Refused requests at the edge (failed authentication, a foreign Host or Origin) as audit rows,
aggregated so that a flood cannot fill the store or the log.

Invariants:
- One row per (what, client address, reason) per interval, carrying the count and the first and
  last time seen; written when the interval ends (and at shutdown), never per request.
- Bounded memory: at most `max_clients` distinct keys per interval; refusals past that are
  counted under the client `None` ("other clients"), so counts stay exact while the table cannot
  grow with the number of attacking addresses.
- Bounded log: the first `LOG_FIRST` new keys of an interval get a line each, then one summary
  line per interval.
- Nothing of the request is kept but the client's canonical address and a fixed reason: never the
  token or any part of it, never a header.
- A batch the store cannot take is kept and merged into the next interval (within the bound).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from gateway.audit import Audit
from gateway.edge.current import bound_client

log = logging.getLogger("opsgate.edge")

AUTH = "opsgate.auth.refused"  # authentication refused (row: provider "opsgate", tool "auth.refused")
REQUEST = "opsgate.request.refused"  # Host or Origin not allowed
LOG_FIRST = 10


@dataclass
class _Tally:
    count: int
    first: float
    last: float

    def merge(self, other: _Tally) -> None:
        self.count += other.count
        self.first = min(self.first, other.first)
        self.last = max(self.last, other.last)


Key = tuple[str, str | None, str]  # (tool, client address or None, reason)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


class Refusals:
    """`note()` from request handling (synchronous, O(1)); `run()` in the app's lifespan writes
    each interval's rows, and the last ones after `stop()`; `flush()` writes what has been
    counted so far."""

    def __init__(self, audit: Audit | None, *, interval_s: float = 60.0, max_clients: int = 1024,
                 clock: Callable[[], float] = time.time) -> None:
        if interval_s <= 0 or max_clients < 1:
            raise ValueError("Refusals needs interval_s > 0 and max_clients >= 1")
        self.audit, self.interval_s, self.max_clients, self.clock = audit, interval_s, max_clients, clock
        self._tallies: dict[Key, _Tally] = {}
        self._logged = 0
        self._stop = asyncio.Event()

    def __len__(self) -> int:
        return len(self._tallies)

    def note(self, tool: str, reason: str, client: str | None) -> None:
        now = self.clock()
        key: Key = (tool, client, reason)
        tally = self._tallies.get(key)
        if tally is None and len(self._tallies) >= self.max_clients:
            key = (tool, None, reason)
            tally = self._tallies.get(key)
        if tally is not None:
            tally.count += 1
            tally.last = now
            return
        self._tallies[key] = _Tally(1, now, now)
        if self._logged < LOG_FIRST:
            self._logged += 1
            log.warning("%s: %s from %s (repeats are counted into one audit row per %g s)",
                        tool.removeprefix("opsgate."), reason, client or "other clients", self.interval_s)

    async def flush(self) -> int:
        """Write one row per key counted so far; returns how many rows were written."""
        tallies, self._tallies, self._logged = self._tallies, {}, 0
        if not tallies:
            return 0
        reasons: Counter[str] = Counter()
        for k, t in tallies.items():
            reasons[k[2]] += t.count
        log.warning("refused at the edge in the last interval: %d requests from %d clients (%s)",
                    sum(reasons.values()), len({k[1] for k in tallies}),
                    ", ".join(f"{r}={n}" for r, n in sorted(reasons.items())))
        if self.audit is None:
            return 0
        keys = list(tallies)
        with bound_client(None):  # rows name their client themselves, never a request being served
            outcomes = await asyncio.gather(*(self._write(k, tallies[k]) for k in keys), return_exceptions=True)
        failed = [k for k, o in zip(keys, outcomes, strict=True) if o is not None]
        for k in failed:  # keep them for the next interval, within the bound
            fits = k in self._tallies or len(self._tallies) < self.max_clients
            target = k if fits else (k[0], None, k[2])
            if target in self._tallies:
                self._tallies[target].merge(tallies[k])
            else:
                self._tallies[target] = tallies[k]
        return len(keys) - len(failed)

    async def _write(self, key: Key, tally: _Tally) -> None:
        tool, client, reason = key
        assert self.audit is not None
        summary: dict[str, Any] = {"reason": reason, "count": tally.count, "first_seen": _iso(tally.first),
                                   "last_seen": _iso(tally.last), "interval_s": self.interval_s,
                                   "client": client or "other clients (too many to count apart)"}
        # Raises GatewayError when the store cannot take it (Audit logs why); flush() keeps the tally.
        await self.audit.record(caller_id=None, tool=tool, arguments=summary, decision=None,
                                result={"status": "refused", "reason": reason, "count": tally.count},
                                duration_ms=0, client_addr=client)

    async def run(self) -> None:
        """Write each interval's rows until `stop()`, then what is left. A flush under way is never
        cut short (cancelling it would lose the tallies it took)."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval_s)
            with contextlib.suppress(Exception):  # a failing store: kept, retried next interval
                await self.flush()

    def stop(self) -> None:
        self._stop.set()


__all__ = ["AUTH", "LOG_FIRST", "REQUEST", "Refusals"]
