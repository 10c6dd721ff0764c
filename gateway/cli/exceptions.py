"""`opsgate exception new|approve|revoke|list|show|lint|review|key|add-key`: the deviation exceptions lifecycle.

    opsgate exception new --provider netdata --rule 5 --host http://agent-7.lan:19999 \
        --justification "..." --control "..." --days 30 --token-file me.jwt
    opsgate exception approve mcp-exception-netdata-5 --token-file approver.jwt
    opsgate exception lint                    # CI: format, receipts, signatures, approvers.pub, expiry, rules 1-4
    opsgate exception review                  # the monthly review (Markdown; --format json)
    opsgate exception key                     # this vault's approver key, as approvers.pub writes it
    opsgate exception add-key '<key id> <key>' --token-file admin.jwt   # endorse another approver's key

Tokens are verified exactly as the gateway verifies them (gateway.serve.make_authenticator, with
the embedded vault under --state-dir); the filer is who the token proves, never a typed id.
Filing receipts and approvals are signed with that vault's approvers' key, which approvers.pub
must trust. Lifecycle steps are recorded as ops.run_events rows in the store the gateway writes
(SQLite under --state-dir, or --events postgres --database-url ...), and revocations are read back
from it. These and --dir come from the configuration as for `opsgate serve` (--config,
$OPSGATE_CONFIG, ./opsgate.toml).
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
    new.add_argument("--requested-by", help=argparse.SUPPRESS)  # refused: a typed id proves nothing
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

    key = verbs.add_parser("key", help="print this vault's approver key line (created on first use)")
    setting(key, "--state-dir", "state_dir", "the vault holding the key", dest="state_dir", metavar="DIR")
    add_key = verbs.add_parser("add-key", help="trust another approver's key: endorse it with this vault's trusted key")
    add_key.add_argument("line", help="'<key id> <base64 key>' as `opsgate exception key` prints it")
    _token_args(add_key)

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
    for p in (new, approve, revoke, lst, show, review, key, add_key, verbs.choices["lint"]):
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


async def _verify(args: argparse.Namespace, required: bool, who: str = "the approver's") -> Any:
    """The caller the token proves, verified as the gateway verifies it; None without a token."""
    from gateway.auth import AuthError
    from gateway.serve import make_authenticator

    token = _token(args)
    if not token:
        if required:
            raise UsageError(f"give {who} access token with --token-file (or --token)")
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
    from gateway.exception_lifecycle import LifecycleEvents, Refused, prepare_filing, withdraw_filing, write_filing
    from gateway.exception_trust import trusted_key

    if args.requested_by:
        raise UsageError("--requested-by proves nothing about who files: give your access token with --token-file "
                         "(the filing receipt names the user it proves), or file with POST /v1/exceptions")
    caller = await _verify(args, required=True, who="the requester's")
    provider = _ask(args, "provider", "provider (e.g. netdata)")
    rule = args.rule if args.rule is not None else (_ask(args, "rule", "constitution rule (5-10)") or None)
    missing = [f for f, v in (("--provider", provider), ("--rule", rule)) if not v]
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
    vault = _vault(args)
    try:
        try:
            draft = prepare_filing(args.dir, caller, provider=provider, rule=rule, grant=_grant(args, rule),
                                   justification=_ask(args, "justification", "justification (technical)") or "",
                                   compensating_controls=_ask(args, "controls", "compensating control", True) or [],
                                   expires_at=expires, requested_at=now, suffix=args.suffix)
            record = write_filing(args.dir, draft, caller, await trusted_key(draft.id, args.dir, vault), now)
        except Refused as e:
            await events.record("refused", e.exception_id, actor=caller.id,
                                detail={"step": "filing", "problems": list(e.problems)})
            _print_refusal("filing", e)
            return 1
        assert record.filing is not None
        try:
            await events.record("filed", record.id, actor=caller.id,
                                detail={"rule": rule, "provider": provider, "key_id": record.filing.key_id,
                                        "spec_sha256": record.filing.spec_sha256})
        except Exception:
            withdraw_filing(args.dir, record.id)  # no filing nobody can audit
            raise
    finally:
        await vault.close()
        await store.close()
    print(f"filed {record.folder} as {caller.id}: complete its README.md, open a pull request, ask an ops_admin "
          "to approve it (an edit of exception.yaml voids the filing)")
    return 0


def _print_refusal(step: str, e: Any) -> None:
    print(f"opsgate exception: {step} of {e.exception_id} refused:", file=sys.stderr)
    for p in e.problems:
        print(f"  - {p}", file=sys.stderr)


async def _approve_or_revoke(args: argparse.Namespace) -> int:
    from gateway.exception_lifecycle import (
        LifecycleEvents,
        Refused,
        approval_key,
        approve,
        check_approval,
        check_revocation,
        require_admin,
        revoke,
        withdraw_approval,
    )
    from gateway.exception_trust import read_trust, trusted_key

    caller = await _verify(args, required=True)
    store = _store(args)
    events = LifecycleEvents(store)
    vault = _vault(args)
    now = _now()
    try:
        try:
            require_admin(args.id, caller, args.verb)  # before anything is read or any secret touched
            trust = await read_trust(args.dir, store, vault)
            if args.verb == "approve":
                check_approval(args.dir, args.id, caller, now, trust)
                approval = approve(args.dir, args.id, caller, await trusted_key(args.id, args.dir, vault), now, trust)
                try:
                    await events.record("approved", args.id, actor=caller.id,
                                        detail={"expires_at": approval.expires_at, "key_id": approval.key_id,
                                                "filed_by": approval.filed_by,
                                                "content_sha256": approval.content_sha256})
                except Exception:
                    withdraw_approval(args.dir, args.id)
                    raise
                print(f"approved {args.id} (filed by {approval.filed_by}) until {approval.expires_at} "
                      f"(key {approval.key_id})")
            else:
                check_revocation(args.dir, args.id, caller, args.reason, trust)
                revocation = revoke(args.dir, args.id, caller, args.reason, now, await approval_key(vault), trust)
                await events.record("revoked", args.id, actor=caller.id,
                                    detail={"reason": revocation.reason, "key_id": revocation.key_id})
                print(f"revoked {args.id}")
        except Refused as e:
            if e.status != 404:
                await events.record("refused", e.exception_id, actor=caller.id,
                                    detail={"step": args.verb, "problems": list(e.problems)})
            _print_refusal(args.verb, e)
            return 1
    finally:
        await vault.close()
        await store.close()
    print("commit the bundle (and approvers.pub if it changed); reload the gateway's policy "
          "(POST /v1/policy/reload or kill -HUP) for it to take effect")
    return 0


async def _key(args: argparse.Namespace) -> int:
    from engine.exceptions import public_key_line
    from gateway.exception_lifecycle import approval_key

    vault = _vault(args)
    try:
        print(public_key_line(await approval_key(vault)))
    finally:
        await vault.close()
    return 0


async def _add_key(args: argparse.Namespace) -> int:
    from engine.exceptions import PUBLIC_KEYS, endorse, parse_key_line, read_chain
    from gateway.exception_lifecycle import LifecycleEvents, Refused, require_admin
    from gateway.exception_trust import pinned_root, trusted_key

    try:
        kid, pub = parse_key_line(args.line)
    except ValueError as e:
        raise UsageError(str(e)) from None
    caller = await _verify(args, required=True)
    store = _store(args)
    events = LifecycleEvents(store)
    vault = _vault(args)
    path = Path(args.dir) / PUBLIC_KEYS
    try:
        try:
            require_admin(PUBLIC_KEYS, caller, "add an approver key")
            if kid in read_chain(args.dir, await pinned_root(vault, args.dir, pin=True)).keys:
                print(f"key {kid} is already trusted by {path}")
                return 0
            line = endorse(f"{kid} {pub}", await trusted_key(PUBLIC_KEYS, args.dir, vault))
        except Refused as e:
            await events.record("refused", PUBLIC_KEYS, actor=caller.id, exception_ids=[],
                                detail={"step": "add-key", "key_id": kid, "problems": list(e.problems)})
            _print_refusal("add-key", e)
            return 1
        with path.open("a") as f:
            f.write(line + "\n")
        signer = line.split()[2]
        await events.record("key_added", PUBLIC_KEYS, actor=caller.id, exception_ids=[],
                            detail={"key_id": kid, "endorsed_by": signer})
    finally:
        await vault.close()
        await store.close()
    print(f"added key {kid} to {path}, endorsed by {signer}: commit the file")
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
    """The repository's view (CI has no audit trail): a revocation.json deleted in a commit is caught
    by the gateway, not here."""
    from engine.exceptions import PUBLIC_KEYS, read_chain, scan, signature_problem

    root = Path(args.dir)
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    now, failures = _now(), 0
    chain = read_chain(root)
    records = scan(root, chain=chain)
    if any(r.approval or r.filing for r in records) and chain.root is None:
        print(f"{root}/{PUBLIC_KEYS}: has no key: filings and approvals cannot be verified")
        failures += 1
    for problem in chain.ignored:
        print(f"{root}/{problem}")
        failures += 1
    for r in records:
        for p in r.problems:
            print(f"{r.id}: {p}")
            failures += 1
        if not r.problems and r.state(now) == "expired":
            print(f"{r.id}: note: expired at {r.spec.expires_at if r.spec else '?'} (auto-revoked; remove it)")
        bad = signature_problem(r.revocation, chain) if r.revocation is not None else None
        if bad:
            print(f"{r.id}: note: revoked, but {bad}")
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "mcp-exception-"))):
        print(f"{d.name}: not an exception bundle (folders are mcp-exception-{{provider}}-{{rule}}[-suffix])")
        failures += 1
    print(f"{len(records)} exceptions, {failures} problems")
    return 1 if failures else 0


async def _review(args: argparse.Namespace) -> int:
    from engine.exceptions import scan
    from gateway.exception_lifecycle import LifecycleEvents, remember_review, review_markdown, review_report
    from gateway.exception_trust import read_trust

    caller = await _verify(args, required=False)
    now = _now()
    store = _store(args)
    vault = _vault(args)
    try:
        trust = await read_trust(args.dir, store, vault)  # revocations the files may no longer show
        report = review_report(args.dir, now, trust)
        markdown = review_markdown(report)
        print(markdown if args.format == "markdown" else json.dumps(report, indent=2))
        if args.report_dir:
            out = Path(args.report_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"review-{report['reviewed_at'][:10]}.md").write_text(markdown)
            (out / f"review-{report['reviewed_at'][:10]}.json").write_text(json.dumps(report, indent=2) + "\n")
        if args.no_record:
            return 0
        events = LifecycleEvents(store)
        await events.record_expiries(scan(args.dir, trust), now)
        remember_review(args.dir, report, caller.id if caller else None)
        kinds = ("active", "expiring", "expired", "revoked", "pending", "invalid")
        await events.record("reviewed", "review", actor=caller.id if caller else None,
                            detail={"reviewed_at": report["reviewed_at"], **{k: [r["id"] for r in report[k]]
                                                                             for k in kinds}},
                            exception_ids=sorted({r["id"] for k in kinds for r in report[k]}))
    finally:
        await vault.close()
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
        if args.verb in ("key", "add-key"):
            return asyncio.run(_key(args) if args.verb == "key" else _add_key(args))
        return {"list": _list, "show": _show, "lint": _lint}[args.verb](args)
    except (UsageError, ValueError, OSError) as e:
        print(f"opsgate exception: {e}", file=sys.stderr)
        return 2


__all__ = ["register"]
