"""`opsgate exception new|approve|revoke|list|show|lint|review`: the deviation exceptions lifecycle.

    opsgate exception new --provider netdata --rule 5 --host http://agent-7.lan:19999 \
        --requested-by <your user id> --justification "..." --control "..." --days 30
    opsgate exception approve mcp-exception-netdata-5 --token-file approver.jwt
    opsgate exception lint                    # CI: format, signatures, expiry bounds, rules 1-4
    opsgate exception review                  # the monthly review (Markdown; --format json)

Tokens are verified exactly as the gateway verifies them (gateway.serve.make_authenticator, with
the embedded vault under --state-dir). Lifecycle steps are recorded as ops.run_events rows in the
store the gateway writes (SQLite under --state-dir, or --events postgres --database-url ...). These
and --dir come from the configuration as for `opsgate serve` (--config, $OPSGATE_CONFIG, ./opsgate.toml).
Exit codes: 0 done, 1 refused or lint found problems, 2 a mistake in the command itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.cli.settings import add_config, configured, setting

GRANT_FLAGS = {5: ("hosts",), 7: ("tools",), 8: ("bucket", "limit", "users", "tools"), 9: ("tools",)}


class UsageError(Exception):
    pass


def register(sub: Any) -> None:
    exc = sub.add_parser("exception", help="deviation exceptions: file, approve, revoke, list, lint, review")
    verbs = exc.add_subparsers(dest="verb", required=True, metavar="VERB")

    new = verbs.add_parser("new", help="file an exception (prompts for what the flags leave out, on a terminal)")
    new.add_argument("--provider")
    new.add_argument("--rule", type=int)
    new.add_argument("--suffix", help="when the provider already has an exception for this rule")
    new.add_argument("--host", dest="hosts", action="append", help="rule 5: a host to allow (repeatable)")
    new.add_argument("--tool", dest="tools", action="append",
                     help="rule 7: a tool to call; rule 8: limit to this tool; rule 9: a tool (repeatable)")
    new.add_argument("--bucket", help="rule 8: the rate bucket to raise")
    new.add_argument("--limit", help="rule 8: the raised limit, e.g. 500/hour")
    new.add_argument("--user", dest="users", action="append", help="rule 8: limit to this user id (repeatable)")
    new.add_argument("--requested-by", help="your user id (or give --token/--token-file to prove it)")
    new.add_argument("--justification", help="why it is technically needed")
    new.add_argument("--control", dest="controls", action="append", help="a compensating control (repeatable)")
    new.add_argument("--expires", help="ISO 8601 with a timezone; at most 90 days away")
    new.add_argument("--days", type=int, help="expire this many days from now (instead of --expires)")
    _token_args(new)

    approve = verbs.add_parser("approve", help="approve as an ops_admin who is not the requester")
    approve.add_argument("id")
    _token_args(approve)
    revoke = verbs.add_parser("revoke", help="revoke before expiry (ops_admin)")
    revoke.add_argument("id")
    revoke.add_argument("--reason", required=True)
    _token_args(revoke)

    lst = verbs.add_parser("list", help="every exception and its state")
    lst.add_argument("--format", choices=("table", "json"), default="table")
    show = verbs.add_parser("show", help="one exception in full, with its approval checked")
    show.add_argument("id")
    verbs.add_parser("lint", help="check format, signatures, expiry bounds and rules 1-4 (CI runs this)")
    review = verbs.add_parser("review", help="the monthly review: report, then record that it happened")
    review.add_argument("--format", choices=("markdown", "json"), default="markdown")
    review.add_argument("--report-dir", help="also write review-<date>.md and .json here")
    review.add_argument("--no-record", action="store_true", help="print the report only")
    _token_args(review)
    for p in (new, approve, revoke, lst, show, review, verbs.choices["lint"]):
        setting(p, "--dir", "exceptions", "the exceptions directory", dest="dir", metavar="DIR")
        add_config(p)
        p.set_defaults(run=run)


def _token_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", help="your access token (prefer --token-file: a command line is visible to others)")
    p.add_argument("--token-file", help="a file holding your access token ('-' reads stdin)")
    setting(p, "--state-dir", "state_dir", "the gateway's embedded vault and event store", dest="state_dir",
            metavar="DIR")
    setting(p, "--issuer", "auth_issuer", "token issuer", dest="issuer")
    setting(p, "--jwks-url", "jwks_url", "JWKS of an asymmetric Supabase project", dest="jwks_url")
    setting(p, "--events", "events", "where lifecycle events go", dest="events")
    setting(p, "--database-url", "database_url", "Postgres for --events postgres", dest="database_url")


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _config(args: argparse.Namespace) -> Any:
    """The gateway's configuration, resolved as `opsgate serve` does (flags over file and environment)."""
    return args.gateway_config


def _configure(args: argparse.Namespace) -> None:
    config = args.gateway_config = configured(args, "exception").config
    args.dir = config.exceptions
    if hasattr(args, "state_dir"):
        args.state_dir, args.events, args.database_url = config.state_dir, config.events, config.database_url


def _vault(args: argparse.Namespace) -> Any:
    from providers.sdk.vault import EmbeddedVault

    return EmbeddedVault(Path(args.state_dir) / "vault")


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file:
        text = sys.stdin.read() if args.token_file == "-" else Path(args.token_file).read_text()
        return text.strip()
    return args.token


async def _verify(args: argparse.Namespace, required: bool) -> Any:
    """The caller the token proves, verified as the gateway verifies it; None without a token."""
    from gateway.auth import AuthError
    from gateway.serve import make_authenticator

    token = _token(args)
    if not token:
        if required:
            raise UsageError("give the approver's access token with --token-file (or --token)")
        return None
    authenticator, _ = make_authenticator(_config(args))
    try:
        return await authenticator.authenticate(f"Bearer {token}")
    except AuthError as e:
        raise UsageError(f"the token does not verify: {e.message}") from None
    finally:
        await authenticator.aclose()


def _store(args: argparse.Namespace) -> Any:
    from otel.events import PostgresEventStore, SqliteEventStore

    if args.events == "postgres":
        return PostgresEventStore(args.database_url)
    Path(args.state_dir).mkdir(parents=True, exist_ok=True)
    return SqliteEventStore(Path(args.state_dir) / "events.db")


def _ask(args: argparse.Namespace, name: str, prompt: str, many: bool = False) -> Any:
    value = getattr(args, name)
    if value or not sys.stdin.isatty():
        return value
    if not many:
        return input(f"{prompt}: ").strip() or None
    items = []
    while item := input(f"{prompt} (empty line ends): ").strip():
        items.append(item)
    return items or None


def _grant(args: argparse.Namespace, rule: int) -> dict[str, Any]:
    grant: dict[str, Any] = {}
    for name in GRANT_FLAGS.get(rule, ()):
        many = name in ("hosts", "tools", "users")
        optional = rule == 8 and name in ("users", "tools")
        value = getattr(args, name) if optional else _ask(args, name, f"grant {name}", many)
        if value:
            grant[name] = value
    return grant


async def _new(args: argparse.Namespace) -> int:
    from gateway.exception_lifecycle import LifecycleEvents, Refused, file_exception

    provider = _ask(args, "provider", "provider (e.g. netdata)")
    rule = args.rule if args.rule is not None else (_ask(args, "rule", "constitution rule (5-10)") or None)
    caller = await _verify(args, required=False)
    requested_by = caller.id if caller else _ask(args, "requested_by", "your user id")
    missing = [f for f, v in (("--provider", provider), ("--rule", rule), ("--requested-by", requested_by)) if not v]
    if missing:
        raise UsageError("missing " + ", ".join(missing))
    rule = int(rule)
    now = _now()
    if args.days is not None:
        expires = now + timedelta(days=args.days)
    else:
        text = _ask(args, "expires", "expires at (ISO 8601, e.g. 2027-01-31T00:00:00Z)")
        if not text:
            raise UsageError("missing --expires or --days")
        expires = datetime.fromisoformat(text)
    store = _store(args)
    events = LifecycleEvents(store)
    try:
        try:
            record = file_exception(args.dir, provider=provider, rule=rule, grant=_grant(args, rule),
                                    requested_by=requested_by,
                                    justification=_ask(args, "justification", "justification (technical)") or "",
                                    compensating_controls=_ask(args, "controls", "compensating control", True) or [],
                                    expires_at=expires, requested_at=now, suffix=args.suffix)
        except Refused as e:
            await events.record("refused", e.exception_id, actor=_uuid_or_none(requested_by),
                                detail={"step": "filing", "problems": list(e.problems)})
            print(f"opsgate exception: filing {e.exception_id} refused:", file=sys.stderr)
            for p in e.problems:
                print(f"  - {p}", file=sys.stderr)
            return 1
        await events.record("filed", record.id, actor=requested_by, detail={"rule": rule, "provider": provider})
    finally:
        await store.close()
    print(f"filed {record.folder}: edit its README.md, open a pull request, ask an ops_admin to approve it")
    return 0


def _uuid_or_none(value: str | None) -> str | None:
    from otel.events.model import UUID_TEXT

    return value if value and UUID_TEXT.fullmatch(value) else None


async def _approve_or_revoke(args: argparse.Namespace) -> int:
    from gateway.exception_lifecycle import (
        LifecycleEvents,
        Refused,
        approval_key,
        approve,
        key_known,
        revoke,
        withdraw_approval,
    )

    caller = await _verify(args, required=True)
    store = _store(args)
    events = LifecycleEvents(store)
    now = _now()
    try:
        try:
            if args.verb == "approve":
                vault = _vault(args)
                try:
                    key = await approval_key(vault)
                finally:
                    await vault.close()
                added = not key_known(args.dir, key)
                approval = approve(args.dir, args.id, caller, key, now)
                try:
                    await events.record("approved", args.id, actor=caller.id,
                                        detail={"expires_at": approval.expires_at, "key_id": approval.key_id,
                                                "content_sha256": approval.content_sha256})
                except Exception:
                    withdraw_approval(args.dir, args.id)
                    raise
                print(f"approved {args.id} until {approval.expires_at} (key {approval.key_id})")
                if added:
                    print(f"added the signing key to {args.dir}/approvers.pub: commit it with the approval")
            else:
                revoke(args.dir, args.id, caller, args.reason, now)
                await events.record("revoked", args.id, actor=caller.id, detail={"reason": args.reason})
                print(f"revoked {args.id}")
        except Refused as e:
            if e.status != 404:
                await events.record("refused", e.exception_id, actor=caller.id,
                                    detail={"step": args.verb, "problems": list(e.problems)})
            print(f"opsgate exception: {args.verb} of {e.exception_id} refused:", file=sys.stderr)
            for p in e.problems:
                print(f"  - {p}", file=sys.stderr)
            return 1
    finally:
        await store.close()
    print("reload the gateway's policy (POST /v1/policy/reload or kill -HUP) for it to take effect")
    return 0


def _list(args: argparse.Namespace) -> int:
    from engine.exceptions import scan
    from gateway.exception_lifecycle import summary

    now = _now()
    rows = [summary(r, now) for r in scan(args.dir)]
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'exception':<36} {'state':<9} {'rule':>4} {'grant':<22} {'expires_at':<22} requested_by")
    for r in rows:
        state = r["state"] + ("*" if r["expiring"] else "")
        kind = (r["grant"] or {}).get("kind", "-")
        print(f"{r['id']:<36} {state:<9} {r['rule'] or '-':>4} {kind:<22} {r['expires_at'] or '-':<22} "
              f"{r['requested_by'] or '-'}")
    if any(r["expiring"] for r in rows):
        print("* expires within 14 days")
    return 0


def _show(args: argparse.Namespace) -> int:
    from engine.exceptions import find
    from gateway.exception_lifecycle import summary

    record = find(args.dir, args.id)
    if record is None:
        raise UsageError(f"no exception {args.id!r} under {args.dir}")
    print(json.dumps(summary(record, _now()), indent=2))
    return 0


def _lint(args: argparse.Namespace) -> int:
    from engine.exceptions import PUBLIC_KEYS, scan

    root = Path(args.dir)
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    now, failures = _now(), 0
    records = scan(root)
    if any(r.approval for r in records) and not (root / PUBLIC_KEYS).is_file():
        print(f"{root}/{PUBLIC_KEYS}: missing: approvals cannot be verified")
        failures += 1
    for r in records:
        for p in r.problems:
            print(f"{r.id}: {p}")
            failures += 1
        if not r.problems and r.state(now) == "expired":
            print(f"{r.id}: note: expired at {r.spec.expires_at if r.spec else '?'} (auto-revoked; remove it)")
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "mcp-exception-"))):
        print(f"{d.name}: not an exception bundle (folders are mcp-exception-{{provider}}-{{rule}}[-suffix])")
        failures += 1
    print(f"{len(records)} exceptions, {failures} problems")
    return 1 if failures else 0


async def _review(args: argparse.Namespace) -> int:
    from engine.exceptions import scan
    from gateway.exception_lifecycle import LifecycleEvents, remember_review, review_markdown, review_report

    caller = await _verify(args, required=False)
    now = _now()
    report = review_report(args.dir, now)
    markdown = review_markdown(report)
    print(markdown if args.format == "markdown" else json.dumps(report, indent=2))
    if args.report_dir:
        out = Path(args.report_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"review-{report['reviewed_at'][:10]}.md").write_text(markdown)
        (out / f"review-{report['reviewed_at'][:10]}.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.no_record:
        return 0
    store = _store(args)
    events = LifecycleEvents(store)
    try:
        await events.record_expiries(scan(args.dir), now)
        remember_review(args.dir, report, caller.id if caller else None)
        kinds = ("active", "expiring", "expired", "revoked", "pending", "invalid")
        await events.record("reviewed", "review", actor=caller.id if caller else None,
                            detail={"reviewed_at": report["reviewed_at"], **{k: [r["id"] for r in report[k]]
                                                                             for k in kinds}},
                            exception_ids=sorted({r["id"] for k in kinds for r in report[k]}))
    finally:
        await store.close()
    return 0


def run(args: argparse.Namespace) -> int:
    _configure(args)
    try:
        if args.verb == "new":
            return asyncio.run(_new(args))
        if args.verb in ("approve", "revoke"):
            return asyncio.run(_approve_or_revoke(args))
        if args.verb == "review":
            return asyncio.run(_review(args))
        return {"list": _list, "show": _show, "lint": _lint}[args.verb](args)
    except (UsageError, ValueError, OSError) as e:
        print(f"opsgate exception: {e}", file=sys.stderr)
        return 2


__all__ = ["register"]
