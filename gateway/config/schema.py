"""What a configuration key may hold, read from the struct itself (msgspec.inspect), never restated.

Invariants: every problem names the key's full path (`tracing.otlp_endpoint`, `allowed_hosts[2]`)
and the expected type in words; a value is described by its kind only ("got a string"), never
echoed, since a misplaced secret must not reach a terminal or a log. Checking goes on past the
first problem, so one run lists every problem in a table. A field added to the struct is covered
with no change here.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import msgspec
from msgspec import inspect as mi

Found = tuple[str, str]  # (key path, message)
_ARRAYS = (mi.CollectionType, mi.TupleType)
_TABLES = (mi.DictType, mi.FrozenDictType) if hasattr(mi, "FrozenDictType") else (mi.DictType,)


def bare(info: mi.Type) -> mi.Type:
    """The type under any `Annotated[..., Meta(...)]` (constraints stay on the inner type)."""
    while isinstance(info, mi.Metadata):
        info = info.type
    return info


def fields_of(info: mi.StructType) -> dict[str, mi.Field]:
    return {f.encode_name: f for f in info.fields}


def join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


# -- words -----------------------------------------------------------------------------------


def describe(info: mi.Type) -> str:
    """The type in words, as a person reading a TOML file would say it."""
    info = bare(info)
    if isinstance(info, mi.StrType):
        return "a string" + (f" matching /{info.pattern}/" if info.pattern else "")
    if isinstance(info, mi.IntType | mi.FloatType):
        bounds = [f"{op} {v}" for op, v in ((">", info.gt), (">=", info.ge), ("<", info.lt), ("<=", info.le))
                  if v is not None]
        return ("an integer" if isinstance(info, mi.IntType) else "a number") + "".join(f" {b}" for b in bounds)
    if isinstance(info, mi.BoolType):
        return "true or false"
    if isinstance(info, mi.LiteralType):
        return "one of " + ", ".join(json.dumps(v) for v in info.values)
    if isinstance(info, mi.UnionType):
        return " or ".join(describe(t) for t in info.types if not isinstance(bare(t), mi.NoneType))
    if isinstance(info, mi.CollectionType):
        return f"an array of {_plural(info.item_type)}"
    if isinstance(info, mi.TupleType):
        return f"an array of {len(info.item_types)} items"
    if isinstance(info, _TABLES):
        return f"a table of {_plural(info.value_type)}"
    if isinstance(info, mi.StructType):
        return "a table"
    if isinstance(info, mi.DateTimeType):
        return "a date-time"
    if isinstance(info, mi.AnyType):
        return "any value"
    return type(info).__name__.removesuffix("Type").lower()


def _plural(info: mi.Type) -> str:
    info = bare(info)
    simple = {mi.StrType: "strings", mi.IntType: "integers", mi.FloatType: "numbers", mi.BoolType: "booleans"}
    for kind, word in simple.items():
        if isinstance(info, kind):
            return word
    if isinstance(info, mi.LiteralType):
        return "values among " + ", ".join(json.dumps(v) for v in info.values)
    return "items that are each " + describe(info)


def kind_of(value: Any) -> str:
    """What a decoded TOML value is, in words, without its content."""
    kinds: tuple[tuple[type | tuple[type, ...], str], ...] = (
        (bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"), (list, "an array"),
        (dict, "a table"), (datetime, "a date-time"), (date, "a date"), (time, "a time"))
    return next((word for kind, word in kinds if isinstance(value, kind)), type(value).__name__)


# -- checking --------------------------------------------------------------------------------


def check(value: Any, info: mi.Type, key: str = "") -> Iterator[Found]:
    """Every problem of `value` (decoded TOML) against `info`: unknown keys, wrong types, bounds."""
    info = bare(info)
    if isinstance(info, mi.StructType):
        yield from _check_table(value, info, key)
    elif isinstance(info, _TABLES):
        if not isinstance(value, dict):
            yield key, f"expected {describe(info)}, got {kind_of(value)}"
            return
        for k, v in value.items():
            yield from check(v, info.value_type, join(key, k))
    elif isinstance(info, _ARRAYS):
        yield from _check_array(value, info, key)
    elif isinstance(info, mi.UnionType):
        if not any(not list(check(value, t, key)) for t in info.types):
            yield key, f"expected {describe(info)}, got {kind_of(value)}"
    elif not _leaf_ok(value, info):
        same_kind = _leaf_ok(value, _loosen(info))
        yield key, f"expected {describe(info)}" + ("" if same_kind else f", got {kind_of(value)}")


def _check_table(value: Any, info: mi.StructType, key: str) -> Iterator[Found]:
    if not isinstance(value, dict):
        yield key, f"expected a table (`[{key}]`), got {kind_of(value)}"
        return
    fields = fields_of(info)
    for k, v in value.items():
        path = join(key, k)
        if k in fields:
            yield from check(v, fields[k].type, path)
            continue
        close = difflib.get_close_matches(k, fields, n=1, cutoff=0.75)
        hint = f"; did you mean `{join(key, close[0])}`?" if close else (
            f"; `{key}` takes: {', '.join(fields)}" if key else "")
        yield path, "unknown key" + hint


def _check_array(value: Any, info: mi.Type, key: str) -> Iterator[Found]:
    if not isinstance(value, list):
        yield key, f"expected {describe(info)}, got {kind_of(value)}"
        return
    if isinstance(info, mi.TupleType):
        if len(value) != len(info.item_types):
            yield key, f"expected {describe(info)}, got {len(value)}"
            return
        items = info.item_types
    else:
        items = (info.item_type,) * len(value)
        low, high = info.min_length, info.max_length
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            yield key, f"expected {describe(info)} with {low or 0} to {high if high is not None else 'any'} items"
    for i, (v, t) in enumerate(zip(value, items, strict=True)):
        yield from check(v, t, f"{key}[{i}]")


def _leaf_ok(value: Any, info: mi.Type) -> bool:
    if isinstance(info, mi.StrType):
        return isinstance(value, str) and _length_ok(value, info) and (
            info.pattern is None or re.search(info.pattern, value) is not None)
    if isinstance(info, mi.IntType | mi.FloatType):
        kinds = int if isinstance(info, mi.IntType) else (int, float)
        return isinstance(value, kinds) and not isinstance(value, bool) and _bounds_ok(value, info)
    if isinstance(info, mi.BoolType):
        return isinstance(value, bool)
    if isinstance(info, mi.LiteralType):
        return any(type(value) is type(v) and value == v for v in info.values)
    if isinstance(info, mi.NoneType):
        return value is None
    return True  # anything rarer is left to msgspec's own conversion, which runs last


def _loosen(info: mi.Type) -> mi.Type:
    """The same kind of value without its constraints (to tell "wrong kind" from "out of bounds")."""
    if isinstance(info, mi.StrType):
        return mi.StrType()
    if isinstance(info, mi.IntType):
        return mi.IntType()
    if isinstance(info, mi.FloatType):
        return mi.FloatType()
    if isinstance(info, mi.LiteralType):
        return mi.StrType() if all(isinstance(v, str) for v in info.values) else mi.IntType()
    return info


def _length_ok(value: str, info: mi.StrType) -> bool:
    return (info.min_length is None or len(value) >= info.min_length) and (
        info.max_length is None or len(value) <= info.max_length)


def _bounds_ok(value: float, info: mi.IntType | mi.FloatType) -> bool:
    return ((info.gt is None or value > info.gt) and (info.ge is None or value >= info.ge)
            and (info.lt is None or value < info.lt) and (info.le is None or value <= info.le)
            and (getattr(info, "multiple_of", None) is None or value % info.multiple_of == 0))


# -- reaching a key by name (environment variables, --set) -----------------------------------


def lookup(info: mi.Type, path: list[str]) -> mi.Type | None:
    """The type at a dotted path: through struct fields, and one level into a table's entries."""
    for segment in path:
        info = bare(info)
        if isinstance(info, mi.StructType):
            field = fields_of(info).get(segment)
            if field is None:
                return None
            info = field.type
        elif isinstance(info, _TABLES):
            info = info.value_type
        else:
            return None
    return info


def accepts_text(info: mi.Type) -> bool:
    """Whether a bare string is a value of this type (else text from env/--set is read as TOML)."""
    info = bare(info)
    if isinstance(info, mi.StrType):
        return True
    if isinstance(info, mi.LiteralType):
        return any(isinstance(v, str) for v in info.values)
    if isinstance(info, mi.UnionType):
        return any(accepts_text(t) for t in info.types)
    return False


def keys_of(info: mi.StructType, prefix: str = "") -> Iterator[str]:
    """Every settable dotted key, struct tables descended (for suggestions and listings)."""
    for name, field in fields_of(info).items():
        inner = bare(field.type)
        if isinstance(inner, mi.StructType):
            yield from keys_of(inner, join(prefix, name))
        else:
            yield join(prefix, name)


# -- paths -----------------------------------------------------------------------------------


def resolve_paths(value: Any, info: mi.Type, base: Callable[[Any], Path | None]) -> Any:
    """`value` with every relative path resolved: a field marked `Meta(extra={"path": marker})`
    is joined onto `base(marker)` (None leaves it as it is); `~` is expanded."""
    marker = None
    while isinstance(info, mi.Metadata):
        marker = (info.extra or {}).get("path", marker)
        info = info.type
    if marker is not None and isinstance(value, str):
        where = base(marker)
        path = Path(value).expanduser()
        return str(path) if path.is_absolute() or where is None else str(where / path)
    if isinstance(info, mi.StructType) and isinstance(value, Mapping):
        fields = fields_of(info)
        return {k: resolve_paths(v, fields[k].type, base) if k in fields else v for k, v in value.items()}
    if isinstance(info, _TABLES) and isinstance(value, Mapping):
        return {k: resolve_paths(v, info.value_type, base) for k, v in value.items()}
    if isinstance(info, mi.CollectionType) and isinstance(value, list):
        return [resolve_paths(v, info.item_type, base) for v in value]
    return value


def convert_problem(error: msgspec.ValidationError) -> Found:
    """msgspec's own message (the last word on rarer types), its `$.a.b` turned into `a.b`."""
    message, _, where = str(error).partition(" - at `$")
    if message.startswith("Invalid"):  # "Invalid enum value 'x'" would echo the value
        message = message.split(" value", 1)[0] + " value"
    return where.rstrip("`").lstrip(".").replace("[...]", ".*"), message


__all__ = ["accepts_text", "bare", "check", "convert_problem", "describe", "fields_of", "join", "keys_of",
           "kind_of", "lookup", "resolve_paths"]
