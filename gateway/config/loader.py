"""Loading the configuration: defaults < `opsgate.toml` < `OPSGATE_*` environment < flags.

Invariants:
- The file is the one named by `--config`, else by `OPSGATE_CONFIG`, else `./opsgate.toml` if it
  exists; a file named explicitly must exist.
- A relative path read from the file is resolved against the file's folder; one from a flag or
  an environment variable against the working directory (as the person typing it means); the
  defaults against the file's folder when there is a file, else the working directory. So a
  gateway started from any folder with the same file runs the same way.
- Every source is checked in full before anything is refused: `ConfigError.problems` lists
  every unknown key, wrong type and secret, each with where it came from and its key path.
- Every value of the result has its source recorded (`Loaded.sources`).
- Nothing here reads the process's environment or working directory: the CLI passes them in.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
from msgspec import inspect as mi

from gateway.config import schema, secrets
from gateway.config.model import GatewayConfig

FILE_NAME = "opsgate.toml"
ENV_FILE = "OPSGATE_CONFIG"
ENV_PREFIX = "OPSGATE_"
ROOT = mi.type_info(GatewayConfig)
assert isinstance(ROOT, mi.StructType)


class Problem(msgspec.Struct, frozen=True):
    source: str  # the file's path, "env OPSGATE_PORT", "flag --port"
    key: str  # the dotted key path; "" when the problem is the source as a whole
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.message}" if self.key else f"{self.source}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; `problems` holds every reason, not just the first."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(map(str, self.problems)))


class Override(msgspec.Struct, frozen=True):
    """One value set from outside the file: a flag, an environment variable, a `--set`."""

    key: str  # dotted key path: "port", "tracing.otlp_endpoint", "provider_urls.sentry"
    value: Any
    source: str  # "flag --port", "env OPSGATE_PORT"
    text: bool = False  # `value` is text to read by the key's type (a string as is, else a TOML value)


class Loaded(msgspec.Struct, frozen=True):
    config: GatewayConfig
    file: str | None  # the file read (absolute), or None
    sources: dict[str, str]  # dotted key -> "default" | "file" | "env OPSGATE_X" | "flag --x"
    ignored_env: tuple[str, ...] = ()  # OPSGATE_* variables that name no setting


def find_file(config_file: str | None, env: Mapping[str, str], cwd: Path) -> tuple[Path | None, str]:
    """The file to read and how it was chosen ("--config", ENV_FILE, "./opsgate.toml"; "" for none)."""
    if config_file:
        return (cwd / Path(config_file).expanduser()).absolute(), "--config"
    if env.get(ENV_FILE):
        return (cwd / Path(env[ENV_FILE]).expanduser()).absolute(), ENV_FILE
    here = cwd / FILE_NAME
    return (here.absolute(), f"./{FILE_NAME}") if here.is_file() else (None, "")


def load(*, config_file: str | None = None, env: Mapping[str, str] | None = None, flags: Sequence[Override] = (),
         cwd: Path | None = None) -> Loaded:
    """The effective configuration, or ConfigError with every problem of every source."""
    env, cwd = env or {}, (cwd or Path.cwd()).absolute()
    problems: list[Problem] = []
    path, _ = find_file(config_file, env, cwd)
    layers: list[tuple[str, dict[str, Any]]] = []
    if path is not None:
        data = _read_file(path, problems)
        layers.append(("file", schema.resolve_paths(data, ROOT, lambda m: path.parent if m is True else None)))
    env_flags, ignored = env_overrides(env)
    for o in (*env_flags, *flags):
        layer = _override_layer(o, problems, ignore_unknown=o.source.startswith("env "))
        if layer is not None:
            layers.append((o.source, schema.resolve_paths(layer, ROOT, lambda m: cwd if m is True else None)))
    if problems:
        raise ConfigError(problems)
    base = path.parent if path is not None else cwd
    merged = schema.resolve_paths(msgspec.to_builtins(GatewayConfig()), ROOT, lambda m: base if m is True else None)
    sources: dict[str, str] = dict.fromkeys(_leaves(merged, ROOT), "default")
    for label, layer in layers:
        _merge(merged, layer, ROOT, "", label, sources)
    # Paths relative to another setting (omega.sqlite_path under state_dir), now that it is final.
    merged = schema.resolve_paths(merged, ROOT, lambda m: Path(merged[m]) if isinstance(m, str) else None)
    try:
        config = msgspec.convert(merged, GatewayConfig)
    except msgspec.ValidationError as e:
        key, message = schema.convert_problem(e)
        raise ConfigError([Problem("configuration", key, message)]) from None
    return Loaded(config, str(path) if path else None, sources, tuple(ignored))


def _read_file(path: Path, problems: list[Problem]) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(Problem(str(path), "", "no such file"))
        return {}
    except (OSError, UnicodeDecodeError) as e:
        problems.append(Problem(str(path), "", f"cannot be read: {e.__class__.__name__}"))
        return {}
    except tomllib.TOMLDecodeError as e:
        problems.append(Problem(str(path), "", f"not valid TOML: {e}"))
        return {}
    return _checked(data, str(path), problems)


def _checked(data: dict[str, Any], source: str, problems: list[Problem]) -> dict[str, Any]:
    """`data` after its problems are recorded: secrets first (a secret's key is not also "unknown")."""
    found = list(secrets.scan(data))
    problems.extend(Problem(source, key, message) for key, message in found)
    for key, _ in found:
        _drop(data, key)
    problems.extend(Problem(source, key, message) for key, message in schema.check(data, ROOT))
    return data


def _drop(data: dict[str, Any], key: str) -> None:
    head, _, rest = key.partition(".")
    head = head.split("[", 1)[0]
    if not rest or "[" in key.split(".", 1)[0]:
        data.pop(head, None)
    elif isinstance(data.get(head), dict):
        _drop(data[head], rest)


def env_overrides(env: Mapping[str, str]) -> tuple[list[Override], list[str]]:
    """`OPSGATE_<KEY>` variables as overrides (`__` goes one table down: OPSGATE_TRACING__OTLP_ENDPOINT),
    and the OPSGATE_* names that match no key (ignored: they may belong to something else)."""
    found, ignored = [], []
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name == ENV_FILE:
            continue
        key = name[len(ENV_PREFIX):].lower().replace("__", ".")
        if schema.lookup(ROOT, key.split(".")) is None and not secrets.secret_name(key):
            ignored.append(name)
            continue
        found.append(Override(key, env[name], f"env {name}", text=True))
    return found, ignored


def _override_layer(o: Override, problems: list[Problem], *, ignore_unknown: bool) -> dict[str, Any] | None:
    segments = o.key.split(".")
    if any(secrets.secret_name(s) for s in segments):
        problems.append(Problem(o.source, o.key, f"looks like a secret (its name); {secrets.VAULT}"))
        return None
    info = schema.lookup(ROOT, segments)
    if info is None:
        if not ignore_unknown:
            close = difflib.get_close_matches(o.key, list(schema.keys_of(ROOT)), n=1, cutoff=0.75)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            problems.append(Problem(o.source, o.key, "unknown key" + hint))
        return None
    value = o.value
    if o.text and not schema.accepts_text(info):
        try:
            value = tomllib.loads(f"v = {o.value}")["v"]
        except tomllib.TOMLDecodeError:
            problems.append(Problem(o.source, o.key, f"expected {schema.describe(info)}{_example(info)}, "
                                    "got text that is not a TOML value"))
            return None
    layer: dict[str, Any] = value
    for segment in reversed(segments):
        layer = {segment: layer}
    before = len(problems)
    layer = _checked(layer, o.source, problems)
    return layer if len(problems) == before else None


def _example(info: mi.Type) -> str:
    info = schema.bare(info)
    if isinstance(info, mi.CollectionType | mi.TupleType):
        return ' (e.g. ["a", "b"])'
    if isinstance(info, mi.StructType | mi.DictType):
        return ' (e.g. { key = "value" })'
    return ""


def _leaves(value: Any, info: mi.Type, key: str = "") -> Iterable[str]:
    """The keys whose sources are recorded: every field, struct tables descended."""
    info = schema.bare(info)
    if isinstance(info, mi.StructType) and isinstance(value, dict):
        fields = schema.fields_of(info)
        for k, v in value.items():
            yield from _leaves(v, fields[k].type, schema.join(key, k))
    else:
        yield key


def _merge(into: dict[str, Any], layer: dict[str, Any], info: mi.StructType, prefix: str, label: str,
           sources: dict[str, str]) -> None:
    """Tables (struct sections and mapping fields) merge key by key; any other value replaces."""
    fields = schema.fields_of(info)
    for k, v in layer.items():
        key, inner = schema.join(prefix, k), schema.bare(fields[k].type)
        if isinstance(inner, mi.StructType) and isinstance(v, dict):
            _merge(into.setdefault(k, {}), v, inner, key, label, sources)
        elif isinstance(inner, mi.DictType) and isinstance(v, dict):
            into[k] = {**into.get(k, {}), **v}
            sources.update({f"{key}.{entry}": label for entry in v})
        else:
            into[k] = v
            sources[key] = label


__all__ = ["ENV_FILE", "ENV_PREFIX", "FILE_NAME", "ConfigError", "Loaded", "Override", "Problem", "env_overrides",
           "find_file", "load"]
