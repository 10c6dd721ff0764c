"""Constitution rule 9: tool schemas are versioned and stay backward-compatible.

`providers/schemas.snapshot.json` holds every served tool's kind and input JSON Schema as
last accepted. `breaking_changes(snapshot, served)` lists what a caller written against the
snapshot would suffer from the served schemas:

- breaking: a tool removed or its kind changed; a property removed; a property newly
  required; a type, enum, bound, pattern or `additionalProperties` narrowed; a default
  changed (callers omitting the field silently get other behaviour);
- compatible: a new tool (that is how a breaking change ships: `scan.repo.v2`), a new
  optional property, anything widened, descriptions.

A breaking change to a tool that an active rule-9 exception waives is let through; see
`rule9_waivers` for that seam. `opsgate policy schemas --write` refreshes the snapshot and
refuses to record a breaking change, so the snapshot can only move forward compatibly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.exceptions import active_build_waivers
from gateway.registry import Registry

SNAPSHOT = Path(__file__).resolve().parent.parent / "providers" / "schemas.snapshot.json"

Snapshot = dict[str, dict[str, Any]]  # tool name -> {"kind": str, "input_schema": {...}}

LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties")
UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties")


def snapshot_of(registry: Registry) -> Snapshot:
    return {t.name: {"kind": t.tool.kind, "input_schema": t.input_schema} for t in registry.tools}


def load_snapshot(path: Path = SNAPSHOT) -> Snapshot:
    return dict(json.loads(path.read_text())["tools"]) if path.exists() else {}


def render_snapshot(snapshot: Snapshot) -> str:
    return json.dumps({"tools": dict(sorted(snapshot.items()))}, indent=1, sort_keys=True) + "\n"


def rule9_waivers(exceptions_dir: str | Path = "exceptions", now: datetime | None = None) -> frozenset[str]:
    """Tool names an active rule-9 exception waives (`socket.scan.repo`, or `socket.*` for all
    of a provider's tools): only approved, signature-verified, unexpired, unrevoked ones
    (engine.exceptions.active_build_waivers)."""
    found = active_build_waivers(9, Path(exceptions_dir), now or datetime.now(UTC))
    return frozenset(name if "." in name else f"{name}.*" for name in found)


def waived(tool: str, waivers: Iterable[str]) -> bool:
    return any(w == tool or (w.endswith(".*") and tool.startswith(w[:-1])) for w in waivers)


def breaking_changes(old: Snapshot, new: Snapshot, waivers: Iterable[str] = ()) -> list[str]:
    """Every backward-incompatible difference from `old` to `new`, one message each, except for
    waived tools. Empty: compatible."""
    waivers = tuple(waivers)
    problems: list[str] = []
    for name, before in sorted(old.items()):
        if waived(name, waivers):
            continue
        after = new.get(name)
        if after is None:
            problems.append(f"{name}: tool removed (keep it, or serve its successor under a new name)")
            continue
        if before.get("kind") != after.get("kind"):
            problems.append(f"{name}: kind changed from {before.get('kind')} to {after.get('kind')}")
        old_schema, new_schema = before.get("input_schema", {}), after.get("input_schema", {})
        problems.extend(f"{name}: {p}" for p in _compare(old_schema, new_schema, "input", old_schema, new_schema))
    return problems


# -- schema comparison ---------------------------------------------------------------------------

def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    for _ in range(32):
        ref = schema.get("$ref")
        if not isinstance(ref, str):
            break
        schema = root.get("$defs", {}).get(ref.rsplit("/", 1)[-1], {})
    return schema


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _types(s: dict[str, Any]) -> set[str] | None:
    """The JSON types a schema accepts; None when unconstrained."""
    if "type" in s:
        t = s["type"]
        return set(t) if isinstance(t, list) else {t}
    values = _values(s)
    if values is not None:
        return {_json_type(v) for v in values}
    return None


def _values(s: dict[str, Any]) -> list[Any] | None:
    if "enum" in s:
        return list(s["enum"])
    if "const" in s:
        return [s["const"]]
    return None


def _compare(old: dict[str, Any], new: dict[str, Any], where: str, old_root: dict[str, Any],
             new_root: dict[str, Any]) -> list[str]:
    old, new = _resolve(old, old_root), _resolve(new, new_root)
    old_alts = old.get("anyOf") or old.get("oneOf")
    new_alts = new.get("anyOf") or new.get("oneOf")
    if old_alts or new_alts:
        problems = []
        for i, alt in enumerate(old_alts or [old]):
            candidates = new_alts or [new]
            if all(_compare(alt, c, where, old_root, new_root) for c in candidates):
                problems.append(f"{where}: a value accepted before (alternative {i + 1}) is no longer accepted")
        return problems

    problems: list[str] = []
    old_t, new_t = _types(old), _types(new)
    if new_t is not None:
        lost = (old_t or {"any"}) - new_t - ({"integer"} if "number" in new_t else set())
        if lost:
            problems.append(f"{where}: type narrowed (no longer accepts {', '.join(sorted(lost))})")
    old_v, new_v = _values(old), _values(new)
    if new_v is not None:
        if old_v is None:
            problems.append(f"{where}: now limited to {new_v}")
        elif removed := [v for v in old_v if v not in new_v]:
            problems.append(f"{where}: values removed: {removed}")
    for key in LOWER_BOUNDS:
        if key in new and (key not in old or new[key] > old[key]):
            problems.append(f"{where}: {key} raised to {new[key]}")
    for key in UPPER_BOUNDS:
        if key in new and (key not in old or new[key] < old[key]):
            problems.append(f"{where}: {key} lowered to {new[key]}")
    for key in ("pattern", "format"):
        if key in new and new[key] != old.get(key):
            problems.append(f"{where}: {key} changed to {new[key]!r}")
    if "default" in old and old["default"] != new.get("default"):
        problems.append(f"{where}: default changed from {old['default']!r} to {new.get('default')!r}")
    problems.extend(_compare_object(old, new, where, old_root, new_root))
    if isinstance(new.get("items"), dict):
        problems.extend(_compare(old.get("items") or {}, new["items"], f"{where}[]", old_root, new_root))
    if isinstance(new.get("propertyNames"), dict):
        problems.extend(_compare(old.get("propertyNames") or {}, new["propertyNames"], f"{where} keys",
                                 old_root, new_root))
    return problems


def _compare_object(old: dict[str, Any], new: dict[str, Any], where: str, old_root: dict[str, Any],
                    new_root: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name, sub in old_props.items():
        if name not in new_props:
            problems.append(f"{where}.{name}: property removed")
        else:
            problems.extend(_compare(sub, new_props[name], f"{where}.{name}", old_root, new_root))
    for name in sorted(set(new.get("required", ())) - set(old.get("required", ()))):
        problems.append(f"{where}.{name}: now required")
    old_extra, new_extra = old.get("additionalProperties", True), new.get("additionalProperties", True)
    if new_extra is False and old_extra is not False:
        problems.append(f"{where}: no longer accepts additional properties")
    elif isinstance(new_extra, dict):
        problems.extend(_compare(old_extra if isinstance(old_extra, dict) else {}, new_extra, f"{where}.*",
                                 old_root, new_root))
    return problems


__all__ = ["SNAPSHOT", "breaking_changes", "load_snapshot", "render_snapshot", "rule9_waivers", "snapshot_of",
           "waived"]
