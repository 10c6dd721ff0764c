"""ProviderBase: the one shape the gateway registers (constitution rule 10)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar

from providers.sdk.health import HealthStatus
from providers.sdk.tool import Tool


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ProviderBase:
    """Subclass, set `name`, return your tools from `tools()`, override `probe()` for health."""

    name: ClassVar[str]

    def tools(self) -> Sequence[Tool]:
        raise NotImplementedError

    async def probe(self) -> None:
        """Raise if the upstream is not usable; the vendor's cheapest authenticated call."""

    async def health(self) -> HealthStatus:
        start = time.perf_counter()
        try:
            await self.probe()
        except Exception as e:  # a failed probe is a health answer, not a crash
            return HealthStatus(self.name, "down", int((time.perf_counter() - start) * 1000), now_iso(),
                                f"{type(e).__name__}: {e}")
        return HealthStatus(self.name, "ok", int((time.perf_counter() - start) * 1000), now_iso())


__all__ = ["ProviderBase", "now_iso"]
