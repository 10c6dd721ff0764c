"""The Postgres outbox and the intents journal, against the real Postgres through a TCP proxy the
tests cut and restore (the shared server itself is never stopped).

- Appends return once journaled; the shipper moves them to Postgres in journal order.
- An outage mid-load loses nothing and duplicates nothing; per-caller order holds.
- A batch re-sent after a crash between "stored" and "forgotten" is a no-op.
- A refused event is quarantined locally, never dropped, never blocking the others.
- The outbox is bounded: `begin` is refused when full, outcomes of begun calls never are.
- Intents of a dead owner become `interrupted` rows; a live owner's intents are left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from otel.events import (
    EventStoreUnavailable,
    OutboxEventStore,
    PostgresEventStore,
    RunEvent,
    SqliteEventStore,
    new_event_id,
    utc_timestamp,
)
from tests.events_pg import PgDb, TcpProxy, fetch, fresh_database

pytestmark = pytest.mark.anyio

USERS = [str(uuid.uuid4()) for _ in range(4)]


@pytest.fixture(scope="module")
def pg() -> Iterator[PgDb]:
    with fresh_database(USERS) as db:
        yield db


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    p = TcpProxy(("127.0.0.1", 5432))
    try:
        yield p
    finally:
        p.close()


def ev(tool: str, *, caller: str | None = None, seq: int = 0, **fields: object) -> RunEvent:
    base: dict[str, object] = {"id": new_event_id(), "provider": "outbox_test", "tool": tool, "decision": "allow",
                               "created_at": utc_timestamp(), "duration_ms": 1, "caller_id": caller,
                               "payload": {"seq": seq}, "result": {"status": "ok"}}
    return RunEvent(**{**base, **fields})  # type: ignore[arg-type]


def outbox(tmp: Path, dsn: str, **kw: object) -> OutboxEventStore:
    return OutboxEventStore(tmp / "outbox.db", PostgresEventStore(dsn, timeout=1.0), **kw)  # type: ignore[arg-type]


async def rows_of(db: PgDb, tool: str) -> list[tuple[str, str, int]]:
    rows = await fetch(db, "select id::text, caller_id::text, (payload->>'seq')::int from ops.run_events"
                           " where tool = $1 order by created_at, id", tool)
    return [(r[0], r[1], r[2]) for r in rows]


async def test_appends_are_journaled_then_shipped_in_order(tmp_path: Path, pg: PgDb) -> None:
    store = outbox(tmp_path, pg.gateway_dsn())
    try:
        events = [ev("ship", caller=USERS[i % 2], seq=i) for i in range(300)]
        await asyncio.gather(*(store.append(e) for e in events))
        assert await store.drain(30)
        stored = await rows_of(pg, "ship")
        assert sorted(r[0] for r in stored) == sorted(e.id for e in events)
        health = await store.health()
        assert health["status"] == "ok" and health["outbox"]["backlog"] == 0
        assert health["outbox"]["shipped"] == 300
    finally:
        await store.close()
    assert sqlite3.connect(tmp_path / "outbox.db").execute("select count(*) from outbox").fetchone()[0] == 0


async def test_an_outage_mid_load_loses_and_duplicates_nothing(tmp_path: Path, pg: PgDb, proxy: TcpProxy) -> None:
    store = outbox(tmp_path, pg.gateway_dsn(proxy.port))
    sent: list[RunEvent] = []

    async def caller(who: str, n: int, start: int) -> None:
        for i in range(start, start + n):
            e = ev("outage", caller=who, seq=i)
            await store.append(e)  # never fails: the journal takes it whatever Postgres does
            sent.append(e)

    try:
        await asyncio.gather(*(caller(u, 50, 0) for u in USERS))
        proxy.cut()  # mid-load: whatever batch is in flight dies with its connection
        await asyncio.gather(*(caller(u, 50, 50) for u in USERS))
        while (health := await store.health())["outbox"]["shipping"] != "failing":  # the shipper notices
            await asyncio.sleep(0.05)
        assert health["status"] == "degraded" and health["outbox"]["backlog"] > 0
        proxy.restore()
        await asyncio.gather(*(caller(u, 50, 100) for u in USERS))
        assert await store.drain(60), (await store.health())["outbox"]
    finally:
        await store.close()
    stored = await rows_of(pg, "outage")
    assert sorted(r[0] for r in stored) == sorted(e.id for e in sent)  # none lost, none twice
    assert len(stored) == len(sent) == 4 * 150
    for who in USERS:  # each caller's events read back in the order they were made
        assert [r[2] for r in stored if r[1] == who] == list(range(150))


@contextlib.contextmanager
def failures_nobody_heard() -> Iterator[list[str]]:
    """What the loop reports as never retrieved (or otherwise unhandled) while the block runs."""
    loop = asyncio.get_running_loop()
    unheard: list[str] = []
    loop.set_exception_handler(lambda _, context: unheard.append(context["message"]))
    try:
        yield unheard
    finally:
        gc.collect()  # an unretrieved failure is reported when its future is collected
        loop.set_exception_handler(None)


async def test_a_silent_database_fails_each_write_then_recovers(pg: PgDb, proxy: TcpProxy) -> None:
    store = PostgresEventStore(pg.gateway_dsn(proxy.port), timeout=0.3)
    with failures_nobody_heard() as unheard:
        try:
            await store.append(ev("silent", caller=USERS[0], seq=0))  # a pooled connection, then silence
            proxy.stall()
            for seq in range(1, 4):
                with pytest.raises(EventStoreUnavailable):
                    await store.append(ev("silent", caller=USERS[0], seq=seq))
            assert (await store.health())["status"] == "down"
            proxy.restore()
            await store.append(ev("silent", caller=USERS[0], seq=4))  # the pool connects afresh
        finally:
            await store.close()
    assert unheard == []
    assert [r[2] for r in await rows_of(pg, "silent")] == [0, 4]


async def test_a_connection_handed_back_past_the_deadline_fails_in_plain_sight(pg: PgDb) -> None:
    # The deadline can expire while a connection is being handed back to the pool (a hung
    # server). asyncpg shields that hand-back from cancellation; cut short by our deadline, it
    # would go on alone and fail later unheard. Here the hand-back is slow and fails.
    async def slow_failing_reset(_: asyncpg.Connection) -> None:
        await asyncio.sleep(0.5)
        raise ConnectionResetError("the server went away during the reset")

    pool = await asyncpg.create_pool(pg.gateway_dsn(), min_size=0, max_size=4, reset=slow_failing_reset)
    store = PostgresEventStore(pool, timeout=0.3)
    with failures_nobody_heard() as unheard:
        try:
            for seq in range(3):  # the event is committed before the hand-back begins
                await store.append(ev("handback", caller=USERS[0], seq=seq))
            await asyncio.sleep(0.6)  # any hand-back still going has ended by now
        finally:
            await store.close()
            await pool.close()
    assert unheard == []
    assert [r[2] for r in await rows_of(pg, "handback")] == [0, 1, 2]


async def test_events_journaled_while_down_ship_after_a_restart(tmp_path: Path, pg: PgDb, proxy: TcpProxy) -> None:
    proxy.cut()
    first = outbox(tmp_path, pg.gateway_dsn(proxy.port))
    events = [ev("restart", caller=USERS[0], seq=i) for i in range(20)]
    for e in events:
        await first.append(e)
    await first.close()  # Postgres still down: the events stay journaled
    proxy.restore()
    second = outbox(tmp_path, pg.gateway_dsn(proxy.port))
    try:
        assert (await second.health())["outbox"]["backlog"] == 20
        assert await second.drain(30)
    finally:
        await second.close()
    assert [r[2] for r in await rows_of(pg, "restart")] == list(range(20))


async def test_a_batch_sent_twice_is_stored_once(tmp_path: Path, pg: PgDb) -> None:
    events = [ev("twice", seq=i) for i in range(10)]
    # A previous process stored the first half but died before forgetting it in the journal.
    direct = PostgresEventStore(pg.gateway_dsn())
    await direct.write_batch(events[:5])
    await direct.close()
    store = outbox(tmp_path, pg.gateway_dsn())
    try:
        for e in events:
            await store.append(e)
        assert await store.drain(30)
    finally:
        await store.close()
    assert [r[2] for r in await rows_of(pg, "twice")] == list(range(10))


async def test_a_refused_event_is_kept_locally_and_does_not_block_the_rest(tmp_path: Path, pg: PgDb) -> None:
    stranger = ev("refused", caller=str(uuid.uuid4()), seq=1)  # not in auth.users: the foreign key refuses it
    events = [ev("refused", caller=USERS[0], seq=0), stranger, ev("refused", caller=USERS[0], seq=2)]
    store = outbox(tmp_path, pg.gateway_dsn())
    try:
        for e in events:
            await store.append(e)
        assert await store.drain(30)
        health = await store.health()
        assert health["status"] == "degraded" and health["outbox"]["rejected"] == 1
    finally:
        await store.close()
    assert [r[2] for r in await rows_of(pg, "refused")] == [0, 2]
    kept = sqlite3.connect(tmp_path / "outbox.db").execute("select id, error from rejected").fetchall()
    assert kept[0][0] == stranger.id and "foreign key" in kept[0][1]


async def test_a_full_outbox_refuses_new_calls_but_takes_outcomes_of_running_ones(
        tmp_path: Path, pg: PgDb, proxy: TcpProxy) -> None:
    proxy.cut()
    store = outbox(tmp_path, pg.gateway_dsn(proxy.port), max_pending=3)
    try:
        running = ev("full", seq=0)
        await store.begin(running)
        for i in (1, 2, 3):
            await store.append(ev("full", seq=i))
        with pytest.raises(EventStoreUnavailable, match="limit 3"):
            await store.begin(ev("full", seq=4))
        with pytest.raises(EventStoreUnavailable, match="limit 3"):
            await store.append(ev("full", seq=5))  # a denial's row, say: refused, the caller is told
        await store.append(running)  # the running call's outcome is never refused
        assert (await store.health())["outbox"]["backlog"] == 4
        proxy.restore()
        assert await store.drain(30)
    finally:
        await store.close()
    assert sorted(r[2] for r in await rows_of(pg, "full")) == [0, 1, 2, 3]


# -- intents ------------------------------------------------------------------------------------


async def test_sqlite_intents_of_a_dead_owner_become_interrupted_rows(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    first = SqliteEventStore(path)
    done, cut_short = ev("intent", seq=1), ev("intent", seq=2, result={"status": "interrupted"})
    await first.begin(done)
    await first.begin(cut_short)
    await first.append(done)  # its outcome is journaled (durability "process"): the commit follows
    await first.flush()  # committed: its intent no longer matters
    reader = SqliteEventStore(path)  # e.g. `opsgate events tail` while the gateway runs
    assert reader.recovered == 0 and await reader.query(tool="intent") == [done]
    await reader.close()
    await first.close()  # dies (or stops) with cut_short still running
    after = SqliteEventStore(path)
    try:
        assert after.recovered == 2  # both intents are read back; done's stored outcome wins
        rows = await after.query(tool="intent")
        assert sorted(rows, key=lambda e: e.payload["seq"]) == [done, cut_short]  # type: ignore[index]
        dead = first._intents.id  # the dead owner is forgotten
        assert not list((tmp_path / "events.db.owners").glob(f"{dead}.*"))
    finally:
        await after.close()


async def test_outbox_intents_of_a_dead_owner_are_shipped_as_interrupted(tmp_path: Path, pg: PgDb) -> None:
    first = outbox(tmp_path, pg.gateway_dsn())
    cut_short = ev("intent_pg", seq=7, result={"status": "interrupted"})
    await first.begin(cut_short)
    live = outbox(tmp_path, pg.gateway_dsn())
    assert live.recovered == 0  # the first owner still lives
    await live.close()
    await first.close()
    after = outbox(tmp_path, pg.gateway_dsn())
    try:
        assert after.recovered == 1
        assert await after.drain(30)
    finally:
        await after.close()
    rows = await fetch(pg, "select id::text, result->>'status' from ops.run_events where tool = 'intent_pg'")
    assert [(r[0], r[1]) for r in rows] == [(cut_short.id, "interrupted")]


def test_durability_is_chosen_and_checked(tmp_path: Path) -> None:
    import asyncio as aio

    for durability, level in (("disk", 2), ("process", 1)):
        s = SqliteEventStore(tmp_path / f"{durability}.db", durability=durability)  # type: ignore[arg-type]
        assert s._wconn.execute("pragma synchronous").fetchone()[0] == level
        aio.run(s.close())
    with pytest.raises(ValueError, match="durability"):
        SqliteEventStore(tmp_path / "x.db", durability="never")  # type: ignore[arg-type]
