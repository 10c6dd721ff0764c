"""Policy impact over HTTP, for the web console: the permission diff between the active bundle and a
candidate bundle on the server.

    POST /v1/policy/diff   {"candidate": "<name>", "at": "<ISO 8601>"?}   (ops_admin)
        -> the PermissionDiff as JSON (engine/impact/diff.py), the active bundle as base

Where a candidate may come from is the security boundary here, so it is narrow on purpose:
`candidate` is a NAME, not a path: one directory directly under the configured folder
(`GatewayConfig.policy_candidates`), holding `policies/` (and maybe `exceptions/`) or itself a
policies directory. A name with a separator, a leading dot, or anything but [A-Za-z0-9._-] is
refused; and since a directory can hold symlinks, every file and folder of the candidate must
resolve inside the configured folder too, so a link cannot lead the engine (or its error messages)
to any other path on the server. Every answer and every refusal after authorization is an
ops.run_events row (tool `opsgate.policy.diff`); one that cannot be recorded is withheld (503).
"""

from __future__ import annotations

import asyncio
import os
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from litestar import Request, post
from litestar.exceptions import HTTPException
from litestar.params import JSONBody

from engine import BundleError
from engine.impact import Loaded, Source, exception_states, load, permission_diff
from gateway.errors import HTTP_STATUS, GatewayError
from gateway.pipeline import Caller
from gateway.routes.guards import allowed, caller_of
from gateway.services import Services

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class DiffBody(msgspec.Struct, forbid_unknown_fields=True):
    candidate: str
    at: datetime | None = None


class _Refused(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.extra = extra


def _inside(root: Path, path: Path) -> bool:
    return path == root or path.is_relative_to(root)


def candidate_source(root_setting: str | None, name: str) -> Source:
    """The candidate bundle called `name` under the configured folder; _Refused otherwise."""
    if root_setting is None:
        raise _Refused(404, "no candidate folder is configured (policy_candidates)")
    if not NAME.fullmatch(name):
        raise _Refused(400, "candidate must be a folder name: letters, digits, '.', '_', '-', not starting with a dot")
    root = Path(root_setting).resolve()
    folder = (root / name).resolve()
    if folder == root or not _inside(root, folder):
        raise _Refused(400, f"candidate {name!r} resolves outside the candidate folder")
    if not folder.is_dir():
        raise _Refused(404, f"no candidate {name!r}")
    for base, dirs, files in os.walk(folder):  # links are not followed, but each must stay inside
        for entry in (*dirs, *files):
            if not _inside(root, (Path(base) / entry).resolve()):
                raise _Refused(400, f"candidate {name!r} holds a link that leads outside the candidate folder")
    if (folder / "policies").is_dir():
        ex = folder / "exceptions"
        return Source(f"candidate {name}", folder / "policies", ex if ex.is_dir() else None)
    return Source(f"candidate {name}", folder)


def _diff(services: Services, source: Source, at: datetime) -> dict[str, Any]:
    engine = services.engine
    active = engine.bundle
    base = Loaded("active", active, exception_states(active, engine.exceptions_dir, at))
    try:
        head = load(source, at)
    except BundleError as e:
        raise _Refused(422, "the candidate bundle is refused", issues=[str(i) for i in e.issues]) from None
    return msgspec.to_builtins(permission_diff(base, head, at))


async def _record(services: Services, caller: Caller, body: DiffBody, result: dict[str, Any]) -> None:
    if services.audit is None:
        return
    try:
        await services.audit.record(caller_id=caller.id, tool="opsgate.policy.diff",
                                    arguments=msgspec.to_builtins(body), decision=None, result=result,
                                    duration_ms=0)
    except GatewayError as e:
        raise HTTPException(status_code=HTTP_STATUS[e.code], detail=e.message, extra=e.payload) from None


async def run_diff(services: Services, caller: Caller, body: DiffBody) -> dict[str, Any]:
    """The permission diff of the active bundle and candidate `body.candidate`, recorded (the route
    and the console call this once the caller may `opsgate.policy.diff`). Raises HTTPException."""
    at = body.at or services.clock()
    if at.tzinfo is None:
        raise HTTPException(status_code=400, detail="at must carry a timezone")
    try:
        source = candidate_source(services.policy_candidates, body.candidate)
        diff = await asyncio.get_running_loop().run_in_executor(None, _diff, services, source, at)
    except _Refused as e:
        await _record(services, caller, body, {"status": "refused", "code": e.status, "message": str(e)})
        raise HTTPException(status_code=e.status, detail=str(e), extra=e.extra or None) from None
    await _record(services, caller, body, {"status": "answered", "base": diff["base"], "head": diff["head"],
                                           "widens": diff["widens"], "changes": len(diff["rows"])})
    return diff


@post("/v1/policy/diff", status_code=200, guards=[allowed("opsgate.policy.diff")])
async def policy_diff(request: Request[Any, Any, Any], data: JSONBody[DiffBody]) -> dict[str, Any]:
    services: Services = request.app.state.services
    return await run_diff(services, caller_of(request), data)  # authenticated and decided by the guard


ROUTES = [policy_diff]
__all__ = ["ROUTES", "DiffBody", "candidate_source", "run_diff"]
