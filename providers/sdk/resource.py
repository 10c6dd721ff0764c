"""How a provider declares read-only MCP resources: a URI, a name, a handler that returns text.

Governed like tools: each resource names the catalogue action that decides it (a `read`-kind
entry in policies/tools.json, by default `<provider>.resource.<name>`), so reading one is
authenticated, decided by policy, rate-limited and audited exactly as a tool call is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import msgspec

from providers.sdk.tool import CallContext

ResourceHandler = Callable[[CallContext], Awaitable[str]]


class ResourceInput(msgspec.Struct, forbid_unknown_fields=True):
    """The argument record of a resource's catalogue action: a resource takes no arguments, the
    version is there for rule 9 like every tool's."""

    version: Literal["1.0"] = "1.0"


@dataclass(frozen=True)
class Resource:
    """A resource of a provider, e.g. `Resource("omega://schema", "schema", ...)`; its action is
    `<provider>.resource.<name>`."""

    uri: str
    name: str
    description: str
    mime_type: str
    handler: ResourceHandler


__all__ = ["Resource", "ResourceHandler", "ResourceInput"]
