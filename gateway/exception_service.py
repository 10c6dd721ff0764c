"""Approving, revoking and listing deviation exceptions for a verified caller: the one code path
behind `POST /v1/exceptions/{id}/approve|revoke` and the console's approve and revoke buttons.

Invariants (beside gateway/exception_lifecycle.py's):
- The role is checked before anything is read; every other check before the vault is touched.
- Every outcome, refusals included, is an ops.run_events row; an approval whose row cannot be
  written is withdrawn and answered 503; a revocation is remembered here at once.
- What the files cannot vouch for (revocations, the approvers' root) comes from the audit trail and
  the vault; when those cannot be read, nothing changes (503).
Refusals are Litestar HTTPExceptions with the status and words the HTTP API answers; the console
shows the same words.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from litestar.exceptions import HTTPException

from engine.exceptions import Trust, iso, scan
from gateway.errors import HTTP_STATUS, Code, GatewayError
from gateway.exception_lifecycle import (
    LifecycleEvents,
    Refused,
    approval_key,
    approve,
    check_approval,
    check_revocation,
    require_admin,
    revoke,
    summary,
    withdraw_approval,
)
from gateway.exception_trust import TrustSource, trusted_key
from gateway.pipeline import Caller
from gateway.services import Services
from otel.events import EventStoreError

log = logging.getLogger("opsgate.exceptions")


def exceptions_root(services: Services) -> Path:
    root = services.engine.exceptions_dir
    if root is None:
        raise HTTPException(status_code=404, detail="this gateway has no exceptions directory configured")
    return Path(root)


def lifecycle_events(services: Services) -> LifecycleEvents:
    if services.audit is None:
        raise HTTPException(status_code=503, detail="no audit store: exception lifecycle steps cannot be recorded")
    return LifecycleEvents(services.audit.store)


async def recorded(events: LifecycleEvents, step: str, exception_id: str, actor: str, detail: dict[str, Any]) -> None:
    try:
        await events.record(step, exception_id, actor=actor, detail=detail)
    except (EventStoreError, ValueError) as e:
        log.error("could not record exception.%s for %s: %s", step, exception_id, type(e).__name__)
        err = GatewayError(Code.EVENT_STORE_UNAVAILABLE, f"the audit store could not record exception.{step}")
        raise HTTPException(status_code=HTTP_STATUS[err.code], detail=err.message, extra=err.payload) from None


async def refusal(events: LifecycleEvents, e: Refused, actor: Caller, step: str) -> HTTPException:
    if e.status != 404:
        await recorded(events, "refused", e.exception_id, actor.id, {"step": step, "problems": list(e.problems)})
    return HTTPException(status_code=e.status, detail=f"{step} refused: " + "; ".join(e.problems),
                         extra={"exception": e.exception_id, "problems": list(e.problems)})


def trust_source(services: Services) -> TrustSource:
    source = services.exception_trust
    if source is None:
        raise HTTPException(status_code=503, detail="no audit trail: revocations and keys cannot be vouched for")
    return source


async def current_trust(services: Services) -> Trust:
    """What the audit trail and the vault vouch for now; 503 when they cannot be read (fail closed)."""
    try:
        trust = await trust_source(services).read()
    except Exception as e:  # any failure to read is a refusal, never a guess
        log.warning("exception step refused: the audit trail or the vault could not be read (%s)", type(e).__name__)
        trust = Trust(unavailable=f"the audit trail or the vault could not be read ({type(e).__name__})")
    if trust.unavailable:
        raise HTTPException(status_code=503, detail=f"exceptions cannot be changed now: {trust.unavailable}")
    return trust


def vault_of(services: Services) -> Any:
    if services.vault is None:
        raise HTTPException(status_code=503, detail="no vault: the approvers' signing key is unavailable")
    return services.vault


async def reload_after(services: Services) -> dict[str, Any]:
    ok, issues = await services.reload_policies()
    status = services.engine.status()
    return {"reloaded": ok, "revision": status["revision"], "reload_issues": [str(i) for i in issues],
            "active": status["exceptions"]["active"], "refused": status["exceptions"]["refused"]}


async def exception_summaries(services: Services, caller: Caller) -> list[dict[str, Any]]:
    """Every exception and its state, as `GET /v1/exceptions` lists them (any ops role)."""
    if caller.role is None:
        raise HTTPException(status_code=403, detail="an ops role is required to read exceptions")
    now, trust = services.clock(), await current_trust(services)
    return [summary(r, now) for r in scan(exceptions_root(services), trust)]


async def approve_exception(services: Services, caller: Caller, exception_id: str) -> dict[str, Any]:
    """Approve `exception_id` as `caller` (an ops_admin who is not its filer), sign, record, reload."""
    root, events = exceptions_root(services), lifecycle_events(services)
    now = services.clock()
    try:
        require_admin(exception_id, caller, "approve")  # nothing is read or touched before the role
        trust = await current_trust(services)
        check_approval(root, exception_id, caller, now, trust)
        key = await trusted_key(exception_id, root, vault_of(services))  # only now: the checks passed
        approval = approve(root, exception_id, caller, key, now, trust)
    except Refused as e:
        raise await refusal(events, e, caller, "approval") from None
    try:
        await recorded(events, "approved", exception_id, caller.id,
                       {"expires_at": approval.expires_at, "key_id": approval.key_id, "filed_by": approval.filed_by,
                        "content_sha256": approval.content_sha256})
    except HTTPException:
        withdraw_approval(root, exception_id)  # no approval nobody can audit
        raise
    return {"exception": exception_id, "filed_by": approval.filed_by, "approved_by": approval.approved_by,
            "approved_at": approval.approved_at, "expires_at": approval.expires_at, "key_id": approval.key_id,
            **await reload_after(services)}


async def revoke_exception(services: Services, caller: Caller, exception_id: str, reason: str) -> dict[str, Any]:
    """Revoke `exception_id` as `caller` (an ops_admin) with `reason`: permanent, recorded, reloaded."""
    root, events = exceptions_root(services), lifecycle_events(services)
    now = services.clock()
    try:
        require_admin(exception_id, caller, "revoke")
        trust = await current_trust(services)
        check_revocation(root, exception_id, caller, reason, trust)
        revocation = revoke(root, exception_id, caller, reason, now, await approval_key(vault_of(services)), trust)
    except Refused as e:
        raise await refusal(events, e, caller, "revocation") from None
    trust_source(services).remember_revoked(exception_id)  # in force here even before its row is readable
    await recorded(events, "revoked", exception_id, caller.id, {"reason": revocation.reason,
                                                                "key_id": revocation.key_id})
    return {"exception": exception_id, "revoked_by": caller.id, "revoked_at": iso(now),
            **await reload_after(services)}


__all__ = ["approve_exception", "current_trust", "exception_summaries", "exceptions_root", "lifecycle_events",
           "recorded", "refusal", "reload_after", "revoke_exception", "trust_source", "vault_of"]
