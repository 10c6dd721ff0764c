"""The policy catalogue (policies/tools.json) as the served registry describes it.

The engine decides on `tools.json` and must not import providers, so the gateway, which knows
both, writes the catalogue entries from the registry: name, kind, description and input
schema of every served tool. Entries for tools this gateway does not serve (another
deployment's providers, tools still being built) are kept as they are, in place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.registry import Registry
from providers.sdk import Resource


def served_entries(registry: Registry) -> list[dict[str, Any]]:
    """Every served tool, then every served resource's read action (kind `read`)."""
    tools = [{"name": t.name, "kind": t.tool.kind, "description": t.tool.description, "input_schema": t.input_schema}
             for t in registry.tools]
    return tools + [{"name": r.action, "kind": "read", "description": resource_description(r.resource),
                     "input_schema": r.input_schema} for r in registry.resources]


def resource_description(resource: Resource) -> str:
    return f"Read the resource {resource.uri}: {resource.description}"


def merged(existing: list[dict[str, Any]], served: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`existing` with each served tool's entry replaced in place and new tools appended."""
    by_name = {e["name"]: e for e in served}
    out = [by_name.pop(e.get("name"), e) for e in existing]
    return out + [e for e in served if e["name"] in by_name]


def render(tools: list[dict[str, Any]]) -> str:
    return json.dumps({"tools": tools}, indent=1, ensure_ascii=False) + "\n"


def export(registry: Registry, path: Path) -> tuple[str, str, list[str]]:
    """(current text, new text, names of the entries that change) for `path`."""
    current = path.read_text() if path.exists() else '{"tools": []}\n'
    existing = json.loads(current).get("tools", [])
    served = served_entries(registry)
    old = {e.get("name"): e for e in existing}
    changed = [e["name"] for e in served if old.get(e["name"]) != e]
    return current, render(merged(existing, served)), changed


__all__ = ["export", "merged", "render", "served_entries"]
