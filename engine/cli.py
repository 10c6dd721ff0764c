"""`opsgate policy ...`: check, test, fmt, eval and diff for the people who write the policies.

Exit codes everywhere: 0 fine; 1 the policies or tests are wrong (refused bundle, failing
test, coverage below threshold, a file fmt would change with --fail); 2 the command itself
was wrong (missing path, bad JSON, unknown action), told in one line on stderr.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import tempfile
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import cedarpy
import msgspec

from engine import impact, policytest
from engine.bundle import Bundle, load_bundle
from engine.engine import Engine, utcnow
from engine.model import BundleError, Decision

FMT_WIDTH, FMT_INDENT = 100, 2


class UsageError(Exception):
    """A mistake in how the command was called: one line on stderr, exit 2."""


class Refused(Exception):
    """The bundle was refused; its issues are already printed. Exit 1."""


# -- shared ------------------------------------------------------------------------------------

def _bundle(root: str) -> Bundle:
    """Load a bundle; a refusal prints every issue (file [policy id]: message) and exits 1."""
    path = Path(root)
    if not path.is_dir():
        raise UsageError(f"{root}: no such bundle directory")
    try:
        return load_bundle(path)
    except BundleError as e:
        raise refusal(root, path, e) from None


def refusal(label: str, path: Path, e: BundleError) -> Refused:
    """Print every issue of a refused bundle (file [policy id]: message); the Refused to raise."""
    print(f"{label}: policy bundle refused, {len(e.issues)} issue(s):", file=sys.stderr)
    # Sorted: Cedar reports validation errors in no stable order, and CI logs should diff cleanly.
    for issue in sorted(e.issues, key=lambda i: (i.file, i.policy_id or "", i.message)):
        where = f"{path / issue.file}" + (f" [{issue.policy_id}]" if issue.policy_id else "")
        # Cedar's messages can span lines; one issue per line keeps the output greppable.
        print(f"{where}: {' '.join(issue.message.split())}", file=sys.stderr)
    return Refused()


def _now(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return policytest.parse_now(text)
    except ValueError as e:
        raise UsageError(f"--now: {e}") from None


def _source(bundle: Bundle, pid: str) -> str:
    record = bundle.by_id.get(pid)
    return record.file if record else "?"


# -- check -------------------------------------------------------------------------------------

def cmd_check(args: argparse.Namespace) -> int:
    b = _bundle(args.dir)
    files = Counter(p.file for p in (*b.policies, *b.tiers))
    print(f"OK {args.dir}: revision {b.revision}, {len(b.policies)} policies ({len(b.dryrun_ids)} dryrun), "
          f"{len(b.tiers)} tier policies, {len(b.catalogue.tools)} tools")
    for file, n in sorted(files.items()):
        print(f"  {file}: {n}")
    return 0


# -- test --------------------------------------------------------------------------------------

def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(value) + "]"
    return value if isinstance(value, str) else json.dumps(value)


def _text_result(r: policytest.Result, b: Bundle, verbose: bool) -> list[str]:
    if r.passed:
        return [f"PASS {r.case.qualname}"] if verbose else []
    lines = [f"FAIL {r.case.qualname}  ({r.case.file})"]
    for m in r.mismatches:
        if m.field == "request":
            lines.append(f"  request: {m.actual}  ({m.note})")
            continue
        lines.append(f"  {m.field}: expected {_show(m.expected)}, got {_show(m.actual)}")
        if m.field == "reason":
            for pid in sorted(set(m.actual) - set(m.expected)):
                lines.append(f"    unexpected {pid}  ({_source(b, pid)})")
            for pid in sorted(set(m.expected) - set(m.actual)):
                lines.append(f"    missing    {pid}  ({_source(b, pid)})")
    if any(m.field in ("num_errors", "decision") for m in r.mismatches):
        shown = {m.actual for m in r.mismatches if m.field == "request"}
        lines += [f"    error: {' '.join(e.split())}" for e in r.decision.errors
                  if e.removeprefix("failed to build request: ") not in shown]
    return lines


def _json_result(r: policytest.Result) -> dict[str, Any]:
    d = r.decision
    return {"name": r.case.qualname, "file": r.case.file, "passed": r.passed,
            "mismatches": msgspec.to_builtins(r.mismatches),
            "decision": {"allowed": d.allowed, "reasons": list(d.reasons), "errors": list(d.errors),
                         "tiers": sorted(policytest.tier_spec(d)),
                         "shadow": msgspec.to_builtins(d.shadow)}}


def cmd_test(args: argparse.Namespace) -> int:
    now = _now(args.now)
    try:
        select = re.compile(args.pattern) if args.pattern else None
    except re.error as e:
        raise UsageError(f"--run {args.pattern!r}: invalid regular expression: {e}") from None
    root = Path(args.dir)
    if not root.is_dir():
        raise UsageError(f"{args.dir}: no such bundle directory")
    files = sorted((root / "tests").glob("*.json"))
    if not files:
        raise UsageError(f"{args.dir}: no tests ({root / 'tests'}/*.json)")
    try:
        cases = policytest.load_tests(files)
    except policytest.TestFileError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        return 2
    if select:
        cases = [c for c in cases if select.search(c.qualname)]
    b = _bundle(args.dir)
    report = policytest.run(Engine(b), cases, now)
    cov = report.coverage
    low = args.threshold is not None and cov.below(args.threshold)

    if args.format == "json":
        print(json.dumps({"tests": [_json_result(r) for r in report.results], "passed": report.passed,
                          "failed": report.failed, "coverage": round(cov.percent, 2),
                          "uncovered": list(cov.uncovered), "bundle_revision": b.revision}, indent=2))
    else:
        for r in report.results:
            for line in _text_result(r, b, args.verbose):
                print(line)
        if args.coverage or args.threshold is not None:
            print(f"coverage: {cov.percent:.1f}% "
                  f"({len(cov.covered)}/{cov.total} policies determined a decision)")
            for pid in cov.uncovered:
                print(f"  uncovered: {pid}  ({_source(b, pid)})")
        if low:
            print(f"coverage {cov.percent:.1f}% is below the threshold {args.threshold:g}%")
        # The closing line stays last and plain: scripts and people read it first.
        print(f"{report.passed} passed, {report.failed} failed")
    if not cases:  # a CI step that ran nothing must not look green
        told = f"no test matched --run {args.pattern!r}" if args.pattern else "no tests to run"
        print(told, file=sys.stderr)
        return 1
    return 1 if report.failed or low else 0


# -- fmt ---------------------------------------------------------------------------------------

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|//[^\n]*')


def _comments(text: str) -> Counter[str]:
    """Every `//` comment (string literals skipped): what the formatter must give back."""
    return Counter(m[0].rstrip() for m in _TOKEN.finditer(text) if m[0].startswith("//"))


def _split_header(text: str) -> tuple[str, str]:
    """(leading comment block up to its last blank line, the rest).

    Cedar's formatter attaches a comment to the token after it, so a file's header comment
    would be glued onto the first policy's own comment; we keep the header apart instead.
    """
    lines = text.splitlines(keepends=True)
    cut, seen_comment = 0, False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("//"):
            seen_comment = True
        elif stripped:
            break
        elif seen_comment:
            cut = i + 1
    else:
        return text, ""  # nothing but comments
    return "".join(lines[:cut]), "".join(lines[cut:])


def format_cedar(text: str) -> str:
    """The formatted text; ValueError when the file does not parse or formatting is unsafe.

    Two guards make it never destroy anything: every comment must come back verbatim, and
    the policies must parse to the same thing. cedarpy keeps comments in every case we
    tried, but this is checked on every file rather than trusted.
    """
    header, body = _split_header(text)
    try:
        formatted = cedarpy.format_policies(body, FMT_WIDTH, FMT_INDENT) if body.strip() else ""
    except ValueError as e:
        raise ValueError(f"does not parse: {e}") from None
    header = header.strip()
    if header:
        header += "\n\n" if formatted.strip() else "\n"
    out = header + formatted.lstrip("\n")
    lost = _comments(text) - _comments(out)
    if lost:
        raise ValueError(f"left unchanged: formatting would drop comment(s) {sorted(lost)}")
    if body.strip() and cedarpy.policies_to_json_str(out) != cedarpy.policies_to_json_str(text):
        raise ValueError("left unchanged: formatting would change the policies' meaning")
    return out


def _fmt_targets(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            files += sorted(path.rglob("*.cedar"))
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"{p}: no such file or directory")
    return files


def cmd_fmt(args: argparse.Namespace) -> int:
    changed, broken = 0, 0
    for f in _fmt_targets(args.paths or ["policies"]):
        try:
            text = f.read_text()
            out = format_cedar(text)
        except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
            print(f"{f}: {' '.join(str(e).split())}", file=sys.stderr)
            broken += 1
            continue
        if out == text:
            continue
        changed += 1
        if args.list or not (args.diff or args.write):
            print(f)
        if args.diff:
            # git's a/ b/ prefixes for relative paths, so the output applies with `patch -p1`.
            old, new = (str(f), str(f)) if f.is_absolute() else (f"a/{f}", f"b/{f}")
            for line in difflib.unified_diff(text.splitlines(True), out.splitlines(True), old, new):
                sys.stdout.write(line if line.endswith("\n") else line + "\n")
        if args.write:
            f.write_text(out)
    if broken:
        return 2
    return 1 if args.fail and changed else 0


# -- eval --------------------------------------------------------------------------------------

def _read_request(path: str) -> Any:
    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as e:
        raise UsageError(f"{path}: cannot read: {e.strerror}") from None
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}: invalid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{path}: expected an object {{principal, action, resource, context, entities}}")
    unknown = set(obj) - policytest.REQUEST_KEYS - {"entities"}
    if unknown:
        raise UsageError(f"{path}: unknown field(s) {sorted(unknown)}")
    try:
        return policytest.parse_request(obj, obj.get("entities"))
    except ValueError as e:
        raise UsageError(f"{path}: {e}") from None


def decision_json(d: Decision, b: Bundle) -> dict[str, Any]:
    out = msgspec.to_builtins(d)
    # decision -> policy id -> file: the answer to "why was this denied?" in one place.
    out["policy_files"] = {pid: _source(b, pid) for pid in (*d.reasons, *(t.policy_id for t in d.tiers))}
    return out


def cmd_eval(args: argparse.Namespace) -> int:
    now = _now(args.now)
    request = _read_request(args.request)
    b = _bundle(args.bundle)
    d = Engine(b).decide(request, now=now or utcnow())
    for e in d.errors:
        if policytest.UNDECLARED.search(e):
            raise UsageError(f"{args.request}: {e.removeprefix('failed to build request: ')}")
    print(json.dumps(decision_json(d, b), indent=2))
    return 0


# -- diff --------------------------------------------------------------------------------------

def _load_side(source: impact.Source, at: datetime) -> impact.Loaded:
    try:
        return impact.load(source, at)
    except BundleError as e:
        raise refusal(source.label, source.policies, e) from None


def cmd_diff(args: argparse.Namespace) -> int:
    at = _now(args.at) or utcnow()
    with tempfile.TemporaryDirectory(prefix="opsgate-diff-") as tmp:
        try:
            sources = [impact.resolve(spec, policies=args.policies, exceptions=args.exceptions, into=Path(tmp))
                       for spec in (args.base, *([args.head] if args.head else []))]
        except impact.SourceError as e:
            raise UsageError(str(e)) from None
        if not args.head:
            if not Path(args.policies).is_dir():
                raise UsageError(f"{args.policies}: no such bundle directory (HEAD defaults to the working tree)")
            sources.append(impact.working_tree(args.policies, args.exceptions))
        base, head = (_load_side(s, at) for s in sources)
    diff = impact.permission_diff(base, head, at)
    if args.format == "json":
        print(json.dumps(msgspec.to_builtins(diff), indent=2))
    else:
        sys.stdout.write(impact.diff_markdown(diff) if args.format == "markdown" else impact.diff_text(diff))
    return 1 if args.fail_on == "widen" and diff.widens else 0


# -- wiring ------------------------------------------------------------------------------------

def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `policy` and its subcommands to the top-level `opsgate` parser."""
    policy = commands.add_parser("policy", help="check, test, format and evaluate Cedar policy bundles")
    policy.set_defaults(run=run)
    sub = policy.add_subparsers(dest="policy_command", required=True, metavar="SUBCOMMAND")

    p = sub.add_parser("check", help="load and validate a bundle")
    p.add_argument("dir", nargs="?", default="policies", help="bundle directory (default: policies)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("test", help="run DIR/tests/*.json against the bundle")
    p.add_argument("dir", nargs="?", default="policies", help="bundle directory (default: policies)")
    p.add_argument("--run", dest="pattern", metavar="REGEX",
                   help="only tests whose file/name matches, e.g. 'rbac/viewer'")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("-v", "--verbose", action="store_true", help="list passing tests too")
    p.add_argument("--coverage", action="store_true", help="report which policies no test exercised")
    p.add_argument("--threshold", type=float, metavar="PCT", help="fail when coverage is below PCT percent")
    p.add_argument("--now", metavar="ISO8601", help="clock for tests without their own now "
                   f"(default {policytest.DEFAULT_NOW.isoformat()})")
    p.set_defaults(func=cmd_test)

    p = sub.add_parser("fmt", help="format *.cedar files (comments kept)")
    p.add_argument("paths", nargs="*", metavar="DIR|FILE", help="default: policies")
    p.add_argument("-l", "--list", action="store_true", help="list files that would change (the default)")
    p.add_argument("-d", "--diff", action="store_true", help="print a unified diff")
    p.add_argument("-w", "--write", action="store_true", help="rewrite the files")
    p.add_argument("--fail", action="store_true", help="exit 1 if any file would change")
    p.set_defaults(func=cmd_fmt)

    p = sub.add_parser("eval", help="decide one request, print the decision as JSON")
    p.add_argument("--bundle", default="policies", metavar="DIR")
    p.add_argument("--request", required=True, metavar="FILE", help="JSON {principal, action, resource, "
                   "context, entities}; - for stdin")
    p.add_argument("--now", metavar="ISO8601", help="default: the current time")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("diff", help="what a policy change does: who gains or loses which tool, limit, host, secret")
    p.add_argument("base", metavar="BASE", help="a git revision (e.g. main) or a bundle folder")
    p.add_argument("head", metavar="HEAD", nargs="?", help="a git revision or a bundle folder (default: the "
                   "working tree's --policies and --exceptions)")
    p.add_argument("--policies", default="policies", metavar="DIR",
                   help="the bundle in the working tree, and its path in the repository (default: policies)")
    p.add_argument("--exceptions", default="exceptions", metavar="DIR",
                   help="deviation exceptions, likewise (default: exceptions)")
    p.add_argument("--at", metavar="ISO8601", help="decide at this instant (exceptions in force then); default now")
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    p.add_argument("--fail-on", choices=("widen",), help="exit 1 when any principal gains anything")
    p.set_defaults(func=cmd_diff)


def subcommands(commands: argparse._SubParsersAction) -> argparse._SubParsersAction:  # type: ignore[type-arg]
    """The `policy` group's subcommands, for commands that live outside the engine because they need
    more than a bundle (`policy replay` reads the audit trail: gateway/cli/replay.py)."""
    policy = commands.choices["policy"]
    return next(a for a in policy._actions if isinstance(a, argparse._SubParsersAction))


def run(args: argparse.Namespace) -> int:
    """Run a parsed `policy` command; user mistakes become one stderr line and exit 2."""
    try:
        return int(args.func(args))
    except UsageError as e:
        print(f"opsgate policy {args.policy_command}: {e}", file=sys.stderr)
        return 2
    except Refused:
        return 1


__all__ = ["Refused", "UsageError", "cmd_check", "cmd_diff", "cmd_eval", "cmd_fmt", "cmd_test", "decision_json",
           "format_cedar", "refusal", "register", "run", "subcommands"]
