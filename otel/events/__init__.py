"""The `ops.run_events` audit trail: one durable row per tool call (constitution rule 3).

    from otel.events import RunEvent, SqliteEventStore, new_event_id, utc_timestamp

    store = SqliteEventStore("var/events.db")
    # or, for Postgres behind a local durable outbox:
    store = OutboxEventStore("var/events-outbox.db", PostgresEventStore(dsn))
    await store.append(RunEvent(id=new_event_id(), provider="socket", tool="scan.repo",
                                decision="allow", created_at=utc_timestamp(), duration_ms=12))

`append` returns once the row is committed (group commit across concurrent callers).
`begin` journals the intent of a call about to run, so a crash leaves an `interrupted` row.
Backends live side by side: `base` (contract, group commit, errors), `sqlite`, `postgres`,
`outbox` (local journal, shipped to a remote store), `journal` (durability, intents).
"""

from otel.events.base import (
    EventRejected,
    EventStore,
    EventStoreError,
    EventStoreUnavailable,
    StoreStats,
)
from otel.events.journal import Durability
from otel.events.model import RawEvent, RunEvent, new_event_id, parse_timestamp, utc_timestamp
from otel.events.outbox import OutboxEventStore
from otel.events.postgres import PostgresEventStore, apply_migrations
from otel.events.sqlite import SqliteEventStore

__all__ = [
    "Durability",
    "EventRejected",
    "EventStore",
    "EventStoreError",
    "EventStoreUnavailable",
    "OutboxEventStore",
    "PostgresEventStore",
    "RawEvent",
    "RunEvent",
    "SqliteEventStore",
    "StoreStats",
    "apply_migrations",
    "new_event_id",
    "parse_timestamp",
    "utc_timestamp",
]
