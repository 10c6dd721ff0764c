"""`opsgate`: the command line. Each command group lives in its own module of this package.

A command module has `register(subparsers)`, which adds its parser(s) and sets the default
`run`: a callable `(args) -> int` that does the work and turns the command's own user errors
into an exit code. To add `serve`, `stdio`, `events`, `vault` or `exception`, write such a
module and list it in COMMANDS; keep heavy imports (Litestar, Supabase) inside its handlers
so `opsgate policy ...` stays quick.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

COMMANDS = ("engine.cli", "gateway.cli.catalogue", "gateway.cli.serve", "gateway.cli.events", "gateway.cli.vault",
            "gateway.cli.exceptions", "gateway.cli.config", "gateway.cli.upstream",
            "gateway.cli.replay")  # replay adds to engine.cli's `policy` group


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opsgate", description="Cedar-policy MCP gateway for ops tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2), already printed
        return e.code if isinstance(e.code, int) else 2
    try:
        return int(args.run(args))
    except SystemExit as e:  # a command refusing its configuration has already said why
        return e.code if isinstance(e.code, int) else 1
    except BrokenPipeError:  # `opsgate ... | head`: the reader left early; no traceback for that
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["COMMANDS", "build_parser", "main"]
