"""`opsgate vault set|list|rotate`: operators put provider secrets into the vault (rule 4).

    opsgate vault set socket_api_key              # prompts (no echo), twice on a terminal
    printf %s "$KEY" | opsgate vault set socket_api_key
    opsgate vault list [--format table|jsonl]     # name, version, updated_at: never a value
    opsgate vault rotate sentry_dsn               # a new value for an existing secret
    opsgate vault rotate opsgate_dev_jwt_secret --generate

A value is read from the terminal (getpass) or from stdin, never from the command line, where
it would stay in shell history and in `ps`. Nothing this command prints or logs holds a value.
Backends: --backend embedded (--state-dir, default .opsgate) or supabase (--database-url); all three
come from the configuration as for `opsgate serve` (--config, $OPSGATE_CONFIG, ./opsgate.toml), so
run from any folder with OPSGATE_CONFIG set it uses the gateway's own vault.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import secrets
import sys
from pathlib import Path
from typing import Any

import msgspec

from gateway.cli.settings import add_config, configured, setting


class UsageError(Exception):
    pass


def register(sub: Any) -> None:
    vault = sub.add_parser("vault", help="store, list and rotate provider secrets (values are never shown)")
    verbs = vault.add_subparsers(dest="verb", required=True, metavar="VERB")
    set_ = verbs.add_parser("set", help="store a secret (new, or as its next version); value from a prompt or stdin")
    rotate = verbs.add_parser("rotate", help="replace an existing secret's value and bump its version")
    rotate.add_argument("--generate", action="store_true",
                        help="a random value (for keys opsgate itself owns, e.g. opsgate_dev_jwt_secret)")
    list_ = verbs.add_parser("list", help="every secret's name, version and last change; never a value")
    list_.add_argument("--format", choices=("table", "jsonl"), default="table")
    for p in (set_, rotate):
        p.add_argument("name", help="<provider>_<what>, e.g. socket_api_key, sentry_dsn, netdata_token")
        # Caught only to refuse them without repeating what was typed.
        p.add_argument("value", nargs="*", help=argparse.SUPPRESS)
        p.add_argument("--value", dest="value_option", nargs="?", const="", help=argparse.SUPPRESS)
    for p in (set_, rotate, list_):
        setting(p, "--backend", "vault", "which vault", dest="backend")
        setting(p, "--state-dir", "state_dir", "embedded vault under <state-dir>/vault", dest="state_dir",
                metavar="DIR")
        setting(p, "--database-url", "database_url", "Supabase Postgres for --backend supabase", dest="database_url")
        add_config(p)
        p.set_defaults(run=run)


def _read_value(name: str) -> str:
    if sys.stdin is not None and sys.stdin.isatty():
        first = getpass.getpass(f"value for {name}: ")
        if getpass.getpass("again, to confirm: ") != first:
            raise UsageError("the two values differ; nothing was stored")
        return first
    data = sys.stdin.read() if sys.stdin is not None else ""
    if data.endswith("\r\n"):
        data = data[:-2]
    elif data.endswith("\n"):
        data = data[:-1]
    if not data:
        raise UsageError(f"no value on stdin for {name}; pipe it in or run on a terminal to be prompted")
    return data


def _where(args: argparse.Namespace) -> str:
    return f"embedded vault at {args.state_dir}/vault" if args.backend == "embedded" else "Supabase Vault"


async def _run(args: argparse.Namespace) -> int:
    from providers.sdk.vault import SecretNotFound, check_name, check_value, open_vault

    value = None
    if args.verb != "list":
        if args.value or args.value_option is not None:
            raise UsageError("refusing a secret value on the command line (it would stay in shell history "
                             "and in `ps`): type it at the prompt or pipe it on stdin")
        check_name(args.name)
    if args.verb == "set":  # a bad value is refused before any vault is opened (or created)
        value = _read_value(args.name)
        check_value(args.name, value)
    key_file = Path(args.state_dir) / "vault" / "vault.key"
    if args.backend == "embedded" and args.verb != "set" and not key_file.exists():
        raise UsageError(f"no embedded vault under {args.state_dir} (is --state-dir right?)")
    vault = open_vault(args.backend, state_dir=args.state_dir, database_url=args.database_url)
    try:
        if args.verb == "list":
            infos = await vault.list()
            if args.format == "jsonl":
                for info in infos:
                    sys.stdout.write(msgspec.json.encode(info).decode() + "\n")
            else:
                sys.stdout.write(f"{'name':<32} {'version':>7}  updated_at\n")
                for info in infos:
                    sys.stdout.write(f"{info.name:<32} {info.version:>7}  {info.updated_at}\n")
            return 0
        if args.verb == "rotate":
            if not any(info.name == args.name for info in await vault.list()):
                raise SecretNotFound(f"secret {args.name!r} is not in the {_where(args)}: nothing to rotate "
                                     f"(use `opsgate vault set {args.name}`)")
            value = secrets.token_urlsafe(32) if args.generate else _read_value(args.name)
        assert value is not None
        info = await vault.set(args.name, value)
        del value
        sys.stdout.write(f"{info.name}: version {info.version} stored in the {_where(args)} ({info.updated_at})\n")
        return 0
    finally:
        await vault.close()


def run(args: argparse.Namespace) -> int:
    from providers.sdk.vault import VaultError

    config = configured(args, "vault").config
    args.backend, args.state_dir, args.database_url = config.vault, config.state_dir, config.database_url
    try:
        return asyncio.run(_run(args))
    except UsageError as e:
        print(f"opsgate vault: {e}", file=sys.stderr)
        return 2
    except VaultError as e:  # its message names the secret, never a value
        print(f"opsgate vault: {e}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, EOFError):
        print("\nopsgate vault: interrupted; nothing was stored", file=sys.stderr)
        return 130


__all__ = ["register"]
