"""Crash and outage, end to end, on real gateway processes (tests/events_gateway.py) driven by the
real mcp client over HTTP.

Crash: a gateway under a load of concurrent calls is killed with SIGKILL while some tools are
mid-run, then started again on the same state. Every call whose answer a client received has
exactly one row, with that outcome; every call whose tool had begun but whose answer never came
has exactly one row, `interrupted` (or its real outcome, if that was committed before the kill
but the answer was lost on the wire); nothing else is stored and nothing twice. A call killed
before its tool began never ran and has no row, or an `interrupted` one if its start had just
been journaled. Both stores: embedded SQLite, and Postgres behind the outbox.

Outage: Postgres (behind a TCP proxy the test cuts) vanishes mid-load and comes back. Calls keep
being answered throughout (the outbox journals them), health says `degraded` meanwhile, and once
the database is back every answered call has exactly one row there, in each caller's order.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.config import GatewayConfig
from gateway.serve import mint_token, signing_key
from otel.events import SqliteEventStore
from tests.conftest import POLICIES
from tests.events_pg import PgDb, TcpProxy, fetch, fresh_database
from tests.harness import GatewayProcess, free_port, serving_process

pytestmark = pytest.mark.anyio

WORKERS = 8


@contextlib.contextmanager
def gateway(tmp: Path, name: str, state: Path, started: Path, extra: list[str]) -> Iterator[GatewayProcess]:
    port = free_port()
    argv = ["tests.events_gateway", "--port", str(port), "--policies", str(POLICIES), "--state-dir", str(state),
            "--started", str(started), *extra]
    with serving_process(argv, port, tmp / f"{name}.log", name) as gw:
        yield gw


def admin_token(state: Path, user: str) -> str:
    secret = signing_key(GatewayConfig(state_dir=str(state)))
    return mint_token(secret, issuer=GatewayConfig().auth_issuer, user_id=user, role="ops_admin")


class Load:
    """WORKERS clients calling echo.ping back to back, alternating slow and fast calls, until
    told to stop or their gateway dies. Records what was sent, what was answered, and errors."""

    def __init__(self, url: str, token: str, tag: str = "a") -> None:
        self.url, self.token, self.tag = url, token, tag
        self.sent: list[str] = []
        self.answered: set[str] = set()
        self.errors: list[BaseException] = []
        self.stop = False
        self.tasks = [asyncio.create_task(self.worker(w)) for w in range(WORKERS)]

    async def worker(self, w: int) -> None:
        http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {self.token}"}, timeout=30)
        try:
            async with http, Client(streamable_http_client(self.url + "/mcp", http_client=http), mode="auto") as c:
                n = 0
                while not self.stop:
                    message = f"{'slow' if n % 2 == 0 else 'fast'}-{w}-{n}-{self.tag}"
                    self.sent.append(message)
                    result = await c.call_tool("echo.ping", {"message": message})
                    assert not result.is_error, result
                    self.answered.add(message)
                    n += 1
        except Exception as exc:  # e.g. the gateway died under us: what was in flight stays unanswered
            self.errors.append(exc)

    async def until(self, condition: Any, deadline_s: float = 60) -> None:
        deadline = time.monotonic() + deadline_s
        while not condition():
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, "the load never reached the condition"
            await asyncio.sleep(0.01)

    async def finish(self) -> None:
        self.stop = True
        await asyncio.wait_for(asyncio.gather(*self.tasks), 60)


def rows_by_message(rows: list[tuple[str, str, str]]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for event_id, message, status in rows:
        out.setdefault(message, []).append((event_id, status))
    return out


async def stored_rows(store: str, state: Path, pg: PgDb | None, user: str) -> list[tuple[str, str, str]]:
    if store == "sqlite":
        reader = SqliteEventStore(state / "events.db")
        try:
            events = await reader.query(caller_id=user, limit=10_000)
        finally:
            await reader.close()
        return [(e.id, e.payload["args"]["message"], e.result["status"]) for e in events]  # type: ignore[index]
    assert pg is not None
    rows = await fetch(pg, "select id::text, payload->'args'->>'message', result->>'status' from ops.run_events"
                           " where caller_id = $1::uuid order by created_at, id", user)
    return [(r[0], r[1], r[2]) for r in rows]


def wait_drained(gw: GatewayProcess) -> None:
    deadline = time.monotonic() + 60
    while (outbox := gw.health()["events"]["outbox"])["backlog"]:
        assert time.monotonic() < deadline, f"outbox never drained: {outbox}"
        time.sleep(0.1)


# SQLite at "process" (the default) releases answers before their commit (written behind: the
# outcome is in the intent log), so the kill also catches outcomes journaled but not yet committed.
@pytest.mark.parametrize(("store", "durability"), [("sqlite", "process"), ("sqlite", "disk"), ("postgres", "process")])
async def test_sigkill_mid_load_leaves_one_row_per_answer_and_interrupted_rows_for_calls_in_flight(
        tmp_path: Path, store: str, durability: str) -> None:
    user = str(uuid.uuid4())
    state, started = tmp_path / "state", tmp_path / "started.txt"
    token = admin_token(state, user)
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(fresh_database([user])) if store == "postgres" else None
        extra = ["--events", "postgres", "--database-url", pg.gateway_dsn()] if pg is not None else []
        extra += ["--durability", durability]

        with gateway(tmp_path, "gw1", state, started, extra) as gw1:
            load = Load(gw1.url, token)

            # A slow tool runs 0.5 s. Kill only while two of them began less than 0.25 s ago (they
            # had not begun at an earlier poll), so they are surely still running at the kill.
            not_begun_at: dict[str, float] = {}
            last_poll = time.monotonic()

            def slow_tools_mid_run() -> bool:
                nonlocal last_poll
                now = time.monotonic()
                began = set(started.read_text().split()) if started.exists() else set()
                for m in began:
                    not_begun_at.setdefault(m, last_poll)
                last_poll = now
                fresh = [m for m in began if m.startswith("slow") and m not in load.answered
                         and not_begun_at[m] > now - 0.25]
                return len(load.answered) >= 40 and len(fresh) >= 2

            await load.until(slow_tools_mid_run)
            os.kill(gw1.proc.pid, signal.SIGKILL)
            gw1.proc.wait(10)
            await asyncio.wait_for(asyncio.gather(*load.tasks), 60)  # each client sees its gateway die
            assert len(load.errors) == WORKERS
        began = set(started.read_text().split())
        answered = set(load.answered)

        with gateway(tmp_path, "gw2", state, started, extra) as gw2:  # the restart turns intents into rows
            after = Load(gw2.url, token, tag="b")
            await after.until(lambda: len(after.answered) >= 8)
            await after.finish()
            assert not after.errors, after.errors
            if pg is not None:
                wait_drained(gw2)
        rows = rows_by_message(await stored_rows(store, state, pg, user))

    assert len(answered) >= 40
    everything = set(load.sent) | set(after.sent)
    assert set(rows) <= everything, "a row for a call nobody made"
    assert all(len(r) == 1 for r in rows.values()), {m: r for m, r in rows.items() if len(r) > 1}
    ids = Counter(event_id for r in rows.values() for event_id, _ in r)
    assert all(n == 1 for n in ids.values())
    for message in [*answered, *after.answered]:  # every answer a client got has its one row
        assert rows.get(message, [(None, None)])[0][1] == "ok", (message, rows.get(message))
    in_flight = began - set(answered)
    assert len([m for m in in_flight if m.startswith("slow")]) >= 2
    for message in in_flight:  # every tool that began and never answered has its one row
        assert message in rows and rows[message][0][1] in ("interrupted", "ok"), (message, rows.get(message))
    interrupted = {m for m, r in rows.items() if r[0][1] == "interrupted"}
    assert len(interrupted) >= 1, "the kill found tools mid-run; they must read interrupted"
    assert interrupted <= set(load.sent) - answered, "an answered call marked interrupted"
    never_began = set(load.sent) - began - set(answered)
    assert all(rows[m][0][1] == "interrupted" for m in never_began if m in rows)


@dataclass(frozen=True)
class BehindProxy:
    """A fresh database holding one user, a proxy in front of Postgres, and what a gateway process
    needs to store its events there through the proxy."""

    user: str
    token: str  # the user's, as ops_admin
    state: Path
    started: Path
    pg: PgDb
    proxy: TcpProxy
    extra: list[str]  # the gateway's arguments


@contextlib.contextmanager
def postgres_behind_proxy(tmp: Path) -> Iterator[BehindProxy]:
    user = str(uuid.uuid4())
    state = tmp / "state"
    proxy = TcpProxy(("127.0.0.1", 5432))
    with fresh_database([user]) as pg, contextlib.closing(proxy):
        yield BehindProxy(user, admin_token(state, user), state, tmp / "started.txt", pg, proxy,
                          ["--events", "postgres", "--database-url", pg.gateway_dsn(proxy.port)])


async def test_postgres_outage_mid_load_answers_throughout_and_loses_nothing(tmp_path: Path) -> None:
    with postgres_behind_proxy(tmp_path) as env:
        with gateway(tmp_path, "gw", env.state, env.started, env.extra) as gw:
            load = Load(gw.url, env.token)
            await load.until(lambda: len(load.answered) >= 40)
            env.proxy.cut()
            seen = len(load.answered)
            await load.until(lambda: len(load.answered) >= seen + 60)  # answers keep coming
            deadline = time.monotonic() + 30
            while (events := gw.health()["events"])["outbox"]["shipping"] != "failing":  # the shipper notices
                assert time.monotonic() < deadline, events
                await asyncio.sleep(0.05)
            assert events["status"] == "degraded" and events["outbox"]["backlog"] > 0
            assert httpx.get(gw.url + "/health/ready", timeout=10).status_code == 200
            env.proxy.restore()
            seen = len(load.answered)
            await load.until(lambda: len(load.answered) >= seen + 40)
            await load.finish()
            assert not load.errors, load.errors
            wait_drained(gw)
        rows = await stored_rows("postgres", env.state, env.pg, env.user)

    messages = [m for _, m, _ in rows]
    assert sorted(messages) == sorted(load.answered), "lost or duplicated rows"
    assert all(status == "ok" for _, _, status in rows)
    for w in range(WORKERS):  # each client's calls stored in the order it made them
        mine = [m for m in messages if m.split("-")[1] == str(w)]
        assert [int(m.split("-")[2]) for m in mine] == sorted(int(m.split("-")[2]) for m in mine)


async def test_a_restarted_gateway_ships_what_an_earlier_one_left_journaled_before_any_call(
        tmp_path: Path) -> None:
    with postgres_behind_proxy(tmp_path) as env:
        env.proxy.cut()  # Postgres unreachable for the whole life of the first gateway
        with gateway(tmp_path, "gw1", env.state, env.started, env.extra) as gw1:
            load = Load(gw1.url, env.token)
            await load.until(lambda: len(load.answered) >= 16)
            await load.finish()
            assert not load.errors, load.errors
        env.proxy.restore()
        with gateway(tmp_path, "gw2", env.state, env.started, env.extra):  # nobody calls it or asks its /health
            deadline = time.monotonic() + 60
            while len(rows := await stored_rows("postgres", env.state, env.pg, env.user)) < len(load.answered):
                assert time.monotonic() < deadline, f"{len(rows)} of {len(load.answered)} shipped"
                await asyncio.sleep(0.2)
    assert sorted(m for _, m, _ in rows) == sorted(load.answered)
