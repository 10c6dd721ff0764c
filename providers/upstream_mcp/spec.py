"""An upstream MCP server as the gateway hands it to the adapter: plain data, read by the gateway
from the policy bundle (policies/upstreams/), never by the provider itself.

The field names are the bundle's (engine.upstreams); unknown fields are ignored here so the
engine may grow the format without the adapter having to follow in lockstep.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class SecretUse(msgspec.Struct, frozen=True):
    name: str
    header: str | None = None
    env: str | None = None
    format: str = "{value}"


class ToolDecl(msgspec.Struct, frozen=True):
    kind: str | None = None
    as_: str | None = msgspec.field(default=None, name="as")


class KindDecl(msgspec.Struct, frozen=True):
    kind: str


class Timeouts(msgspec.Struct, frozen=True):
    connect_s: float = 10.0
    call_s: float = 60.0
    list_s: float = 10.0


class Declaration(msgspec.Struct, frozen=True):
    transport: Literal["stdio", "http"]
    url: str | None = None
    command: str | None = None
    args: tuple[str, ...] = ()
    cwd: str | None = None
    start: Literal["lazy", "startup"] = "lazy"
    pool: int = 4
    timeouts: Timeouts = Timeouts()
    relist_s: float = 300.0
    isolation: Literal["netns", "proxy"] = "netns"
    protocol: Literal["auto", "legacy"] = "auto"
    secrets: tuple[SecretUse, ...] = ()
    tools: dict[str, ToolDecl] = {}
    resources: KindDecl | None = None
    prompts: KindDecl | None = None
    max_result_bytes: int = 4 << 20


class PinnedTool(msgspec.Struct, frozen=True):
    name: str
    digest: str = ""
    description: str | None = None
    title: str | None = None
    input_schema: dict[str, Any] = {}
    output_schema: dict[str, Any] | None = None
    annotations: dict[str, Any] | None = None


class Pins(msgspec.Struct, frozen=True):
    upstream: str
    tools: tuple[PinnedTool, ...] = ()


class UpstreamSpec(msgspec.Struct, frozen=True):
    name: str
    declaration: Declaration
    pins: Pins | None = None
    served: dict[str, str] = {}  # upstream tool name -> local served name (pinned, with a kind)

    @classmethod
    def of(cls, data: Any) -> UpstreamSpec:
        """From the gateway's plain data (a dict, or any msgspec Struct of the same shape)."""
        raw = data if isinstance(data, dict) else msgspec.to_builtins(data)
        return msgspec.convert(raw, cls)


def definition(tool: PinnedTool | dict[str, Any]) -> dict[str, Any]:
    """The pinned parts of a tool definition in one shape (as engine.upstreams.definition)."""
    raw = msgspec.to_builtins(tool) if isinstance(tool, PinnedTool) else dict(tool)
    out = {"name": raw.get("name"), "title": raw.get("title"), "description": raw.get("description"),
           "input_schema": raw.get("input_schema") or {}, "output_schema": raw.get("output_schema"),
           "annotations": raw.get("annotations")}
    return {k: v for k, v in out.items() if v is not None}


__all__ = ["Declaration", "PinnedTool", "Pins", "SecretUse", "UpstreamSpec", "definition"]
