"""What the gateway hands a provider at registration: the provider's only way to reach policy,
secrets and the audit trail (constitution rules 2-5, 7, 10).

A provider holds no policy. It can *ask* — may this caller do X, may I reach this host, may I
read this secret — and the gateway answers from its Cedar bundle. The provider can neither see
nor change what decides. An unbound provider (not registered with a gateway) is refused every
one of these: failing closed, not open.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, Protocol

import msgspec

from providers.sdk.tool import CallContext


class Verdict(msgspec.Struct, frozen=True):
    """A gateway decision as a provider sees it: allowed or not, which decision, and why."""

    allowed: bool
    decision_id: str
    reasons: tuple[str, ...] = ()
    message: str = ""


class Runtime(Protocol):
    """Implemented by the gateway (gateway/runtime.py). Every method fails closed."""

    def authorize(self, provider: str, action: str, resource: tuple[str, str], context: dict[str, Any],
                  call: CallContext) -> Verdict:
        """Decide `action` on `resource` (entity type, id) for the caller of `call`."""
        ...

    def egress(self, provider: str, *, scheme: str, host: str, port: int) -> Verdict:
        """Decide whether `provider` may open a connection to canonical `host`."""
        ...

    def has_role(self, role: str | None, required: str) -> bool:
        """Whether a caller with `role` holds `required` (the policy bundle's role hierarchy)."""
        ...

    async def read_secret(self, provider: str, key: str) -> str:
        """A `read_secret` decision, then the vault. Raises PermissionError or LookupError."""
        ...

    async def emit_event(self, provider: str, tool: str, payload: Any, result: Any,
                         call: CallContext | None) -> None:
        """Append one ops.run_events row; raises when it cannot be committed."""
        ...


class UnboundRuntime:
    """The runtime of a provider no gateway has registered: refuses everything."""

    def _refuse(self) -> PermissionError:
        return PermissionError("provider is not registered with a gateway: no policy, secrets or events")

    def authorize(self, provider: str, action: str, resource: tuple[str, str], context: dict[str, Any],
                  call: CallContext) -> Verdict:
        raise self._refuse()

    def egress(self, provider: str, *, scheme: str, host: str, port: int) -> Verdict:
        raise self._refuse()

    def has_role(self, role: str | None, required: str) -> bool:
        raise self._refuse()

    async def read_secret(self, provider: str, key: str) -> str:
        raise self._refuse()

    async def emit_event(self, provider: str, tool: str, payload: Any, result: Any,
                         call: CallContext | None) -> None:
        raise self._refuse()


# The call a tool handler is serving, set by the gateway around every handler invocation so
# `require_ops_access` and friends know whose call it is without threading it through.
current_call: ContextVar[CallContext | None] = ContextVar("opsgate_current_call", default=None)


__all__ = ["Runtime", "UnboundRuntime", "Verdict", "current_call"]
