"""How every command turns `--config`, the `OPSGATE_*` environment and its own flags into one
GatewayConfig, the same way (gateway/config/loader.py: defaults < file < environment < flags).

A flag that sets a configuration key is declared with `setting(parser, "--port", "port", help)`:
its help names the key and the default read from GatewayConfig, its type and choices come from
the struct, and `configured(args, ...)` turns it into an override of that key. A command adds
`--config` with `add_config`. The process environment and working directory are read here, in
the CLI, and passed down; nothing deeper reads them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import msgspec
from msgspec import inspect as mi

from gateway.config import ENV_FILE, FILE_NAME, ConfigError, GatewayConfig, Loaded, Override, Problem, load, schema
from gateway.config.loader import ROOT

_DEFAULTS = msgspec.to_builtins(GatewayConfig())


def add_config(parser: argparse.ArgumentParser, *, set_option: bool = False) -> None:
    """`--config PATH` (and, with `set_option`, `--set KEY=VALUE` reaching any key)."""
    parser.add_argument("--config", metavar="PATH",
                        help=f"configuration file (default: ${ENV_FILE}, else ./{FILE_NAME} if there is one, "
                             "else none: built-in defaults)")
    if set_option:
        parser.add_argument("--set", dest="settings_set", action="append", default=[], metavar="KEY=VALUE",
                            help="any configuration key, e.g. --set tracing.otlp_endpoint=http://127.0.0.1:4318/v1/traces"
                                 " (a TOML value; plain text for a string key; repeatable; default: none)")


def setting(parser: argparse.ArgumentParser, flag: str, key: str, help: str, *, dest: str | None = None,
            pairs: bool = False, replaced_by: str | None = None, **kw: Any) -> None:
    """A flag overriding configuration key `key`. `pairs`: repeatable NAME=VALUE entries of a table
    key. `replaced_by`: a deprecated spelling, hidden from help, that warns when used."""
    info = schema.bare(schema.lookup(ROOT, key.split(".")) or mi.AnyType())
    if pairs:
        kw.update(action="append", type=_pair)
    elif isinstance(info, mi.LiteralType):
        kw.setdefault("choices", info.values)
    elif isinstance(info, mi.IntType | mi.FloatType):
        kw.setdefault("type", int if isinstance(info, mi.IntType) else float)
    if "choices" not in kw:
        kw.setdefault("metavar", flag.lstrip("-").upper().replace("-", "_"))
    dest = dest or "setting" + flag.replace("-", "_")
    text = argparse.SUPPRESS if replaced_by else f"{help} (config `{key}`; default: {default_text(key)})".replace(
        "%", "%%")  # argparse %-formats help
    parser.add_argument(flag, dest=dest, default=None, help=text, **kw)
    known = dict(parser.get_default("settings_flags") or {})
    known[dest] = (key, flag, pairs, replaced_by)
    parser.set_defaults(settings_flags=known)


def default_text(key: str) -> str:
    value: Any = _DEFAULTS
    for segment in key.split("."):
        value = value[segment]
    info = schema.lookup(ROOT, key.split("."))
    where = ", beside the config file, else here" if isinstance(info, mi.Metadata) and \
        (info.extra or {}).get("path") is True else ""
    if value is None or value in ({}, [], ()):
        return "none"
    return (", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)) + where


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value:
        raise argparse.ArgumentTypeError("wants NAME=VALUE")
    return name, value


def overrides(args: argparse.Namespace) -> list[Override]:
    """The flags given on this command line, as overrides in declaration order, `--set` last."""
    found: list[Override] = []
    for dest, (key, flag, pairs, replaced_by) in (getattr(args, "settings_flags", None) or {}).items():
        value = getattr(args, dest, None)
        if value is None:
            continue
        if replaced_by:
            print(f"opsgate: {flag} is deprecated; use {replaced_by}", file=sys.stderr)
        if pairs:
            found.extend(Override(f"{key}.{name}", v, f"flag {flag}") for name, v in value)
        else:
            found.append(Override(key, value, f"flag {flag}"))
    for item in getattr(args, "settings_set", None) or ():
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError([Problem("flag --set", "", "wants KEY=VALUE, e.g. --set port=9000")])
        found.append(Override(key, text, f"flag --set {key}", text=True))
    return found


def resolve(args: argparse.Namespace, extra: list[Override] | None = None) -> Loaded:
    """The effective configuration for this command line; ConfigError lists every problem."""
    return load(config_file=getattr(args, "config", None), env=os.environ,
                flags=[*overrides(args), *(extra or ())], cwd=Path.cwd())


def configured(args: argparse.Namespace, command: str, extra: list[Override] | None = None) -> Loaded:
    """`resolve`, or every problem on stderr and exit 2 (the command line or its configuration is wrong)."""
    try:
        loaded = resolve(args, extra)
    except ConfigError as e:
        report_problems(f"opsgate {command}", e.problems)
        raise SystemExit(2) from None
    if loaded.ignored_env:
        print(f"opsgate {command}: ignoring {', '.join(loaded.ignored_env)} (no such configuration key)",
              file=sys.stderr)
    return loaded


def report_problems(prefix: str, problems: tuple[Problem, ...]) -> None:
    n = len(problems)
    print(f"{prefix}: {n} configuration problem{'s' if n != 1 else ''}:", file=sys.stderr)
    for p in problems:
        print(f"  {p}", file=sys.stderr)


__all__ = ["add_config", "configured", "default_text", "overrides", "report_problems", "resolve", "setting"]
