"""Keyset pages of the audit trail (otel/events/paging.py), on SQLite and on Postgres: every row once, in
order, whatever the ties in created_at; each filter; JSON filters bounded by the page's budget and
saying how far they searched; the live tail's newer pages; hostile cursors refused before SQL."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from otel.events import PostgresEventStore, RunEvent, SqliteEventStore, new_event_id
from otel.events.paging import Cursor, Filters
from tests.events_pg import fresh_database

pytestmark = pytest.mark.anyio

USERS = [str(uuid.uuid5(uuid.NAMESPACE_URL, f"pages:{i}")) for i in range(3)]
ROLES = ("ops_viewer", "ops_operator", "ops_admin")


@functools.cache
def rows(n: int = 240) -> list[RunEvent]:
    """n rows over 40 distinct instants (six rows share each created_at: ties must not skip or repeat)."""
    out = []
    for i in range(n):
        user = i % 3
        out.append(RunEvent(
            id=new_event_id(1_800_000_000_000 + i), provider="echo" if i % 2 else "socket",
            tool="ping" if i % 4 < 2 else "scan.repo", caller_id=USERS[user],
            decision="deny" if i % 5 == 0 else "allow", created_at=f"2026-12-01T10:00:{i // 6:02d}.000000+00:00",
            duration_ms=i, payload={"args": {"n": i}, "_request": {"role": ROLES[user]}},
            result={"status": "denied" if i % 5 == 0 else "ok"}, policy_ids=["p.even" if i % 2 == 0 else "p.odd"],
            exception_ids=["mcp-exception-echo-5"] if i % 60 == 7 else []))
    return out


@pytest.fixture(scope="module")
def pg_db() -> Iterator[Any]:
    with fresh_database(USERS) as db:
        yield db


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        s: Any = SqliteEventStore(tmp_path / "events.db")
    else:
        db = request.getfixturevalue("pg_db")
        s = PostgresEventStore(db.gateway_dsn())
    data = rows()
    await s.write_batch(data)
    try:
        yield s
    finally:
        await s.close()


async def all_pages(store: Any, filters: Filters, limit: int, **kw: Any) -> tuple[list[str], int]:
    seen: list[str] = []
    cursor, pages = None, 0
    while True:
        page = await store.page(filters, limit=limit, cursor=cursor, **kw)
        seen += [e.id for e in page.events]
        pages += 1
        if page.more is None:
            return seen, pages
        cursor = page.more


def expected(pred: Any) -> list[str]:
    return [e.id for e in sorted(rows(), key=lambda e: (e.created_at, e.id), reverse=True) if pred(e)]


async def test_pages_walk_every_row_once_newest_first_across_ties(store: Any) -> None:
    seen, pages = await all_pages(store, Filters(), 7)
    assert seen == expected(lambda e: True)
    assert pages == 240 // 7 + 1


@pytest.mark.parametrize(("filters", "pred"), [
    (Filters(caller_id=USERS[1]), lambda e: e.caller_id == USERS[1]),
    (Filters(provider="socket", tool="scan.repo"), lambda e: e.provider == "socket" and e.tool == "scan.repo"),
    (Filters(decision="deny"), lambda e: e.decision == "deny"),
    (Filters(since="2026-12-01T10:00:10.000000+00:00", until="2026-12-01T10:00:20.000000+00:00"),
     lambda e: "10:00:10" <= e.created_at[11:19] < "10:00:20"),
    (Filters(status="denied"), lambda e: e.result["status"] == "denied"),
    (Filters(role="ops_admin"), lambda e: e.payload["_request"]["role"] == "ops_admin"),
    (Filters(policy_id="p.odd"), lambda e: "p.odd" in e.policy_ids),
    (Filters(exception_id="mcp-exception-echo-5"), lambda e: e.exception_ids == ["mcp-exception-echo-5"]),
    (Filters(caller_id=USERS[0], status="ok", policy_id="p.even"),
     lambda e: e.caller_id == USERS[0] and e.result["status"] == "ok" and "p.even" in e.policy_ids),
])
async def test_each_filter_selects_exactly_its_rows(store: Any, filters: Filters, pred: Any) -> None:
    seen, _ = await all_pages(store, filters, 11)
    assert seen == expected(pred)


async def test_json_filters_examine_at_most_the_budget_and_say_how_far_they_searched(store: Any) -> None:
    # 4 exception rows in 240; a budget of 50 rows per page cannot find them all at once
    page = await store.page(Filters(exception_id="mcp-exception-echo-5"), limit=10, budget=50)
    newest_50 = expected(lambda e: True)[:50]
    assert [e.id for e in page.events] == [i for i in expected(lambda e: bool(e.exception_ids)) if i in newest_50]
    assert page.searched_to is not None and page.more is not None
    assert page.more.id == newest_50[-1]  # the last row examined: the search goes on from there
    seen, pages = await all_pages(store, Filters(exception_id="mcp-exception-echo-5"), 10, budget=50)
    assert seen == expected(lambda e: bool(e.exception_ids))  # paging on with the budget finds every one
    assert pages == 5


async def test_newer_pages_are_the_live_tail(store: Any) -> None:
    ordered = expected(lambda e: True)[::-1]  # oldest first
    at = next(e for e in rows() if e.id == ordered[100])
    page = await store.page(Filters(), limit=20, cursor=Cursor.of(at), newer=True)
    assert [e.id for e in page.events] == ordered[101:121]
    assert page.more is not None and page.more.id == ordered[120]


@pytest.mark.parametrize("text", ["", "x", "2026-12-01T10:00:00.000000+00:00_not-a-uuid",
                                  "2026-12-01 10:00:00_00000000-0000-0000-0000-000000000000",
                                  "'; drop table run_events; --_00000000-0000-0000-0000-000000000000"])
def test_hostile_cursors_are_refused_before_any_query(text: str) -> None:
    with pytest.raises(ValueError):
        Cursor.parse(text)


def test_filters_refuse_what_is_not_a_user_id_or_a_timestamp() -> None:
    with pytest.raises(ValueError):
        Filters(caller_id="' or 1=1 --")
    with pytest.raises(ValueError):
        Filters(since="yesterday")


async def test_get_reads_one_row(store: Any) -> None:
    first = rows()[0]
    got = await store.get(first.id)
    assert got is not None and got.id == first.id and got.payload == first.payload
    assert await store.get(str(uuid.uuid4())) is None
    with pytest.raises(ValueError):
        await store.get("not-a-uuid")
