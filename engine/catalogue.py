"""The tool catalogue (`policies/tools.json`): every tool as a Cedar action.

Each tool becomes an action `<provider>.<tool>` in its kind group (read, scan, ...), whose
`context.args` is typed from the tool's JSON input schema, so that policies conditioning on
arguments validate strictly. `args` is optional in the context: `tools/list` asks the same
question without arguments ("may this caller see the tool at all?"), and strict validation
makes every policy that reads an argument guard it with `context has args`.

JSON Schema constructs Cedar cannot express (numbers, unions, free-form objects) are left
out of the type and out of the projected value alike, so no policy can reference them.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from engine.model import Issue

KINDS = ("read", "scan", "annotate", "tag", "create", "comment", "admin")
TOOL_NAME = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$")
MARKER = "// @tool-actions"


class Tool(msgspec.Struct, frozen=True):
    name: str
    kind: str
    description: str = ""
    input_schema: dict[str, Any] = {}

    @property
    def provider(self) -> str:
        return self.name.split(".", 1)[0]


class Catalogue(msgspec.Struct, frozen=True):
    tools: tuple[Tool, ...] = ()

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(sorted({t.provider for t in self.tools}))

    def get(self, name: str) -> Tool | None:
        return next((t for t in self.tools if t.name == name), None)


# A Cedar type as a small tree: ("String"|"Long"|"Bool") | ("Set", T) | ("Record", {name: (T, required)})
CedarType = Any


# JSON Schema keywords that annotate and never constrain: they reach the model reading tools/list,
# never a decision (the Cedar types come from the rest), and libraries reformat them between versions.
ANNOTATIONS = frozenset({"title", "description", "examples", "$comment"})


def decision_shape(schema: Any) -> Any:
    """`schema` without its annotations: what a decision about the tool depends on. Two schemas
    with the same shape give the same Cedar types and the same validation of arguments."""
    if isinstance(schema, dict):
        return {k: decision_shape(v) for k, v in schema.items()
                if k not in ANNOTATIONS or not isinstance(v, str | list)}
    if isinstance(schema, list):
        return [decision_shape(v) for v in schema]
    return schema


def parse_catalogue(raw: bytes, file: str) -> tuple[Catalogue, list[Issue]]:
    try:
        cat = msgspec.json.decode(raw, type=Catalogue)
    except msgspec.DecodeError as e:
        return Catalogue(), [Issue(file, f"invalid tool catalogue: {e}")]
    issues: list[Issue] = []
    seen: set[str] = set()
    for t in cat.tools:
        if not TOOL_NAME.match(t.name):
            issues.append(Issue(file, f"tool name {t.name!r} is not <provider>.<tool> in lowercase"))
        if t.kind not in KINDS:
            issues.append(Issue(file, f"tool {t.name!r} has kind {t.kind!r}; expected one of {', '.join(KINDS)}"))
        if t.name in seen:
            issues.append(Issue(file, f"tool {t.name!r} is declared twice"))
        seen.add(t.name)
    return cat, issues


def cedar_type(schema: dict[str, Any]) -> CedarType | None:
    """Map a JSON Schema to a Cedar type, or None when Cedar cannot express it."""
    kind = schema.get("type")
    literals = schema.get("enum", [schema["const"]] if "const" in schema else None)
    if kind is None and literals and all(isinstance(v, str) for v in literals):
        kind = "string"  # msgspec renders Literal["1.0"] as a bare enum
    if isinstance(kind, list):  # ["string", "null"]: nullable becomes optional (None is dropped)
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    if kind == "string":
        return "String"
    if kind == "integer":
        return "Long"
    if kind == "boolean":
        return "Bool"
    if kind == "array":
        item = cedar_type(schema.get("items") or {})
        return ("Set", item) if item is not None else None
    if kind == "object" and "properties" in schema:
        required = set(schema.get("required", ()))
        fields = {}
        for name, sub in schema["properties"].items():
            t = cedar_type(sub)
            if t is not None:
                fields[name] = (t, name in required)
        return ("Record", fields)
    return None


def render_type(t: CedarType) -> str:
    if isinstance(t, str):
        return t
    if t[0] == "Set":
        return f"Set<{render_type(t[1])}>"
    fields = ", ".join(f"{json.dumps(n)}{'' if req else '?'}: {render_type(ft)}" for n, (ft, req) in t[1].items())
    return "{ " + fields + " }" if fields else "{}"


def project(value: Any, t: CedarType) -> Any:
    """Shape an argument value to its Cedar type: drop what the type leaves out, keep the rest.

    A value of the wrong type is passed through unchanged so that Cedar's request validation
    refuses it (a deny with an error), rather than being silently coerced here.
    """
    if isinstance(t, tuple):
        if t[0] == "Record" and isinstance(value, dict):
            fields = t[1]
            return {k: project(v, fields[k][0]) for k, v in value.items() if k in fields and v is not None}
        if t[0] == "Set" and isinstance(value, list):
            return [project(v, t[1]) for v in value]
    return value


def args_types(cat: Catalogue) -> dict[str, CedarType]:
    out = {}
    for tool in cat.tools:
        t = cedar_type(tool.input_schema) if tool.input_schema else ("Record", {})
        out[tool.name] = t if isinstance(t, tuple) and t[0] == "Record" else ("Record", {})
    return out


def render_actions(cat: Catalogue, types: dict[str, CedarType]) -> str:
    lines = []
    for tool in cat.tools:
        lines.append(
            f"  action {json.dumps(tool.name)} in [{tool.kind}] appliesTo {{\n"
            f"    principal: [User, Provider],\n"
            f"    resource: [Provider],\n"
            f"    context: {{ now: __cedar::datetime, args?: {render_type(types[tool.name])} }}\n"
            f"  }};"
        )
    return "\n".join(lines)


def splice_schema(schema_text: str, actions: str, file: str) -> tuple[str, list[Issue]]:
    """Put the generated tool actions where the schema's marker line stands."""
    count = schema_text.count(MARKER)
    if count != 1:
        return schema_text, [Issue(file, f"the schema must contain the line {MARKER!r} exactly once (found {count})")]
    return schema_text.replace(MARKER, MARKER + " (generated from tools.json)\n" + actions, 1), []


__all__ = ["KINDS", "MARKER", "Catalogue", "Tool", "args_types", "parse_catalogue", "project", "render_actions"]
