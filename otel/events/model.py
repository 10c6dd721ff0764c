"""The audit event: one row of `ops.run_events` per tool call (constitution rule 3).

A plain, frozen value object. Invariants checked at construction, so that a bad event fails
its own caller instead of poisoning a group-committed batch shared with other callers:

- `id` and `caller_id` are canonical (lowercase, hyphenated) UUID strings;
- `created_at` is ISO 8601 *with* a UTC offset; stores return it canonicalised by
  `utc_timestamp` (UTC, microseconds, `+00:00`), so SQLite and Postgres answer identically;
- `trace_id` / `span_id` are W3C lowercase hex (32 / 16 digits) or None;
- `duration_ms` fits Postgres `int` (0 <= ms < 2**31);
- `client_addr` is an IP address in canonical text (Python's `ipaddress`, as Postgres `inet`
  prints it) or None.

Redaction and size caps happen BEFORE an event is built; nothing here inspects payloads.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_MAX_DURATION_MS = 2**31


class RunEvent(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    provider: str
    tool: str
    decision: str
    created_at: str
    duration_ms: int
    caller_id: str | None = None
    payload: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    policy_ids: list[str] = msgspec.field(default_factory=list)
    bundle_revision: str | None = None
    exception_ids: list[str] = msgspec.field(default_factory=list)
    trace_id: str | None = None
    span_id: str | None = None
    client_addr: str | None = None  # the client's address, as the gateway's HTTP edge derived it

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not UUID_TEXT.fullmatch(self.id):
            raise ValueError(f"RunEvent.id must be a lowercase hyphenated UUID, got {self.id!r}")
        if self.caller_id is not None and (
            not isinstance(self.caller_id, str) or not UUID_TEXT.fullmatch(self.caller_id)
        ):
            raise ValueError(f"RunEvent.caller_id must be a lowercase hyphenated UUID or None, got {self.caller_id!r}")
        for name in ("provider", "tool", "decision"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value or "\x00" in value:
                raise ValueError(f"RunEvent.{name} must be a non-empty string without NUL")
        parse_timestamp(self.created_at)
        if type(self.duration_ms) is not int or not 0 <= self.duration_ms < _MAX_DURATION_MS:
            raise ValueError(f"RunEvent.duration_ms must be an int in [0, 2**31), got {self.duration_ms!r}")
        for name in ("payload", "result"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), dict):
                raise ValueError(f"RunEvent.{name} must be a dict or None")
        for name in ("policy_ids", "exception_ids"):
            ids = getattr(self, name)
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValueError(f"RunEvent.{name} must be a list of strings")
        if self.trace_id is not None and not _TRACE_ID.fullmatch(self.trace_id):
            raise ValueError(f"RunEvent.trace_id must be 32 lowercase hex digits, got {self.trace_id!r}")
        if self.span_id is not None and not _SPAN_ID.fullmatch(self.span_id):
            raise ValueError(f"RunEvent.span_id must be 16 lowercase hex digits, got {self.span_id!r}")
        if self.client_addr is not None and not _canonical_ip(self.client_addr):
            raise ValueError(f"RunEvent.client_addr must be an IP address in canonical text, got {self.client_addr!r}")


def _canonical_ip(text: Any) -> bool:
    try:
        return isinstance(text, str) and str(ipaddress.ip_address(text)) == text
    except ValueError:
        return False


class RawEvent(msgspec.Struct, frozen=True):
    """An event as stored, for readers that stream many of them (`EventStore.scan`): no validation on
    the way out, and the payload left as its JSON text for the reader to decode into its own type."""

    id: str
    provider: str
    tool: str
    created_at: str
    decision: str
    policy_ids: list[str]
    bundle_revision: str | None
    payload: str | bytes | None


def new_event_id(now_ms: int | None = None) -> str:
    """A UUIDv7 (RFC 9562): time-ordered, so primary-key inserts append to the index's right edge."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    raw = bytearray(ms.to_bytes(6, "big") + os.urandom(10))
    raw[6] = 0x70 | (raw[6] & 0x0F)
    raw[8] = 0x80 | (raw[8] & 0x3F)
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def parse_timestamp(value: str | datetime) -> datetime:
    """An aware datetime from ISO 8601 text or a datetime; naive values are refused (ambiguous)."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not an ISO 8601 timestamp: {value!r}") from None
    else:
        raise ValueError(f"timestamp must be ISO 8601 text or a datetime, got {type(value).__name__}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"timestamp must carry a UTC offset: {value!r}")
    return dt


def utc_timestamp(value: str | datetime | None = None) -> str:
    """The canonical text form used by every store: UTC, microseconds, `+00:00` (sorts as time)."""
    dt = datetime.now(UTC) if value is None else parse_timestamp(value)
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


_encode = msgspec.json.Encoder().encode
_decode_obj = msgspec.json.Decoder(dict[str, Any] | None).decode


def to_row(e: RunEvent) -> tuple[Any, ...]:
    """The event as the stores' column tuple (JSON as text; both stores bind the same shape)."""
    return (
        e.id,
        e.provider,
        e.tool,
        e.caller_id,
        None if e.payload is None else _encode(e.payload).decode(),
        None if e.result is None else _encode(e.result).decode(),
        e.duration_ms,
        utc_timestamp(e.created_at),
        e.decision,
        _encode(e.policy_ids).decode(),
        e.bundle_revision,
        _encode(e.exception_ids).decode(),
        e.trace_id,
        e.span_id,
        e.client_addr,
    )


def from_row(r: Any, *, ids: Callable[[Any], list[str]], stamp: Callable[[Any], str]) -> RunEvent:
    """An event from a stored row; `ids` and `stamp` read the columns each store keeps its own way
    (Postgres text[] and timestamptz, SQLite JSON text and ISO text)."""
    return RunEvent(
        id=r[0],
        provider=r[1],
        tool=r[2],
        caller_id=r[3],
        payload=None if r[4] is None else _decode_obj(r[4]),
        result=None if r[5] is None else _decode_obj(r[5]),
        duration_ms=r[6],
        created_at=stamp(r[7]),
        decision=r[8],
        policy_ids=ids(r[9]),
        bundle_revision=r[10],
        exception_ids=ids(r[11]),
        trace_id=r[12],
        span_id=r[13],
        client_addr=r[14],
    )


__all__ = ["UUID_TEXT", "RawEvent", "RunEvent", "from_row", "new_event_id", "parse_timestamp", "to_row",
           "utc_timestamp"]
