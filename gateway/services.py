"""The gateway's parts wired together: built once by create_app, shared by every route."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from litestar.exceptions import HTTPException

from engine import Decision, Engine, Uid, utcnow
from engine import Request as Query
from engine.impact import Asked
from gateway.audit import Audit
from gateway.edge import Refusals
from gateway.errors import HTTP_STATUS, Code, GatewayError
from gateway.metrics import Metrics
from gateway.pipeline import Caller, Pipeline, principal_of
from gateway.registry import Registry
from otel.events import OutboxEventStore
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
    # gateway.exception_trust.TrustSource: revocations and the pinned approvers' root, for the engine
    exception_trust: Any = None
    refusals: Refusals | None = None  # requests refused at the edge, counted into audit rows
    policy_candidates: str | None = None  # GatewayConfig.policy_candidates (POST /v1/policy/diff)
    tools_page_size: int = 100  # tools per tools/list page (GatewayConfig.tools_page_size)
    metrics: Metrics | None = None  # None: GET /metrics is off
    # With worker processes (gateway/workers.py): asks the supervisor to reload every worker's bundle.
    reload_workers: Callable[[], None] | None = None
    pipeline: Pipeline = field(init=False)

    def __post_init__(self) -> None:
        self.pipeline = Pipeline(self.engine, self.registry, self.limiter, self.clock, self.audit,
                                 scrub=self.redactor.redact_text, page_size=self.tools_page_size,
                                 metrics=self.metrics)
        if self.metrics is not None:
            self.metrics.policy(self.engine)

    def reload_here(self) -> tuple[bool, tuple[Any, ...]]:
        """Reload this process's bundle (blocking: call it off the event loop); SIGHUP does this."""
        ok, issues = self.engine.reload()
        if self.metrics is not None:
            self.metrics.policy(self.engine, reloaded=ok)
        return ok, issues

    async def reload_policies(self) -> tuple[bool, tuple[Any, ...]]:
        """A reload asked over HTTP: this process's bundle now (the answer says how it went), and
        with worker processes every other worker's too, through the supervisor."""
        ok, issues = await asyncio.get_running_loop().run_in_executor(None, self.reload_here)
        if ok and self.reload_workers is not None:
            try:
                self.reload_workers()
            except OSError as e:  # the supervisor is gone; this worker stops by itself soon
                log.error("could not ask the other workers to reload: %s", e)
        return ok, issues

    def admin_decision(self, caller: Caller, action: str) -> None:
        """Decide the gateway action (`opsgate.decide`, `opsgate.policy.reload`) an admin route
        performs for an authenticated caller; HTTP 403 FORBIDDEN with the decision when denied."""
        uid, entities = principal_of(caller)
        d = self.engine.decide(Query(uid, action, Uid.of("Provider", "opsgate"), {}, entities), now=self.clock())
        if not d.allowed:
            e = GatewayError(Code.FORBIDDEN, f"{action} denied for role {caller.role or 'none'}",
                             decision_id=d.decision_id, policy_ids=list(d.reasons))
            raise HTTPException(status_code=HTTP_STATUS[e.code], detail=e.message, extra=e.payload)

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

    async def outbox_backlog(self) -> int | None:
        """Events in the Postgres outbox's journal not yet shipped (None: no outbox)."""
        store = self.audit.store if self.audit is not None else None
        return await store.journal_backlog() if isinstance(store, OutboxEventStore) else None

    async def record_decision_api(self, caller: Caller, path: str, query: dict[str, Any], decision: Decision,
                                  duration_ms: int, asked: Asked | None = None) -> None:
        """A decision-API answer is an audited operation too (provider "opsgate", tool "decide"), with
        the request as decided (`asked`) so `opsgate policy replay` can decide it again.
        Raises HTTP 503 EVENT_STORE_UNAVAILABLE when it cannot be recorded: the answer is withheld."""
        if self.audit is None:
            return
        try:
            await self.audit.record(caller_id=caller.id, tool="opsgate.decide", arguments={"path": path, **query},
                                    decision=decision, result={"status": "answered", "allow": decision.allowed,
                                                               "decision_id": decision.decision_id},
                                    duration_ms=duration_ms, asked=asked)
        except GatewayError as e:
            raise HTTPException(status_code=HTTP_STATUS[e.code], detail=e.message, extra=e.payload) from None


__all__ = ["Authenticate", "Services"]
