"""The gateway's side of the provider SDK's Runtime: the only doors a provider has to policy,
secrets and the audit trail. Each asks the engine first and fails closed.

Built once per gateway and bound to every provider at registration (gateway/registry.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from engine import Engine, Entity, Request, Uid, utcnow
from gateway.audit import Audit
from providers.sdk import CallContext, Verdict
from providers.sdk.vault import SecretNotFound, Vault

log = logging.getLogger("opsgate.runtime")


def caller_entities(call: CallContext) -> tuple[Uid, tuple[Entity, ...]]:
    uid = Uid.of("User", call.caller_id)
    return uid, (Entity(uid, (Uid.of("Role", call.role),) if call.role else ()),)


def secret_owner(key: str) -> str:
    """The provider a secret belongs to, by the constitution's naming convention
    (`socket_api_key` belongs to `socket`). The policy decides what that ownership allows."""
    return key.split("_", 1)[0]


class GatewayRuntime:
    def __init__(self, engine: Engine, *, vault: Vault | None = None, audit: Audit | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.vault = vault
        self.audit = audit
        self.clock = clock
        # Values handed to providers, so the redactor can strip them from rows, spans and logs.
        self.revealed: set[str] = set()

    def _verdict(self, req: Request, what: str) -> Verdict:
        try:
            d = self.engine.decide(req, now=self.clock())
        except Exception as e:  # an engine failure is a denial, never a pass
            log.error("engine failed deciding %s: %s", what, type(e).__name__)
            return Verdict(False, "", (), f"policy engine error deciding {what}")
        why = ", ".join(d.reasons) if d.reasons else "no policy permits it"
        return Verdict(d.allowed, d.decision_id, d.reasons, "" if d.allowed else why)

    def authorize(self, provider: str, action: str, resource: tuple[str, str], context: dict[str, Any],
                  call: CallContext) -> Verdict:
        uid, entities = caller_entities(call)
        return self._verdict(Request(uid, action, Uid.of(*resource), context, entities), f"{action} for {provider}")

    def egress(self, provider: str, *, scheme: str, host: str, port: int) -> Verdict:
        return self._verdict(Request(Uid.of("Provider", provider), "egress", Uid.of("Host", host),
                                     {"scheme": scheme, "port": port}), f"egress to {host}")

    def has_role(self, role: str | None, required: str) -> bool:
        if role is None:
            return False
        parents = self.engine.bundle.static_parents
        seen, todo = set(), [str(Uid.of("Role", role))]
        while todo:
            k = todo.pop()
            if k in seen:
                continue
            seen.add(k)
            todo.extend(parents.get(k, ()))
        return str(Uid.of("Role", required)) in seen

    async def read_secret(self, provider: str, key: str) -> str:
        owner = Uid.of("Provider", secret_owner(key))
        v = self._verdict(Request(Uid.of("Provider", provider), "read_secret", Uid.of("Secret", key), {},
                                  (Entity(Uid.of("Secret", key), (owner,)),)), f"read_secret {key}")
        if not v.allowed:
            raise PermissionError(f"{provider} may not read secret {key!r} ({v.message})")
        if self.vault is None:
            raise LookupError(f"no vault is configured; secret {key!r} is unavailable")
        try:
            value = self.vault.get(key)
        except SecretNotFound:
            raise LookupError(f"secret {key!r} is not in the vault; set it with `opsgate vault set {key}`") from None
        self.revealed.add(value)
        return value

    async def emit_event(self, provider: str, tool: str, payload: Any, result: Any,
                         call: CallContext | None) -> None:
        if self.audit is None:
            raise RuntimeError("no audit store is configured")
        await self.audit.record(caller_id=call.caller_id if call else None, tool=f"{provider}.{tool}",
                                arguments=payload, decision=None,
                                result=result if isinstance(result, dict) else {"result": result}, duration_ms=0)


__all__ = ["GatewayRuntime", "caller_entities", "secret_owner"]
