"""Deviation exceptions over HTTP: the requester's and the approver's side of the lifecycle.

    GET  /v1/exceptions                  every exception and its state (any caller with an ops role)
    POST /v1/exceptions                  file one (any ops role): the filer is the token's user, bound to
                                         exception.yaml by a receipt the gateway signs (no vault needed)
    POST /v1/exceptions/{id}/approve     ops_admin, not the filer: sign the approval, reload policy
    POST /v1/exceptions/{id}/revoke      ops_admin, {"reason": "..."}: revoke, reload policy

The caller is whoever the bearer token says (the gateway's authenticator; the role comes from the
token's app_metadata.ops_role). The role, and every other check of a step, comes before any secret
is touched. Every outcome, refusals included, is an ops.run_events row; a filing or approval whose
row cannot be written is withdrawn and answered 503. What the files cannot vouch for (revocations,
the approvers' root) comes from the audit trail and the vault (gateway.exception_trust); when
those cannot be read, approving and filing wait (503).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, JSONBody

from engine.exceptions import Trust, iso, scan
from gateway.errors import HTTP_STATUS, Code, GatewayError
from gateway.exception_lifecycle import (
    LifecycleEvents,
    Refused,
    approval_key,
    approve,
    check_approval,
    check_revocation,
    prepare_filing,
    require_admin,
    revoke,
    summary,
    withdraw_approval,
    withdraw_filing,
    write_filing,
)
from gateway.exception_trust import TrustSource, trusted_key
from gateway.pipeline import Caller
from gateway.routes.guards import authenticated, caller_of
from gateway.services import Services
from otel.events import EventStoreError

log = logging.getLogger("opsgate.exceptions")


class RevokeBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: str


class FilingBody(msgspec.Struct, forbid_unknown_fields=True):
    """What `opsgate exception new` asks for; the requester is the caller, never a field."""

    provider: str
    rule: int
    justification: str
    compensating_controls: list[str]
    grant: dict[str, Any] = {}
    expires_at: str | None = None  # ISO 8601 with a timezone, or:
    days: float | None = None  # from now
    suffix: str | None = None
    readme: str | None = None


async def _caller(services: Services, request: Request[Any, Any, Any]) -> Caller:
    return caller_of(request)  # authenticated by the route's guard, before any body was read


def _root(services: Services) -> Path:
    root = services.engine.exceptions_dir
    if root is None:
        raise HTTPException(status_code=404, detail="this gateway has no exceptions directory configured")
    return Path(root)


def _events(services: Services) -> LifecycleEvents:
    if services.audit is None:
        raise HTTPException(status_code=503, detail="no audit store: exception lifecycle steps cannot be recorded")
    return LifecycleEvents(services.audit.store)


async def _recorded(events: LifecycleEvents, step: str, exception_id: str, actor: str, detail: dict[str, Any]) -> None:
    try:
        await events.record(step, exception_id, actor=actor, detail=detail)
    except (EventStoreError, ValueError) as e:
        log.error("could not record exception.%s for %s: %s", step, exception_id, type(e).__name__)
        err = GatewayError(Code.EVENT_STORE_UNAVAILABLE, f"the audit store could not record exception.{step}")
        raise HTTPException(status_code=HTTP_STATUS[err.code], detail=err.message, extra=err.payload) from None


async def _refuse(events: LifecycleEvents, e: Refused, actor: Caller, step: str) -> HTTPException:
    if e.status != 404:
        await _recorded(events, "refused", e.exception_id, actor.id, {"step": step, "problems": list(e.problems)})
    return HTTPException(status_code=e.status, detail=f"{step} refused: " + "; ".join(e.problems),
                         extra={"exception": e.exception_id, "problems": list(e.problems)})


def _source(services: Services) -> TrustSource:
    source = services.exception_trust
    if source is None:
        raise HTTPException(status_code=503, detail="no audit trail: revocations and keys cannot be vouched for")
    return source


async def _trust(services: Services) -> Trust:
    """What the audit trail and the vault vouch for now; 503 when they cannot be read (fail closed)."""
    try:
        trust = await _source(services).read()
    except Exception as e:  # any failure to read is a refusal, never a guess
        log.warning("exception step refused: the audit trail or the vault could not be read (%s)", type(e).__name__)
        trust = Trust(unavailable=f"the audit trail or the vault could not be read ({type(e).__name__})")
    if trust.unavailable:
        raise HTTPException(status_code=503, detail=f"exceptions cannot be changed now: {trust.unavailable}")
    return trust


def _vault(services: Services) -> Any:
    if services.vault is None:
        raise HTTPException(status_code=503, detail="no vault: the approvers' signing key is unavailable")
    return services.vault


async def _reload(services: Services) -> dict[str, Any]:
    ok, issues = await services.reload_policies()
    status = services.engine.status()
    return {"reloaded": ok, "revision": status["revision"], "reload_issues": [str(i) for i in issues],
            "active": status["exceptions"]["active"], "refused": status["exceptions"]["refused"]}


@get("/v1/exceptions", guards=[authenticated])
async def list_exceptions(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services: Services = request.app.state.services
    caller = await _caller(services, request)
    if caller.role is None:
        raise HTTPException(status_code=403, detail="an ops role is required to read exceptions")
    now, trust = services.clock(), await _trust(services)
    return {"exceptions": [summary(r, now) for r in scan(_root(services), trust)]}


@post("/v1/exceptions", status_code=201, guards=[authenticated])
async def file_exception(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services: Services = request.app.state.services
    caller = await _caller(services, request)  # before the body is even read
    root, events = _root(services), _events(services)
    try:
        body = msgspec.json.decode(await request.body(), type=FilingBody)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise HTTPException(status_code=400, detail=f"malformed filing: {e}") from None
    now = services.clock().replace(microsecond=0)
    try:
        draft = prepare_filing(root, caller, provider=body.provider, rule=body.rule, grant=body.grant,
                               justification=body.justification, compensating_controls=body.compensating_controls,
                               expires_at=_expiry(body, now), requested_at=now, suffix=body.suffix, readme=body.readme)
        await _trust(services)
        key = await trusted_key(draft.id, root, _vault(services))
        record = write_filing(root, draft, caller, key, now)
    except Refused as e:
        raise await _refuse(events, e, caller, "filing") from None
    assert record.filing is not None
    try:
        await _recorded(events, "filed", record.id, caller.id,
                        {"rule": body.rule, "provider": body.provider, "key_id": record.filing.key_id,
                         "spec_sha256": record.filing.spec_sha256})
    except HTTPException:
        withdraw_filing(root, record.id)  # no filing nobody can audit
        raise
    return {"exception": record.id, "filed_by": caller.id, "filed_at": record.filing.filed_at,
            "state": record.state(now), "folder": record.folder}


def _expiry(body: FilingBody, now: datetime) -> datetime:
    if body.days is not None:
        return now + timedelta(days=body.days)
    if body.expires_at is None:
        raise HTTPException(status_code=400, detail="give expires_at (ISO 8601 with a timezone) or days")
    try:
        return datetime.fromisoformat(body.expires_at)
    except ValueError:
        raise HTTPException(status_code=400, detail="expires_at is not ISO 8601") from None


@post("/v1/exceptions/{exception_id:str}/approve", status_code=200, guards=[authenticated])
async def approve_exception(request: Request[Any, Any, Any], exception_id: FromPath[str]) -> dict[str, Any]:
    services: Services = request.app.state.services
    caller = await _caller(services, request)
    root, events = _root(services), _events(services)
    now = services.clock()
    try:
        require_admin(exception_id, caller, "approve")  # nothing is read or touched before the role
        trust = await _trust(services)
        check_approval(root, exception_id, caller, now, trust)
        key = await trusted_key(exception_id, root, _vault(services))  # only now: the checks passed
        approval = approve(root, exception_id, caller, key, now, trust)
    except Refused as e:
        raise await _refuse(events, e, caller, "approval") from None
    try:
        await _recorded(events, "approved", exception_id, caller.id,
                        {"expires_at": approval.expires_at, "key_id": approval.key_id, "filed_by": approval.filed_by,
                         "content_sha256": approval.content_sha256})
    except HTTPException:
        withdraw_approval(root, exception_id)  # no approval nobody can audit
        raise
    return {"exception": exception_id, "filed_by": approval.filed_by, "approved_by": approval.approved_by,
            "approved_at": approval.approved_at, "expires_at": approval.expires_at, "key_id": approval.key_id,
            **await _reload(services)}


@post("/v1/exceptions/{exception_id:str}/revoke", status_code=200, guards=[authenticated])
async def revoke_exception(request: Request[Any, Any, Any], exception_id: FromPath[str],
                           data: JSONBody[RevokeBody]) -> dict[str, Any]:
    services: Services = request.app.state.services
    caller = await _caller(services, request)
    root, events = _root(services), _events(services)
    now = services.clock()
    try:
        require_admin(exception_id, caller, "revoke")
        trust = await _trust(services)
        check_revocation(root, exception_id, caller, data.reason, trust)
        revocation = revoke(root, exception_id, caller, data.reason, now, await approval_key(_vault(services)), trust)
    except Refused as e:
        raise await _refuse(events, e, caller, "revocation") from None
    _source(services).remember_revoked(exception_id)  # in force here even before its row is readable
    await _recorded(events, "revoked", exception_id, caller.id, {"reason": revocation.reason,
                                                                 "key_id": revocation.key_id})
    return {"exception": exception_id, "revoked_by": caller.id, "revoked_at": iso(now), **await _reload(services)}


ROUTES = [list_exceptions, file_exception, approve_exception, revoke_exception]
__all__ = ["ROUTES"]
