"""`opsgate events tail|query`: read the audit trail (ops.run_events) as JSON lines or a table.

    opsgate events tail [--follow] [--provider P] [--caller ID] [--decision deny] [-n 20]
    opsgate events query --since 2026-11-21T00:00:00Z [--until ...] [filters] [--limit 1000]

Reads the store the gateway writes: SQLite under --state-dir by default, Postgres with
--events postgres --database-url ...; all three come from the configuration as for `opsgate serve`
(--config, $OPSGATE_CONFIG, ./opsgate.toml). Payloads were redacted before they were stored.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import msgspec

from gateway.cli.settings import add_config, configured, setting

FILTERS = ("provider", "tool", "caller_id", "decision", "trace_id")


def register(sub: Any) -> None:
    events = sub.add_parser("events", help="read the audit trail (ops.run_events)")
    verbs = events.add_subparsers(dest="verb", required=True, metavar="VERB")
    tail = verbs.add_parser("tail", help="the latest events; --follow keeps printing new ones")
    tail.add_argument("-n", "--lines", type=int, default=20, help="how many of the latest events (default 20)")
    tail.add_argument("-f", "--follow", action="store_true")
    tail.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    query = verbs.add_parser("query", help="events in a time range, oldest first")
    query.add_argument("--since", required=True, help="ISO 8601 with a timezone, inclusive")
    query.add_argument("--until", help="ISO 8601 with a timezone, exclusive")
    query.add_argument("--limit", type=int, default=1000)
    for p in (tail, query):
        p.add_argument("--provider")
        p.add_argument("--tool", help="the tool's own name, e.g. scan.repo")
        p.add_argument("--caller", dest="caller_id", help="caller user id (uuid)")
        p.add_argument("--decision", choices=("allow", "deny", "none"))
        p.add_argument("--trace", dest="trace_id")
        p.add_argument("--format", choices=("jsonl", "table"), default="jsonl")
        setting(p, "--state-dir", "state_dir", "the gateway's stores", dest="state_dir", metavar="DIR")
        setting(p, "--events", "events", "which audit store", dest="events")
        setting(p, "--database-url", "database_url", "Postgres for --events postgres", dest="database_url")
        add_config(p)
        p.set_defaults(run=run)


def _store(args: argparse.Namespace) -> Any:
    from otel.events import PostgresEventStore, SqliteEventStore

    if args.events == "postgres":
        return PostgresEventStore(args.database_url)
    path = Path(args.state_dir) / "events.db"
    if not path.exists():
        raise FileNotFoundError(f"no audit store at {path} (is --state-dir right?)")
    return SqliteEventStore(path)


def _print(events: list[Any], fmt: str, header: bool) -> None:
    out = sys.stdout
    if fmt == "jsonl":
        for e in events:
            out.write(msgspec.json.encode(e).decode() + "\n")
    else:
        if header:
            out.write(f"{'created_at':<32} {'decision':<8} {'provider':<9} {'tool':<22} {'status':<14} "
                      f"{'ms':>5}  {'caller':<36}  policies\n")
        for e in events:
            status = (e.result or {}).get("status", "")
            out.write(f"{e.created_at:<32} {e.decision:<8} {e.provider:<9} {e.tool:<22} {status:<14} "
                      f"{e.duration_ms:>5}  {e.caller_id or '-':<36}  {','.join(e.policy_ids) or '-'}\n")
    out.flush()


async def _run(args: argparse.Namespace) -> int:
    store = _store(args)
    filters = {k: getattr(args, k) for k in FILTERS if getattr(args, k)}
    try:
        if args.verb == "query":
            _print(await store.query(since=args.since, until=args.until, limit=args.limit, **filters),
                   args.format, True)
            return 0
        latest = list(reversed(await store.query(limit=args.lines, newest_first=True, **filters)))
        _print(latest, args.format, True)
        cursor = latest[-1].id if latest else None
        while args.follow:
            await asyncio.sleep(args.interval)
            new = await store.query(limit=1000, after_id=cursor, **filters) if cursor else \
                await store.query(limit=1000, **filters)
            if new:
                _print(new, args.format, False)
                cursor = new[-1].id
        return 0
    finally:
        await store.close()


def run(args: argparse.Namespace) -> int:
    config = configured(args, "events").config
    args.state_dir, args.events, args.database_url = config.state_dir, config.events, config.database_url
    try:
        return asyncio.run(_run(args))
    except (FileNotFoundError, ValueError) as e:
        print(f"opsgate events: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


__all__ = ["register"]
