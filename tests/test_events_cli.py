"""`opsgate events tail|query` over a real SQLite audit store."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from gateway.cli import main
from otel.events import RunEvent, SqliteEventStore, new_event_id
from tests.conftest import ROOT

ALICE, BOB = str(uuid.uuid4()), str(uuid.uuid4())


def event(n: int, *, provider: str = "socket", decision: str = "allow", caller: str = ALICE) -> RunEvent:
    return RunEvent(id=new_event_id(), provider=provider, tool="scan.repo", caller_id=caller, decision=decision,
                    created_at=f"2026-11-21T10:00:{n:02d}.000000+00:00", duration_ms=n,
                    result={"status": "ok" if decision == "allow" else "denied"},
                    policy_ids=["rbac.operator.scan-annotate-tag"] if decision == "allow" else [])


def append(state: Path, *events: RunEvent) -> None:
    async def go() -> None:
        store = SqliteEventStore(state / "events.db")
        for e in events:
            await store.append(e)
        await store.close()

    asyncio.run(go())


@pytest.fixture
def state(tmp_path: Path) -> Path:
    append(tmp_path, event(1), event(2, decision="deny", caller=BOB), event(3, provider="sentry"),
           event(4, decision="deny"))
    return tmp_path


def lines(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_tail_prints_the_latest_oldest_first(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "tail", "--state-dir", str(state), "-n", "2"]) == 0
    assert [e["duration_ms"] for e in lines(capsys)] == [3, 4]


def test_filters(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "tail", "--state-dir", str(state), "--decision", "deny"]) == 0
    assert [e["duration_ms"] for e in lines(capsys)] == [2, 4]
    assert main(["events", "tail", "--state-dir", str(state), "--caller", BOB]) == 0
    assert [e["caller_id"] for e in lines(capsys)] == [BOB]
    assert main(["events", "tail", "--state-dir", str(state), "--provider", "sentry"]) == 0
    assert [e["provider"] for e in lines(capsys)] == ["sentry"]


def test_query_a_time_range(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "query", "--state-dir", str(state), "--since", "2026-11-21T10:00:02Z",
                 "--until", "2026-11-21T10:00:04Z"]) == 0
    assert [e["duration_ms"] for e in lines(capsys)] == [2, 3]


def test_table_format(state: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "tail", "--state-dir", str(state), "--format", "table"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["created_at", "decision", "provider"] and len(out) == 5
    assert "denied" in out[2] and BOB in out[2]


def test_user_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["events", "tail", "--state-dir", str(tmp_path / "nowhere")]) == 2
    assert "no audit store" in capsys.readouterr().err
    append(tmp_path, event(1))
    assert main(["events", "query", "--state-dir", str(tmp_path), "--since", "yesterday"]) == 2
    assert capsys.readouterr().err.startswith("opsgate events:")


def test_follow_prints_new_events_as_they_land(state: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "events", "tail", "-f", "-n", "1",
                             "--interval", "0.1", "--state-dir", str(state)], stdout=subprocess.PIPE, text=True,
                            env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["duration_ms"] == 4
        time.sleep(0.3)
        append(state, event(5, provider="netdata"))
        assert json.loads(proc.stdout.readline())["provider"] == "netdata"
    finally:
        proc.kill()
        proc.wait(10)
