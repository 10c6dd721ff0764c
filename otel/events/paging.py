"""Keyset pages of the audit trail for people reading it (the console), bounded in work per page.

    page = await store.page(Filters(caller_id=..., status="denied"), limit=50)          # newest first
    older = await store.page(filters, limit=50, cursor=page.more)                      # and on
    newer = await store.page(filters, limit=50, cursor=Cursor.parse(top), newer=True)   # live tail

Invariants:
- Pages follow (created_at, id), never OFFSET: a page costs the same on the millionth row as on
  the first. A cursor is a row's own (created_at, id), so a page never repeats or skips a row
  that was there when the previous one was read, whatever is inserted meanwhile.
- Filters on columns the stores index (time, caller, provider and tool, decision) narrow the
  index scan. Filters inside JSON (result status, the role recorded with the decision, a policy
  id, an exception id) cannot be indexed for every combination, so a page examines at most
  `budget` rows of the indexed range: a page that runs out says how far back it searched
  (`searched_to`) and gives the cursor to search on (`more`). No page reads the whole table.
- Every value is a bound parameter; the cursor is parsed and checked before any SQL sees it.
"""

from __future__ import annotations

import re

import msgspec

from otel.events.model import UUID_TEXT, RunEvent, utc_timestamp

BUDGET = 20_000  # rows one page may examine for JSON filters
MAX_PAGE = 500
_STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")


class Cursor(msgspec.Struct, frozen=True):
    """A row's position in the trail: its created_at (canonical UTC text) and id."""

    created_at: str
    id: str

    def text(self) -> str:
        return f"{self.created_at}_{self.id}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """From `text()`; ValueError for anything else (the cursor comes from a browser)."""
        stamp, _, event_id = text.partition("_")
        if not _STAMP.fullmatch(stamp) or not UUID_TEXT.fullmatch(event_id):
            raise ValueError("not a trail cursor")
        return cls(utc_timestamp(stamp), event_id)

    @classmethod
    def of(cls, event: RunEvent) -> Cursor:
        return cls(utc_timestamp(event.created_at), event.id)


class Filters(msgspec.Struct, frozen=True, kw_only=True):
    """What a reader of the trail narrows it by; None is "any". `tool` is the tool's own name
    (`scan.repo`), as stored, with `provider` beside it."""

    since: str | None = None  # inclusive, canonical UTC text
    until: str | None = None  # exclusive
    provider: str | None = None
    tool: str | None = None
    caller_id: str | None = None
    decision: str | None = None
    status: str | None = None  # result.status
    role: str | None = None  # the caller's role as decided (payload._request.role)
    policy_id: str | None = None  # one of policy_ids
    exception_id: str | None = None  # one of exception_ids

    def __post_init__(self) -> None:
        if self.caller_id is not None and not UUID_TEXT.fullmatch(self.caller_id):
            raise ValueError("caller_id must be a lowercase hyphenated UUID")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and not _STAMP.fullmatch(value):
                raise ValueError(f"{name} must be canonical UTC text (otel.events.utc_timestamp)")

    @property
    def unindexed(self) -> bool:
        """Whether a filter inside JSON is set (the page then works within its budget)."""
        return any(v is not None for v in (self.status, self.role, self.policy_id, self.exception_id))


class Page(msgspec.Struct, frozen=True):
    """Rows in the order asked (newest first, or oldest first for `newer`).

    `more`: the cursor to continue from (None: nothing further that far). `searched_to`: set when
    the page's budget ran out first: the created_at it searched as far as; rows beyond it were not
    looked at yet, and `more` continues from there."""

    events: list[RunEvent]
    more: Cursor | None = None
    searched_to: str | None = None


def check_limit(limit: int, budget: int) -> None:
    if type(limit) is not int or not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be an int in [1, {MAX_PAGE}]")
    if type(budget) is not int or budget < limit:
        raise ValueError("budget must be an int no smaller than limit")


__all__ = ["BUDGET", "MAX_PAGE", "Cursor", "Filters", "Page", "check_limit"]
