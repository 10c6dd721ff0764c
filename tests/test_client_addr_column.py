"""ops.run_events.client_addr: both stores keep the client address of a row exactly; the column is a
new migration (Postgres `inet`, queryable by network) and an in-place upgrade of an older SQLite
table; an event cannot carry anything but an address there. And the refusal recorder keeps what a
failing store could not take, for the next interval.

Postgres tests use the real server (skipped when it is down, except under CI=true).
"""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

import pytest

from gateway.audit import Audit
from gateway.edge import AUTH, Refusals
from otel.events import PostgresEventStore, RunEvent, SqliteEventStore, new_event_id, utc_timestamp
from otel.events.sqlite import COLUMNS, SCHEMA
from tests.events_pg import fetch, fresh_database

pytestmark = pytest.mark.anyio

ADDRESSES = ["203.0.113.7", "2001:db8::1", "::1", None]


def event(client_addr: str | None, caller: str | None = None) -> RunEvent:
    return RunEvent(id=new_event_id(), provider="echo", tool="ping", decision="allow", created_at=utc_timestamp(),
                    duration_ms=1, caller_id=caller, client_addr=client_addr)


@pytest.mark.parametrize("bad", ["203.0.113.007", "2001:DB8::1", "::ffff:1.2.3.4x", "evil<script>", "", "1.2.3.4/32"])
def test_an_event_carries_only_a_canonical_address(bad: str) -> None:
    with pytest.raises(ValueError, match="client_addr"):
        event(bad)


async def test_sqlite_round_trips_the_address(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.db", durability="disk")
    try:
        written = [event(a) for a in ADDRESSES]
        for e in written:
            await store.append(e)
        read = {e.id: e.client_addr for e in await store.query(limit=10)}
    finally:
        await store.close()
    assert read == {e.id: e.client_addr for e in written}


async def test_an_older_sqlite_table_gains_the_column_in_place(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    old_columns = COLUMNS.replace(", client_addr", "")
    old_schema = SCHEMA.replace(",\n    client_addr text", "")
    assert old_schema != SCHEMA
    with sqlite3.connect(db) as conn:  # the table as the previous gateway created it, with a row
        conn.executescript(old_schema)
        conn.execute(f"insert into run_events ({old_columns}) values ('{uuid.uuid4()}', 'echo', 'ping', null, null,"
                     f" null, 1, '{utc_timestamp()}', 'allow', '[]', null, '[]', null, null)")
    store = SqliteEventStore(db, durability="disk")
    try:
        await store.append(event("203.0.113.7"))
        rows = await store.query(limit=10)
    finally:
        await store.close()
    assert sorted(r.client_addr or "" for r in rows) == ["", "203.0.113.7"]


async def test_postgres_round_trips_the_address_as_inet() -> None:
    with fresh_database([]) as db:
        store = PostgresEventStore(db.gateway_dsn())
        try:
            written = [event(a) for a in ADDRESSES]
            for e in written:
                await store.append(e)
            read = {e.id: e.client_addr for e in await store.query(limit=10)}
        finally:
            await store.close()
        in_net = await fetch(db, "select id::text from ops.run_events where client_addr << '203.0.113.0/24'")
        kind = await fetch(db, "select data_type from information_schema.columns where table_schema = 'ops'"
                               " and table_name = 'run_events' and column_name = 'client_addr'")
    assert read == {e.id: e.client_addr for e in written}
    assert [r[0] for r in in_net] == [written[0].id]
    assert kind[0][0] == "inet"


async def test_refusals_the_store_could_not_take_are_kept_for_the_next_interval(tmp_path: Path) -> None:
    store = SqliteEventStore(tmp_path / "events.db", durability="disk")
    refusals = Refusals(Audit(store), interval_s=60, max_clients=2)
    for client in ("203.0.113.7", "203.0.113.7", "203.0.113.8", "203.0.113.9"):
        refusals.note(AUTH, "signature", client)
    assert len(refusals) == 3  # two clients, then "other clients"
    await store.close()  # the store now refuses every append
    assert await refusals.flush() == 0
    refusals.note(AUTH, "signature", "203.0.113.7")
    assert len(refusals) == 3  # kept, merged with the new interval's, still bounded

    store = SqliteEventStore(tmp_path / "events.db", durability="disk")
    refusals.audit = Audit(store)
    try:
        assert await refusals.flush() == 3
        await asyncio.sleep(0)
        rows = await store.query(provider="opsgate", tool="auth.refused", limit=10)
    finally:
        await store.close()
    counts = {r.client_addr: r.payload["args"]["count"] for r in rows if r.payload}
    assert counts == {"203.0.113.7": 3, "203.0.113.8": 1, None: 1}
