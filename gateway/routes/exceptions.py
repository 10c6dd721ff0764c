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

from datetime import datetime, timedelta
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, JSONBody

from gateway import exception_service as service
from gateway.exception_lifecycle import (
    Refused,
    prepare_filing,
    withdraw_filing,
    write_filing,
)
from gateway.exception_trust import trusted_key
from gateway.pipeline import Caller
from gateway.routes.guards import authenticated, caller_of
from gateway.services import Services


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


@get("/v1/exceptions", guards=[authenticated])
async def list_exceptions(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services: Services = request.app.state.services
    return {"exceptions": await service.exception_summaries(services, await _caller(services, request))}


@post("/v1/exceptions", status_code=201, guards=[authenticated])
async def file_exception(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services: Services = request.app.state.services
    caller = await _caller(services, request)  # before the body is even read
    root, events = service.exceptions_root(services), service.lifecycle_events(services)
    try:
        body = msgspec.json.decode(await request.body(), type=FilingBody)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise HTTPException(status_code=400, detail=f"malformed filing: {e}") from None
    now = services.clock().replace(microsecond=0)
    try:
        draft = prepare_filing(root, caller, provider=body.provider, rule=body.rule, grant=body.grant,
                               justification=body.justification, compensating_controls=body.compensating_controls,
                               expires_at=_expiry(body, now), requested_at=now, suffix=body.suffix, readme=body.readme)
        await service.current_trust(services)
        key = await trusted_key(draft.id, root, service.vault_of(services))
        record = write_filing(root, draft, caller, key, now)
    except Refused as e:
        raise await service.refusal(events, e, caller, "filing") from None
    assert record.filing is not None
    try:
        await service.recorded(events, "filed", record.id, caller.id,
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
    return await service.approve_exception(services, await _caller(services, request), exception_id)


@post("/v1/exceptions/{exception_id:str}/revoke", status_code=200, guards=[authenticated])
async def revoke_exception(request: Request[Any, Any, Any], exception_id: FromPath[str],
                           data: JSONBody[RevokeBody]) -> dict[str, Any]:
    services: Services = request.app.state.services
    return await service.revoke_exception(services, await _caller(services, request), exception_id, data.reason)


ROUTES = [list_exceptions, file_exception, approve_exception, revoke_exception]
__all__ = ["ROUTES"]
