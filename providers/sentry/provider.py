"""The Sentry provider: issues, events, workflow and triage, notes, external issues through an
installed integration, and message capture through DSN ingest.

Secrets (vault only, rule 4): `sentry_auth_token` (an internal-integration or user auth token
with event:read, event:write, project:read) for the web API, and `sentry_dsn` for
message.capture. Hosts (rule 5): the web API at `base_url` and the DSN's ingest host, both
through the SDK's egress-checked client.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx

from providers.sdk import CallContext, ProviderBase, Refused, Tool, ToolError
from providers.sentry.api import SentryAPI, detail_of, scrub, upstream_error
from providers.sentry.envelope import DSN, InvalidDSN, envelope, message_event
from providers.sentry.inputs import (
    CreateExternalInput,
    IssueCommentInput,
    IssueEventsInput,
    IssueGetInput,
    IssuesListInput,
    IssueTriageInput,
    IssueUpdateInput,
    MessageCaptureInput,
)

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}$")
# The fields of an issue a list answer keeps (Sentry's own list adds stats and more).
ISSUE_FIELDS = ("id", "shortId", "title", "culprit", "permalink", "level", "status", "substatus", "priority",
                "count", "userCount", "firstSeen", "lastSeen", "project", "assignedTo", "numComments",
                "issueCategory", "issueType", "metadata")


class SentryProvider(ProviderBase):
    name = "sentry"

    def __init__(self, base_url: str = "https://sentry.io", *, org: str = "", timeout_s: float = 30.0,
                 health_budget_s: float = 5.0) -> None:
        if org and not SLUG.match(org):
            raise ValueError(f"sentry: {org!r} is not an organization slug")
        self.base_url = base_url.rstrip("/")
        self.org = org
        self.timeout_s = timeout_s
        self.health_budget_s = health_budget_s  # rule 6: slower than this is "degraded"

    def tools(self) -> list[Tool]:
        return [
            Tool("issues.list", "read", IssuesListInput,
                 "List an organization's issues (Sentry search syntax), following pages up to `limit`.",
                 self._issues_list),
            Tool("issue.get", "read", IssueGetInput,
                 "One issue by numeric or short id, with its activity, tags and first release.", self._issue_get),
            Tool("issue.events", "read", IssueEventsInput,
                 "The events of an issue, newest first, following pages up to `limit`.", self._issue_events),
            Tool("issue.update", "annotate", IssueUpdateInput,
                 "Change an issue's workflow state: resolve, ignore (for a while), reopen, mark seen, bookmark.",
                 self._issue_update),
            Tool("issue.triage", "tag", IssueTriageInput,
                 "Label an issue for routing: assignee (user or team) and priority.", self._issue_triage),
            Tool("issue.comment", "comment", IssueCommentInput, "Add a note (comment) to an issue.",
                 self._issue_comment),
            Tool("issue.create_external", "create", CreateExternalInput,
                 "Create an issue in an external tracker (GitHub, Jira, ...) through an integration installed "
                 "in the Sentry organization, linked to the Sentry issue.", self._create_external),
            Tool("message.capture", "create", MessageCaptureInput,
                 "Send a message event to the project of the configured DSN (Sentry's captureMessage).",
                 self._message_capture),
        ]

    # -- plumbing ---------------------------------------------------------------------------

    async def _secret(self, key: str) -> str:
        try:
            return await self.get_vault_secret(key)
        except LookupError as e:
            raise ToolError(f"sentry: {e}") from None
        except PermissionError as e:
            raise Refused("FORBIDDEN", str(e)) from None

    def _org_path(self, path: str = "") -> str:
        return f"/api/0/organizations/{self.org}/{path}"

    async def _discover_org(self, api: SentryAPI) -> None:
        """Without an `org` option, the one organization the token belongs to (an internal
        integration's token belongs to exactly one)."""
        if self.org:
            return
        orgs = await api.json("GET", "/api/0/organizations/", "organizations", params={"member": "1"})
        slugs = [o["slug"] for o in orgs if isinstance(o, dict) and isinstance(o.get("slug"), str)] \
            if isinstance(orgs, list) else []
        if len(slugs) != 1:
            raise ToolError(f"sentry: the token sees {len(slugs)} organizations; configure the provider's `org` "
                            "option")
        if not SLUG.match(slugs[0]):
            raise ToolError("sentry: the organization's slug is not a valid slug")
        self.org = slugs[0]

    def _client(self) -> httpx.AsyncClient:
        return self.http(base_url=self.base_url, timeout=self.timeout_s, headers={"Accept": "application/json"})

    @contextlib.asynccontextmanager
    async def _api(self, *, org: bool = True) -> AsyncIterator[SentryAPI]:
        """The web API for one tool call: one client, the vault's token, the organization known
        (unless `org` is false: the health probe needs none)."""
        token = await self._secret("sentry_auth_token")
        async with self._client() as client:
            api = SentryAPI(client, token)
            if org:
                await self._discover_org(api)
            yield api

    async def _resolve(self, api: SentryAPI, issue_id: str) -> str:
        """A numeric issue id for a numeric or short id (API-1A) via Sentry's shortids lookup."""
        if issue_id.isdigit():
            return issue_id
        found = await api.json("GET", self._org_path(f"shortids/{issue_id}/"), f"short id {issue_id}")
        group = found.get("group") if isinstance(found, dict) else None
        if not isinstance(group, dict) or "id" not in group:
            raise ToolError(f"sentry: short id {issue_id}: Sentry's answer names no issue")
        return str(group["id"])

    # -- tools ------------------------------------------------------------------------------

    async def _issues_list(self, ctx: CallContext, args: IssuesListInput) -> dict[str, Any]:
        params: dict[str, Any] = {"query": args.query, "sort": args.sort, "statsPeriod": args.stats_period}
        if args.project:
            params["project"] = args.project
        if args.environment:
            params["environment"] = args.environment
        async with self._api() as api:
            items, cursor = await api.pages(self._org_path("issues/"), "issues.list", params=params,
                                            limit=args.limit, cursor=args.cursor)
        issues = [{k: i.get(k) for k in ISSUE_FIELDS if k in i} for i in items if isinstance(i, dict)]
        return {"issues": issues, "count": len(issues), "next_cursor": cursor}

    async def _issue_get(self, ctx: CallContext, args: IssueGetInput) -> dict[str, Any]:
        async with self._api() as api:
            issue_id = await self._resolve(api, args.issue_id)
            return await api.json("GET", self._org_path(f"issues/{issue_id}/"), f"issue {args.issue_id}")

    async def _issue_events(self, ctx: CallContext, args: IssueEventsInput) -> dict[str, Any]:
        async with self._api() as api:
            issue_id = await self._resolve(api, args.issue_id)
            items, cursor = await api.pages(self._org_path(f"issues/{issue_id}/events/"),
                                            f"events of issue {args.issue_id}",
                                            params={"full": "true" if args.full else "false"},
                                            limit=args.limit, cursor=args.cursor, size_param="per_page")
        return {"issue_id": issue_id, "events": items, "count": len(items), "next_cursor": cursor}

    async def _put_issue(self, issue_id: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        async with self._api() as api:
            numeric = await self._resolve(api, issue_id)
            changed = await api.json("PUT", self._org_path(f"issues/{numeric}/"), what, json=body)
        return {"issue_id": numeric, "changed": changed}

    async def _issue_update(self, ctx: CallContext, args: IssueUpdateInput) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if args.status:
            body["status"] = args.status
        if args.ignore_minutes:
            if args.status != "ignored":
                raise Refused("INVALID_INPUT", "ignore_minutes only goes with status \"ignored\"")
            body["statusDetails"] = {"ignoreDuration": args.ignore_minutes}
        if args.has_seen is not None:
            body["hasSeen"] = args.has_seen
        if args.is_bookmarked is not None:
            body["isBookmarked"] = args.is_bookmarked
        if not body:
            raise Refused("INVALID_INPUT", "nothing to change: give status, has_seen or is_bookmarked")
        return await self._put_issue(args.issue_id, body, f"update issue {args.issue_id}")

    async def _issue_triage(self, ctx: CallContext, args: IssueTriageInput) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if args.assigned_to:
            body["assignedTo"] = "" if args.assigned_to == "none" else args.assigned_to
        if args.priority:
            body["priority"] = args.priority
        if not body:
            raise Refused("INVALID_INPUT", "nothing to change: give assigned_to or priority")
        return await self._put_issue(args.issue_id, body, f"triage issue {args.issue_id}")

    async def _issue_comment(self, ctx: CallContext, args: IssueCommentInput) -> dict[str, Any]:
        async with self._api() as api:
            issue_id = await self._resolve(api, args.issue_id)
            note = await api.json("POST", self._org_path(f"issues/{issue_id}/notes/"),
                                  f"comment on issue {args.issue_id}", ok=(200, 201), json={"text": args.text})
        return {"issue_id": issue_id, "note": note}

    async def _create_external(self, ctx: CallContext, args: CreateExternalInput) -> dict[str, Any]:
        async with self._api() as api:
            issue_id = await self._resolve(api, args.issue_id)
            installed = await api.json("GET", self._org_path("integrations/"), f"{args.provider} integrations",
                                       params={"providerKey": args.provider})
            candidates = [i for i in installed if isinstance(i, dict) and "id" in i] if isinstance(installed,
                                                                                                 list) else []
            if args.integration_id:
                candidates = [i for i in candidates if str(i["id"]) == args.integration_id]
            if not candidates:
                which = f" with id {args.integration_id}" if args.integration_id else ""
                raise ToolError(f"sentry: no {args.provider} integration{which} is installed in organization "
                                f"{self.org}; install one in Sentry (Settings > Integrations) first")
            if len(candidates) > 1:
                ids = ", ".join(str(i["id"]) for i in candidates)
                raise ToolError(f"sentry: several {args.provider} integrations are installed ({ids}); "
                                "choose one with integration_id")
            integration = candidates[0]
            body = {**args.fields, "title": args.title, "description": args.description}
            created = await api.json("POST", self._org_path(f"issues/{issue_id}/integrations/{integration['id']}/"),
                                     f"create {args.provider} issue for {args.issue_id}", ok=(200, 201), json=body)
        return {"issue_id": issue_id, "integration": {"id": str(integration["id"]),
                                                      "name": integration.get("name")}, "external_issue": created}

    async def _message_capture(self, ctx: CallContext, args: MessageCaptureInput) -> dict[str, Any]:
        raw = await self._secret("sentry_dsn")
        try:
            dsn = DSN.parse(raw)
        except InvalidDSN as e:
            raise ToolError(f"sentry: the vault secret sentry_dsn is not a usable DSN: {e}") from None
        # The decision id ties the Sentry event to this gateway call's audit row.
        tags = {**args.tags, "opsgate.decision_id": ctx.decision_id}
        event = message_event(args.message, level=args.level, tags=tags, environment=args.environment,
                              fingerprint=args.fingerprint)
        what = "message.capture"
        async with self.http(timeout=self.timeout_s) as client:
            try:
                response = await client.post(dsn.envelope_url, content=envelope(event), headers={
                    "X-Sentry-Auth": dsn.auth_header, "Content-Type": "application/x-sentry-envelope"})
            except httpx.TimeoutException:
                raise ToolError(f"sentry: {what}: the ingest host did not answer in time") from None
            except httpx.TransportError as e:
                raise ToolError(f"sentry: {what}: cannot reach the ingest host ({type(e).__name__})") from None
        if response.status_code != 200:
            error = upstream_error(response, what, dsn.public_key, raw)
            if response.status_code in (401, 403):  # ingest refuses a key, not a token
                detail = scrub(detail_of(response), dsn.public_key, raw)
                error = ToolError(f"sentry: {what}: the ingest host refused the DSN ({response.status_code}: "
                                  f"{detail}); check the vault secret sentry_dsn")
            raise error
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        event_id = answer.get("id") if isinstance(answer, dict) else None
        return {"event_id": event_id or event["event_id"], "level": args.level}

    # -- health (rule 6) ----------------------------------------------------------------------

    async def probe(self) -> None:
        """Sentry's cheapest authenticated call: `GET /api/0/` (version, token scopes)."""
        async with self._api(org=False) as api:
            root = await api.json("GET", "/api/0/", "health")
        if not isinstance(root, dict) or "version" not in root:
            raise ToolError("sentry: health: /api/0/ did not answer like Sentry")
        if root.get("auth") is None:
            raise ToolError("sentry: health: Sentry does not recognise the token (auth is null)")


__all__ = ["SentryProvider"]
