"""The audit trail's cost: events/s into each store with durability on, and what the store adds
to a tool call through the real gateway, against the same gateway with the store switched off.

    .venv/bin/python -m bench.events [--json] [--quick]

1. Throughput: 256 concurrent appenders (as many concurrent calls) push events into
   - SQLite at durability "disk" (fsync per group commit) and "process" (the default: outcome
     journaled with one write(2), commit behind, no fsync; timed until every commit settled),
   - Postgres directly (PostgresEventStore: no outbox), and
   - Postgres through the outbox (journal fsync'd, then shipped): timed until the journal is
     drained, i.e. until every event is committed in Postgres.
   Stores alternate in blocks, the order rotating each round, so machine noise hits all alike;
   the figure is the median block. Postgres is the real server at 127.0.0.1:5432, in a fresh
   database dropped afterwards.
2. Per call: uvicorn gateway processes (the real app, echo.ping, the real mcp client over HTTP)
   with the SQLite store off, and on at each durability; each call sends a new message. At
   concurrency 1 the calls are paired (bench/harness.py): "paired added p50" is the median of
   (store on - store off) over the pairs; "added cpu/call" the server process's extra CPU time
   per call (all threads). At concurrency 8, servers alternate in blocks.
3. The floor: p50 of one 300-byte write + fdatasync on the same filesystem, in the same run.
   Durability "disk" fsyncs every call's outcome, so at concurrency 1 it cannot add less.

Targets (issue 4): >= 5,000 events/s into Postgres; the embedded default adds <= 0.3 ms at p50.
Latencies are wall-clock on a shared machine: read the ratios. No assertions; targets print
PASS/FAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    loaded,
    median,
    paired,
    paired_added,
    pct,
    serve_forever,
    servers,
)
from otel.events import (  # noqa: E402
    EventStore,
    OutboxEventStore,
    PostgresEventStore,
    RunEvent,
    SqliteEventStore,
    apply_migrations,
    new_event_id,
    utc_timestamp,
)

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/{db}"
STORES = ("sqlite/disk", "sqlite/process", "postgres", "outbox/disk")
SERVERS = ("off", "disk", "process")
LOADED = 8
CONCURRENCY = (1, LOADED)
APPENDERS = 256


# -- throughput ---------------------------------------------------------------------------------


def events(n: int) -> list[RunEvent]:
    """Events shaped like a gateway row: a small payload and result, a decision record."""
    return [RunEvent(id=new_event_id(), provider="bench", tool="echo.ping", decision="allow",
                     created_at=utc_timestamp(), duration_ms=1, payload={"args": {"message": f"m{i}"}},
                     result={"status": "ok", "content": {}}, policy_ids=["rbac.viewer.read"],
                     bundle_revision="bench", trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8))
            for i in range(n)]


def make_store(kind: str, tmp: Path, dsn: str) -> EventStore:
    path = tmp / f"{kind.replace('/', '-')}-{secrets.token_hex(3)}.db"
    if kind.startswith("sqlite/"):
        return SqliteEventStore(path, durability=kind.split("/")[1])  # type: ignore[arg-type]
    if kind == "postgres":
        return PostgresEventStore(dsn)
    return OutboxEventStore(path, PostgresEventStore(dsn), durability="disk")


async def block(kind: str, tmp: Path, dsn: str, n: int) -> float:
    """events/s for one block of `n` events from APPENDERS concurrent appenders."""
    store = make_store(kind, tmp, dsn)
    try:
        await asyncio.gather(*(store.append(e) for e in events(64)))  # connect, warm
        if isinstance(store, OutboxEventStore):
            await store.drain()
        if isinstance(store, SqliteEventStore):
            await store.flush()
        batch = events(n)
        queue = iter(batch)

        async def appender() -> None:
            for e in queue:
                await store.append(e)

        start = time.perf_counter()
        await asyncio.gather(*(appender() for _ in range(APPENDERS)))
        if isinstance(store, OutboxEventStore):
            await store.drain()  # committed in Postgres, not just journaled
        if isinstance(store, SqliteEventStore):
            await store.flush()  # at "process": committed in SQLite, not just journaled
        return n / (time.perf_counter() - start)
    finally:
        await store.close()


async def throughput(tmp: Path, dsn: str, n: int, rounds: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {k: [] for k in STORES}
    for r in range(rounds):
        for kind in STORES[r % len(STORES):] + STORES[:r % len(STORES)]:
            rates[kind].append(await block(kind, tmp, dsn, n))
    return rates


async def with_database(fn: Callable[[str], Any]) -> Any:
    import asyncpg

    name = f"opsgate_bench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(PG_ADMIN.format(db="postgres"))
    await conn.execute(f"create database {name}")
    await conn.close()
    try:
        conn = await asyncpg.connect(PG_ADMIN.format(db=name))
        await conn.execute((ROOT / "tests" / "supabase_stub.sql").read_text())  # auth.users and roles
        await apply_migrations(conn, ROOT / "supabase" / "migrations")
        await conn.close()
        return await fn(PG_ADMIN.format(db=name))
    finally:
        conn = await asyncpg.connect(PG_ADMIN.format(db="postgres"))
        await conn.execute(f"drop database if exists {name} with (force)")
        await conn.close()


# -- per call -----------------------------------------------------------------------------------


def serve(mode: str, port: int, policies: str, state: str) -> None:
    """A gateway process: the real app with its SQLite store at `mode` durability, or none."""
    from gateway.config import GatewayConfig
    from gateway.serve import build_app

    durability = "process" if mode == "off" else mode
    app, services, _ = build_app(GatewayConfig(port=port, policies=policies, state_dir=state,
                                               events_durability=durability))  # type: ignore[arg-type]
    if mode == "off":
        services.pipeline.audit = None
    serve_forever(app, port)


def per_call(tmp: Path, n: int, rounds: int) -> tuple[dict[str, dict[int, list[float]]], dict[str, float]]:
    lat: dict[str, dict[int, list[float]]] = {m: {c: [] for c in CONCURRENCY} for m in SERVERS}
    cpu = {m: 0.0 for m in SERVERS}
    with servers("bench.events", SERVERS, tmp) as fleet:
        for r in range(rounds):
            for mode, xs in asyncio.run(paired(fleet.urls, fleet.pids, fleet.token, n // rounds, cpu)).items():
                lat[mode][1] += xs
            for mode in SERVERS[r % len(SERVERS):] + SERVERS[:r % len(SERVERS)]:
                lat[mode][LOADED] += asyncio.run(loaded(fleet.urls[mode], fleet.token, n // rounds, LOADED))[0]
    calls = len(lat["off"][1])
    return lat, {m: cpu[m] / calls for m in SERVERS}


def fsync_floor(directory: Path, n: int = 300) -> float:
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    samples = []
    try:
        for _ in range(n):
            t = time.perf_counter_ns()
            os.write(fd, b"x" * 300)
            os.fdatasync(fd)
            samples.append((time.perf_counter_ns() - t) / 1e6)
    finally:
        os.close(fd)
        path.unlink()
    return pct(samples, 0.5)


# -- report -------------------------------------------------------------------------------------


def report(rates: dict[str, list[float]], lat: dict[str, dict[int, list[float]]], cpu: dict[str, float],
           floor_ms: float, args: argparse.Namespace) -> dict[str, Any]:
    baseline = {"sqlite/process": "sqlite/disk", "outbox/disk": "postgres"}
    out: dict[str, Any] = {"quick": args.quick, "appenders": APPENDERS, "fdatasync_p50_ms": floor_ms,
                           "throughput": [], "per_call": []}
    for kind in STORES:
        row = {"store": kind, "events_s": median(rates[kind]), "min_events_s": min(rates[kind]),
               "blocks": len(rates[kind])}
        if kind in baseline:
            row["vs"] = baseline[kind]
            row["ratio"] = row["events_s"] / median(rates[baseline[kind]])
        out["throughput"].append(row)
    for conc in CONCURRENCY:
        off = lat["off"][conc]
        for mode in SERVERS:
            xs = lat[mode][conc]
            row = {"store": mode, "concurrency": conc, "calls": len(xs), "p50_ms": pct(xs, 0.5),
                   "p99_ms": pct(xs, 0.99), "added_p50_ms": pct(xs, 0.5) - pct(off, 0.5),
                   "added_p99_ms": pct(xs, 0.99) - pct(off, 0.99), "p50_ratio": pct(xs, 0.5) / pct(off, 0.5)}
            if conc == 1:  # the median of the paired differences: robust to the machine's swings
                row["paired_added_p50_ms"] = paired_added(xs, off)
                row["server_cpu_ms_per_call"] = cpu[mode]
                row["added_cpu_ms_per_call"] = cpu[mode] - cpu["off"]
            out["per_call"].append(row)
    outbox = next(r for r in out["throughput"] if r["store"] == "outbox/disk")
    c1 = {r["store"]: r for r in out["per_call"] if r["concurrency"] == 1}
    out["targets"] = {"postgres (via the outbox, durable) >= 5000 events/s": outbox["events_s"] >= 5000}
    for mode in ("disk", "process"):  # the measure (p50 on - p50 off), and the paired median
        label = f"embedded store, durability {mode}{' (default)' if mode == 'process' else ''}, c=1"
        out["targets"][f"{label}: p50 on - p50 off <= 0.3 ms"] = c1[mode]["added_p50_ms"] <= 0.3
        out["targets"][f"{label}: paired median added <= 0.3 ms"] = c1[mode]["paired_added_p50_ms"] <= 0.3
    return out


def render(r: dict[str, Any]) -> str:
    lines = [f"events/s, {r['appenders']} concurrent appenders, median of blocks (durability on):",
             f"{'store':<16} {'events/s':>9} {'min':>9} {'ratio':>7}  vs"]
    for t in r["throughput"]:
        ratio = f"{t['ratio']:>6.2f}x  {t['vs']}" if "ratio" in t else ""
        lines.append(f"{t['store']:<16} {t['events_s']:>9.0f} {t['min_events_s']:>9.0f} {ratio:>7}")
    lines += ["", "per tool call through the gateway (echo.ping, real mcp client), store off vs on:",
              f"{'store':<8} {'conc':>4} {'p50':>8} {'p99':>8} {'added p50':>10} {'added p99':>10} {'p50 x':>6} "
              f"{'paired added p50':>17} {'added cpu/call':>15}"]
    for c in r["per_call"]:
        paired = (f"{c['paired_added_p50_ms']:>15.3f}ms {c['added_cpu_ms_per_call']:>13.3f}ms"
                  if "paired_added_p50_ms" in c else "")
        lines.append(f"{c['store']:<8} {c['concurrency']:>4} {c['p50_ms']:>6.2f}ms {c['p99_ms']:>6.2f}ms "
                     f"{c['added_p50_ms']:>8.2f}ms {c['added_p99_ms']:>8.2f}ms {c['p50_ratio']:>6.2f} {paired}")
    lines += ["", f"one 300-byte write + fdatasync on this filesystem: p50 {r['fdatasync_p50_ms']:.2f} ms "
              "(the least durability 'disk' can add at c=1: it fsyncs every outcome)"]
    lines += [f"target {name}: {'PASS' if ok else 'FAIL'}" for name, ok in r["targets"].items()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    ap.add_argument("--quick", action="store_true", help="smaller blocks, fewer rounds (a smoke run)")
    ap.add_argument("--serve", choices=SERVERS, help=argparse.SUPPRESS)  # internal: one gateway process
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--policies", help=argparse.SUPPRESS)
    ap.add_argument("--state-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.port, args.policies, args.state_dir)
        return
    n, rounds, n_calls = (2000, 1, 200) if args.quick else (20000, 3, 1500)
    tmp = Path(tempfile.mkdtemp(prefix="opsgate-bench-events-"))
    try:
        rates = asyncio.run(with_database(lambda dsn: throughput(tmp, dsn, n, rounds)))
        lat, cpu = per_call(tmp, n_calls, rounds)
        floor_ms = fsync_floor(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = report(rates, lat, cpu, floor_ms, args)
    print(json.dumps(result) if args.json else render(result))


if __name__ == "__main__":
    main()
