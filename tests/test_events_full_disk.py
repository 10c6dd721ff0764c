"""The audit journal on a full disk (issue 13, items 9 and 10), on a real small filesystem: a tmpfs
that the test mounts, as root, as the state dir of real gateway processes (tests/events_gateway.py)
driven by the real mcp client over HTTP. Skipped only where mounting is impossible (not root, no
permission), never under CI=true; unmounted afterwards even on failure.

9. A write(2) to the intent log that the full disk cuts short costs no other record: a call begun
   after space came back and killed by `kill -9` has its `interrupted` row, and an answered call
   whose outcome was only in the log (its commit held back) has its `ok` row. Recovery also keeps
   every whole record around a fragment that a crash left, reads logs of the earlier format, and
   cannot be handed a record by a caller's arguments.
10. A COMMIT refused for the full disk is reported as such (SQLite's "database or disk is full",
   then what is full and what to free) in /health and the log, never as the ROLLBACK's "no
   transaction is active". A gateway started on a full disk serves, refusing every call and
   saying why, and opens its store (recovering the intents of the gateway before it) once space
   is back; so does the Postgres outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import msgspec
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.audit import Audit
from otel.events import (
    EventStoreUnavailable,
    OutboxEventStore,
    PostgresEventStore,
    RunEvent,
    SqliteEventStore,
    new_event_id,
    utc_timestamp,
)
from tests.events_gateway import release
from tests.events_pg import fetch, fresh_database
from tests.harness import GatewayProcess, code_of
from tests.test_events_crash import admin_token, gateway, rows_by_message, stored_rows

pytestmark = pytest.mark.anyio

PAGE = os.sysconf("SC_PAGE_SIZE")  # tmpfs hands out space a page at a time
# A message the redactor keeps at 1,024 characters: its call's record is longer than that.
BIG = "big-" + "b" * 1100


# -- the small disk -----------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(where: Path, size: str = "16m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` for the block."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
                                 capture_output=True, text=True)
        problem = mounted.stderr.strip() if mounted.returncode else ""
    except OSError as exc:  # no mount(8)
        problem = str(exc)
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs at {where}: {problem} (CI=true: the full-disk tests must run)")
        pytest.skip(f"cannot mount a tmpfs at {where}: {problem}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(where)], check=True)  # still held open: detach it anyway


def fill(disk: Path, *, leave_pages: int = 0) -> Path:
    """Take every free page of `disk` but `leave_pages` with one file; unlink it to free them."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * PAGE)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    os.truncate(filler, filler.stat().st_size - leave_pages * PAGE)
    return filler


def intent_log(state: Path) -> Path:
    """The live gateway's intent log (those of dead gateways are gone once it has started)."""
    [log] = (state / "events.db.owners").glob("*.intents")
    return log


# -- calls ---------------------------------------------------------------------------------------


async def call(url: str, token: str, message: str) -> str:
    """One echo.ping: "ok", or the gateway's error code."""
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60)
    try:
        async with http, Client(streamable_http_client(url + "/mcp", http_client=http), mode="auto") as c:
            result = await c.call_tool("echo.ping", {"message": message})
    except Exception as exc:
        return code_of(exc)
    assert not result.is_error, result
    return "ok"


async def began(task: asyncio.Task[str], started: Path, message: str) -> None:
    """Wait until the held call `message` runs (it would have answered had it been refused)."""
    while not (started.exists() and message in started.read_text().split()):
        assert not task.done(), f"{message} was not run: {task.result()}"
        await asyncio.sleep(0.01)


def kill(gw: GatewayProcess) -> None:
    os.kill(gw.proc.pid, signal.SIGKILL)
    gw.proc.wait(10)


def settled(gw: GatewayProcess) -> None:
    """Every outcome handed to the store so far is committed (/health waits for them)."""
    events = gw.health()["events"]
    assert events["status"] == "ok" and events.get("behind", 0) == 0, events


async def until_health(gw: GatewayProcess, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while not ok(events := gw.health()["events"]):
        assert time.monotonic() < deadline, events
        await asyncio.sleep(0.05)
    return events


async def until_logged(gw: GatewayProcess, ok: Callable[[str], bool]) -> None:
    """The gateway's log says it (its lines reach the file after the answer that they explain)."""
    deadline = time.monotonic() + 60
    while not ok(gw.log.read_text()):
        assert time.monotonic() < deadline, gw.log_tail()
        await asyncio.sleep(0.05)


async def last_page_nearly_full(gw: GatewayProcess, token: str, state: Path) -> list[str]:
    """Answered calls until the log's last page has less room left than BIG's record needs, but
    some, so that on the full disk that record is written in part (a short write), not refused
    whole. Returns their messages."""
    made: list[str] = []
    while not 0 < -intent_log(state).stat().st_size % PAGE < 1024:
        assert len(made) < 100, "the log's size never came to the wanted place"
        made.append(f"warm-{len(made)}-" + "w" * (97 * len(made) % 700))
        assert await call(gw.url, token, made[-1]) == "ok"
    return made


async def statuses(state: Path, user: str) -> dict[str, list[str]]:
    """Each of the user's calls (by message) with the status of each of its rows."""
    rows = rows_by_message(await stored_rows("sqlite", state, None, user))
    return {m: [status for _, status in r] for m, r in rows.items()}


@contextlib.contextmanager
def a_gateway_on_a_small_disk(tmp: Path) -> Iterator[tuple[Path, Path, str, str]]:
    """(state dir on a fresh tmpfs, started-file, user, that user's ops_admin token)."""
    state, user = tmp / "state", str(uuid.uuid4())
    with small_disk(state):
        yield state, tmp / "started.txt", user, admin_token(state, user)


# -- 9. records cut short ------------------------------------------------------------------------


@pytest.mark.parametrize("durability", ["process", "disk"])
async def test_a_call_begun_once_space_is_back_and_killed_has_its_interrupted_row(
        tmp_path: Path, durability: str) -> None:
    with a_gateway_on_a_small_disk(tmp_path) as (state, started, user, token):
        extra = ["--durability", durability]
        with gateway(tmp_path, "gw1", state, started, extra) as gw1:
            warm = await last_page_nearly_full(gw1, token, state)
            settled(gw1)
            filler = fill(state)
            # Its intent is written in part: the rest of the log's last page, then ENOSPC.
            assert await call(gw1.url, token, BIG) == "EVENT_STORE_UNAVAILABLE"
            filler.unlink()
            await asyncio.sleep(Audit.COOLDOWN_S)  # after a failure no tool runs for this long
            # The first record written after the one cut short: this call's intent.
            killed = asyncio.create_task(call(gw1.url, token, "hold-killed"))
            await began(killed, started, "hold-killed")
            assert await call(gw1.url, token, "answered") == "ok"
            kill(gw1)
            with contextlib.suppress(Exception):
                await killed
        with gateway(tmp_path, "gw2", state, started, extra):  # recovers gw1's log
            stored = await statuses(state, user)
    # BIG's start and its refusal could not be recorded (the disk was full): it has no row, and it never ran.
    assert stored == {**{m: ["ok"] for m in warm}, "hold-killed": ["interrupted"], "answered": ["ok"]}
    assert BIG not in started.read_text().split()


async def test_an_answered_call_whose_outcome_follows_a_record_cut_short_keeps_its_row(tmp_path: Path) -> None:
    """At durability "process" an answer is released once its outcome is in the log; here its
    commit is held back (the test holds SQLite's write lock), so after `kill -9` the row can only
    come from that line, written right after a record the full disk cut short."""
    with a_gateway_on_a_small_disk(tmp_path) as (state, started, user, token):
        with gateway(tmp_path, "gw1", state, started, []) as gw1:
            held = asyncio.create_task(call(gw1.url, token, "hold-answered"))
            await began(held, started, "hold-answered")
            warm = await last_page_nearly_full(gw1, token, state)
            settled(gw1)
            filler = fill(state)
            assert await call(gw1.url, token, BIG) == "EVENT_STORE_UNAVAILABLE"
            filler.unlink()
            blocker = sqlite3.connect(state / "events.db", isolation_level=None)
            try:
                blocker.execute("begin immediate")  # commits wait behind this: the outcome is only in the log
                release(started, "hold-answered")
                assert await held == "ok"
                kill(gw1)
            finally:
                blocker.close()
        with gateway(tmp_path, "gw2", state, started, []):
            stored = await statuses(state, user)
    assert stored == {**{m: ["ok"] for m in warm}, "hold-answered": ["ok"]}


# -- 10. the full disk named as such --------------------------------------------------------------


def says_the_disk_is_full(text: str, state: Path) -> bool:
    return ("database or disk is full" in text and f"the filesystem mounted at {state} is full" in text
            and "free space on it" in text and "cannot rollback" not in text)


@pytest.mark.parametrize("durability", ["process", "disk"])
async def test_a_commit_refused_for_the_full_disk_is_reported_as_such(tmp_path: Path, durability: str) -> None:
    with a_gateway_on_a_small_disk(tmp_path) as (state, started, user, token):
        # The default reserve: the database's WAL takes the last free pages, the log's records land in
        # what the log holds beyond its end (the refused call's row among them).
        with gateway(tmp_path, "gw", state, started, ["--durability", durability, "--log-reserve", "262144"]) as gw:
            assert await call(gw.url, token, "before") == "ok"
            settled(gw)
            filler = fill(state)
            answer = await call(gw.url, token, "while-full")
            if durability == "disk":  # the answer waits for its commit, which fails: withheld
                assert answer == "EVENT_STORE_UNAVAILABLE"
            else:  # released once its outcome was in the log; the commit behind it fails
                assert answer == "ok"
                events = await until_health(gw, lambda e: e["status"] == "down")
                assert says_the_disk_is_full(events["error"], state), events
                assert await call(gw.url, token, "refused") == "EVENT_STORE_UNAVAILABLE"  # no tool runs meanwhile
            await until_logged(gw, lambda text: says_the_disk_is_full(text, state))
            filler.unlink()
            await until_health(gw, lambda e: e["status"] == "ok")
            await asyncio.sleep(Audit.COOLDOWN_S)  # after a failure no tool runs for this long
            assert await call(gw.url, token, "after") == "ok"
        stored = await statuses(state, user)
    # At "disk" the withheld call's row is its intent's (its tool ran; its outcome never landed).
    expected = {"before": ["ok"], "while-full": ["ok" if durability == "process" else "interrupted"],
                "after": ["ok"]}
    if durability == "process":
        expected["refused"] = ["unrecorded"]  # refused before its tool ran, and that refusal is a row
    assert stored == expected


async def test_an_intent_log_the_full_disk_refuses_shows_in_health_until_space_is_back(tmp_path: Path) -> None:
    with a_gateway_on_a_small_disk(tmp_path) as (state, started, user, token):
        with gateway(tmp_path, "gw", state, started, []) as gw:
            await last_page_nearly_full(gw, token, state)
            settled(gw)
            filler = fill(state)
            assert await call(gw.url, token, BIG) == "EVENT_STORE_UNAVAILABLE"  # its start cannot be recorded
            events = gw.health()["events"]
            assert events["status"] == "down" and "No space left on device" in events["error"], events
            assert f"the filesystem mounted at {state} is full" in events["error"], events
            await until_logged(gw, lambda text: f"the filesystem mounted at {state} is full" in text)
            filler.unlink()
            await until_health(gw, lambda e: e["status"] == "ok")  # no call needed to find out
            await asyncio.sleep(Audit.COOLDOWN_S)  # after a failure no tool runs for this long
            assert await call(gw.url, token, "after") == "ok"
        assert (await statuses(state, user))["after"] == ["ok"]


# "kill -9": the dead gateway's intent must be recorded at the next start, whose first commit the
# full disk refuses (SQLITE_FULL). "stop": a clean stop removes SQLite's -wal and -shm files, which
# the next start must create again, and SQLite says "disk I/O error" when it cannot.
@pytest.mark.parametrize("end", ["kill -9", "stop"])
async def test_a_gateway_started_on_a_full_disk_refuses_calls_saying_why_then_opens_when_space_is_back(
        tmp_path: Path, end: str) -> None:
    with a_gateway_on_a_small_disk(tmp_path) as (state, started, user, token):
        with gateway(tmp_path, "gw1", state, started, []) as gw1:
            assert await call(gw1.url, token, "before") == "ok"
            if end == "kill -9":
                killed = asyncio.create_task(call(gw1.url, token, "hold-killed"))
                await began(killed, started, "hold-killed")
                kill(gw1)  # its intent waits in the log for the next gateway to record
                with contextlib.suppress(Exception):
                    await killed
        filler = fill(state)
        with gateway(tmp_path, "gw2", state, started, []) as gw2:
            events = gw2.health()["events"]
            assert events["status"] == "down" and f"the filesystem mounted at {state} is full" in events["error"]
            assert "free space on it" in events["error"] and "cannot rollback" not in events["error"]
            assert httpx.get(gw2.url + "/health/ready", timeout=10).status_code == 503
            assert await call(gw2.url, token, "while-full") == "EVENT_STORE_UNAVAILABLE"
            assert "while-full" not in started.read_text().split()  # refused before its tool ran
            await until_logged(gw2, lambda text: f"the filesystem mounted at {state} is full" in text)
            filler.unlink()
            await until_health(gw2, lambda e: e["status"] == "ok")  # no restart: it opens by itself
            await asyncio.sleep(Audit.COOLDOWN_S)  # after a failure no tool runs for this long
            assert await call(gw2.url, token, "after") == "ok"
            assert httpx.get(gw2.url + "/health/ready", timeout=10).status_code == 200
        stored = await statuses(state, user)
    expected = {"before": ["ok"], "after": ["ok"]}
    if end == "kill -9":
        expected["hold-killed"] = ["interrupted"]
    assert stored == expected


async def test_an_outbox_opened_on_a_full_disk_waits_for_space_then_ships_what_it_recovers(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk, fresh_database([]) as pg:
        def outbox() -> OutboxEventStore:
            return OutboxEventStore(disk / "outbox.db", PostgresEventStore(pg.gateway_dsn(), timeout=5.0))

        first = outbox()
        cut_short = event("cut_short")
        await first.begin(cut_short)
        await first.close()  # its call never ended: the intent stays for the next opener, as after a kill
        filler = fill(disk)
        after = outbox()  # constructed on the full disk: it does not fail
        after.RETRY_S = 0.05
        try:
            health = await after.health()
            assert health["status"] == "down" and f"the filesystem mounted at {disk} is full" in health["error"]
            with pytest.raises(EventStoreUnavailable, match="is full"):
                await after.begin(event("while_full"))
            filler.unlink()
            deadline = time.monotonic() + 60
            while (await after.health())["status"] != "ok":
                assert time.monotonic() < deadline, await after.health()
                await asyncio.sleep(0.02)
            assert after.recovered == 1
            assert await after.drain(30)
        finally:
            await after.close()
        rows = await fetch(pg, "select id::text, result->>'status' from ops.run_events")
    assert [(r[0], r[1]) for r in rows] == [(cut_short.id, "interrupted")]


# -- recovery reads what is whole ------------------------------------------------------------------


def event(tool: str, **fields: Any) -> RunEvent:
    base: dict[str, Any] = {"id": new_event_id(), "provider": "full_disk", "tool": tool, "decision": "allow",
                            "created_at": utc_timestamp(), "duration_ms": 0, "payload": {"args": {}},
                            "result": {"status": "interrupted"}}
    return RunEvent(**{**base, **fields})


async def test_recovery_keeps_the_records_after_a_fragment_a_crash_left(tmp_path: Path) -> None:
    """The process died between a short write and cutting it back (or the cut failed): the
    fragment stays in the log, and the records written after it must still be read."""
    path = tmp_path / "events.db"
    first = SqliteEventStore(path)
    before, after = event("before"), event("after")
    await first.begin(before)
    log = next((tmp_path / "events.db.owners").glob("*.intents"))
    whole = log.read_bytes()
    with log.open("ab") as f:
        f.write(whole[: len(whole) // 2])  # a record cut short: the first half of `before`'s
    await first.begin(after)
    await first.close()  # both calls still running: their intents stay for the next opener
    reopened = SqliteEventStore(path)
    try:
        assert sorted(e.id for e in await reopened.query(provider="full_disk")) == sorted([before.id, after.id])
    finally:
        await reopened.close()


async def test_a_log_an_earlier_version_left_is_recovered_at_upgrade(tmp_path: Path) -> None:
    """Logs written before records were framed: one bare JSON line per record."""
    owners = tmp_path / "events.db.owners"
    owners.mkdir()
    dead = str(uuid.uuid4())
    (owners / f"{dead}.lock").touch()
    old = [event("old", payload={"args": {"n": n}}) for n in range(3)]
    (owners / f"{dead}.0.intents").write_bytes(b"".join(msgspec.json.encode(e) + b"\n" for e in old))
    store = SqliteEventStore(tmp_path / "events.db")
    try:
        assert store.recovered == 3
        assert sorted(e.id for e in await store.query(tool="old")) == sorted(e.id for e in old)
    finally:
        await store.close()


async def test_arguments_cannot_hand_recovery_a_record(tmp_path: Path) -> None:
    """A caller's argument holding a whole framed record (newline, checksum, JSON) of a row it
    would like to exist: the log holds it as escaped text inside the caller's own record, which
    recovery reads back as it was, and no second row appears. Records begin only at real newlines."""
    import zlib

    forged = msgspec.json.encode(event("forged", decision="deny", caller_id=str(uuid.uuid4())))
    framed = b"\n%08x %s\n" % (zlib.crc32(forged), forged)
    call = event("honest", payload={"args": {"message": framed.decode()}})
    first = SqliteEventStore(tmp_path / "events.db")
    await first.begin(call)
    await first.close()
    reopened = SqliteEventStore(tmp_path / "events.db")
    try:
        assert await reopened.query(provider="full_disk") == [call]
    finally:
        await reopened.close()
