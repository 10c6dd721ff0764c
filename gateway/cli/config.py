"""`opsgate config check|show`: validate the configuration, or print it with each value's source.

    opsgate config check [--config PATH]    # every problem listed; exit 1 if any (or no file)
    opsgate config show [--format toml|json] [--port 9000 ...]

Both resolve exactly as `opsgate serve` does (defaults < file < OPSGATE_* < flags) and accept the
same flags, so `config show --port 9000` shows what `serve --port 9000` would run with. `show`
prints TOML that can be copied into a file: each value followed by where it came from (default,
file, env OPSGATE_X, flag --x). No configuration holds a secret (the loader refuses them), so
printing values is safe.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import msgspec
from msgspec import inspect as mi

ENTRY_WIDTH = 64


def register(sub: Any) -> None:
    from gateway.cli.serve import gateway_settings

    config = sub.add_parser("config", help="check the configuration file, or show the effective configuration")
    verbs = config.add_subparsers(dest="verb", required=True, metavar="VERB")
    check = verbs.add_parser("check", help="validate: list every problem, exit 1 if there is any")
    show = verbs.add_parser("show", help="the effective configuration, each value with its source")
    show.add_argument("--format", choices=("toml", "json"), default="toml", help="output format (default: toml)")
    for p in (check, show):
        gateway_settings(p, http=True)
        p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from gateway.cli.settings import resolve
    from gateway.config import ENV_FILE, FILE_NAME, ConfigError

    try:
        loaded = resolve(args)
    except ConfigError as e:
        for p in e.problems:
            print(p)
        print(f"{len(e.problems)} problem{'s' if len(e.problems) != 1 else ''} in the configuration")
        return 1
    if args.verb == "show":
        print(_json(loaded) if args.format == "json" else _toml(loaded), end="")
        return 0
    if loaded.file is None:
        print(f"no configuration file to check (--config PATH, ${ENV_FILE}, or ./{FILE_NAME} here)")
        return 1
    for note in _notes(loaded):
        print(f"note: {note}")
    counts = {kind: sum(1 for s in loaded.sources.values() if s.split(" ")[0] == kind) for kind in ("file", "env",
                                                                                                  "flag")}
    print(f"{loaded.file}: ok ({counts['file']} keys set in the file, {counts['env']} by the environment, "
          f"{counts['flag']} by flags)")
    return 0


def _notes(loaded: Any) -> list[str]:
    """What is valid but may not be what was meant: folders that are not there (yet), ignored variables."""
    config, notes = loaded.config, []
    if not Path(config.policies).is_dir():
        notes.append(f"policies: {config.policies} is not a directory (yet)")
    notes.extend(f"{name}: no such configuration key; ignored" for name in loaded.ignored_env)
    return notes


def _json(loaded: Any) -> str:
    from gateway.config.loader import ROOT

    out = {key: {"value": value, "source": loaded.sources.get(key) or loaded.sources[key.rsplit(".", 1)[0]]}
           for key, value in _flat(msgspec.to_builtins(loaded.config), ROOT)}
    return json.dumps({"file": loaded.file, "settings": out}, indent=2) + "\n"


def _toml(loaded: Any) -> str:
    from gateway.config.loader import ROOT

    head = f"# opsgate effective configuration; file: {loaded.file or 'none (built-in defaults)'}\n"
    return head + "\n".join(_table(msgspec.to_builtins(loaded.config), ROOT, "", loaded)) + "\n"


def _table(values: dict[str, Any], info: mi.StructType, prefix: str, loaded: Any) -> list[str]:
    """A TOML table's lines: its plain values first (TOML requires it), then its sub-tables."""
    from gateway.config import schema

    fields, lines, later = schema.fields_of(info), [], []
    for name, value in values.items():
        key, inner = schema.join(prefix, name), schema.bare(fields[name].type)
        if isinstance(inner, mi.StructType):
            later += ["", f"[{key}]", *_table(value, inner, key, loaded)]
        elif isinstance(inner, mi.DictType) and value:
            later += ["", f"[{key}]"] + [_entry(_toml_key(k), v, loaded.sources.get(f"{key}.{k}", loaded.sources[key]))
                                         for k, v in value.items()]
        else:
            lines.append(_entry(name, value, loaded.sources[key]))
    return lines + later


def _entry(name: str, value: Any, source: str) -> str:
    text = f"# {name} is not set" if value is None else f"{name} = {_toml_value(value)}"
    return f"{text:<{ENTRY_WIDTH}} # {source}"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() and key.isascii() else json.dumps(key)


def _flat(values: dict[str, Any], info: mi.StructType, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) for every value `show` reports: struct tables descended, mapping entries apart."""
    from gateway.config import schema

    fields, found = schema.fields_of(info), []
    for name, value in values.items():
        key, inner = schema.join(prefix, name), schema.bare(fields[name].type)
        if isinstance(inner, mi.StructType):
            found += _flat(value, inner, key)
        elif isinstance(inner, mi.DictType) and value:
            found += [(f"{key}.{k}", v) for k, v in value.items()]
        else:
            found.append((key, value))
    return found


__all__ = ["register"]
