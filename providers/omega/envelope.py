"""The Pulse Omega spec's canonical response envelope: `_canon` on every result and every error.

    {"_canon": {"mode": "observer_only", "authority": "none",
                "write_paths": ["pulse_improvements:proposed_only"], "timestamp": "...Z"},
     "result": {...}}                      or          "error": {"code": "...", "message": "..."}
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

WRITE_PATHS = ("pulse_improvements:proposed_only",)


def canon() -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"mode": "observer_only", "authority": "none", "write_paths": list(WRITE_PATHS),
            "timestamp": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"}


def ok(result: Any) -> dict[str, Any]:
    return {"_canon": canon(), "result": result}


def error(code: str, message: str) -> dict[str, Any]:
    return {"_canon": canon(), "error": {"code": code, "message": message}}


__all__ = ["WRITE_PATHS", "canon", "error", "ok"]
