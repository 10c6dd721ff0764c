"""The request as decided, kept in an audit row so that `opsgate policy replay` can decide it again.

An audit row's payload holds the call's arguments (`args`); the gateway adds, under the reserved
key `_request` (REQUEST_KEY), what the engine was asked: principal, the caller's role as it was,
action, resource, the context Cedar saw (arguments as validated, defaults filled in), the request's
entities and the `now` it was decided at.

Invariants:
- The kept context is redacted by the same redactor, in the same way, as the payload: nothing an
  audit row may not hold is kept here either.
- Every place where redaction changed the context is listed (`redacted`: the path and the Cedar
  type the value had), so replay can tell a request it can decide again exactly (no policy of the
  candidate bundle reads a changed value) from one it must not guess about. A context the
  redactor cut whole (over its size cap) is marked `truncated`.
- Nothing here reads a clock or does I/O: the gateway hands in the request, its `now` and the
  redactor.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from engine.model import Entity, Request, Uid

REQUEST_KEY = "_request"
FORMAT = 1

# The Cedar type a redacted value had, as replay needs it: a value no policy reads may be replaced
# by any value of the same type (engine/memo.py: Cedar's answer depends on the values policies read
# and on the context's shape and types, nothing else). "Reshaped": a record whose keys the redactor
# renamed (a key that held a secret), so even its shape is lost.
TYPE_TOKENS = ("String", "Long", "Bool", "Set", "Record", "Reshaped", "Other")


class Asked(msgspec.Struct, frozen=True):
    """What the gateway asked the engine for one call: the request, its clock, the caller's role."""

    request: Request
    now: datetime
    role: str | None = None


class Redaction(msgspec.Struct, frozen=True, array_like=True):
    """One place the redactor changed the kept context: its path below `context`, and its type."""

    path: tuple[str, ...]
    type: str


class Kept(msgspec.Struct, frozen=True):
    """The `_request` of an audit row, as replay reads it back."""

    v: int
    principal: Uid
    action: str
    resource: Uid
    now: datetime
    context: dict[str, Any] = {}
    entities: tuple[Entity, ...] = ()
    role: str | None = None
    redacted: tuple[Redaction, ...] = ()
    truncated: bool = False

    def request(self, context: dict[str, Any] | None = None) -> Request:
        return Request(self.principal, self.action, self.resource,
                       self.context if context is None else context, self.entities)


def _type_token(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return "String"
    if kind is bool:
        return "Bool"
    if kind is int:
        return "Long"
    if kind is list or kind is tuple:
        return "Set"
    if kind is dict:
        return "Record"
    return "Other"


def redactions(original: Any, redacted: Any, path: tuple[str, ...] = ()) -> list[Redaction]:
    """Where `redacted` differs from `original`, as the deepest paths that changed."""
    if original == redacted and type(original) is type(redacted):
        return []
    if type(original) is dict and type(redacted) is dict:
        if original.keys() != redacted.keys():
            return [Redaction(path, "Reshaped")]
        out: list[Redaction] = []
        for k, v in original.items():
            out += redactions(v, redacted[k], (*path, k))
        return out
    if type(original) in (list, tuple) and type(redacted) is list and len(original) == len(redacted):
        out = []
        for i, (a, b) in enumerate(zip(original, redacted, strict=True)):
            out += redactions(a, b, (*path, str(i)))
        return out
    return [Redaction(path, _type_token(original))]


_TO_BUILTINS = msgspec.to_builtins


def keep(asked: Asked, redact: Callable[[Any], Any]) -> dict[str, Any] | None:
    """The `_request` entry of an audit row's payload for `asked`, redacted with `redact` (the
    payload's own redactor; sensitive paths such as `args.token` mean the same in both). Never
    raises: on a bug here the row keeps no request (replay then reports it), the call goes on."""
    try:
        return _keep(asked, redact)
    except Exception:
        return None


def _keep(asked: Asked, redact: Callable[[Any], Any]) -> dict[str, Any]:
    req = asked.request
    context = dict(req.context)
    clean = redact(context)
    truncated = not isinstance(clean, dict) or clean.get("_truncated") is True
    out: dict[str, Any] = {
        "v": FORMAT, "role": asked.role, "principal": req.principal.as_cedar(), "action": req.action,
        "resource": req.resource.as_cedar(), "now": asked.now.astimezone(UTC).isoformat(timespec="microseconds"),
        "context": clean if not truncated else {}, "entities": _TO_BUILTINS(req.entities),
    }
    if truncated:
        out["truncated"] = True
    else:
        changed = redactions(context, clean)
        if changed:
            out["redacted"] = _TO_BUILTINS(changed)
    return out


class _Payload(msgspec.Struct):
    request: Kept | None = msgspec.field(default=None, name=REQUEST_KEY)


_DECODE_PAYLOAD = msgspec.json.Decoder(_Payload).decode


class Unreadable(ValueError):
    """A row's kept request could not be read back (not the format this engine writes)."""


def read_kept(payload: bytes | str | None) -> Kept | None:
    """The kept request in a payload's JSON text; None when the row kept none (written before
    requests were kept, or a row that is not a decision). Raises Unreadable."""
    if payload is None:
        return None
    try:
        kept = _DECODE_PAYLOAD(payload).request
    except msgspec.DecodeError as e:
        raise Unreadable(f"the kept request does not decode: {e}") from None
    if kept is not None and kept.v != FORMAT:
        raise Unreadable(f"the kept request is in format {kept.v}, this engine reads format {FORMAT}")
    return kept


__all__ = ["FORMAT", "REQUEST_KEY", "TYPE_TOKENS", "Asked", "Kept", "Redaction", "Unreadable", "keep", "read_kept",
           "redactions"]
