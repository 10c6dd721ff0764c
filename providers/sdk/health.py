"""Constitution rule 6: the health report every provider gives."""

from __future__ import annotations

from typing import Literal

import msgspec

Status = Literal["ok", "degraded", "down"]


class HealthStatus(msgspec.Struct, frozen=True):
    provider: str
    status: Status
    latency_ms: int
    last_check: str  # ISO 8601, UTC, seconds precision, e.g. "2026-02-16T15:46:00Z"
    error: str | None = None


__all__ = ["HealthStatus", "Status"]
