"""Redaction: what a payload, a result, a log line or a span may carry once it leaves the call.

Invariants this module keeps:

- A vault secret value (8 characters or more) never survives redaction: not verbatim, not
  base64-encoded (any 3-byte alignment, standard or URL-safe alphabet, so a secret inside a
  larger encoded blob such as a Basic auth header is caught too), not percent-encoded, not
  JSON-escaped; in values, in keys, in log messages and their arguments, in exception text.
- `Redactor.redact` never raises and never mutates its input. It returns plain JSON data (dicts
  with str keys, lists, str, int, finite float, bool, None) whose encoding is at most `max_bytes`,
  or a `{"_truncated": true, ...}` marker in its place.
- Deterministic: the same value and the same secrets give the same output.

Rules, in order, for every node of the tree:

1. a value at a configured sensitive path -> "[REDACTED]"   (paths are dotted, `*` matches one
   segment, `**` any number, case-insensitive; a list element's segment is its index);
2. a value under a key named like a credential (authorization, api_key, x-api-key, token, secret,
   password, dsn, cookie, set-cookie, ...) -> "[REDACTED]"  (None and booleans are kept);
3. in every string and key: secret values -> "[REDACTED:secret]", JWTs -> "[REDACTED:jwt]",
   `Bearer <token>` -> "Bearer [REDACTED]";
4. strings longer than `max_string` are cut: "...…[truncated N chars]";
5. a tree whose JSON encoding exceeds `max_bytes` becomes
   {"_truncated": true, "bytes": N, "preview": "<first chars of the redacted encoding>"}
   ("lower_bound": true is added when the walk stopped early on a very large value, N then
   being what was seen before it stopped).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice
from typing import Any
from urllib.parse import quote, quote_plus

import msgspec

MASK = "[REDACTED]"
SECRET_MARK = "[REDACTED:secret]"
JWT_MARK = "[REDACTED:jwt]"
MIN_SECRET_LEN = 8
MAX_DEPTH = 64

# Compared against a key lowered and stripped of everything but letters and digits, as substrings:
# "X-Api-Key" -> "xapikey" contains "apikey"; "Set-Cookie" -> "setcookie" contains "cookie".
CREDENTIAL_WORDS = ("authorization", "apikey", "token", "secret", "password", "passwd", "dsn", "cookie",
                    "privatekey", "credential")

_NOT_ALNUM = re.compile(r"[^0-9a-z]")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{6,}\.eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]*")
# A bearer token must contain a digit, so prose ("the bearer of the ...") is left alone.
_BEARER = re.compile(r"\b([Bb]earer|BEARER)\s+(?=[A-Za-z0-9._~+/-]*\d)[A-Za-z0-9._~+/=-]{16,}")
_URLSAFE = str.maketrans("+/", "-_")
_PCT = re.compile(r"%[0-9A-F]{2}")
_KEY_CACHE_MAX = 4096
_INT64_MIN, _UINT64_MAX = -(1 << 63), (1 << 64) - 1


class _Overflow(Exception):
    """The walk has seen enough to know the tree is over budget."""


def secret_forms(secret: str) -> set[str]:
    """Every spelling of `secret` that redaction looks for (each at least MIN_SECRET_LEN long)."""
    raw = secret.encode("utf-8", "surrogatepass")
    forms = {secret}
    for shift in range(3):
        # The base64 of the secret as it appears when it starts `shift` bytes into a 3-byte group:
        # drop the characters that also encode neighbouring bytes.
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        fragment = encoded[(8 * shift + 5) // 6:(8 * (shift + len(raw))) // 6]
        forms |= {fragment, fragment.translate(_URLSAFE)}
    quoted = quote(secret, safe="")
    forms |= {quoted, _PCT.sub(lambda m: m.group().lower(), quoted), quote_plus(secret), quote(secret),
              json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}
    return {f for f in forms if len(f) >= MIN_SECRET_LEN}


def _compile(secrets: frozenset[str]) -> re.Pattern[str] | None:
    forms: set[str] = set()
    for s in secrets:
        forms |= secret_forms(s)
    if not forms:
        return None
    # Longest first, so a longer spelling wins over a shorter one it contains.
    return re.compile("|".join(re.escape(f) for f in sorted(forms, key=lambda f: (-len(f), f))))


def _safe_str(value: Any) -> str:
    try:
        return str(value)
    except Exception:
        try:
            return f"[unprintable {type(value).__qualname__}]"
        except Exception:
            return "[unprintable]"


def _compile_paths(paths: Sequence[str]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(seg.strip().lower() for seg in p.split(".")) for p in paths if p.strip())


class Redactor:
    """Masks secrets, sensitive paths and credential-named keys, and caps sizes.

    `secrets` is called on every `redact`/`redact_text` and must be cheap (the values the vault has
    handed out, held in memory); the matcher is rebuilt only when the set it returns changes. If it
    raises, the last set it returned stays in force.
    """

    def __init__(self, secrets: Callable[[], Iterable[str]] = tuple, sensitive_paths: Sequence[str] = (), *,
                 max_bytes: int = 8192, max_string: int = 1024) -> None:
        self._secrets = secrets
        self._paths = _compile_paths(sensitive_paths)
        self._start = self._closure({(p, 0) for p in range(len(self._paths))})
        self.max_bytes = max_bytes
        self.max_string = max_string
        self._preview = max(0, min(1024, max_bytes // 4))
        self._compiled: tuple[frozenset[str], re.Pattern[str] | None, int] = (frozenset(), None, 0)
        self._keys: dict[str, tuple[bool, str]] = {}
        self._moves: dict[tuple[frozenset[tuple[int, int]], str], tuple[frozenset[tuple[int, int]], bool]] = {}
        self.secret_errors = 0  # times `secrets()` raised

    # -- public ---------------------------------------------------------------------------

    def redact(self, value: Any, *, root: str | None = None) -> Any:
        """A redacted, JSON-ready deep copy of `value`. `root` names the value for path matching:
        `redact(args, root="args")` lets the path "args.token" match `args["token"]`."""
        try:
            return self._redact(value, root)
        except Exception as e:  # a bug here must not leak the value nor break the call
            return {"_redaction_failed": True, "error": type(e).__qualname__}

    def redact_text(self, text: Any) -> str:
        """`text` with secret values, JWTs and bearer tokens masked (no size cap)."""
        s = text if type(text) is str else _safe_str(text)
        try:
            return self._scrub(s, self._pattern())
        except Exception:
            return "[redaction failed]"

    # -- secrets --------------------------------------------------------------------------

    def _pattern(self) -> re.Pattern[str] | None:
        try:
            current = frozenset(s for s in self._secrets()
                                if isinstance(s, str) and len(s) >= MIN_SECRET_LEN)
        except Exception:
            self.secret_errors += 1
            return self._compiled[1]
        if current != self._compiled[0]:
            pattern = _compile(current)
            longest = max((len(f) for s in current for f in secret_forms(s)), default=0)
            self._compiled = (current, pattern, longest)
        return self._compiled[1]

    @staticmethod
    def _scrub(s: str, pattern: re.Pattern[str] | None) -> str:
        if len(s) < MIN_SECRET_LEN:
            return s
        if pattern is not None:
            s = pattern.sub(SECRET_MARK, s)
        if "eyJ" in s:
            s = _JWT.sub(JWT_MARK, s)
        if "earer" in s or "EARER" in s:
            s = _BEARER.sub(r"\1 " + MASK, s)
        return s

    # -- the walk -------------------------------------------------------------------------

    def _redact(self, value: Any, root: str | None) -> Any:
        walk = _Walk(self, self._pattern(), self._compiled[2])
        states = self._start
        if root is not None and states:
            states, hit = self._advance_cached(states, root.lower())
            if hit:
                return MASK
        try:
            out = walk.top(value, states)
        except _Overflow:
            return self._truncated(walk.root, walk.size, lower_bound=True)
        encoded = _encode(out)
        if len(encoded) > self.max_bytes:
            return self._truncated(out, len(encoded), encoded=encoded)
        return out

    def _truncated(self, tree: Any, size: int, *, lower_bound: bool = False, encoded: bytes | None = None) -> Any:
        if encoded is None:
            encoded = _encode(tree)
        marker: dict[str, Any] = {"_truncated": True, "bytes": size,
                                  "preview": encoded[:self._preview].decode("utf-8", "ignore")}
        if lower_bound:
            marker["lower_bound"] = True
        return marker

    def key_info(self, key: str) -> tuple[bool, str]:
        """(named like a credential, lowered) for a key; cached, keys repeat a lot."""
        info = self._keys.get(key)
        if info is None:
            lowered = key.lower()
            squashed = _NOT_ALNUM.sub("", lowered)
            info = (any(w in squashed for w in CREDENTIAL_WORDS), lowered)
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()
            self._keys[key] = info
        return info

    # Sensitive paths as a small NFA: a state is (pattern index, segment position).

    def _closure(self, states: set[tuple[int, int]]) -> frozenset[tuple[int, int]]:
        todo = list(states)
        while todo:
            p, i = todo.pop()
            pattern = self._paths[p]
            if i < len(pattern) and pattern[i] == "**" and (p, i + 1) not in states:
                states.add((p, i + 1))
                todo.append((p, i + 1))
        return frozenset(states)

    def _advance_cached(self, states: frozenset[tuple[int, int]],
                        segment: str) -> tuple[frozenset[tuple[int, int]], bool]:
        found = self._moves.get((states, segment))
        if found is None:
            found = self._advance(states, segment)
            if len(self._moves) >= _KEY_CACHE_MAX:
                self._moves.clear()
            self._moves[(states, segment)] = found
        return found

    def _advance(self, states: frozenset[tuple[int, int]], segment: str) -> tuple[frozenset[tuple[int, int]], bool]:
        nxt: set[tuple[int, int]] = set()
        for p, i in states:
            pattern = self._paths[p]
            if i >= len(pattern):
                continue
            seg = pattern[i]
            if seg == "**":
                nxt.add((p, i))
            elif seg == "*" or seg == segment:
                nxt.add((p, i + 1))
        if not nxt:
            return frozenset(), False
        closed = self._closure(nxt)
        return closed, any(i == len(self._paths[p]) for p, i in closed)


class _Walk:
    """One redact() call: the containers being filled (for cycles) and a lower bound of the output size.

    The common types are dispatched inline in the loops below (this runs twice on every tool call);
    everything else goes through `node`.
    """

    __slots__ = ("active", "adv", "key_info", "keys", "limit", "longest", "max_string", "pattern", "root", "size")

    def __init__(self, r: Redactor, pattern: re.Pattern[str] | None, longest: int) -> None:
        self.pattern = pattern
        self.longest = longest
        self.max_string = r.max_string
        self.keys = r._keys
        self.key_info = r.key_info
        self.adv = r._advance_cached
        self.size = 0
        self.limit = 4 * r.max_bytes  # a lower bound past this: stop, the tree is truncated anyway
        self.active: set[int] = set()  # ids of the containers on the current path
        self.root: Any = None

    def top(self, value: Any, states: frozenset[tuple[int, int]]) -> Any:
        t = type(value)
        if t is dict or (t is not list and t is not tuple and isinstance(value, Mapping)):
            self.root = {}
            return self.fill_dict(value, self.root, states, 1) or self.root
        if t is list or t is tuple:
            self.root = []
            return self.fill_list(value, self.root, states, 1) or self.root
        self.root = self.node(value, states, 0)
        return self.root

    def text(self, s: str) -> str:
        n = len(s)
        if n < MIN_SECRET_LEN:
            return s
        if n > self.max_string:
            # Scrub a window that holds any secret starting before the cut, then cut.
            cap = self.max_string
            s = f"{Redactor._scrub(s[:cap + self.longest], self.pattern)[:cap]}…[truncated {n - cap} chars]"
        else:
            s = Redactor._scrub(s, self.pattern)
        self.size += len(s)
        if self.size > self.limit:
            raise _Overflow
        return s

    def enter(self, src: Any, depth: int, width: int) -> str | int | None:
        """A marker to put in place of `src`, or how many of its items fit the budget (None: all)."""
        if depth > MAX_DEPTH:
            return "[too deep]"
        if id(src) in self.active:
            return "[cycle]"
        self.active.add(id(src))
        need = width * len(src) + 2  # at least `"":0,` per dict entry, `0,` per list item
        if self.size + need > self.limit:  # take what fits (for the preview), then stop
            return max(0, (self.limit - self.size) // width)
        self.size += need
        return None

    def fill_dict(self, src: Any, out: dict[str, Any], states: frozenset[tuple[int, int]], depth: int) -> str | None:
        """Fill `out` from `src`; a marker to use instead of `out` (cycle, too deep), else None."""
        take = self.enter(src, depth, 5)
        if type(take) is str:
            return take
        keys, text, adv = self.keys, self.text, self.adv
        try:
            for k, v in (src.items() if take is None else islice(src.items(), take)):
                if type(k) is str:
                    credential, lowered = keys.get(k) or self.key_info(k)
                    key = k if len(k) < MIN_SECRET_LEN else text(k)
                else:
                    key = self.odd_key(k)
                    credential, lowered = self.key_info(key)
                if key in out:  # two keys that print alike (1 and "1"): keep both
                    key = _unique(key, out)
                child = states
                if states:
                    child, hit = adv(states, lowered)
                    if hit:
                        out[key] = MASK
                        continue
                if credential and v is not None and v is not True and v is not False:
                    out[key] = MASK
                    continue
                t = type(v)
                if t is str:
                    out[key] = v if len(v) < MIN_SECRET_LEN else text(v)
                elif t is dict:
                    out[key] = c = {}  # in place before it is filled, so a cut walk's preview shows it
                    refused = self.fill_dict(v, c, child, depth + 1)
                    if refused is not None:
                        out[key] = refused
                elif t is list:
                    out[key] = c = []
                    refused = self.fill_list(v, c, child, depth + 1)
                    if refused is not None:
                        out[key] = refused
                else:
                    out[key] = self.node(v, child, depth)
        finally:
            self.active.discard(id(src))
        if take is not None:
            raise _Overflow
        return None

    def fill_list(self, src: Any, out: list[Any], states: frozenset[tuple[int, int]], depth: int) -> str | None:
        take = self.enter(src, depth, 2)
        if type(take) is str:
            return take
        text, adv, append = self.text, self.adv, out.append
        try:
            for i, v in enumerate(src if take is None else islice(src, take)):
                child = states
                if states:
                    child, hit = adv(states, str(i))
                    if hit:
                        append(MASK)
                        continue
                t = type(v)
                if t is str:
                    append(v if len(v) < MIN_SECRET_LEN else text(v))
                elif t is dict:
                    append(c := {})
                    refused = self.fill_dict(v, c, child, depth + 1)
                    if refused is not None:
                        out[-1] = refused
                else:
                    append(self.node(v, child, depth))
        finally:
            self.active.discard(id(src))
        if take is not None:
            raise _Overflow
        return None

    def node(self, v: Any, states: frozenset[tuple[int, int]], depth: int) -> Any:
        t = type(v)
        if t is str:
            return self.text(v)
        if t is int:
            if (v >= 10_000_000 or v <= -10_000_000) and self.pattern is not None and v.bit_length() <= 4096 \
                    and self.pattern.search(str(v)):  # a numeric secret (8 digits or more)
                return SECRET_MARK
            return v if _INT64_MIN <= v <= _UINT64_MAX else self.text(_big_int(v))
        if v is None or t is bool:
            return v
        if t is float:
            return v if v - v == 0.0 else _non_finite(v)
        if t is dict or isinstance(v, Mapping):
            c: Any = {}
            return self.fill_dict(v, c, states, depth + 1) or c
        if t is list or t is tuple or isinstance(v, (list, tuple)):
            c = []
            return self.fill_list(v, c, states, depth + 1) or c
        return self.node(self.plain(v), states, depth)

    @staticmethod
    def plain(v: Any) -> Any:
        """An odd value as a builtin that `node` knows (never the same odd type again)."""
        if isinstance(v, str):
            return str.__str__(v)
        if isinstance(v, int):
            return int.__index__(v)
        if isinstance(v, float):
            return float.__float__(v)
        if isinstance(v, (set, frozenset)):
            try:
                return sorted(v, key=lambda x: (type(x).__name__, _safe_str(x)))
            except Exception:
                return list(v)
        if isinstance(v, (bytes, bytearray, memoryview)):
            return bytes(v).decode("utf-8", "backslashreplace")
        try:  # structs, dataclasses, datetimes, enums, UUIDs, decimals ...
            return msgspec.to_builtins(v, str_keys=True)
        except Exception:
            return _safe_str(v)

    def odd_key(self, k: Any) -> str:
        if k is None or isinstance(k, bool):
            return "null" if k is None else ("true" if k else "false")
        if isinstance(k, (int, float, str, bytes, bytearray, memoryview)):
            v = self.node(self.plain(k), frozenset(), 0)
            return v if type(v) is str else repr(v)
        return self.text(_safe_str(k))


def _unique(key: str, out: dict[str, Any]) -> str:
    n = 2
    while f"{key}#{n}" in out:
        n += 1
    return f"{key}#{n}"


def _big_int(v: int) -> str:
    return str(v) if v.bit_length() <= 4096 else f"[int of {v.bit_length()} bits]"


def _non_finite(v: float) -> str:
    return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")


def _encode(tree: Any) -> bytes:
    try:
        return msgspec.json.encode(tree)
    except Exception:
        return json.dumps(tree, default=_safe_str, ensure_ascii=False).encode("utf-8", "backslashreplace")


# -- logging --------------------------------------------------------------------------------

_RECORD_FIELDS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
_EXC_FORMATTER = logging.Formatter()


class RedactingFilter(logging.Filter):
    """Scrubs secret values from a log record before any handler formats it.

    Install it on handlers (`handler.addFilter(...)`), not loggers: a logger's filters do not see
    records propagated from its children. The message is formatted with its args here (args then
    become None), and an exception is rendered to text here (exc_info then becomes None), because
    both would otherwise reach the formatter unscrubbed. It never drops a record.
    """

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        scrub = self.redactor.redact_text
        try:
            try:
                message = record.getMessage()
            except Exception:  # a bad format string: keep what we can, scrubbed
                message = f"{_safe_str(record.msg)} {_safe_str(record.args)}"
            record.msg, record.args = scrub(message), None
            if record.exc_info:
                record.exc_text = record.exc_text or _EXC_FORMATTER.formatException(record.exc_info)
                record.exc_info = None
            if record.exc_text:
                record.exc_text = scrub(record.exc_text)
            if record.stack_info:
                record.stack_info = scrub(record.stack_info)
            for name, value in list(record.__dict__.items()):  # `extra=` fields
                if name not in _RECORD_FIELDS and isinstance(value, str):
                    setattr(record, name, scrub(value))
        except Exception:
            record.msg, record.args, record.exc_info, record.exc_text = "[log record withheld: redaction failed]", \
                None, None, None
        return True


def install_log_filter(redactor: Redactor, logger: logging.Logger | None = None) -> RedactingFilter:
    """Add one RedactingFilter to every handler that has none yet: of `logger`, or by default of
    the root logger and of every logger with handlers of its own (uvicorn's loggers do not
    propagate to the root). Call it after the last logging set-up; handlers added later are not
    covered."""
    flt = RedactingFilter(redactor)
    loggers = [logger] if logger is not None else [logging.getLogger(), *(
        candidate for candidate in logging.Logger.manager.loggerDict.values()
        if isinstance(candidate, logging.Logger) and candidate.handlers)]
    for each in loggers:
        for handler in each.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(flt)
    return flt


__all__ = ["CREDENTIAL_WORDS", "JWT_MARK", "MASK", "MIN_SECRET_LEN", "SECRET_MARK", "RedactingFilter", "Redactor",
           "install_log_filter", "secret_forms"]
