"""ProviderBase: the one shape the gateway registers (constitution rule 10), with the
constitution's required exports in Python names.

Every export delegates to the Runtime the gateway binds at registration; none holds policy.
An unbound provider refuses them all (fail closed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from providers.sdk.egress import EgressClient, EgressRefused, decide
from providers.sdk.egress_mcp import mcp_http_client
from providers.sdk.egress_proxy import EgressProxy
from providers.sdk.health import HealthStatus
from providers.sdk.hostnames import HostRejected, parse_target
from providers.sdk.resource import Resource
from providers.sdk.runtime import Runtime, UnboundRuntime, current_call
from providers.sdk.tool import CallContext, Refused, Tool, ToolError

if TYPE_CHECKING:
    import httpx2


class SecretRefused(Refused, PermissionError):
    """A secret read the policy refused: reported FORBIDDEN, and still a PermissionError for
    code that catches that."""

    def __init__(self, message: str) -> None:
        super().__init__("FORBIDDEN", message)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ProviderBase:
    """Subclass, set `name`, return your tools from `tools()`, override `probe()` for health."""

    name: ClassVar[str]
    # Rule 6: a health check that takes longer than this answers "degraded". A provider may
    # take it as a constructor option (tests shorten it); the gateway bounds /health too.
    health_budget_s: float = 5.0

    # A provider whose tools may ask the calling client something mid-call (an MCP server's sampling,
    # elicitation, roots) through the call's peer; 2026-07-28 callers are then answered in rounds.
    relays_callers: ClassVar[bool] = False

    _runtime: Runtime = UnboundRuntime()

    def bind(self, runtime: Runtime) -> None:
        """Called by the gateway's registry, once; a provider never calls this itself."""
        if not isinstance(self._runtime, UnboundRuntime):
            raise RuntimeError(f"provider {self.name!r} is already bound to a gateway")
        self._runtime = runtime

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    def tools(self) -> Sequence[Tool]:
        raise NotImplementedError

    def resources(self) -> Sequence[Resource]:
        """Read-only MCP resources; none by default. Each is governed as the catalogue action
        `<provider>.resource.<name>` (kind read)."""
        return ()

    def serves(self, tool: str) -> bool:
        """Whether the tool `tool` (local name) is served right now; a tool that is not is left out of
        tools/list (its calls are the provider's to refuse). Every declared tool, by default."""
        return True

    async def start(self) -> None:
        """Called once when the gateway starts serving (e.g. to start child processes)."""

    async def stop(self) -> None:
        """Called once when the gateway stops: release whatever `start` or calls opened."""

    # -- relayed MCP resources and prompts (a provider fronting an MCP server) -----------------
    # Governed by the catalogue actions `<provider>.resources.read` (args {uri}) and
    # `<provider>.prompts.get` (args {name}); a provider without them relays nothing.

    async def relayed_resources(self) -> list[Any]:
        """MCP Resource objects listed live by the server this provider fronts."""
        return []

    def relays_resource(self, uri: str) -> bool:
        """Whether `uri` is one of this provider's relayed resources (as last listed)."""
        return False

    async def read_relayed_resource(self, ctx: CallContext, uri: str) -> Any:
        """The server's ReadResourceResult for `uri` (raise ToolError when it fails)."""
        raise ToolError(f"{self.name} relays no resources")

    async def relayed_prompts(self) -> list[Any]:
        """MCP Prompt objects listed live by the server this provider fronts (local names)."""
        return []

    async def get_relayed_prompt(self, ctx: CallContext, name: str, arguments: dict[str, str] | None) -> Any:
        """The server's GetPromptResult (raise ToolError when it fails)."""
        raise ToolError(f"{self.name} relays no prompts")

    def error_data(self, code: str, message: str) -> dict[str, Any]:
        """Extra JSON-RPC error `data` for every error a call to this provider's tools or resources
        ends in, the gateway's refusals included (e.g. a response envelope the provider's spec
        requires). The gateway's own keys (code, message, decision_id, ...) always win."""
        return {}

    # -- the constitution's exports -------------------------------------------------------

    async def require_ops_access(self, role: str) -> None:
        """Rule 2: refuse (FORBIDDEN) unless the current caller holds `role` or a role above it.
        The gateway has already decided the tool itself; this is for finer steps inside one."""
        call = current_call.get()
        if call is None:
            raise Refused("FORBIDDEN", f"{self.name}: no caller in context; {role} required")
        if not self._runtime.has_role(call.role, role):
            raise Refused("FORBIDDEN", f"{call.tool} requires {role}; caller has {call.role or 'no role'}")

    async def emit_event(self, tool: str, payload: Any, result: Any) -> None:
        """Rule 3: an extra ops.run_events row (every tool call already gets one automatically)."""
        await self._runtime.emit_event(self.name, tool, payload, result, current_call.get())

    async def get_vault_secret(self, key: str) -> str:
        """Rule 4: one of this provider's own secrets (`<provider>_<what>`), after a `read_secret`
        decision. A refusal raises SecretRefused (the caller sees FORBIDDEN); a secret that is not
        set or cannot be read raises ToolError naming it. Neither message holds a value."""
        try:
            return await self._runtime.read_secret(self.name, key)
        except PermissionError as e:
            raise SecretRefused(str(e)) from None
        except LookupError as e:
            raise ToolError(str(e)) from None

    def validate_hostname(self, url: str) -> None:
        """Rule 5: raise EgressRefused (a Refused, code FORBIDDEN) unless the policy lets this
        provider reach `url`. The URL is canonicalised exactly as the SDK's HTTP client does it
        (providers.sdk.hostnames) and decided by the same `egress` policy. The client does this
        on every request and redirect hop by itself, and also checks the address it connects to."""
        try:
            target = parse_target(url)
        except HostRejected as e:
            raise EgressRefused(f"{self.name} may not reach that URL: {e.reason}", reason=e.reason) from None
        verdict = decide(self, target)
        if not verdict.allowed:
            reason = verdict.message or "not on the provider's allowlist"
            raise EgressRefused(f"{self.name} may not reach {target.host!r}: {reason}", reason=reason,
                                refused_by=verdict.decision_id)

    def http(self, **kwargs: Any) -> EgressClient:
        """The provider's HTTP client (httpx.AsyncClient kwargs): egress-checked on every request
        and redirect hop. Providers get no other way out (rule 5) and no client for the gateway
        or for each other (rule 7)."""
        return EgressClient(self, **kwargs)

    def mcp_http_client(self, *, headers: dict[str, str] | None = None, timeout: float = 30.0,
                        read_timeout: float = 300.0) -> httpx2.AsyncClient:
        """An httpx2 client for the `mcp` SDK's streamable HTTP client, egress-checked exactly as
        `http()` is (providers.sdk.egress_mcp): the only way a provider reaches an MCP server."""
        return mcp_http_client(self, headers=headers, timeout=timeout, read_timeout=read_timeout)

    def egress_proxy(self) -> EgressProxy:
        """A local HTTP proxy for a child process of this provider, deciding every target with
        this provider's egress policy (providers.sdk.egress_proxy). The caller starts and closes it."""
        return EgressProxy(self)

    async def probe(self) -> None:
        """Raise if the upstream is not usable; the vendor's cheapest authenticated call."""

    async def health(self) -> HealthStatus:
        """Rule 6: `ok`; `degraded` when the probe needs more than `health_budget_s` (it is
        abandoned then); `down` when it fails."""
        start = time.perf_counter()
        try:
            await asyncio.wait_for(self.probe(), self.health_budget_s)
        except TimeoutError:
            return HealthStatus(self.name, "degraded", int((time.perf_counter() - start) * 1000), now_iso(),
                                f"no answer within {self.health_budget_s:g}s")
        except (ToolError, Refused) as e:  # already a message meant for people
            return HealthStatus(self.name, "down", int((time.perf_counter() - start) * 1000), now_iso(), e.message)
        except Exception as e:  # a failed probe is a health answer, not a crash
            return HealthStatus(self.name, "down", int((time.perf_counter() - start) * 1000), now_iso(),
                                f"{type(e).__name__}: {e}")
        return HealthStatus(self.name, "ok", int((time.perf_counter() - start) * 1000), now_iso())


__all__ = ["CallContext", "ProviderBase", "SecretRefused", "now_iso"]
