"""The audit trail in the console: ops.run_events newest first, filtered, paged, tailed, explained.

    GET /console/trail              filters as query parameters; `before` pages into the past
    GET /console/trail/tail         rows newer than `after` (htmx polls it; 204 when none)
    GET /console/trail/{id}         the decision: the row and why it was decided so

Invariants:
- Who sees what is the audit trail's own rule (Postgres RLS, `opsgate events`): only ops_admin
  sees other users' rows. Anyone else's caller filter is their own id, whatever the URL says, and
  another user's row is "not found" to them (not "forbidden": its existence is not theirs to learn).
- Pages are keyset pages of the store (otel/events/paging.py): fast on any number of rows, and
  bounded in the work one page may do; a tail poll returns at most one page of newer rows.
- Query parameters are parsed into typed filters before the store sees them; a bad one is a 400
  page naming it, never a query.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from litestar import Request, Response, get
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.response import Template

from gateway.console.decision import explain
from gateway.console.guards import ADMIN, caller_of, signed_in
from gateway.console.pages import SECURITY_HEADERS, render
from gateway.pipeline import Caller
from gateway.services import Services
from otel.events import EventStoreError
from otel.events.model import UUID_TEXT, RunEvent, utc_timestamp
from otel.events.paging import Cursor, Filters, Page

PAGE = 50
FIELDS = ("since", "until", "caller", "role", "provider", "tool", "decision", "status", "policy", "exception")
DECISIONS = ("allow", "deny", "none")
STATUSES = ("ok", "tool_error", "denied", "rate_limited", "invalid_input", "error", "interrupted", "cancelled",
            "refused", "answered", "signed_in")


class BadFilter(HTTPException):
    status_code = 400


def _time(label: str, text: str) -> str:
    """A `datetime-local` value (taken as UTC) or ISO 8601 with an offset, as canonical UTC text."""
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise BadFilter(detail=f"{label}: not a date and time ({text[:40]!r})") from None
    return utc_timestamp(dt if dt.tzinfo else dt.replace(tzinfo=UTC))


def _short(label: str, text: str) -> str:
    if len(text) > 200 or any(ord(c) < 32 for c in text):
        raise BadFilter(detail=f"{label}: too long or not printable")
    return text


def filters_of(query: dict[str, str], caller: Caller) -> tuple[Filters, dict[str, str]]:
    """The typed filters of the page's query string, and the values to show back in its form."""
    shown = {k: query.get(k, "").strip() for k in FIELDS}
    if caller.role != ADMIN:  # the audit trail's rule: only ops_admin reads other users' rows
        shown["caller"] = caller.id
    values = {k: v for k, v in shown.items() if v}
    if "caller" in values and not UUID_TEXT.fullmatch(values["caller"]):
        raise BadFilter(detail="caller: a user id (lowercase UUID)")
    if values.get("decision") not in (None, *DECISIONS):
        raise BadFilter(detail="decision: allow, deny or none")
    provider, tool = values.get("provider"), values.get("tool")
    if tool and "." in tool and not provider:  # `socket.scan.repo` as the gateway names it
        provider, tool = tool.split(".", 1)
    since = _time("since", values["since"]) if "since" in values else None
    until = _time("until", values["until"]) if "until" in values else None
    for key, stamp in (("since", since), ("until", until)):  # shown back in UTC, as the form reads it
        if stamp is not None:
            shown[key] = stamp[:19]
    return Filters(since=since, until=until,
                   provider=_short("provider", provider) if provider else None,
                   tool=_short("tool", tool) if tool else None, caller_id=values.get("caller"),
                   decision=values.get("decision"), status=_short("status", values["status"]) if "status" in values
                   else None, role=_short("role", values["role"]) if "role" in values else None,
                   policy_id=_short("policy", values["policy"]) if "policy" in values else None,
                   exception_id=_short("exception", values["exception"]) if "exception" in values else None), shown


def _cursor(text: str | None, label: str) -> Cursor | None:
    if not text:
        return None
    try:
        return Cursor.parse(text)
    except ValueError:
        raise BadFilter(detail=f"{label}: not a trail position") from None


def row_of(e: RunEvent) -> dict[str, Any]:
    result, payload = e.result or {}, e.payload or {}
    kept = payload.get("_request")
    return {"id": e.id, "at": e.created_at[:19].replace("T", " "), "decision": e.decision,
            "tool": f"{e.provider}.{e.tool}", "status": result.get("status", ""), "caller": e.caller_id,
            "role": kept.get("role") if isinstance(kept, dict) else None, "policies": e.policy_ids,
            "exceptions": e.exception_ids, "ms": e.duration_ms, "dryrun": "dryrun" in result}


async def _page(services: Services, filters: Filters, **kw: Any) -> Page:
    if services.audit is None:
        raise HTTPException(status_code=503, detail="this gateway keeps no audit trail")
    try:
        return await services.audit.store.page(filters, **kw)
    except EventStoreError as e:
        raise HTTPException(status_code=503, detail=f"the audit store cannot be read now: {e}") from None


def _query(shown: dict[str, str], **extra: str) -> str:
    return urlencode({**{k: v for k, v in shown.items() if v}, **extra})


@get("/trail", guards=[signed_in])
async def trail(request: Request[Any, Any, Any]) -> Template:
    services: Services = request.app.state.services
    caller = caller_of(request)
    filters, shown = filters_of(dict(request.query_params), caller)
    before = _cursor(request.query_params.get("before"), "before")
    page = await _page(services, filters, limit=PAGE, cursor=before)
    top = Cursor.of(page.events[0]).text() if page.events else None
    return render(request, "trail.html", section="trail", rows=[row_of(e) for e in page.events], shown=shown,
                  admin=caller.role == ADMIN, statuses=STATUSES, decisions=DECISIONS,
                  older=_query(shown, before=page.more.text()) if page.more else None,
                  searched_to=page.searched_to, paged=before is not None, newest=_query(shown),
                  tail=_query(shown, after=top) if before is None and top else
                  (_query(shown, after="") if before is None else None), filtered=any(shown.values()))


@get("/trail/tail", guards=[signed_in])
async def tail(request: Request[Any, Any, Any]) -> Response[Any]:
    services: Services = request.app.state.services
    filters, shown = filters_of(dict(request.query_params), caller_of(request))
    after = _cursor(request.query_params.get("after"), "after")
    if after is None:  # the trail was empty when the page was drawn: the newest rows, as a first page
        page = await _page(services, filters, limit=PAGE)
        events = page.events
    else:
        page = await _page(services, filters, limit=PAGE, cursor=after, newer=True)
        events = list(reversed(page.events))
    if not events:
        return Response(b"", status_code=204, headers=SECURITY_HEADERS)
    return render(request, "_tail.html", rows=[row_of(e) for e in events],
                  tail=_query(shown, after=Cursor.of(events[0]).text()))


@get("/trail/{event_id:str}", guards=[signed_in])
async def decision(request: Request[Any, Any, Any], event_id: FromPath[str]) -> Template:
    services: Services = request.app.state.services
    caller = caller_of(request)
    if not UUID_TEXT.fullmatch(event_id) or services.audit is None:
        raise HTTPException(status_code=404, detail="no such row")
    try:
        event = await services.audit.store.get(event_id)
    except EventStoreError as e:
        raise HTTPException(status_code=503, detail=f"the audit store cannot be read now: {e}") from None
    if event is None or (caller.role != ADMIN and event.caller_id != caller.id):
        raise HTTPException(status_code=404, detail="no such row")  # another user's row does not exist for you
    return render(request, "decision.html", section="trail", **explain(services.engine, event))


ROUTES = [trail, tail, decision]
__all__ = ["ROUTES", "filters_of", "row_of"]
