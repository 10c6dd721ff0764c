"""The OPA-style decision API for other enforcement points, policy status and reload.

    POST /v1/data/opsgate/authz        {"input": {...}} -> {"result": {allow, reasons, ...}, "decision_id"}
    POST /v1/data/opsgate/authz/allow  {"input": {...}} -> {"result": true|false, "decision_id"}
    GET  /v1/status                    active bundle revision, last activation, last reload error
    POST /v1/policy/reload             admin only: load the bundle again, keep the old one on error

Unlike OPA, an undefined result does not exist here: a request nothing permits answers
`"allow": false` explicitly, so a caller can never mistake silence for permission.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, JSONBody

from engine import Entity, Uid
from engine import Request as Query
from engine.impact import Asked
from gateway.errors import HTTP_STATUS, Code, GatewayError
from gateway.routes.guards import allowed, caller_of
from gateway.services import Services

PATHS = {"opsgate/authz": False, "opsgate/authz/allow": True}


class DecisionInput(msgspec.Struct, forbid_unknown_fields=True):
    principal: str
    action: str
    resource: str
    context: dict[str, Any] = {}
    entities: list[Entity] = []


class DataRequest(msgspec.Struct, forbid_unknown_fields=True):
    input: DecisionInput


def _error(e: GatewayError) -> HTTPException:
    return HTTPException(status_code=HTTP_STATUS[e.code], detail=e.message, extra=e.payload)


# The guard authenticates and decides before Litestar reads the body into `data`.
@post("/v1/data/{path:path}", status_code=200, guards=[allowed("opsgate.decide")])
async def data(request: Request[Any, Any, Any], path: FromPath[str], data: JSONBody[DataRequest]) -> dict[str, Any]:
    services: Services = request.app.state.services
    caller = caller_of(request)
    path = path.strip("/")
    if path not in PATHS:
        raise HTTPException(status_code=404, detail=f"no decision at /v1/data/{path}; use one of {sorted(PATHS)}")
    q = data.input
    try:
        query = Query(Uid.parse(q.principal), q.action.removeprefix('Ops::Action::"').rstrip('"'),
                      Uid.parse(q.resource), q.context, tuple(q.entities))
    except ValueError as e:
        raise _error(GatewayError(Code.INVALID_INPUT, str(e))) from None
    if "now" in q.context:
        raise _error(GatewayError(Code.INVALID_INPUT, "context.now is set by the gateway's clock"))
    started, now = time.perf_counter(), services.clock()
    d = services.engine.decide(query, now=now)
    result: Any = d.allowed if PATHS[path] else {
        "allow": d.allowed, "reasons": list(d.reasons), "errors": list(d.errors), "mode": d.mode,
        "shadow": msgspec.to_builtins(d.shadow), "tiers": msgspec.to_builtins(d.tiers),
        "exceptions_applied": list(d.exceptions_applied), "bundle_revision": d.bundle_revision}
    await services.record_decision_api(caller, path, msgspec.to_builtins(q), d,
                                       int((time.perf_counter() - started) * 1000), Asked(query, now))
    return {"result": result, "decision_id": d.decision_id}


@get("/v1/status")
async def status(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services: Services = request.app.state.services
    return {"bundle": services.engine.status(), "rate_limiter": await services.limiter_health()}


@post("/v1/policy/reload", status_code=200, guards=[allowed("opsgate.policy.reload")])
async def reload(request: Request[Any, Any, Any]) -> dict[str, Any]:
    services: Services = request.app.state.services
    ok, issues = await services.reload_policies()
    body = {"reloaded": ok, "revision": services.engine.bundle.revision, "issues": [str(i) for i in issues]}
    if not ok:
        raise HTTPException(status_code=422, detail="bundle refused; the previous bundle stays active", extra=body)
    return body


ROUTES = [data, status, reload]
__all__ = ["ROUTES"]
