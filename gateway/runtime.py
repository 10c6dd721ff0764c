"""The gateway's side of the provider SDK's Runtime: the only doors a provider has to policy,
secrets and the audit trail. Each asks the engine first and fails closed.

Built once per gateway and bound to every provider at registration (gateway/registry.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from opentelemetry import trace

from engine import Decision, Engine, Entity, Request, Uid, utcnow
from engine.impact import Asked
from gateway.audit import Audit
from gateway.errors import GatewayError
from gateway.pipeline import principal
from providers.sdk import CallContext, Verdict, current_call
from providers.sdk.vault import SecretNotFound, Vault, VaultError

log = logging.getLogger("opsgate.runtime")


def secret_owner(key: str) -> str:
    """The provider a secret belongs to, by the constitution's naming convention
    (`socket_api_key` belongs to `socket`). The policy decides what that ownership allows."""
    return key.split("_", 1)[0]


def _span_event(key: str, allowed: bool, decision: Decision | None) -> None:
    attributes: dict[str, str | bool] = {"opsgate.secret.name": key, "opsgate.decision": allowed}
    if decision is not None:
        attributes["opsgate.decision_id"] = decision.decision_id
    trace.get_current_span().add_event("opsgate.read_secret", attributes)


class GatewayRuntime:
    def __init__(self, engine: Engine, *, vault: Vault | None = None, audit: Audit | None = None,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.engine = engine
        self.vault = vault
        self.audit = audit
        self.clock = clock
        # Values handed to providers, so the redactor can strip them from rows, spans and logs.
        # Replaced, never mutated: span-export and logging threads iterate it while calls add to it.
        self.revealed: frozenset[str] = frozenset()

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
        uid, entities = principal(call.caller_id, call.role)
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
        """Constitution rule 4: a `read_secret` decision (the Secret's parent is the provider its
        name belongs to), then the vault. A refused or failed read leaves its own ops.run_events
        row (tool `<provider>.read_secret`, the decision's policy ids), whatever the provider then
        does with the error; an allowed one is a span event. The value is remembered in `revealed`
        so the redactor strips it from rows, spans and logs from then on."""
        call = current_call.get()
        secret = Uid.of("Secret", key)
        request = Request(Uid.of("Provider", provider), "read_secret", secret, {},
                          (Entity(secret, (Uid.of("Provider", secret_owner(key)),)),))
        decision: Decision | None
        asked = Asked(request, self.clock())  # kept in a refusal's row, for `opsgate policy replay`
        try:
            decision = self.engine.decide(request, now=asked.now)
        except Exception as e:  # an engine failure is a denial, never a pass
            log.error("engine failed deciding read_secret %s for %s: %s", key, provider, type(e).__name__)
            decision = None
        allowed = decision is not None and decision.allowed
        _span_event(key, allowed, decision)
        if not allowed:
            why = "policy engine error" if decision is None else (
                ", ".join(decision.reasons) if decision.reasons else "no policy permits it")
            message = f"{provider} may not read secret {key!r} ({why})"
            await self._record_secret_refusal(provider, key, call, decision, "denied", message, asked)
            raise PermissionError(message)
        if self.vault is None:
            message = f"no vault is configured; secret {key!r} is unavailable"
            await self._record_secret_refusal(provider, key, call, decision, "unavailable", message, asked)
            raise LookupError(message)
        try:
            value = await self.vault.get(key)
        except SecretNotFound:
            message = f"secret {key!r} is not in the vault; an operator must set it with `opsgate vault set {key}`"
            await self._record_secret_refusal(provider, key, call, decision, "not_found", message, asked)
            raise LookupError(message) from None
        except VaultError as e:  # its message names the secret, never a value
            message = f"secret {key!r} is unavailable: {e}"
            await self._record_secret_refusal(provider, key, call, decision, "unavailable", message, asked)
            raise LookupError(message) from None
        if value not in self.revealed:
            self.revealed = self.revealed | {value}
        return value

    async def _record_secret_refusal(self, provider: str, key: str, call: CallContext | None,
                                     decision: Decision | None, status: str, message: str, asked: Asked) -> None:
        if self.audit is None:
            return
        try:
            await self.audit.record(caller_id=call.caller_id if call else None, tool=f"{provider}.read_secret",
                                    arguments={"name": key, "during": call.tool if call else None},
                                    decision=decision, result={"status": status, "message": message},
                                    duration_ms=0, asked=asked)
        except GatewayError:  # the store is down: the refusal stands, and the call's own row will fail too
            log.error("could not record the refused read of secret %s by %s", key, provider)

    async def emit_event(self, provider: str, tool: str, payload: Any, result: Any,
                         call: CallContext | None) -> None:
        if self.audit is None:
            raise RuntimeError("no audit store is configured")
        await self.audit.record(caller_id=call.caller_id if call else None, tool=f"{provider}.{tool}",
                                arguments=payload, decision=None,
                                result=result if isinstance(result, dict) else {"result": result}, duration_ms=0)


class ProviderDoor:
    """What a provider is actually bound to: the Runtime protocol's five methods and nothing else.
    Binding the GatewayRuntime itself would hand every provider `.engine`, `.vault` and `.audit`
    in-process; the independence scan (tests/test_independence.py) forbids reaching for them,
    and this makes them unreachable by attribute too."""

    __slots__ = ("authorize", "egress", "emit_event", "has_role", "read_secret")

    def __init__(self, runtime: GatewayRuntime) -> None:
        self.authorize = runtime.authorize
        self.egress = runtime.egress
        self.has_role = runtime.has_role
        self.read_secret = runtime.read_secret
        self.emit_event = runtime.emit_event


__all__ = ["GatewayRuntime", "ProviderDoor", "secret_owner"]
