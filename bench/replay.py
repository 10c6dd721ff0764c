"""Replay's speed: recorded decisions replayed under a candidate bundle, against decide()'s own rate.

    .venv/bin/python bench/replay.py [--rows 1000000] [--quick] [--json] [--store DIR]

1. Generate (once; `--store DIR` keeps DIR/events.db for the next run): N audit rows in a SQLite event store,
   shaped as the gateway writes them: 500 users (60% viewers, 30% operators, 10% admins) calling
   the canonical catalogue's tools with arguments valid for each tool's schema (unique messages,
   a few repositories, limits, flags), decided by the canonical bundle at instants spread over the
   last 7 days, the request kept with `keep` through the real redactor (`args.token`-style paths
   masked), ~2% invalid calls (no decision), ~1% rows from before requests were kept.
2. Read only: `SqliteEventStore.scan` over the window, rows counted, nothing decided.
3. Replay: the CLI's own path (`gateway.cli.replay.replay_store`: the store streams batches, the
   engine decides each in a worker thread), under a candidate that differs from the recorded bundle
   in realistic ways (viewers gain comment tools; a forbid on scans of repositories not named acme-*,
   which reads an argument; a raised tier), so flips are real.
4. decide() alone: the time spent inside the candidate engine's `decide()` during that replay,
   summed: decide()'s own rate on exactly the requests replayed, in the same cache state; what
   replay adds is reading, decoding and tallying.
5. The command itself with `--workers 2` (`opsgate policy replay --since 8d --workers 2 --format json`,
   wall clock): the window in two consecutive spans, one process each, tallies added up.

Target (issue 16): 1,000,000 recorded decisions replayed in under a minute. The machine is shared
(2 cores): read the ratio to decide() as well as the seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import Engine, Entity, Request, Uid, load_bundle  # noqa: E402
from engine.catalogue import Tool  # noqa: E402
from engine.impact import Asked, Replayer, keep  # noqa: E402
from gateway.cli.replay import replay_store  # noqa: E402
from otel.events import RunEvent, SqliteEventStore, new_event_id, utc_timestamp  # noqa: E402
from otel.events.model import to_row  # noqa: E402
from otel.events.sqlite import _INSERT  # noqa: E402
from otel.redact import Redactor  # noqa: E402

USERS = 500
ROLES = (("ops_viewer", 0.6), ("ops_operator", 0.3), ("ops_admin", 0.1))
STRINGS = {"repo": ["acme-api", "acme-web", "oss-lib", "acme-infra"], "severity": ["low", "high", "critical"],
           "status": ["open", "resolved"], "org": ["acme"], "ref": ["main", "dev"], "table": ["pulse_drafts"]}
CANDIDATE = '''
@id("bench.viewers-comment")
permit (principal in Ops::Role::"ops_viewer", action in Ops::Action::"comment", resource);

@id("bench.scans-only-acme")
forbid (principal, action == Ops::Action::"socket.scan.repo", resource)
unless { context has args && context.args.repo like "acme-*" };
'''


def candidate_bundle(work: Path) -> Path:
    policies = work / "candidate"
    shutil.copytree(ROOT / "policies", policies, ignore=shutil.ignore_patterns("tests"))
    (policies / "bench-candidate.cedar").write_text(CANDIDATE)
    tiers = policies / "tiers" / "rate-tiers.cedar"
    tiers.write_text(tiers.read_text().replace('@limit("100/hour")', '@limit("150/hour")'))
    return policies


def _value(rng: random.Random, name: str, schema: dict[str, Any], i: int) -> Any:
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "string":
        return rng.choice(STRINGS[name]) if name in STRINGS else f"{name}-{i}"  # unique: no policy reads it
    if kind == "integer":
        return rng.choice((10, 25, 50, 100))
    if kind == "boolean":
        return rng.random() < 0.1
    if kind == "array":
        return []
    return None


def arguments(rng: random.Random, tool: Tool, i: int) -> dict[str, Any]:
    """Arguments as the gateway hands them to the engine: validated into the tool's input struct and
    back (msgspec), so every field with a default is there; optional fields without one sometimes."""
    props: dict[str, Any] = tool.input_schema.get("properties", {})
    required = set(tool.input_schema.get("required", ()))
    out: dict[str, Any] = {}
    for name, sub in props.items():
        given = name in required or rng.random() < 0.3
        value = _value(rng, name, sub, i) if given else sub.get("default")
        if value is not None:
            out[name] = value
    return out


def generate(path: Path, rows: int, seed: int) -> dict[str, Any]:
    """N gateway-shaped rows into a fresh SQLite store at `path`."""
    started = time.perf_counter()
    asyncio.run(SqliteEventStore(path).close())  # creates the schema
    rng = random.Random(seed)
    engine = Engine(load_bundle(ROOT / "policies"))
    tools = [t for t in engine.bundle.catalogue.tools if not t.name.endswith(".health")]
    redactor = Redactor(lambda: (), ("args.token", "args.manifests"))
    roles = [r for r, w in ROLES for _ in range(int(w * 10))]
    users = [(f"{random.Random(f'u{i}').getrandbits(128):032x}", rng.choice(roles)) for i in range(USERS)]
    users = [(f"{u[:8]}-{u[8:12]}-4{u[13:16]}-8{u[17:20]}-{u[20:32]}", role) for u, role in users]
    end = datetime.now(UTC) - timedelta(minutes=1)
    step = timedelta(days=7) / rows
    conn = sqlite3.connect(path)
    batch: list[tuple[Any, ...]] = []
    for i in range(rows):
        user, role = rng.choice(users)
        tool = rng.choice(tools)
        now = end - step * (rows - i)
        args = arguments(rng, tool, i)
        uid = Uid.of("User", user)
        req = Request(uid, tool.name, Uid.of("Provider", tool.provider), {"args": args},
                      (Entity(uid, (Uid.of("Role", role),)),))
        r = rng.random()
        d = None if r < 0.02 else engine.decide(req, now=now)
        payload = redactor.redact({"args": args})
        if d is not None and r >= 0.03:  # ~1%: written before requests were kept
            payload["_request"] = keep(Asked(req, now, role), redactor.redact)
        provider, _, local = tool.name.partition(".")
        batch.append(to_row(RunEvent(
            id=new_event_id(int(now.timestamp() * 1000)), provider=provider, tool=local, caller_id=user,
            payload=payload, result={"status": "ok" if d is None or d.allowed else "denied"}, duration_ms=1,
            created_at=utc_timestamp(now), decision="none" if d is None else "allow" if d.allowed else "deny",
            policy_ids=[] if d is None else list(d.reasons), bundle_revision=None if d is None else d.bundle_revision)))
        if len(batch) >= 20000:
            conn.executemany(_INSERT, batch)
            conn.commit()
            batch.clear()
            print(f"  generated {i + 1} rows ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    conn.executemany(_INSERT, batch)
    conn.commit()
    conn.close()
    return {"rows": rows, "seconds": round(time.perf_counter() - started, 1)}


async def read_only(path: Path, since: datetime) -> tuple[int, float]:
    """Every row of the window, counted: what reading alone costs."""
    store = SqliteEventStore(path)
    started = time.perf_counter()
    n = 0
    try:
        async for rows in store.scan(since=since):
            n += len(rows)
    finally:
        await store.close()
    return n, time.perf_counter() - started


class TimedEngine(Engine):
    """The candidate engine, with the time spent inside decide() summed: decide()'s own rate on
    exactly the requests replay asks, in the same run and cache state."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.calls, self.ns = 0, 0

    def decide(self, req: Request, *, now: datetime | None = None) -> Any:
        t = time.perf_counter_ns()
        try:
            return super().decide(req, now=now)
        finally:
            self.ns += time.perf_counter_ns() - t
            self.calls += 1


async def replay(path: Path, engine: Engine, since: datetime) -> tuple[Any, float]:
    store = SqliteEventStore(path)
    replayer = Replayer(engine)
    started = time.perf_counter()
    try:
        await replay_store(store, replayer, since, datetime.now(UTC), 5000)
    finally:
        await store.close()
    return replayer.report(), time.perf_counter() - started


def command(state: Path, candidate: Path, workers: int) -> tuple[dict[str, Any], float]:
    import contextlib
    import io

    from gateway.cli import main as opsgate

    out = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        code = opsgate(["policy", "replay", "--bundle", str(candidate), "--exceptions", str(state / "none"),
                        "--since", "8d", "--state-dir", str(state), "--format", "json", "--workers", str(workers)])
    assert code == 0, out.getvalue()
    return json.loads(out.getvalue()), time.perf_counter() - started


def render(r: dict[str, Any]) -> str:
    rate = r["decide"]["events_per_s"]
    lines = [f"replay of {r['rows']} recorded rows (SQLite, window of 8 days), candidate bundle "
             f"{r['report']['bundle_revision']}; generated in {r['generate']['seconds']} s"
             + (" (reused)" if r["generate"].get("reused") else ""), "",
             f"{'phase':<40} {'events':>9} {'seconds':>8} {'events/s':>10} {'vs decide()':>11}",
             "-" * 82]
    for label, key in (("read only (scan, nothing decided)", "read"),
                       ("replay (scan + decode + decide + tally)", "replay"),
                       ("decide() alone, the same calls", "decide"),
                       ("opsgate policy replay --workers 2", "workers2")):
        p = r[key]
        lines.append(f"{label:<40} {p['events']:>9} {p['seconds']:>8} {p['events_per_s']:>10} "
                     f"{round(p['events_per_s'] / rate, 2):>10}x")
    rep = r["report"]
    lines += ["", f"replayed {rep['replayed']} (unchanged {rep['unchanged']}, allow->deny {rep['allow_to_deny']}, "
                  f"deny->allow {rep['deny_to_allow']}), not replayable {rep['not_replayable']}, "
                  f"no decision {rep['no_decision']}", "", "targets"]
    for t in r["targets"]:
        lines.append(f"  [{'PASS' if t['pass'] else 'FAIL'}] {t['target']}: {t['value']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="50,000 rows (a smoke run)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--store", help="keep the generated store here and reuse it when it has --rows rows")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    rows = 50_000 if args.quick else args.rows
    with tempfile.TemporaryDirectory(prefix="opsgate-bench-replay-") as tmp:
        work = Path(tmp)
        state = Path(args.store) if args.store else work
        state.mkdir(parents=True, exist_ok=True)
        path = state / "events.db"
        have = 0
        if path.exists():
            with sqlite3.connect(path) as conn:
                have = conn.execute("select count(*) from run_events").fetchone()[0]
        gen = {"rows": rows, "seconds": 0, "reused": True} if have == rows else None
        if gen is None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            gen = generate(path, rows, args.seed)
        since = datetime.now(UTC) - timedelta(days=8)
        candidate_dir = candidate_bundle(work)
        candidate = TimedEngine(load_bundle(candidate_dir))
        n, read_s = asyncio.run(read_only(path, since))
        report, replay_s = asyncio.run(replay(path, candidate, since))
        decided, decide_s = candidate.calls, candidate.ns / 1e9
        two, two_s = command(state, candidate_dir, 2)
        assert two["replayed"] == report.replayed and two["deny_to_allow"] == report.deny_to_allow, two
    result: dict[str, Any] = {
        "rows": rows, "generate": gen,
        "read": {"events": n, "seconds": round(read_s, 2), "events_per_s": round(n / read_s)},
        "replay": {"events": report.rows, "seconds": round(replay_s, 2), "events_per_s": round(report.rows / replay_s)},
        "decide": {"events": decided, "seconds": round(decide_s, 2), "events_per_s": round(decided / decide_s)},
        "workers2": {"events": two["rows"], "seconds": round(two_s, 2), "events_per_s": round(two["rows"] / two_s)},
        "report": {k: v for k, v in json.loads(json.dumps(
            __import__("msgspec").to_builtins(report))).items() if k not in ("flips", "unreplayable")},
    }
    result["targets"] = []
    for key, how in (("replay", "one process"), ("workers2", "--workers 2")):
        scaled = 1_000_000 / result[key]["events_per_s"]
        result["targets"].append({"target": f"1,000,000 recorded decisions replayed in < 60 s ({how})",
                                  "pass": scaled < 60,
                                  "value": f"{scaled:.1f} s at {result[key]['events_per_s']} events/s"})
    print(json.dumps(result) if args.json else render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
