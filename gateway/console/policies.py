"""The policy bundle in the console: what is in force, who may call what, what dryrun policies would
change, and the permission diff against a candidate bundle.

    GET /console/policies                 revision, activation, last reload error, the role-by-tool
                                          matrix, dryrun policies and how often each would have
                                          changed an outcome, every file rendered
    GET /console/policies/diff?candidate= ops_admin: POST /v1/policy/diff's own service, as a page

Invariants: the matrix is the engine's answer (every role, and no role, against every catalogue tool
with no arguments, as `opsgate policy diff` asks), never read from policy text; dryrun counts are
read from the audit trail within a bounded window (the last DRYRUN_DAYS days, at most DRYRUN_ROWS
rows) and say so; the diff is the API's code path, recorded as it records it.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from litestar import Request, get
from litestar.exceptions import HTTPException
from litestar.params import FromQuery
from litestar.response import Template

from engine import Engine, Uid
from engine import Request as Query
from engine.bundle import Bundle, bundle_files
from engine.impact.diff import PROBE_USER
from engine.policy_source import policy_source
from gateway.console.guards import ADMIN, caller_of, signed_in
from gateway.console.pages import render
from gateway.pipeline import principal
from gateway.routes.policy import NAME, DiffBody, run_diff
from gateway.services import Services
from otel.events import EventStoreError, utc_timestamp
from otel.events.paging import Filters

ROLES = ("ops_viewer", "ops_operator", "ops_admin", None)
DRYRUN_DAYS = 7
DRYRUN_ROWS = 10_000


def matrix(engine: Engine, now: datetime) -> dict[str, Any]:
    """Role x tool: allowed or not with no arguments, with the deciding policies and rate tiers."""
    bundle = engine.bundle
    tools = sorted(bundle.catalogue.tools, key=lambda t: t.name)
    rows = []
    for tool in tools:
        cells = []
        for role in ROLES:
            uid, entities = principal(PROBE_USER, role)
            d = engine.decide(Query(uid, tool.name, Uid.of("Provider", tool.provider), {}, entities), now=now)
            cells.append({"allowed": d.allowed, "reasons": list(d.reasons),
                          "tiers": [f"{t.bucket} {t.limit}/{t.period_s}s" for t in d.tiers]})
        rows.append({"tool": tool.name, "cells": cells})
    return {"roles": [r or "(no role)" for r in ROLES], "rows": rows}


async def dryrun_counts(services: Services, bundle: Bundle) -> dict[str, Any]:
    """Per dryrun policy: rows of the window whose result.dryrun names it (the outcome it would have changed)."""
    counts = dict.fromkeys(sorted(bundle.dryrun_ids), 0)
    since = utc_timestamp(services.clock() - timedelta(days=DRYRUN_DAYS))
    seen, cursor, complete = 0, None, True
    if services.audit is not None and counts:
        try:
            while True:
                page = await services.audit.store.page(Filters(since=since), limit=500, cursor=cursor)
                for e in page.events:
                    for pid in ((e.result or {}).get("dryrun") or {}).get("policy_ids") or ():
                        if pid in counts:
                            counts[pid] += 1
                seen += len(page.events)
                cursor = page.more
                if cursor is None:
                    break
                if seen >= DRYRUN_ROWS:
                    complete = False
                    break
        except EventStoreError:
            complete = False
    return {"counts": counts, "rows": seen, "since": since, "complete": complete, "days": DRYRUN_DAYS,
            "max_rows": DRYRUN_ROWS}


def files(bundle: Bundle) -> list[dict[str, str]]:
    out = []
    for path in bundle_files(bundle.root):
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            continue
        out.append({"name": str(path.relative_to(bundle.root)), "text": text})
    return out


def candidates(setting: str | None) -> list[str]:
    if setting is None or not Path(setting).is_dir():
        return []
    return sorted(n for n in os.listdir(setting) if NAME.fullmatch(n) and (Path(setting) / n).is_dir())


@get("/policies", guards=[signed_in])
async def policies(request: Request[Any, Any, Any]) -> Template:
    services: Services = request.app.state.services
    engine = services.engine
    bundle = engine.bundle
    status = engine.status()
    dryrun = [policy_source(bundle, pid) for pid in sorted(bundle.dryrun_ids)]
    return render(request, "policies.html", section="policies", bundle_status=status,
                  matrix=matrix(engine, services.clock()),
                  dryrun=[d for d in dryrun if d is not None], counts=await dryrun_counts(services, bundle),
                  files=files(bundle), candidates=candidates(services.policy_candidates),
                  admin=caller_of(request).role == ADMIN)


@get("/policies/diff", guards=[signed_in])
async def diff(request: Request[Any, Any, Any], candidate: FromQuery[str] = "") -> Template:
    services: Services = request.app.state.services
    caller = caller_of(request)
    services.admin_decision(caller, "opsgate.policy.diff")  # the API's decision: 403 unless policy permits
    if not candidate:
        raise HTTPException(status_code=400, detail="name a candidate bundle")
    result = await run_diff(services, caller, DiffBody(candidate=candidate))
    return render(request, "policy_diff.html", section="policies", diff=result, candidate=candidate)


ROUTES = [policies, diff]
__all__ = ["ROUTES", "dryrun_counts", "matrix"]
