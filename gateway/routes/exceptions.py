"""Deviation exceptions over HTTP: the approver's side of the lifecycle.

    GET  /v1/exceptions                  every exception and its state (any caller with an ops role)
    POST /v1/exceptions/{id}/approve     ops_admin, not the requester: sign the approval, reload policy
    POST /v1/exceptions/{id}/revoke      ops_admin, {"reason": "..."}: revoke, reload policy

The caller is whoever the bearer token says (the gateway's authenticator; the role comes from the
token's app_metadata.ops_role). Every outcome, refusals included, is an ops.run_events row; an
approval whose row cannot be written is withdrawn and answered 503.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, JSONBody

from engine.exceptions import iso, scan
from gateway.errors import HTTP_STATUS, Code, GatewayError
from gateway.exception_lifecycle import (
    LifecycleEvents,
    Refused,
    approval_key,
    approve,
    key_known,
    revoke,
    summary,
    withdraw_approval,
)
from gateway.pipeline import Caller
from gateway.services import Services
from otel.events import EventStoreError

log = logging.getLogger("opsgate.exceptions")


class RevokeBody(msgspec.Struct, forbid_unknown_fields=True):
    reason: str


async def _caller(services: Services, request: Request[Any, Any, Any]) -> Caller:
    try:
        return await services.authenticate(request.headers.get("authorization"))
    except GatewayError as e:
        raise HTTPException(status_code=401, detail=e.message, extra=e.payload,
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) from None


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


async def _reload(services: Services) -> dict[str, Any]:
    ok, issues = await services.reload_policies()
    status = services.engine.status()
    return {"reloaded": ok, "revision": status["revision"], "reload_issues": [str(i) for i in issues],
            "active": status["exceptions"]["active"], "refused": status["exceptions"]["refused"]}


@get("/v1/exceptions")
async def list_exceptions(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services: Services = request.app.state.services
    caller = await _caller(services, request)
    if caller.role is None:
        raise HTTPException(status_code=403, detail="an ops role is required to read exceptions")
    now = services.clock()
    return {"exceptions": [summary(r, now) for r in scan(_root(services))]}


@post("/v1/exceptions/{exception_id:str}/approve", status_code=200)
async def approve_exception(request: Request[Any, Any, Any], exception_id: FromPath[str]) -> dict[str, Any]:
    services: Services = request.app.state.services
    caller = await _caller(services, request)
    root, events = _root(services), _events(services)
    if services.vault is None:
        raise HTTPException(status_code=503, detail="no vault: the approvers' signing key is unavailable")
    key = await approval_key(services.vault)
    added = not key_known(root, key)
    try:
        approval = approve(root, exception_id, caller, key, services.clock())
    except Refused as e:
        raise await _refuse(events, e, caller, "approval") from None
    try:
        await _recorded(events, "approved", exception_id, caller.id,
                        {"expires_at": approval.expires_at, "key_id": approval.key_id,
                         "content_sha256": approval.content_sha256})
    except HTTPException:
        withdraw_approval(root, exception_id)  # no approval nobody can audit
        raise
    return {"exception": exception_id, "approved_by": approval.approved_by, "approved_at": approval.approved_at,
            "expires_at": approval.expires_at, "key_id": approval.key_id, "public_key_added": added,
            **await _reload(services)}


@post("/v1/exceptions/{exception_id:str}/revoke", status_code=200)
async def revoke_exception(request: Request[Any, Any, Any], exception_id: FromPath[str],
                           data: JSONBody[RevokeBody]) -> dict[str, Any]:
    services: Services = request.app.state.services
    caller = await _caller(services, request)
    root, events = _root(services), _events(services)
    now = services.clock()
    try:
        revocation = revoke(root, exception_id, caller, data.reason, now)
    except Refused as e:
        raise await _refuse(events, e, caller, "revocation") from None
    await _recorded(events, "revoked", exception_id, caller.id, {"reason": revocation.reason})
    return {"exception": exception_id, "revoked_by": caller.id, "revoked_at": iso(now), **await _reload(services)}


ROUTES = [list_exceptions, approve_exception, revoke_exception]
__all__ = ["ROUTES"]
