"""`opsgate policy replay`: the recorded decisions of a time window, decided again under a candidate.

    opsgate policy replay --bundle candidate/policies --since 7d [--until 2026-12-01T00:00:00Z]
                          [--events sqlite|postgres] [--format text|json|markdown] [--fail-on deny-to-allow]

A `policy` subcommand that lives in the gateway because it reads the audit trail (the store the
gateway writes: SQLite under --state-dir, or Postgres at --database-url); the replay itself is
engine.impact's. Rows are streamed in batches: the next batch is read while the engine decides
this one. With --workers N the window is cut into N consecutive spans, each replayed by its own
process (the engine's deciding is CPU-bound Python and Cedar), and their tallies added up.
Exit 0, or 1 with --fail-on deny-to-allow when any recorded denial would now be allowed, or 1 when
the candidate bundle is refused; 2 for a mistake in the command.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import re
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from engine.cli import UsageError, refusal, subcommands

RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register(commands: Any) -> None:
    p = subcommands(commands).add_parser(
        "replay", help="decide recorded traffic again under a candidate bundle: what would flip")
    p.add_argument("--bundle", default="policies", metavar="DIR", help="the candidate bundle (default: policies)")
    p.add_argument("--exceptions", default="exceptions", metavar="DIR",
                   help="the candidate's deviation exceptions (default: exceptions; each applies until its expiry)")
    p.add_argument("--since", required=True, help="start of the window: 7d, 12h, 30m ago, or ISO 8601 with a timezone")
    p.add_argument("--until", help="end of the window (exclusive), same forms; default now")
    p.add_argument("--events", choices=("sqlite", "postgres"), default="sqlite")
    p.add_argument("--state-dir", default=".opsgate", help="where the SQLite store is (default: .opsgate)")
    p.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    p.add_argument("--fail-on", choices=("deny-to-allow",), help="exit 1 when any recorded denial would be allowed")
    p.add_argument("--examples", type=int, default=3, help="example event ids per group (default 3)")
    p.add_argument("--workers", type=int, default=1, help="processes replaying consecutive spans of the window "
                   "(default 1; up to the number of cores)")
    p.add_argument("--batch", type=int, default=5000, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_replay)


def when(text: str, now: datetime) -> datetime:
    """`7d` (ago), or ISO 8601 with a timezone."""
    m = RELATIVE.match(text.strip())
    if m:
        return now - timedelta(seconds=int(m[1]) * UNITS[m[2]])
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"{text!r}: expected 7d, 12h, 30m or ISO 8601 (2026-12-01T00:00:00Z)") from None
    if at.tzinfo is None:
        raise UsageError(f"{text!r} has no timezone (add Z or +00:00)")
    return at


def _sqlite_path(args: argparse.Namespace) -> Path:
    path = Path(args.state_dir) / "events.db"
    if not path.exists():
        raise UsageError(f"no audit store at {path} (is --state-dir right?)")
    return path


def _store(args: argparse.Namespace) -> Any:
    from otel.events import PostgresEventStore, SqliteEventStore

    if args.events == "postgres":
        return PostgresEventStore(args.database_url)
    return SqliteEventStore(_sqlite_path(args))


async def replay_store(store: Any, replayer: Any, since: datetime, until: datetime, batch: int) -> None:
    """Feed every row of the window to `replayer`: the engine decides one batch in a worker thread
    while the store reads the next."""
    loop = asyncio.get_running_loop()
    batches = store.scan(since=since, until=until, batch=batch)
    pending = asyncio.ensure_future(anext(batches, None))
    while (rows := await pending) is not None:
        pending = asyncio.ensure_future(anext(batches, None))
        await loop.run_in_executor(None, replayer.feed, rows)


def _replay_span(job: tuple[argparse.Namespace, str | None, datetime, datetime]) -> Any:
    """One span of the window, replayed in this process (a worker's, or the command's own)."""
    from engine import Engine, load_bundle
    from engine.impact import Replayer

    args, exceptions, since, until = job
    # No `now`: every approved exception is compiled in with its own expiry guard, so it applies
    # to exactly the recorded decisions made before it expired.
    replayer = Replayer(Engine(load_bundle(args.bundle, exceptions=exceptions)), examples=args.examples)

    async def run() -> None:
        store = _store(args)
        try:
            await replay_store(store, replayer, since, until, args.batch)
        finally:
            await store.close()

    asyncio.run(run())
    return replayer.report()


def _spans(since: datetime, until: datetime, n: int) -> list[tuple[datetime, datetime]]:
    cuts = [since + (until - since) * i / n for i in range(n)] + [until]
    return list(itertools.pairwise(cuts))


def cmd_replay(args: argparse.Namespace) -> int:
    import msgspec

    from engine import BundleError, Engine, load_bundle, utcnow
    from engine.impact import Replayer, replay_markdown, replay_text
    from otel.events import EventStoreError

    now = utcnow()
    since, until = when(args.since, now), when(args.until, now) if args.until else now
    if not Path(args.bundle).is_dir():
        raise UsageError(f"{args.bundle}: no such bundle directory")
    if not 1 <= args.workers <= 64:
        raise UsageError("--workers must be between 1 and 64")
    exceptions = args.exceptions if Path(args.exceptions).is_dir() else None
    try:  # refused here, with every issue, before any worker starts
        bundle = load_bundle(args.bundle, exceptions=exceptions)
    except BundleError as e:
        raise refusal(args.bundle, Path(args.bundle), e) from None
    if args.events == "sqlite":
        _sqlite_path(args)  # a missing store is a usage error here, not in a worker
    started = time.perf_counter()
    jobs = [(args, exceptions, a, b) for a, b in _spans(since, until, args.workers)]
    try:
        if args.workers == 1:
            reports = [_replay_span(jobs[0])]
        else:
            with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("fork")) as pool:
                reports = list(pool.map(_replay_span, jobs))
    except (ValueError, EventStoreError) as e:
        raise UsageError(str(e)) from None
    whole = Replayer(Engine(bundle), examples=args.examples)
    for part in reports:  # in time order: the earliest examples first
        whole.absorb(part)
    report = msgspec.structs.replace(whole.report(), since=since.isoformat(), until=until.isoformat(),
                                     seconds=round(time.perf_counter() - started, 3))
    if args.format == "json":
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(report).decode(), indent=2) + "\n")
    else:
        sys.stdout.write(replay_markdown(report) if args.format == "markdown" else replay_text(report))
    return 1 if args.fail_on == "deny-to-allow" and report.deny_to_allow else 0


__all__ = ["cmd_replay", "register", "replay_store", "when"]
