"""Sentry's DSN ingest: parse a DSN, build an event envelope, and say where it goes.

A DSN is `https://<public key>@o<org>.ingest.sentry.io/<project id>` (an optional path may sit
before the project id on self-hosted Sentry). An event is sent as an envelope: three
newline-separated JSON documents (envelope header, item header, event) POSTed to
`<scheme>://<host>/api/<project>/envelope/` with an `X-Sentry-Auth` header naming the key.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec

CLIENT = "opsgate-sentry/1.0"


class InvalidDSN(ValueError):
    """The DSN cannot be used; the message never repeats the DSN (its key is a credential)."""


@dataclass(frozen=True)
class DSN:
    scheme: str
    host: str  # with the port when one is given
    path: str  # "" or "/prefix" (self-hosted Sentry under a path)
    public_key: str
    project_id: str

    @classmethod
    def parse(cls, text: str) -> DSN:
        parts = urlsplit(text.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidDSN("the DSN is not an http(s) URL with a host")
        if not parts.username:
            raise InvalidDSN("the DSN has no public key (https://<key>@host/<project>)")
        path, _, project = parts.path.rstrip("/").rpartition("/")
        if not project.isdigit():
            raise InvalidDSN("the DSN does not end in a numeric project id")
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        return cls(parts.scheme, host, path, parts.username, project)

    @property
    def envelope_url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}/api/{self.project_id}/envelope/"

    @property
    def auth_header(self) -> str:
        return f"Sentry sentry_version=7, sentry_client={CLIENT}, sentry_key={self.public_key}"


def message_event(message: str, *, level: str, tags: dict[str, str], environment: str = "",
                  fingerprint: list[str] | None = None, now: datetime | None = None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "event_id": uuid.uuid4().hex,
        "timestamp": (now or datetime.now(UTC)).timestamp(),
        "platform": "other",
        "level": level,
        "logger": "opsgate",
        "message": {"formatted": message},
        "tags": tags,
        "sdk": {"name": CLIENT.split("/")[0], "version": CLIENT.split("/")[1]},
    }
    if environment:
        event["environment"] = environment
    if fingerprint:
        event["fingerprint"] = fingerprint
    return event


def envelope(event: dict[str, Any], *, now: datetime | None = None) -> bytes:
    payload = msgspec.json.encode(event)
    sent_at = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    header = msgspec.json.encode({"event_id": event["event_id"], "sent_at": sent_at})
    item = msgspec.json.encode({"type": "event", "length": len(payload), "content_type": "application/json"})
    return b"\n".join((header, item, payload)) + b"\n"


__all__ = ["DSN", "InvalidDSN", "envelope", "message_event"]
