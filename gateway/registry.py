"""The providers the gateway serves, and their tools under `<provider>.<tool>` names.

Only ProviderBase instances are accepted (constitution rule 10), and only tools that keep the
SDK's contract (`check_tool`: name, kind, description, async handler, a versioned input
Struct); anything else is refused at registration with a message saying why, and nothing of
a refused provider is served. A tool missing from the policy bundle's catalogue
(policies/tools.json) is still registered but can never be allowed: its action does not exist
in the schema, so every decision about it denies. `Registry.drift()` names such tools so the
gateway can say so at start-up.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_origin

import msgspec

from engine.catalogue import KINDS, Catalogue
from providers.sdk import CallContext, HealthStatus, ProviderBase, Resource, Runtime, Tool
from providers.sdk.resource import ResourceInput
from providers.sdk.tool import JsonSchemaInput


class RegistrationError(Exception):
    pass


PROVIDER_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
TOOL_NAME = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9][a-z0-9_-]*)*$")  # local part; `.v2` for a breaking change
# The constitution's exports and the egress client: a provider that replaced one could read
# env credentials or skip a decision, so it is refused rather than trusted.
# The kinds for provider tools; the policy vocabulary's `admin` is the gateway's own.
PROVIDER_KINDS = tuple(k for k in KINDS if k != "admin")
SDK_DOORS = ("bind", "require_ops_access", "emit_event", "get_vault_secret", "validate_hostname", "http",
             "mcp_http_client", "egress_proxy")


def check_tool(provider: str, tool: object) -> None:
    """Rules 9 and 10: a Tool with a valid name, a known kind, a description, an async handler and
    an input msgspec Struct whose `version` field is an explicit Literal of version strings."""
    if not isinstance(tool, Tool):
        raise RegistrationError(f"{provider}: tools() must return providers.sdk.Tool objects, got "
                                f"{type(tool).__name__}")
    full = f"{provider}.{tool.name}"
    if not isinstance(tool.name, str) or not TOOL_NAME.match(tool.name):
        raise RegistrationError(f"{full}: tool names are lowercase dotted words, e.g. scan.repo or scan.repo.v2")
    if tool.kind not in PROVIDER_KINDS:
        reserved = " (admin is reserved for the gateway's own actions)" if tool.kind in KINDS else ""
        raise RegistrationError(f"{full}: kind {tool.kind!r} is not one of {', '.join(PROVIDER_KINDS)}{reserved}")
    if not isinstance(tool.description, str) or not tool.description.strip():
        raise RegistrationError(f"{full}: needs a description (callers choose tools by it)")
    if not inspect.iscoroutinefunction(tool.handler):
        raise RegistrationError(f"{full}: the handler must be an async function")
    if isinstance(tool.input, JsonSchemaInput):
        return  # a pinned upstream definition: rule 9 is its pin (engine.upstreams), not a version field
    if not (isinstance(tool.input, type) and issubclass(tool.input, msgspec.Struct)):
        raise RegistrationError(f"{full}: the input must be a msgspec.Struct class (constitution rule 9)")
    version = next((f for f in msgspec.structs.fields(tool.input) if f.name == "version"), None)
    if version is None:
        raise RegistrationError(f"{full}: the input Struct needs an explicit `version` field (constitution rule 9)")
    literal = get_origin(version.type) is Literal and all(isinstance(v, str) for v in get_args(version.type))
    if not literal:
        raise RegistrationError(f"{full}: `version` must be a Literal of version strings, e.g. "
                                "Literal[\"1.0\"] (constitution rule 9)")


class HealthInput(msgspec.Struct, forbid_unknown_fields=True):
    version: Literal["1.0"] = "1.0"


def health_tool(provider: ProviderBase) -> Tool:
    """Constitution rule 6: every provider has `<provider>.health`, declared or not."""

    async def health(ctx: CallContext, args: HealthInput) -> HealthStatus:
        return await provider.health()

    return Tool("health", "read", HealthInput, f"Health of the {provider.name} provider (rule 6 format).", health)


def input_schema(struct: type[msgspec.Struct]) -> dict[str, Any]:
    """The tool's JSON Schema with the root object inlined (MCP wants `type: object` at the top),
    every description written as `inspect.cleandoc` writes a docstring: msgspec 0.23 cleans
    docstring indentation and earlier versions did not, and the served text must not depend on that."""
    schema = _clean_descriptions(msgspec.json.schema(struct))
    ref = schema.get("$ref")
    if ref is None:
        return _describe_version(schema)
    defs = dict(schema.get("$defs", {}))
    root = dict(defs.pop(ref.rsplit("/", 1)[-1]))
    if defs:
        root["$defs"] = defs
    return _describe_version(root)


def _describe_version(root: dict[str, Any]) -> dict[str, Any]:
    """Every argument a caller sees is described; `version`, which every tool has (rule 9), is
    described here once unless the tool says more."""
    version = root.get("properties", {}).get("version")
    if isinstance(version, dict) and "description" not in version:
        default = f"; omit it for {version['default']}" if "default" in version else ""
        root["properties"] = {**root["properties"], "version": {
            "description": f"Version of this tool's input schema (constitution rule 9){default}.", **version}}
    return root


def _clean_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else _clean_descriptions(v)
                for k, v in node.items()}
    if isinstance(node, list):
        return [_clean_descriptions(v) for v in node]
    return node


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
        """Check `provider` against the SDK's contract and serve its tools; all or nothing."""
        if not isinstance(provider, ProviderBase):
            raise RegistrationError(f"{type(provider).__name__} is not a ProviderBase: every provider must extend "
                                    "providers.sdk.ProviderBase (constitution rule 10)")
        name = getattr(provider, "name", None)
        if not isinstance(name, str) or not PROVIDER_NAME.match(name):
            raise RegistrationError(f"{type(provider).__name__} needs a `name` in lowercase without dots "
                                    f"(got {name!r})")
        if name in self._providers:
            raise RegistrationError(f"a provider named {name!r} is already registered")
        overridden = sorted(m for m in SDK_DOORS if getattr(type(provider), m) is not getattr(ProviderBase, m))
        if overridden:
            raise RegistrationError(f"{name}: overrides the SDK's {', '.join(overridden)}; a provider must reach "
                                    "policy, secrets, events and the network only through the SDK (rule 10)")
        try:
            declared = list(provider.tools())
        except Exception as e:
            raise RegistrationError(f"{name}: tools() failed: {type(e).__name__}: {e}") from None
        if not any(isinstance(t, Tool) and t.name == "health" for t in declared):
            declared.append(health_tool(provider))
        tools: dict[str, Registered] = {}
        for tool in declared:
            check_tool(name, tool)
            full = f"{name}.{tool.name}"
            if full in tools:
                raise RegistrationError(f"{full}: declared twice")
            try:
                schema = tool.input.schema if isinstance(tool.input, JsonSchemaInput) else input_schema(tool.input)
            except (TypeError, ValueError) as e:
                raise RegistrationError(f"{full}: its input has no JSON Schema ({e})") from None
            tools[full] = Registered(full, provider, tool, schema)
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


__all__ = ["Registered", "RegisteredResource", "RegistrationError", "Registry", "check_tool", "input_schema"]
