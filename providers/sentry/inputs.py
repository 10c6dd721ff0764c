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
    project: Annotated[list[int], Meta(description="numeric project ids; empty: every project the token may see")] \
        = []
    environment: Annotated[list[str], Meta(description="environment names; empty: all")] = []
    stats_period: Annotated[Literal["", "24h", "14d"], Meta(
        description="period of each issue's event-count stats; \"\": none")] = "24h"
    sort: Annotated[Literal["date", "new", "freq", "user", "trends", "inbox"], Meta(
        description="order: last seen (date), first seen (new), events (freq), users, trends or inbox")] = "date"
    limit: Limit = 100
    cursor: Cursor = ""


class IssueGetInput(Input):
    issue_id: IssueId


class IssueEventsInput(Input):
    issue_id: IssueId
    full: Annotated[bool, Meta(description="include each event's entries (stack traces, breadcrumbs)")] = False
    limit: Limit = 50
    cursor: Cursor = ""


class IssueUpdateInput(Input):
    """Workflow state: resolve, ignore (optionally for a while), reopen, mark seen, bookmark."""

    issue_id: IssueId
    status: Annotated[Literal["", "resolved", "resolvedInNextRelease", "unresolved", "ignored"], Meta(
        description="new status; \"\" leaves it unchanged")] = ""
    ignore_minutes: Annotated[int, Meta(ge=0, le=525600, description=(
        "with status \"ignored\": ignore for this many minutes; 0: until it is unignored"))] = 0
    has_seen: Annotated[bool | None, Meta(description="mark seen (true) or unseen (false); null: unchanged")] = None
    is_bookmarked: Annotated[bool | None, Meta(description="bookmark (true) or not (false); null: unchanged")] = None


class IssueTriageInput(Input):
    """Routing labels: who owns the issue and how urgent it is."""

    issue_id: IssueId
    assigned_to: Annotated[str, Meta(max_length=200, description=(
        "\"user:<id>\", \"team:<id>\", a username or email; \"none\" unassigns; \"\" leaves it unchanged"))] = ""
    priority: Annotated[Literal["", "high", "medium", "low"], Meta(description="\"\" leaves it unchanged")] = ""


class IssueCommentInput(Input):
    issue_id: IssueId
    text: Annotated[str, Meta(min_length=1, max_length=8000, description="the note, in Markdown")]


class CreateExternalInput(Input):
    issue_id: IssueId
    title: Annotated[str, Meta(min_length=1, max_length=255, description="title of the external issue")]
    description: Annotated[str, Meta(max_length=20000, description="body of the external issue")] = ""
    provider: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_-]{0,40}$",
                                  description="integration provider key: github, jira, gitlab, ...")] = "github"
    integration_id: Annotated[str, Meta(pattern=r"^[0-9]{0,20}$", description=(
        "the integration to use; \"\": the only one of that provider installed in the org"))] = ""
    fields: Annotated[dict[str, str], Meta(description="provider-specific fields, e.g. {\"repo\": \"acme/api\"}")] = {}


class MessageCaptureInput(Input):
    message: Annotated[str, Meta(min_length=1, max_length=8192, description="the message to record")]
    level: Annotated[Literal["fatal", "error", "warning", "info", "debug"], Meta(description="event level")] = "info"
    environment: Annotated[str, Meta(max_length=64, description="environment name; \"\": none")] = ""
    tags: Annotated[dict[str, str], Meta(description="extra event tags (the gateway adds its decision id)")] = {}
    fingerprint: Annotated[list[str], Meta(description="grouping fingerprint; empty: Sentry's default")] = []


__all__ = ["CreateExternalInput", "IssueCommentInput", "IssueEventsInput", "IssueGetInput",
           "IssueTriageInput", "IssueUpdateInput", "IssuesListInput", "MessageCaptureInput"]
