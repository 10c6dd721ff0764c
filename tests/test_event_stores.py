"""ops.run_events: both stores (SQLite, Postgres) round-trip, deduplicate, group-commit and filter
alike; the Postgres migration is append-only and row-level secured as documented in it.

Postgres tests use the real server at 127.0.0.1:5432 (user postgres, trust): a fresh database per
module with tests/supabase_stub.sql and supabase/migrations/ applied, dropped afterwards. The
Postgres store connects as a login role that is only a member of `opsgate_gateway`, so the
store is proved to need nothing beyond INSERT and SELECT. Skipped when Postgres is unreachable,
except under CI=true.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import msgspec
import pytest

from otel.events import (
    EventRejected,
    EventStore,
    EventStoreUnavailable,
    PostgresEventStore,
    RunEvent,
    SqliteEventStore,
    apply_migrations,
    new_event_id,
    utc_timestamp,
)
from tests.conftest import admin_sql, require_service

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parent.parent
PG = "postgresql://{user}@127.0.0.1:5432/{db}"
USER_A, USER_B, ADMIN = (str(uuid.uuid4()) for _ in range(3))
T0 = "2026-11-21T12:00:00.000000+00:00"


@dataclass(frozen=True)
class PgDb:
    name: str
    admin_dsn: str  # superuser: table owner, used to inspect and to play PostgREST's roles
    gateway_dsn: str  # a LOGIN member of opsgate_gateway, as in production


async def _create_db(name: str, login: str) -> None:
    await admin_sql(f"create database {name}")
    conn = await asyncpg.connect(PG.format(user="postgres", db=name))
    try:
        await conn.execute((ROOT / "tests" / "supabase_stub.sql").read_text())
        applied = await apply_migrations(conn, ROOT / "supabase" / "migrations")
        assert any(a.endswith("_ops_run_events.sql") for a in applied)
        await apply_migrations(conn, ROOT / "supabase" / "migrations")  # re-runnable
        await conn.execute(f"create role {login} login in role opsgate_gateway")
        await conn.executemany(
            "insert into auth.users (id, raw_app_meta_data) values ($1, $2::jsonb)",
            [(USER_A, "{}"), (USER_B, "{}"), (ADMIN, '{"ops_role": "ops_admin"}')],
        )
    finally:
        await conn.close()


async def _drop_db(name: str, login: str) -> None:
    await admin_sql(f"drop database if exists {name} with (force)", f"drop role if exists {login}")


def _run(coro: Coroutine[object, object, None]) -> None:
    """Run setup on a private loop in a private thread: this module-scoped fixture may first be
    requested from inside an async fixture, whose loop is already running."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="module")
def pg_db() -> Iterator[PgDb]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"opsgate_ev_{secrets.token_hex(4)}"
    login = f"{name}_gw"
    try:
        _run(_create_db(name, login))
        yield PgDb(name, PG.format(user="postgres", db=name), PG.format(user=login, db=name))
    finally:
        _run(_drop_db(name, login))


@pytest.fixture(params=["sqlite/process", "sqlite/disk", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EventStore]:
    if request.param.startswith("sqlite/"):
        s: EventStore = SqliteEventStore(tmp_path / "events.db", durability=request.param.split("/")[1])
    else:
        s = PostgresEventStore(request.getfixturevalue("pg_db").gateway_dsn)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def admin(pg_db: PgDb) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg_db.admin_dsn)
    try:
        yield conn
    finally:
        await conn.close()


def provider() -> str:
    """A provider name unique to the calling test: the Postgres database is shared by the module
    and, being append-only, cannot be cleaned between tests."""
    return f"prov_{secrets.token_hex(4)}"


def ev(prov: str, **fields: object) -> RunEvent:
    base: dict[str, object] = {
        "id": new_event_id(),
        "provider": prov,
        "tool": "scan.repo",
        "decision": "allow",
        "created_at": utc_timestamp(),
        "duration_ms": 7,
    }
    base.update(fields)
    return RunEvent(**base)  # type: ignore[arg-type]


# -- the value object ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"id": "not-a-uuid"},
        {"id": str(uuid.uuid4()).upper()},
        {"id": str(uuid.uuid4()) + "\n"},
        {"caller_id": "alice"},
        {"created_at": "2026-11-21T12:00:00"},  # naive: ambiguous
        {"created_at": "yesterday"},
        {"trace_id": "ABC"},
        {"span_id": "0" * 32},
        {"duration_ms": -1},
        {"duration_ms": 2**31},
        {"provider": ""},
        {"tool": "a\x00b"},
        {"payload": ["not", "a", "dict"]},
        {"policy_ids": "p1"},
    ],
)
def test_run_event_refuses_what_a_store_would_disagree_on(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ev("p", **bad)


def test_new_event_id_is_a_time_ordered_uuid7() -> None:
    a, b = new_event_id(1_000), new_event_id(2_000)
    assert uuid.UUID(a).version == 7 and a < b
    assert utc_timestamp("2026-11-21T14:00:00.5+02:00") == "2026-11-21T12:00:00.500000+00:00"


# -- both stores --------------------------------------------------------------------------------


async def test_round_trip_every_field(store: EventStore) -> None:
    p = provider()
    full = ev(
        p,
        caller_id=USER_A,
        payload={"repo": "org/r", "nested": {"list": [1, 2.5, None, True, "ü ✓"]}, "big": 2**53 + 1, "empty": {}},
        result={"findings": [{"sev": "high", "id": "F-1"}], "ok": False},
        duration_ms=2**31 - 1,
        created_at="2026-11-21T12:00:00.123456+00:00",
        decision="deny",
        policy_ids=["ops.deny_scan", "ops.base"],
        bundle_revision="rev-42",
        exception_ids=["ex-1"],
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7",
    )
    bare = ev(p, created_at="2026-11-21T12:00:01.000000+00:00", duration_ms=0)
    offset = ev(p, created_at="2026-11-21T14:00:02.5+02:00")  # any offset in, canonical UTC out
    for e in (full, bare, offset):
        await store.append(e)
    got = await store.query(provider=p)
    assert got[:2] == [full, bare]
    assert got[2].created_at == "2026-11-21T12:00:02.500000+00:00"
    assert msgspec.structs.replace(got[2], created_at=offset.created_at) == offset


async def test_append_is_idempotent_by_id(store: EventStore) -> None:
    p = provider()
    e = ev(p, payload={"n": 1})
    await store.append(e)
    await store.append(e)  # a replay from the outbox
    await asyncio.gather(*(store.append(e) for _ in range(5)))  # the same id inside one batch
    await store.append(msgspec.structs.replace(e, payload={"n": 2}))  # first write wins: history is not rewritten
    assert await store.query(provider=p) == [e]


async def test_500_concurrent_appends_land_and_are_group_committed(store: EventStore) -> None:
    p = provider()
    events = [
        ev(p, caller_id=USER_B, created_at=utc_timestamp(f"2026-11-21T12:{i // 60:02d}:{i % 60:02d}+00:00"))
        for i in range(500)
    ]
    before = store.stats()
    await asyncio.gather(*(store.append(e) for e in events))
    assert sorted(await store.query(provider=p, limit=1000), key=lambda e: e.created_at) == events
    after = store.stats()  # read after the query: with SQLite at "process" commits follow appends
    assert after.events - before.events == 500
    assert after.batches - before.batches < 50, after  # one transaction per waiting group, not per call
    assert after.largest_batch > 10


async def test_query_filters_order_and_cursor(store: EventStore) -> None:
    p, q = provider(), provider()
    at = [f"2026-11-21T12:00:{s:02d}.000000+00:00" for s in range(6)]
    events = [
        ev(p, created_at=at[0], caller_id=USER_A, decision="allow"),
        ev(p, created_at=at[1], caller_id=USER_B, decision="deny", tool="findings.list"),
        ev(p, created_at=at[2], caller_id=USER_A, decision="error", trace_id="ab" * 16),
        ev(q, created_at=at[3], caller_id=USER_A, decision="deny"),
        ev(p, created_at=at[4], decision="allow"),
        ev(p, created_at=at[5], caller_id=USER_A, decision="deny"),
    ]
    await asyncio.gather(*(store.append(e) for e in events))
    a0, b1, a2, q3, n4, a5 = events

    assert await store.query(provider=p) == [a0, b1, a2, n4, a5]
    assert await store.query(provider=p, newest_first=True) == [a5, n4, a2, b1, a0]
    assert await store.query(provider=p, caller_id=USER_A) == [a0, a2, a5]
    assert await store.query(provider=p, decision="deny") == [b1, a5]
    assert await store.query(provider=p, decision="allow") == [a0, n4]
    assert await store.query(provider=p, tool="findings.list") == [b1]
    assert await store.query(trace_id="ab" * 16) == [a2]
    assert await store.query(caller_id=USER_A, decision="deny", since=at[3], until=at[5]) == [q3]
    assert await store.query(provider=p, since=at[1], until=at[4]) == [b1, a2]  # since inclusive, until exclusive
    assert await store.query(provider=p, since="2026-11-21T14:00:02+02:00") == [a2, n4, a5]
    assert await store.query(provider=p, limit=2) == [a0, b1]
    assert await store.query(provider=p, limit=2, after_id=b1.id) == [a2, n4]  # forwards from a cursor
    assert await store.query(provider=p, limit=2, after_id=a2.id, newest_first=True) == [b1, a0]  # backwards
    assert await store.query(provider=p, after_id=a5.id) == []
    with pytest.raises(ValueError):
        await store.query(after_id=new_event_id())  # unknown cursor: an error, not a silent empty page
    for bad in ({"limit": 0}, {"limit": 10_001}, {"caller_id": "x' or 1=1 --"}, {"since": "2026-11-21"}):
        with pytest.raises(ValueError):
            await store.query(**bad)  # type: ignore[arg-type]


async def test_filters_are_parameters_not_sql(store: EventStore) -> None:
    p = provider()
    await store.append(ev(p))
    for attack in ("x' OR '1'='1", "x' OR 1=1 --", "'; drop table run_events; --", f"{p}' --"):
        assert await store.query(provider=attack) == []
        assert await store.query(decision=attack) == []
        assert await store.query(tool=attack, limit=5) == []
    assert len(await store.query(provider=p)) == 1  # and the table is still there


async def test_closed_store_refuses_appends(store: EventStore) -> None:
    await store.append(ev(provider()))
    await store.close()
    with pytest.raises(EventStoreUnavailable):
        await store.append(ev(provider()))
    assert (await store.health())["status"] == "down"


async def test_health_reports_ok_and_counters(store: EventStore) -> None:
    await store.append(ev(provider()))
    h = await store.health()
    assert h["status"] == "ok" and h["error"] is None and h["batches"] >= 1 and h["store"] in ("sqlite", "postgres")


# -- SQLite specifics ---------------------------------------------------------------------------


async def test_sqlite_is_durable_wal_append_only_and_isolates_a_refused_event(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    s = SqliteEventStore(path, durability="disk")
    kept = ev("p")
    await s.append(kept)
    conn = sqlite3.connect(path)
    assert conn.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert s._wconn.execute("pragma synchronous").fetchone()[0] == 2  # FULL: fsync at every commit
    for sql in ("update run_events set tool = 'x'", "delete from run_events"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    # A refused event among concurrent ones fails only its own caller.
    conn.execute(
        "create trigger refuse before insert on run_events when new.tool = 'refused'"
        " begin select raise(abort, 'refused by test'); end"
    )
    conn.commit()
    conn.close()
    good = [ev("q") for _ in range(9)]
    bad = ev("q", tool="refused")
    results = await asyncio.gather(*(s.append(e) for e in [*good[:4], bad, *good[4:]]), return_exceptions=True)
    assert [type(r) for r in results] == [type(None)] * 4 + [EventRejected] + [type(None)] * 5
    await s.close()

    reopened = SqliteEventStore(path)
    try:
        assert await reopened.query(provider="p") == [kept]
        assert sorted(e.id for e in await reopened.query(provider="q")) == sorted(e.id for e in good)
    finally:
        await reopened.close()


async def test_sqlite_process_writes_behind_and_fails_closed_while_commits_fail(tmp_path: Path) -> None:
    """At "process" an answer is released once its outcome is in the intent log; a commit that then
    fails loses nothing (the outcome stays in the log and is retried) but no tool may begin until
    commits work again."""
    path = tmp_path / "events.db"
    s = SqliteEventStore(path)  # the default: durability "process"
    s.RETRY_S = 0.05
    try:
        assert s._wconn.execute("pragma synchronous").fetchone()[0] == 1  # NORMAL: no fsync per commit
        blocker = sqlite3.connect(path)
        blocker.execute("create trigger refuse before insert on run_events"
                        " begin select raise(abort, 'disk trouble, say'); end")
        blocker.commit()
        stuck = ev("behind")
        await s.append(stuck)  # released: the outcome is in the log, its commit fails behind
        await s.flush()
        with pytest.raises(EventStoreUnavailable, match="cannot commit"):
            await s.begin(ev("next"))  # fail closed: nothing new runs while outcomes cannot land
        health = await s.health()
        assert health["status"] == "down" and health["behind"] == 1 and "disk trouble" in health["error"]
        await s.append(ev("behind"))  # an outcome (a refusal, say) is still journaled, not dropped
        blocker.execute("drop trigger refuse")
        blocker.commit()
        blocker.close()
        deadline = time.monotonic() + 10
        while (await s.health())["status"] != "ok":
            assert time.monotonic() < deadline, "the retry never committed"
            await asyncio.sleep(0.02)
        await s.begin(ev("next"))  # open again
        rows = await s.query(provider="behind")
        assert stuck in rows and len(rows) == 2
    finally:
        await s.close()


async def test_sqlite_outcomes_written_behind_survive_a_store_that_never_committed_them(tmp_path: Path) -> None:
    """The log is what makes a released answer's row certain: a store that dies after writing the
    outcome line and before its commit (simulated: the commit refused, then the store closed)
    leaves the outcome, not the intent, to the next opener."""
    path = tmp_path / "events.db"
    s = SqliteEventStore(path)
    blocker = sqlite3.connect(path)
    blocker.execute("create trigger refuse before insert on run_events begin select raise(abort, 'no'); end")
    blocker.commit()
    call = ev("p", result={"status": "interrupted"})
    await s.begin(call)
    outcome = msgspec.structs.replace(call, result={"status": "ok"}, duration_ms=3)
    await s.append(outcome)
    await s.flush()
    await s.close()  # the outcome never committed: it stays in the log
    blocker.execute("drop trigger refuse")
    blocker.commit()
    blocker.close()
    reopened = SqliteEventStore(path)
    try:
        assert reopened.recovered == 1  # one call: its intent and its outcome, the outcome kept
        assert await reopened.query(provider="p") == [outcome]
    finally:
        await reopened.close()


def test_sqlite_unwritable_path_fails_at_construction(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(EventStoreUnavailable, match="a-file"):
        SqliteEventStore(blocker / "events.db")


# -- Postgres specifics -------------------------------------------------------------------------


async def test_postgres_unreachable_fails_fast_and_health_says_down() -> None:
    s = PostgresEventStore("postgresql://postgres@127.0.0.1:1/none", timeout=2.0)
    started = time.monotonic()
    results = await asyncio.gather(*(s.append(ev("p")) for _ in range(20)), return_exceptions=True)
    assert all(isinstance(r, EventStoreUnavailable) for r in results), results
    with pytest.raises(EventStoreUnavailable):
        await s.query()
    h = await s.health()
    assert h["status"] == "down" and h["error"]
    assert time.monotonic() - started < 5
    await s.close()


async def test_postgres_failed_commit_fails_every_caller_and_writes_nothing(
    pg_db: PgDb, admin: asyncpg.Connection
) -> None:
    # A server-side failure that is not about one event's data (disk full) hits the whole batch.
    await admin.execute(
        """
        create or replace function public.fail_batch() returns trigger language plpgsql as $$
        begin raise exception 'no space left' using errcode = 'disk_full'; end $$;
        create trigger fail_batch before insert on ops.run_events
          for each row when (new.tool = 'fail.batch') execute function public.fail_batch();
        """
    )
    p = provider()
    s = PostgresEventStore(pg_db.gateway_dsn)
    try:
        events = [ev(p) for _ in range(9)] + [ev(p, tool="fail.batch")]
        results = await asyncio.gather(*(s.append(e) for e in events), return_exceptions=True)
        assert all(isinstance(r, EventStoreUnavailable) for r in results), results
        assert await s.query(provider=p) == []  # all or nothing
    finally:
        await s.close()
        await admin.execute("drop trigger fail_batch on ops.run_events")


async def test_postgres_refused_event_does_not_poison_its_batch(pg_db: PgDb) -> None:
    p = provider()
    s = PostgresEventStore(pg_db.gateway_dsn)
    try:
        good = [ev(p, caller_id=USER_A) for _ in range(9)]
        stranger = ev(p, caller_id=str(uuid.uuid4()))  # not in auth.users: the foreign key refuses it
        nul = ev(p, payload={"s": "a\x00b"})  # jsonb cannot hold U+0000 (SQLite's JSON text can)
        results = await asyncio.gather(*(s.append(e) for e in [*good, stranger, nul]), return_exceptions=True)
        assert results[:9] == [None] * 9 and [type(r) for r in results[9:]] == [EventRejected] * 2
        assert sorted(e.id for e in await s.query(provider=p)) == sorted(e.id for e in good)
    finally:
        await s.close()


async def test_postgres_store_accepts_a_pool_it_does_not_own(pg_db: PgDb) -> None:
    pool = await asyncpg.create_pool(pg_db.gateway_dsn, min_size=1, max_size=3)
    try:
        s = PostgresEventStore(pool)
        e = ev(provider())
        await s.append(e)
        await s.close()
        assert await pool.fetchval("select count(*) from ops.run_events where id = $1", uuid.UUID(e.id)) == 1
    finally:
        await pool.close()


async def test_gateway_role_may_insert_and_select_only(admin: asyncpg.Connection) -> None:
    e = ev(provider())
    async with admin.transaction():
        await admin.execute("set local role opsgate_gateway")
        await admin.execute(
            "insert into ops.run_events (id, provider, tool, decision, duration_ms) values ($1, $2, 't', 'allow', 1)",
            uuid.UUID(e.id),
            e.provider,
        )
        assert await admin.fetchval("select count(*) from ops.run_events where provider = $1", e.provider) == 1
    for sql in (
        "update ops.run_events set tool = 'x'",
        "delete from ops.run_events",
        "truncate ops.run_events",
        "insert into ops.run_events (id, provider, tool, decision) values (gen_random_uuid(), 'p', 't', 'allow')"
        " on conflict (id) do update set tool = 'x'",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with admin.transaction():
                await admin.execute("set local role opsgate_gateway")
                await admin.execute(sql)


async def test_append_only_even_for_the_owner(admin: asyncpg.Connection) -> None:
    p = provider()
    await admin.execute(
        "insert into ops.run_events (id, provider, tool, decision) values (gen_random_uuid(), $1, 't', 'allow')", p
    )
    for sql in (
        f"update ops.run_events set tool = 'x' where provider = '{p}'",
        f"delete from ops.run_events where provider = '{p}'",
        "delete from ops.run_events where false",  # statement-level: no row needed to trip it
        "truncate ops.run_events",
    ):
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await admin.execute(sql)
    assert await admin.fetchval("select count(*) from ops.run_events where provider = $1", p) == 1


async def _visible(conn: asyncpg.Connection, role: str, claims: dict[str, object] | None, prov: str) -> set[str | None]:
    """What PostgREST would return: SET LOCAL ROLE + request.jwt.claims, then the query."""
    async with conn.transaction():
        await conn.execute(f"set local role {role}")
        if claims is not None:
            await conn.execute("select set_config('request.jwt.claims', $1, true)", json.dumps(claims))
        rows = await conn.fetch("select caller_id::text from ops.run_events where provider = $1", prov)
    return {r[0] for r in rows}


async def test_rls_users_see_their_own_rows_ops_admin_sees_all(pg_db: PgDb, admin: asyncpg.Connection) -> None:
    p = provider()
    store = PostgresEventStore(pg_db.gateway_dsn)
    try:
        await asyncio.gather(*(store.append(ev(p, caller_id=c)) for c in (USER_A, USER_A, USER_B, ADMIN, None)))
    finally:
        await store.close()

    def claims(sub: str, **app_metadata: object) -> dict[str, object]:
        return {"sub": sub, "role": "authenticated", "app_metadata": app_metadata, "user_metadata": {}}

    assert await _visible(admin, "authenticated", claims(USER_A), p) == {USER_A}
    assert await _visible(admin, "authenticated", claims(USER_B), p) == {USER_B}
    assert await _visible(admin, "authenticated", claims(USER_A, ops_role="ops_operator"), p) == {USER_A}
    everyone = {USER_A, USER_B, ADMIN, None}
    assert await _visible(admin, "authenticated", claims(ADMIN, ops_role="ops_admin"), p) == everyone
    # user_metadata is user-editable: it grants nothing.
    forged = claims(USER_B) | {"user_metadata": {"ops_role": "ops_admin"}}
    assert await _visible(admin, "authenticated", forged, p) == {USER_B}
    assert await _visible(admin, "authenticated", None, p) == set()  # no claims, no rows
    assert await _visible(admin, "opsgate_gateway", None, p) == everyone
    # The claims do not outlive their transaction (set_config(..., true)); '' must not break the policy.
    assert await _visible(admin, "authenticated", None, p) == set()
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await _visible(admin, "anon", {"role": "anon"}, p)  # anon: no grant on schema ops at all
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        async with admin.transaction():
            await admin.execute("set local role authenticated")
            await admin.execute(
                "insert into ops.run_events (id, provider, tool, decision) values ($1, 'p', 't', 'allow')", uuid.uuid4()
            )
