"""`opsgate policy catalogue` and `opsgate policy schemas`: the policy catalogue and the rule-9
schema snapshot, written from the providers the gateway serves.

They live in gateway/ (not with the other `policy` commands in engine/) because only the
gateway may import providers. Both check by default (exit 1 when the file is stale, printing
what differs) and rewrite with `--write`; `schemas --write` refuses a breaking change.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _registry() -> Any:
    from gateway.registry import Registry
    from gateway.serve import default_providers

    return Registry(default_providers())


def _configured(args: argparse.Namespace) -> Any:
    """The configuration as `opsgate serve` would resolve it; a positional bundle DIR is a flag."""
    from gateway.cli.settings import configured
    from gateway.config import Override

    extra = [Override("policies", args.dir, "argument DIR")] if getattr(args, "dir", None) else []
    return configured(args, "policy", extra).config


def cmd_catalogue(args: argparse.Namespace) -> int:
    from gateway.catalogue_export import export

    path = Path(_configured(args).policies) / "tools.json"
    current, text, changed = export(_registry(), path)
    if current == text:
        print(f"{path}: up to date")
        return 0
    if args.write:
        path.write_text(text)
        print(f"{path}: wrote {len(changed)} changed entr{'y' if len(changed) == 1 else 'ies'}: {', '.join(changed)}")
        print("now run `opsgate policy check` and `opsgate policy test --coverage`")
        return 0
    print(f"{path}: stale for {', '.join(changed) or 'formatting'}; run `opsgate policy catalogue --write`")
    return 1


def cmd_schemas(args: argparse.Namespace) -> int:
    from gateway.schema_versions import (
        SNAPSHOT,
        breaking_changes,
        load_snapshot,
        render_snapshot,
        rule9_waivers,
        snapshot_of,
    )

    path = Path(args.snapshot) if args.snapshot else SNAPSHOT
    old, new = load_snapshot(path), snapshot_of(_registry())
    problems = breaking_changes(old, new, rule9_waivers(_configured(args).exceptions))
    for p in problems:
        print(f"breaking: {p}", file=sys.stderr)
    if problems:
        print("rule 9: serve the changed tool under a new name (e.g. scan.repo.v2) and keep the old one, "
              "or file a rule-9 exception", file=sys.stderr)
        return 1
    text = render_snapshot(new)
    if path.exists() and path.read_text() == text:
        print(f"{path}: up to date, {len(new)} tools")
        return 0
    if args.write:
        path.write_text(text)
        added = sorted(set(new) - set(old))
        print(f"{path}: wrote {len(new)} tools (compatible){'; new: ' + ', '.join(added) if added else ''}")
        return 0
    print(f"{path}: compatible changes not yet recorded; run `opsgate policy schemas --write`")
    return 1


def register(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `catalogue` and `schemas` to the `policy` command that engine.cli registered."""
    from gateway.cli.settings import add_config, setting

    policy = commands.choices["policy"]
    sub = next(a for a in policy._actions if isinstance(a, argparse._SubParsersAction))

    p = sub.add_parser("catalogue", help="write tools.json entries from the served providers")
    p.add_argument("dir", nargs="?", help="bundle directory (default: the configuration's `policies`)")
    add_config(p)
    p.add_argument("-w", "--write", action="store_true", help="rewrite tools.json (default: check only)")
    p.set_defaults(func=cmd_catalogue)

    p = sub.add_parser("schemas", help="check served tool schemas against the rule-9 snapshot")
    p.add_argument("--snapshot", help="snapshot file (default: providers/schemas.snapshot.json)")
    setting(p, "--exceptions", "exceptions", "deviation exceptions directory", dest="exceptions", metavar="DIR")
    add_config(p)
    p.add_argument("-w", "--write", action="store_true", help="record compatible changes in the snapshot")
    p.set_defaults(func=cmd_schemas)


__all__ = ["cmd_catalogue", "cmd_schemas", "register"]
