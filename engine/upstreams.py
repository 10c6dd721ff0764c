"""Upstream MCP servers as policy data: their declarations and pinned tool definitions.

    policies/upstreams/<name>.yaml        how to reach the server, its secrets, each tool's kind
    policies/upstreams/<name>.pins.json   the tool definitions the security team approved

Invariants kept here:
- A tool is served only when it is pinned *and* its declaration gives it a kind: a tool with no
  kind, or a kind outside the provider kinds, is not served (fail closed). Annotations a server
  sends (`readOnlyHint`, ...) never decide a kind; `opsgate upstream pin` only suggests one.
- What is served is exactly what was pinned: the catalogue entry of `<name>.<tool>` carries the
  pinned description and input schema, so the action's `context.args` is typed from the pin.
- Every pinned definition carries the digest of its canonical form; a pin whose digest does not
  match its definition (edited by hand, or truncated) refuses the bundle.
- Secret names follow rule 4's convention (`<name>_<what>`), so `read_secret` policy applies.

Pure parsing and validation: the only I/O is reading the bundle's files.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from engine.catalogue import TOOL_NAME, Tool
from engine.model import Issue

NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")  # no `_` (secrets are `<name>_<what>`) and no `.` (actions)
LOCAL_TOOL = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+$")
UpstreamKind = Literal["read", "scan", "annotate", "tag", "create", "comment"]
# Variables a child's environment is built from by the gateway itself; a secret may not replace them.
RESERVED_ENV = frozenset({"PATH", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY",
                          "no_proxy", "ALL_PROXY", "all_proxy"})
# The rule-6 tool every provider has; its schema is the SDK's HealthInput.
HEALTH_SCHEMA: dict[str, Any] = {"title": "HealthInput", "type": "object",
                                 "properties": {"version": {"enum": ["1.0"], "default": "1.0"}},
                                 "required": [], "additionalProperties": False}
RESOURCE_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"uri": {"type": "string"}}, "required": ["uri"]}
PROMPT_SCHEMA: dict[str, Any] = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


class SecretUse(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One vault secret and how the upstream is given it: an HTTP header (`http`) or an
    environment variable of the child (`stdio`). `format` wraps the value, e.g. "Bearer {value}"."""

    name: str
    header: str | None = None
    env: str | None = None
    format: str = "{value}"


class ToolDecl(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kind: UpstreamKind | None = None
    # The local name it is served under (`<upstream>.<as>`); by default the upstream's own name.
    as_: str | None = msgspec.field(default=None, name="as")


class KindDecl(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kind: UpstreamKind


class Timeouts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    connect_s: float = 10.0
    call_s: float = 60.0
    list_s: float = 10.0


class Declaration(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`policies/upstreams/<name>.yaml`."""

    transport: Literal["stdio", "http"]
    url: str | None = None
    command: str | None = None
    args: tuple[str, ...] = ()
    cwd: str | None = None
    start: Literal["lazy", "startup"] = "lazy"
    pool: int = 4  # concurrent sessions (stdio: children); each call holds one for its duration
    timeouts: Timeouts = Timeouts()
    relist_s: float = 300.0  # periodic re-list of the upstream's tools (drift detection)
    isolation: Literal["netns", "proxy"] = "netns"  # stdio: the strongest wanted; `check` says what is had
    # The protocol toward the upstream, negotiated apart from the caller's: "auto" prefers 2026-07-28
    # (server-to-client requests then come as input-required results), "legacy" the 2025 handshake.
    protocol: Literal["auto", "legacy"] = "auto"
    secrets: tuple[SecretUse, ...] = ()
    tools: dict[str, ToolDecl] = {}
    resources: KindDecl | None = None
    prompts: KindDecl | None = None
    max_result_bytes: int = 4 << 20  # a larger answer from the upstream is refused, not relayed


class PinnedTool(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """A tool definition exactly as the upstream listed it when it was pinned."""

    name: str
    digest: str
    description: str | None = None
    title: str | None = None
    input_schema: dict[str, Any] = {}
    output_schema: dict[str, Any] | None = None
    annotations: dict[str, Any] | None = None


class Pins(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """`policies/upstreams/<name>.pins.json`."""

    upstream: str
    tools: tuple[PinnedTool, ...] = ()
    pinned_at: str | None = None
    server: dict[str, Any] | None = None


class Upstream(msgspec.Struct, frozen=True):
    """One declared upstream with its pins, as the gateway hands it to the adapter."""

    name: str
    declaration: Declaration
    pins: Pins | None
    served: dict[str, str]  # upstream tool name -> local served name, for pinned tools that have a kind


def definition(tool: PinnedTool | dict[str, Any]) -> dict[str, Any]:
    """The parts of a tool definition that are pinned, in one canonical shape (no digest)."""
    raw = msgspec.to_builtins(tool) if isinstance(tool, PinnedTool) else dict(tool)
    out = {"name": raw.get("name"), "title": raw.get("title"), "description": raw.get("description"),
           "input_schema": raw.get("input_schema") or {}, "output_schema": raw.get("output_schema"),
           "annotations": raw.get("annotations")}
    return {k: v for k, v in out.items() if v is not None}


def digest(tool: PinnedTool | dict[str, Any]) -> str:
    """sha256 over the canonical JSON of the definition (sorted keys, no whitespace)."""
    text = json.dumps(definition(tool), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def pins_of(name: str, live: list[dict[str, Any]], *, pinned_at: str, server: dict[str, Any] | None = None) -> Pins:
    """Pins for tool definitions as listed (`definition` shape), each with its digest."""
    tools = tuple(msgspec.convert({**definition(t), "digest": digest(t)}, PinnedTool)
                  for t in sorted(live, key=lambda t: str(t.get("name"))))
    return Pins(upstream=name, tools=tools, pinned_at=pinned_at, server=server)


def render_pins(pins: Pins) -> str:
    return json.dumps(msgspec.to_builtins(pins), indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def upstream_files(root: Path) -> list[Path]:
    folder = root / "upstreams"
    return sorted([*folder.glob("*.yaml"), *folder.glob("*.pins.json")]) if folder.is_dir() else []


def load_upstreams(root: Path, issues: list[Issue]) -> tuple[list[Upstream], list[Tool]]:
    """Every declared upstream with its pins, and the catalogue entries of what it serves."""
    folder = root / "upstreams"
    if not folder.is_dir():
        return [], []
    upstreams: list[Upstream] = []
    tools: list[Tool] = []
    for path in sorted(folder.glob("*.yaml")):
        name = path.stem
        where = f"upstreams/{path.name}"
        if not NAME.match(name):
            issues.append(Issue(where, "an upstream's name is lowercase letters, digits and '-', starting with "
                                       "a letter"))
            continue
        decl = _declaration(path, where, issues)
        if decl is None:
            continue
        pins = _pins(folder / f"{name}.pins.json", name, issues)
        served = _served(name, decl, pins, where, issues)
        upstreams.append(Upstream(name, decl, pins, served))
        tools.extend(_catalogue_entries(name, decl, pins, served))
    for path in sorted(folder.glob("*.pins.json")):
        if not (folder / path.name.replace(".pins.json", ".yaml")).is_file():
            issues.append(Issue(f"upstreams/{path.name}", "pins without a declaration (<name>.yaml)"))
    return upstreams, tools


def _declaration(path: Path, where: str, issues: list[Issue]) -> Declaration | None:
    try:
        decl = msgspec.convert(yaml.safe_load(path.read_text()) or {}, Declaration)
    except (yaml.YAMLError, msgspec.ValidationError) as e:
        issues.append(Issue(where, f"invalid upstream declaration: {e}"))
        return None
    name = path.stem
    if decl.transport == "http" and not (decl.url or "").startswith(("https://", "http://")):
        issues.append(Issue(where, "an http upstream needs `url: https://...` (its streamable HTTP endpoint)"))
    if decl.transport == "stdio" and not decl.command:
        issues.append(Issue(where, "a stdio upstream needs `command`"))
    if decl.pool < 1 or decl.pool > 64:
        issues.append(Issue(where, "`pool` is 1 to 64 sessions"))
    for s in decl.secrets:
        if not s.name.startswith(f"{name}_"):
            issues.append(Issue(where, f"secret {s.name!r} must be named {name}_<what> (rule 4: a provider reads "
                                       "only its own secrets)"))
        if "{value}" not in s.format:
            issues.append(Issue(where, f"secret {s.name!r}: `format` must contain {{value}}"))
        if decl.transport == "http" and (s.header is None or not HEADER_NAME.match(s.header) or s.env):
            issues.append(Issue(where, f"secret {s.name!r}: an http upstream is given secrets as `header: Name`"))
        if decl.transport == "stdio" and (s.env is None or not ENV_NAME.match(s.env) or s.header
                                          or s.env in RESERVED_ENV):
            issues.append(Issue(where, f"secret {s.name!r}: a stdio upstream is given secrets as `env: NAME` "
                                       "(not PATH or a proxy variable)"))
    return decl


def _pins(path: Path, name: str, issues: list[Issue]) -> Pins | None:
    where = f"upstreams/{path.name}"
    if not path.is_file():
        return None
    try:
        pins = msgspec.json.decode(path.read_bytes(), type=Pins)
    except msgspec.DecodeError as e:
        issues.append(Issue(where, f"invalid pins: {e}"))
        return None
    if pins.upstream != name:
        issues.append(Issue(where, f"pins name upstream {pins.upstream!r}, not {name!r}"))
    seen: set[str] = set()
    for tool in pins.tools:
        if tool.name in seen:
            issues.append(Issue(where, f"tool {tool.name!r} is pinned twice"))
        seen.add(tool.name)
        if tool.digest != digest(tool):
            issues.append(Issue(where, f"tool {tool.name!r}: its digest does not match its definition (pins are "
                                       "written by `opsgate upstream pin`, never edited)"))
    return pins


def _served(name: str, decl: Declaration, pins: Pins | None, where: str, issues: list[Issue]) -> dict[str, str]:
    pinned = {t.name for t in pins.tools} if pins is not None else set()
    served: dict[str, str] = {}
    for tool, d in sorted(decl.tools.items()):
        local = d.as_ or tool
        if not LOCAL_TOOL.match(local) or not TOOL_NAME.match(f"{name}.{local}"):
            issues.append(Issue(where, f"tool {tool!r} cannot be served as {local!r}: give it `as: <lowercase "
                                       "dotted name>`"))
            continue
        if local == "health" or local.startswith(("resources.", "prompts.")):
            issues.append(Issue(where, f"tool {tool!r}: the name {local!r} is the gateway's own; give it `as:`"))
            continue
        if local in served.values():
            issues.append(Issue(where, f"two tools are served as {name}.{local}"))
            continue
        if d.kind is not None and tool in pinned:
            served[tool] = local
    return served


def _catalogue_entries(name: str, decl: Declaration, pins: Pins | None, served: dict[str, str]) -> list[Tool]:
    by_name = {t.name: t for t in pins.tools} if pins is not None else {}
    out = []
    for tool, local in served.items():
        pin = by_name[tool]
        kind = decl.tools[tool].kind
        assert kind is not None
        out.append(Tool(f"{name}.{local}", kind, pin.description or pin.title or "", pin.input_schema))
    out.append(Tool(f"{name}.health", "read", f"Health of the {name} provider (rule 6 format).", HEALTH_SCHEMA))
    if decl.resources is not None:
        out.append(Tool(f"{name}.resources.read", decl.resources.kind, f"Read a resource of the {name} upstream.",
                        RESOURCE_SCHEMA))
    if decl.prompts is not None:
        out.append(Tool(f"{name}.prompts.get", decl.prompts.kind, f"Get a prompt of the {name} upstream.",
                        PROMPT_SCHEMA))
    return out


__all__ = ["Declaration", "KindDecl", "PinnedTool", "Pins", "SecretUse", "Timeouts", "ToolDecl", "Upstream",
           "definition", "digest", "load_upstreams", "pins_of", "render_pins", "upstream_files"]
