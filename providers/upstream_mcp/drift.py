"""Live tool definitions against their pins (rug-pull detection).

A pinned tool whose live definition differs in any pinned part (title, description, input or
output schema, annotations), or that the upstream no longer lists, has *drifted*; a listed tool
that was never pinned is *new*. Neither is served. Pure functions: no I/O, no policy.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from mcp import types

from providers.upstream_mcp.spec import Pins, definition


class Change(msgspec.Struct, frozen=True):
    tool: str
    change: str  # "changed", "removed" or "added"
    diff: tuple[str, ...] = ()
    live: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        """Identifies this exact change, so it is recorded once however often it is seen."""
        return f"{self.tool}:{self.change}:{json.dumps(self.live, sort_keys=True)}"


def live_definition(tool: types.Tool) -> dict[str, Any]:
    """A listed tool in the pinned shape (wire names inside schemas and annotations kept)."""
    raw = tool.model_dump(by_alias=True, exclude_none=True, mode="json")
    return definition({"name": raw.get("name"), "title": raw.get("title"), "description": raw.get("description"),
                       "input_schema": raw.get("inputSchema"), "output_schema": raw.get("outputSchema"),
                       "annotations": raw.get("annotations")})


def compare(pins: Pins | None, live: dict[str, dict[str, Any]]) -> list[Change]:
    pinned = {t.name: definition(t) for t in pins.tools} if pins is not None else {}
    changes = []
    for name, pin in sorted(pinned.items()):
        now = live.get(name)
        if now is None:
            changes.append(Change(name, "removed", ("the upstream no longer lists it",)))
        elif now != pin:
            changes.append(Change(name, "changed", tuple(diff(pin, now)), now))
    changes += [Change(name, "added", ("listed by the upstream, never pinned",), live[name])
                for name in sorted(set(live) - set(pinned))]
    return changes


def diff(old: Any, new: Any, where: str = "") -> list[str]:
    """Each differing leaf as `path: old -> new` (values shortened)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{where}.{key}" if where else str(key)
            if key not in new:
                out.append(f"{path}: removed (was {_short(old[key])})")
            elif key not in old:
                out.append(f"{path}: added {_short(new[key])}")
            else:
                out += diff(old[key], new[key], path)
        return out
    if old != new:
        return [f"{where or '(definition)'}: {_short(old)} -> {_short(new)}"]
    return []


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["Change", "compare", "diff", "live_definition"]
