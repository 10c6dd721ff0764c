"""The providers the gateway serves, and their tools under `<provider>.<tool>` names.

Only ProviderBase instances are accepted (constitution rule 10); anything else is refused at
registration with a message saying why. A tool missing from the policy bundle's catalogue
(policies/tools.json) is still registered but can never be allowed: its action does not exist
in the schema, so every decision about it denies. `Registry.drift()` names such tools so the
gateway can say so at start-up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from engine.catalogue import Catalogue
from providers.sdk import CallContext, HealthStatus, ProviderBase, Resource, Runtime, Tool
from providers.sdk.resource import ResourceInput


class RegistrationError(Exception):
    pass


class HealthInput(msgspec.Struct, forbid_unknown_fields=True):
    version: Literal["1.0"] = "1.0"


def health_tool(provider: ProviderBase) -> Tool:
    """Constitution rule 6: every provider has `<provider>.health`, declared or not."""

    async def health(ctx: CallContext, args: HealthInput) -> HealthStatus:
        return await provider.health()

    return Tool("health", "read", HealthInput, f"Health of the {provider.name} provider (rule 6 format).", health)


def input_schema(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """The tool's JSON Schema with the root object inlined (MCP wants `type: object` at the top)."""
    schema = msgspec.json.schema(struct)
    ref = schema.get("$ref")
    if ref is None:
        return schema
    defs = dict(schema.get("$defs", {}))
    root = dict(defs.pop(ref.rsplit("/", 1)[-1]))
    if defs:
        root["$defs"] = defs
    return root


@dataclass(frozen=True)
class Registered:
    name: str  # <provider>.<tool>
    provider: ProviderBase
    tool: Tool
    input_schema: dict[str, Any]


@dataclass(frozen=True)
class RegisteredResource:
    uri: str
    action: str  # <provider>.resource.<name>: the catalogue action that decides reading it
    provider: ProviderBase
    resource: Resource
    input_schema: dict[str, Any]


class Registry:
    def __init__(self, providers: Iterable[object] = (), *, runtime: Runtime | None = None) -> None:
        self._runtime = runtime
        self._providers: dict[str, ProviderBase] = {}
        self._tools: dict[str, Registered] = {}
        self._resources: dict[str, RegisteredResource] = {}
        for p in providers:
            self.register(p)

    def register(self, provider: object) -> None:
        if not isinstance(provider, ProviderBase):
            raise RegistrationError(f"{type(provider).__name__} is not a ProviderBase: every provider must extend "
                                    "providers.sdk.ProviderBase (constitution rule 10)")
        name = getattr(provider, "name", None)
        if not isinstance(name, str) or not name or "." in name:
            raise RegistrationError(f"{type(provider).__name__} needs a `name` without dots")
        if name in self._providers:
            raise RegistrationError(f"a provider named {name!r} is already registered")
        tools = {}
        declared = list(provider.tools())
        if not any(isinstance(t, Tool) and t.name == "health" for t in declared):
            declared.append(health_tool(provider))
        for tool in declared:
            if not isinstance(tool, Tool):
                raise RegistrationError(f"{name}: tools() must return providers.sdk.Tool objects")
            fields = {f.name for f in msgspec.structs.fields(tool.input)}
            if "version" not in fields:
                raise RegistrationError(f"{name}.{tool.name}: the input Struct needs an explicit `version` field "
                                        "(constitution rule 9)")
            full = f"{name}.{tool.name}"
            tools[full] = Registered(full, provider, tool, input_schema(tool.input))
        resources = {}
        for res in provider.resources():
            if not isinstance(res, Resource):
                raise RegistrationError(f"{name}: resources() must return providers.sdk.Resource objects")
            if res.uri in self._resources or res.uri in resources:
                raise RegistrationError(f"{name}: resource {res.uri!r} is already registered")
            resources[res.uri] = RegisteredResource(res.uri, f"{name}.resource.{res.name}", provider, res,
                                                    input_schema(ResourceInput))
        if self._runtime is not None:
            provider.bind(self._runtime)  # the provider's only door to policy, secrets and events
        self._providers[name] = provider
        self._tools.update(tools)
        self._resources.update(resources)

    @property
    def providers(self) -> dict[str, ProviderBase]:
        return dict(self._providers)

    @property
    def tools(self) -> list[Registered]:
        return list(self._tools.values())

    def get(self, name: str) -> Registered | None:
        return self._tools.get(name)

    @property
    def resources(self) -> list[RegisteredResource]:
        return list(self._resources.values())

    def resource(self, uri: str) -> RegisteredResource | None:
        return self._resources.get(uri)

    def drift(self, catalogue: Catalogue) -> list[str]:
        """Registered tools and resource actions the policy catalogue does not know (they will
        always be denied)."""
        known = {t.name for t in catalogue.tools}
        return sorted(n for n in (*self._tools, *(r.action for r in self._resources.values())) if n not in known)


__all__ = ["Registered", "RegisteredResource", "RegistrationError", "Registry", "input_schema"]
