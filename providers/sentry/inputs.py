"""The Sentry tools' inputs (constitution rule 9: each carries an explicit `version`).

Optional strings default to "" ("leave unchanged" / "not given") rather than None so the
policy engine can type them: a policy can say, e.g., that operators may not resolve issues
(`context.args.status == "resolved"`).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

# A numeric issue id ("4711") or a short id ("API-1A"); never anything that could change the path.
IssueId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
                              description="numeric issue id or short id such as API-1A")]
Limit = Annotated[int, Meta(ge=1, le=1000, description="most items to return, following pages as needed")]
Cursor = Annotated[str, Meta(max_length=200, description="resume from the next_cursor of an earlier answer")]


class Input(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    version: Literal["1.0"] = "1.0"


class IssuesListInput(Input):
    query: Annotated[str, Meta(max_length=1000, description="Sentry search, e.g. is:unresolved level:error")] = \
        "is:unresolved"
    project: list[int] = []  # project ids; empty: every project the token may see
    environment: list[str] = []
    stats_period: Literal["", "24h", "14d"] = "24h"
    sort: Literal["date", "new", "freq", "user", "trends", "inbox"] = "date"
    limit: Limit = 100
    cursor: Cursor = ""


class IssueGetInput(Input):
    issue_id: IssueId


class IssueEventsInput(Input):
    issue_id: IssueId
    full: bool = False  # include each event's entries (stack traces, breadcrumbs)
    limit: Limit = 50
    cursor: Cursor = ""


class IssueUpdateInput(Input):
    """Workflow state: resolve, ignore (optionally for a while), reopen, mark seen, bookmark."""

    issue_id: IssueId
    status: Literal["", "resolved", "resolvedInNextRelease", "unresolved", "ignored"] = ""
    ignore_minutes: Annotated[int, Meta(ge=0, le=525600)] = 0  # with status "ignored": for this long
    has_seen: bool | None = None
    is_bookmarked: bool | None = None


class IssueTriageInput(Input):
    """Routing labels: who owns the issue and how urgent it is."""

    issue_id: IssueId
    # "user:<id>", "team:<id>", a username or email; "none" unassigns; "" leaves it unchanged.
    assigned_to: Annotated[str, Meta(max_length=200)] = ""
    priority: Literal["", "high", "medium", "low"] = ""


class IssueCommentInput(Input):
    issue_id: IssueId
    text: Annotated[str, Meta(min_length=1, max_length=8000)]


class CreateExternalInput(Input):
    issue_id: IssueId
    title: Annotated[str, Meta(min_length=1, max_length=255)]
    description: Annotated[str, Meta(max_length=20000)] = ""
    provider: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_-]{0,40}$",
                                  description="integration provider key: github, jira, gitlab, ...")] = "github"
    integration_id: Annotated[str, Meta(pattern=r"^[0-9]{0,20}$")] = ""  # "": the only installed one
    fields: dict[str, str] = {}  # provider-specific fields, e.g. {"repo": "acme/api"}


class MessageCaptureInput(Input):
    message: Annotated[str, Meta(min_length=1, max_length=8192)]
    level: Literal["fatal", "error", "warning", "info", "debug"] = "info"
    environment: Annotated[str, Meta(max_length=64)] = ""
    tags: dict[str, str] = {}
    fingerprint: list[str] = []


__all__ = ["CreateExternalInput", "IssueCommentInput", "IssueEventsInput", "IssueGetInput",
           "IssueTriageInput", "IssueUpdateInput", "IssuesListInput", "MessageCaptureInput"]
