"""Deviation exceptions in the console: their states, each one's story, approving and revoking.

    GET  /console/exceptions                    pending, active (expiring within 14 days marked), expired,
                                                revoked, invalid; any ops role
    GET  /console/exceptions/review             the monthly review report, as a page
    GET  /console/exceptions/{id}               justification, controls, grants, filer, approver, history
    GET  /console/exceptions/{id}/approve       ops_admin: the confirmation, restating grants and expiry
    POST /console/exceptions/{id}/approve       the same service as POST /v1/exceptions/{id}/approve
    GET  /console/exceptions/{id}/revoke        ops_admin: the confirmation, asking for a reason
    POST /console/exceptions/{id}/revoke        the same service as POST /v1/exceptions/{id}/revoke

Invariants: approving and revoking here is gateway.exception_service, the code the HTTP API runs:
the same checks in the same order (the role first, four eyes, expiry, the audit trail's revocations,
the approvers' key chain), the same audit rows, the same refusals in the same words. The history is
read from the audit trail under its own rule (only ops_admin sees other users' rows).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.response import Template

from engine.exceptions import RULE_NAMES, Record, find, iso, scan
from gateway import exception_service as service
from gateway.console.guards import ADMIN, admin, caller_of, csrf_checked, signed_in
from gateway.console.pages import render
from gateway.exception_lifecycle import review_report, summary
from gateway.pipeline import Caller
from gateway.services import Services
from otel.events import EventStoreError
from otel.events.paging import Filters

STATES = ("pending", "active", "expired", "revoked", "invalid")
MAX_REASON = 2000


def _detail(r: Record, now: Any) -> dict[str, Any]:
    s = r.spec
    return {**summary(r, now), "justification": s.justification if s else None,
            "controls": list(s.compensating_controls) if s else [], "rule_name": RULE_NAMES.get(s.rule) if s else None,
            "grant_items": [(k, _shown(v)) for k, v in msgspec.to_builtins(s.grant).items() if k != "kind" and v]
            if s else []}


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return json.dumps(value, sort_keys=True) if isinstance(value, dict) else str(value)


HISTORY_PAGES = 5  # budgeted pages read for one exception's history (otel/events/paging.py)


async def _history(services: Services, caller: Caller, exception_id: str) -> list[dict[str, Any]]:
    """The exception's lifecycle rows (provider `opsgate`, its id in exception_ids), newest first."""
    if services.audit is None:
        return []
    filters = Filters(provider="opsgate", exception_id=exception_id,
                      caller_id=None if caller.role == ADMIN else caller.id)
    events: list[Any] = []
    cursor = None
    try:
        for _ in range(HISTORY_PAGES):
            page = await services.audit.store.page(filters, limit=100, cursor=cursor)
            events += page.events
            cursor = page.more
            if cursor is None or len(events) >= 100:
                break
    except EventStoreError:
        return []
    return [{"id": e.id, "at": e.created_at[:19].replace("T", " "), "tool": f"{e.provider}.{e.tool}",
             "actor": e.caller_id, "status": (e.result or {}).get("status"),
             "detail": {k: v for k, v in (e.payload or {}).items() if k not in ("exception", "_request")}}
            for e in events[:100]]


async def _record(services: Services, caller: Caller, exception_id: str) -> Record:
    if caller.role is None:
        raise HTTPException(status_code=403, detail="an ops role is required to read exceptions")
    record = find(service.exceptions_root(services), exception_id, await service.current_trust(services))
    if record is None:
        raise HTTPException(status_code=404, detail=f"no exception {exception_id!r}")
    return record


@get("/exceptions", guards=[signed_in])
async def exceptions(request: Request[Any, Any, Any]) -> Template:
    services: Services = request.app.state.services
    caller = caller_of(request)
    await service.exception_summaries(services, caller)  # the API's rule for who may list them
    now = services.clock()
    records = [_detail(r, now) for r in scan(service.exceptions_root(services), await service.current_trust(services))]
    by_state = {state: [r for r in records if r["state"] == state] for state in STATES}
    return render(request, "exceptions.html", section="exceptions", by_state=by_state, states=STATES,
                  admin=caller.role == ADMIN)


@get("/exceptions/review", guards=[signed_in])
async def review(request: Request[Any, Any, Any]) -> Template:
    services: Services = request.app.state.services
    await service.exception_summaries(services, caller_of(request))
    report = review_report(service.exceptions_root(services), services.clock(), await service.current_trust(services))
    return render(request, "review.html", section="exceptions", report=report)


async def _exception_page(request: Request[Any, Any, Any], exception_id: str, *, template: str = "exception.html",
                          **extra: Any) -> Template:
    services: Services = request.app.state.services
    caller = caller_of(request)
    record = await _record(services, caller, exception_id)
    return render(request, template, section="exceptions", x=_detail(record, services.clock()),
                  history=await _history(services, caller, exception_id), admin=caller.role == ADMIN,
                  now=iso(services.clock()), **extra)


@get("/exceptions/{exception_id:str}", guards=[signed_in])
async def exception(request: Request[Any, Any, Any], exception_id: FromPath[str]) -> Template:
    return await _exception_page(request, exception_id)


@get("/exceptions/{exception_id:str}/approve", guards=[signed_in, admin])
async def confirm_approve(request: Request[Any, Any, Any], exception_id: FromPath[str]) -> Template:
    return await _exception_page(request, exception_id, template="confirm_approve.html")


@get("/exceptions/{exception_id:str}/revoke", guards=[signed_in, admin])
async def confirm_revoke(request: Request[Any, Any, Any], exception_id: FromPath[str]) -> Template:
    return await _exception_page(request, exception_id, template="confirm_revoke.html")


@post("/exceptions/{exception_id:str}/approve", guards=[signed_in, csrf_checked], status_code=200)
async def approve(request: Request[Any, Any, Any], exception_id: FromPath[str]) -> Template:
    services: Services = request.app.state.services
    result = await service.approve_exception(services, caller_of(request), exception_id)  # the API's own path
    return await _exception_page(request, exception_id, done=f"approved until {result['expires_at']}; the policy "
                                 f"was reloaded (revision {result['revision']})")


@post("/exceptions/{exception_id:str}/revoke", guards=[signed_in, csrf_checked], status_code=200)
async def revoke(request: Request[Any, Any, Any], exception_id: FromPath[str]) -> Template:
    services: Services = request.app.state.services
    reason = (await request.form()).get("reason")
    reason = reason if isinstance(reason, str) else ""
    if len(reason) > MAX_REASON:
        raise HTTPException(status_code=400, detail=f"the reason is longer than {MAX_REASON} characters")
    result = await service.revoke_exception(services, caller_of(request), exception_id, reason)
    return await _exception_page(request, exception_id, done=f"revoked at {result['revoked_at']}; the policy was "
                                 f"reloaded (revision {result['revision']})")


ROUTES = [exceptions, review, exception, confirm_approve, confirm_revoke, approve, revoke]
__all__ = ["ROUTES"]
