"""The console's audit-trail page on a million rows: server time per page, in SQLite and in Postgres.

    .venv/bin/python bench/console.py [--rows 1000000] [--quick] [--json] [--store DIR] [--backends sqlite,postgres]

1. Generate N gateway-shaped rows (500 users in the three roles calling the catalogue's tools over 7
   days; decisions, statuses, policy ids, the request kept with its role) into a SQLite store
   (bulk insert into the store's own schema; `--store DIR` keeps DIR/events.db for the next run) and
   into a fresh Postgres database with our migrations (COPY; dropped afterwards).
2. Serve the real gateway app in-process (Litestar's test client: the real route handler, guards,
   session, store query and template rendering), signed in as the demo ops_admin, on each store.
3. Time GET /console/trail filtered by caller and by tool (and unfiltered, and by status, a filter
   inside the JSON that a page answers within its budget): first pages, then pages walked back through
   the "Older" cursors, each request timed from the request entering the app to its last byte.

Target (issue 17): <= 50 ms p50 per page. The machine is shared (2 cores): read p50 with that in mind.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine import load_bundle  # noqa: E402
from gateway.config import GatewayConfig  # noqa: E402
from gateway.serve import build_app  # noqa: E402
from otel.events import RunEvent, SqliteEventStore, apply_migrations, new_event_id, utc_timestamp  # noqa: E402
from otel.events.model import to_row  # noqa: E402
from otel.events.sqlite import _INSERT  # noqa: E402
from providers.echo import EchoProvider  # noqa: E402

USERS = 500
ROLES = ("ops_viewer",) * 6 + ("ops_operator",) * 3 + ("ops_admin",)
STATUSES = ("ok",) * 90 + ("tool_error",) * 4 + ("invalid_input",) * 3 + ("rate_limited",) * 2 + ("error",)
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def people(seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for _ in range(USERS):
        h = f"{rng.getrandbits(128):032x}"
        out.append((f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}", rng.choice(ROLES)))
    return out


def events(rows: int, seed: int) -> Any:
    """Gateway-shaped rows, oldest first, in batches."""
    rng = random.Random(seed)
    users = people(seed)
    tools = [t.name for t in load_bundle(ROOT / "policies").catalogue.tools if not t.name.endswith(".health")]
    end = datetime.now(UTC) - timedelta(minutes=1)
    step = timedelta(days=7) / rows
    batch: list[RunEvent] = []
    for i in range(rows):
        user, role = rng.choice(users)
        tool = rng.choice(tools)
        now = end - step * (rows - i)
        denied = role == "ops_viewer" and rng.random() < 0.1
        provider, _, local = tool.partition(".")
        batch.append(RunEvent(
            id=new_event_id(int(now.timestamp() * 1000)), provider=provider, tool=local, caller_id=user,
            payload={"args": {"message": f"call {i}"}, "_request": {"v": 1, "role": role, "action": tool}},
            result={"status": "denied" if denied else rng.choice(STATUSES)}, duration_ms=rng.randrange(1, 400),
            created_at=utc_timestamp(now), decision="deny" if denied else "allow",
            policy_ids=[] if denied else [f"rbac.{role.removeprefix('ops_')}.read"], bundle_revision="bench"))
        if len(batch) == 50_000:
            yield batch
            batch = []
    if batch:
        yield batch


def fill_sqlite(path: Path, rows: int, seed: int) -> float:
    started = time.perf_counter()
    asyncio.run(SqliteEventStore(path).close())  # the store's own schema and indexes
    conn = sqlite3.connect(path)
    conn.execute("pragma synchronous=off")
    for batch in events(rows, seed):
        with conn:
            conn.executemany(_INSERT, [to_row(e) for e in batch])
    conn.execute("analyze")
    conn.close()
    return time.perf_counter() - started


async def fill_postgres(name: str, login: str, rows: int, seed: int) -> float:
    import asyncpg

    started = time.perf_counter()
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f"create database {name}")
    await admin.close()
    conn = await asyncpg.connect(PG_ADMIN.rsplit("/", 1)[0] + f"/{name}")
    try:
        await conn.execute((ROOT / "tests" / "supabase_stub.sql").read_text())
        await apply_migrations(conn, ROOT / "supabase" / "migrations")
        await conn.execute(f"create role {login} login in role opsgate_gateway")
        await conn.executemany("insert into auth.users (id, raw_app_meta_data) values ($1, '{}'::jsonb)",
                               [(u,) for u, _ in people(seed)])
        from gateway.serve import demo_user_id

        await conn.execute("insert into auth.users (id, raw_app_meta_data) values ($1, '{}'::jsonb)",
                           demo_user_id("ops_admin"))
        columns = ["id", "provider", "tool", "caller_id", "payload", "result", "duration_ms", "created_at",
                   "decision", "policy_ids", "bundle_revision", "exception_ids", "trace_id", "span_id"]
        for batch in events(rows, seed):
            await conn.copy_records_to_table("run_events", schema_name="ops", columns=columns, records=[
                (e.id, e.provider, e.tool, e.caller_id, json.dumps(e.payload), json.dumps(e.result), e.duration_ms,
                 datetime.fromisoformat(e.created_at), e.decision, e.policy_ids, e.bundle_revision, e.exception_ids,
                 None, None) for e in batch])
        await conn.execute("analyze ops.run_events")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def drop_postgres(name: str, login: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f"drop database if exists {name} with (force)")
        await admin.execute(f"drop role if exists {login}")
    finally:
        await admin.close()


OLDER = re.compile(r'rel="next" href="/console/trail\?([^"]+)"')
CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


async def measure(config: GatewayConfig, scenarios: dict[str, str], pages: int, walk: int) -> dict[str, Any]:
    """Per scenario: server time of `pages` trail pages (first pages and pages `walk` deep)."""
    from litestar.testing import AsyncTestClient

    app, _, _ = build_app(config, providers=[EchoProvider()], demo_tokens=True)
    out: dict[str, Any] = {}
    async with AsyncTestClient(app, base_url="http://127.0.0.1:8080") as client:
        page = await client.get("/console/signin")
        flow = CSRF.search(page.text)
        assert flow is not None
        signed = await client.post("/console/signin/demo", data={"_csrf": flow[1], "role": "ops_admin"},
                                   follow_redirects=False)
        assert signed.status_code == 303, signed.text
        for label, query in scenarios.items():
            times: list[float] = []
            rows = 0
            await client.get(f"/console/trail?{query}")  # warm: templates compiled, connections made
            while len(times) < pages:
                url = f"/console/trail?{query}"
                for _ in range(walk):
                    started = time.perf_counter()
                    r = await client.get(url)
                    times.append(time.perf_counter() - started)
                    assert r.status_code == 200, r.text[:300]
                    rows += r.text.count('<tr class="d-')
                    older = OLDER.search(r.text)
                    if older is None or len(times) >= pages:
                        break
                    url = "/console/trail?" + older[1].replace("&amp;", "&")
            times.sort()
            out[label] = {"pages": len(times), "rows_per_page": round(rows / len(times), 1),
                          "p50_ms": round(statistics.median(times) * 1000, 2),
                          "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))] * 1000, 2)}
    return out


def scenarios(seed: int) -> dict[str, str]:
    user = people(seed)[7][0]
    return {"unfiltered": "", "caller": f"caller={user}", "tool": "tool=socket.scan.repo",
            "caller+tool": f"caller={user}&tool=sentry.issues.list", "status (JSON, budgeted)": "status=rate_limited"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100,000 rows and fewer pages")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--store", help="keep (and reuse) the SQLite store in this folder")
    ap.add_argument("--backends", default="sqlite,postgres")
    ap.add_argument("--pages", type=int, default=200, help="timed pages per scenario")
    args = ap.parse_args(argv)
    rows = 100_000 if args.quick else args.rows
    pages = 40 if args.quick else args.pages
    seed = 17
    work = Path(tempfile.mkdtemp(prefix="opsgate-bench-console-"))
    backends = args.backends.split(",")
    report: dict[str, Any] = {"rows": rows, "results": {}, "fill_s": {}}
    try:
        shutil.copytree(ROOT / "policies", work / "policies", ignore=shutil.ignore_patterns("tests"))
        if "sqlite" in backends:
            state = Path(args.store) if args.store else work / "sqlite"
            state.mkdir(parents=True, exist_ok=True)
            db = state / "events.db"
            marker = state / f"rows-{rows}"
            if not marker.exists():
                db.unlink(missing_ok=True)
                report["fill_s"]["sqlite"] = round(fill_sqlite(db, rows, seed), 1)
                marker.touch()
            config = GatewayConfig(policies=str(work / "policies"), exceptions=str(work / "exceptions"),
                                   state_dir=str(state))
            report["results"]["sqlite"] = asyncio.run(measure(config, scenarios(seed), pages, 20))
        if "postgres" in backends:
            name = f"opsgate_bench_console_{secrets.token_hex(3)}"
            login = f"{name}_gw"
            try:
                report["fill_s"]["postgres"] = round(asyncio.run(fill_postgres(name, login, rows, seed)), 1)
                config = GatewayConfig(policies=str(work / "policies"), exceptions=str(work / "exceptions"),
                                       state_dir=str(work / "pg-state"), events="postgres",
                                       database_url=f"postgresql://{login}@127.0.0.1:5432/{name}")
                report["results"]["postgres"] = asyncio.run(measure(config, scenarios(seed), pages, 20))
            finally:
                asyncio.run(drop_postgres(name, login))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"GET /console/trail, {rows:,} rows, server time per page (in-process, signed in as ops_admin)")
    print(f"{'store':<9} {'filter':<24} {'pages':>6} {'rows/page':>10} {'p50':>9} {'p99':>9}")
    for store, results in report["results"].items():
        for label, r in results.items():
            print(f"{store:<9} {label:<24} {r['pages']:>6} {r['rows_per_page']:>10} {r['p50_ms']:>7.1f}ms "
                  f"{r['p99_ms']:>7.1f}ms")
    print("filled in: " + ", ".join(f"{k} {v} s" for k, v in report["fill_s"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
