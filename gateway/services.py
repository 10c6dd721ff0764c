"""The gateway's parts wired together: built once by create_app, shared by every route."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from litestar import Request
from litestar.exceptions import HTTPException

from engine import Decision, Engine, Uid, utcnow
from engine import Request as Query
from gateway.audit import Audit
from gateway.errors import HTTP_STATUS, Code, GatewayError
from gateway.pipeline import Caller, Pipeline, principal_of
from gateway.registry import Registry
from otel.redact import Redactor

log = logging.getLogger("opsgate.gateway")

Authenticate = Callable[[str | None], Awaitable[Caller]]


@dataclass
class Services:
    engine: Engine
    registry: Registry
    limiter: Any  # gateway.ratelimit Limiter
    authenticate: Authenticate
    audit: Audit | None
    clock: Callable[[], datetime] = utcnow
    redactor: Redactor = field(default_factory=Redactor)
    vault: Any = None  # providers.sdk.vault Vault: holds the exception approvers' signing key
    pipeline: Pipeline = field(init=False)

    def __post_init__(self) -> None:
        self.pipeline = Pipeline(self.engine, self.registry, self.limiter, self.clock, self.audit,
                                 scrub=self.redactor.redact_text)

    async def http_caller(self, request: Request[Any, Any, Any], *, action: str) -> Caller:
        """Authenticate an HTTP API request and decide the gateway action it performs."""
        try:
            caller = await self.authenticate(request.headers.get("authorization"))
        except GatewayError as e:
            raise HTTPException(status_code=401, detail=e.message, extra=e.payload,
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None
        uid, entities = principal_of(caller)
        d = self.engine.decide(Query(uid, action, Uid.of("Provider", "opsgate"), {}, entities), now=self.clock())
        if not d.allowed:
            e = GatewayError(Code.FORBIDDEN, f"{action} denied for role {caller.role or 'none'}",
                             decision_id=d.decision_id, policy_ids=list(d.reasons))
            raise HTTPException(status_code=HTTP_STATUS[e.code], detail=e.message, extra=e.payload)
        return caller

    async def start_providers(self) -> None:
        """Each provider's start hook (upstream MCP servers: children, sessions, re-listing)."""
        for provider in self.registry.providers.values():
            try:
                await provider.start()
            except Exception:  # one provider failing to start must not keep the others down
                log.exception("provider %s failed to start", provider.name)

    async def stop_providers(self) -> None:
        for provider in self.registry.providers.values():
            try:
                await provider.stop()
            except Exception:
                log.exception("provider %s failed to stop", provider.name)

    async def limiter_health(self) -> dict[str, Any]:
        return await self.limiter.health() if self.limiter is not None else {"backend": "none", "ok": True}

    async def events_health(self) -> dict[str, Any]:
        return await self.audit.store.health() if self.audit is not None else {"store": "none", "status": "ok"}

    async def record_decision_api(self, caller: Caller, path: str, query: dict[str, Any], decision: Decision,
                                  duration_ms: int) -> None:
        """A decision-API answer is an audited operation too (provider "opsgate", tool "decide").
        Raises HTTP 503 EVENT_STORE_UNAVAILABLE when it cannot be recorded: the answer is withheld."""
        if self.audit is None:
            return
        try:
            await self.audit.record(caller_id=caller.id, tool="opsgate.decide", arguments={"path": path, **query},
                                    decision=decision, result={"status": "answered", "allow": decision.allowed,
                                                               "decision_id": decision.decision_id},
                                    duration_ms=duration_ms)
        except GatewayError as e:
            raise HTTPException(status_code=HTTP_STATUS[e.code], detail=e.message, extra=e.payload) from None


__all__ = ["Authenticate", "Services"]
