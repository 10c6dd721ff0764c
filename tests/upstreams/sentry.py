"""A loopback imitation of Sentry's web API and DSN ingest, faithful to PROVIDER-APIS.md:
bearer tokens with scopes, `{"detail": ...}` errors, Link-header cursor pagination
(`results="true|false"`, `cursor="0:<offset>:0"`), 429 with X-Sentry-Rate-Limit-* and no
Retry-After on the web API, 429 with Retry-After and X-Sentry-Rate-Limits on ingest."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from tests.upstreams.imitation import Imitation, Reply, Seen

READ = frozenset({"event:read", "project:read", "org:read"})
FULL = READ | {"event:write"}
STATUSES = {"resolved", "resolvedInNextRelease", "unresolved", "ignored"}
NOT_FOUND = Reply(404, {"detail": "The requested resource does not exist"})


class SentryImitation(Imitation):
    def __init__(self, *, org: str = "acme", tokens: dict[str, frozenset[str]], dsn_key: str,
                 project_id: str = "42", issues: int = 250, events_per_issue: int = 130) -> None:
        super().__init__()
        self.org = org
        self.tokens = tokens
        self.dsn_key = dsn_key
        self.project_id = project_id
        self.rate_limited = False  # web API answers 429 while set
        self.ingest_rate_limited = False
        projects = [{"id": "42", "name": "api", "slug": "api", "platform": "python"},
                    {"id": "43", "name": "web", "slug": "web", "platform": "javascript"}]
        now = 1_795_000_000
        self.issues: dict[str, dict[str, Any]] = {}
        for i in range(issues):
            project = projects[i % 2]
            iid = str(1000 + i)
            self.issues[iid] = {
                "id": iid, "shortId": f"{project['slug'].upper()}-{i + 1}", "title": f"Error {i}",
                "culprit": f"app.module{i}", "permalink": f"https://{org}.sentry.io/issues/{iid}/",
                "level": "error", "status": "resolved" if i % 5 == 4 else "unresolved", "substatus": "ongoing",
                "priority": "medium", "count": str(10 + i), "userCount": i, "firstSeen": "2026-11-01T00:00:00Z",
                "lastSeen": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - i * 60)),
                "project": project, "assignedTo": None, "numComments": 0, "metadata": {"type": "Error"},
                "issueCategory": "error", "issueType": "error", "isBookmarked": False, "hasSeen": False}
        self.events_per_issue = events_per_issue
        self.notes: dict[str, list[dict[str, Any]]] = {}
        self.integrations = [{"id": "24", "name": "acme-gh", "provider": {"key": "github", "name": "GitHub"},
                              "status": "active"}]
        self.external: list[dict[str, Any]] = []
        self.captured: list[dict[str, Any]] = []  # {"auth", "header", "item", "event"}

    def reset(self) -> None:
        super().reset()
        self.captured.clear()
        self.rate_limited = self.ingest_rate_limited = False

    # -- helpers ----------------------------------------------------------------------------

    def _scopes(self, req: Seen) -> frozenset[str] | None:
        auth = req.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return None
        return self.tokens.get(auth[len("Bearer "):])

    def _page(self, req: Seen, items: list[Any], size_param: str) -> Reply:
        try:
            size = int(req.q(size_param, "100") or "100")
        except ValueError:
            return Reply(400, {"detail": f"Invalid {size_param}"})
        if not 1 <= size <= 100:
            return Reply(400, {"detail": f"Invalid {size_param}: must be between 1 and 100"})
        m = re.fullmatch(r"\d+:(\d+):[01]", req.q("cursor", "0:0:0") or "0:0:0")
        if not m:
            return Reply(400, {"detail": "Invalid cursor parameter."})
        offset = int(m[1])
        page = items[offset:offset + size]
        base = f"{self.url}{req.path}"
        prev_off, next_off = max(0, offset - size), offset + size
        link = (f'<{base}?cursor=0:{prev_off}:1>; rel="previous"; results="{str(offset > 0).lower()}"; '
                f'cursor="0:{prev_off}:1", '
                f'<{base}?cursor=0:{next_off}:0>; rel="next"; results="{str(next_off < len(items)).lower()}"; '
                f'cursor="0:{next_off}:0"')
        return Reply(200, page, {"Link": link})

    def _issue(self, ident: str) -> dict[str, Any] | None:
        return self.issues.get(ident)

    # -- routes -----------------------------------------------------------------------------

    def handle(self, req: Seen) -> Reply:
        if re.fullmatch(r"/api/\d+/envelope/", req.path):
            return self._ingest(req)
        if not req.path.startswith("/api/0/"):
            return NOT_FOUND
        scopes = self._scopes(req)
        if req.path == "/api/0/" and "authorization" not in req.headers:
            return Reply(200, {"version": "0", "auth": None, "user": None})
        if scopes is None:
            return Reply(401, {"detail": "Invalid token"})
        if self.rate_limited:
            reset = int(time.time()) + 37
            return Reply(429, {"detail": "You are attempting to use this endpoint too frequently. Limit is 40 "
                                         "requests in 1 seconds"},
                         {"X-Sentry-Rate-Limit-Limit": "40", "X-Sentry-Rate-Limit-Remaining": "0",
                          "X-Sentry-Rate-Limit-Reset": str(reset), "X-Sentry-Rate-Limit-ConcurrentLimit": "25",
                          "X-Sentry-Rate-Limit-ConcurrentRemaining": "24"})
        if req.path == "/api/0/":
            return Reply(200, {"version": "0", "auth": {"scopes": sorted(scopes)},
                               "user": {"id": "1", "name": "Ops Bot"}})
        if req.path == "/api/0/organizations/":
            return Reply(200, [{"id": "7", "slug": self.org, "name": "Acme"}])
        m = re.fullmatch(rf"/api/0/organizations/{re.escape(self.org)}/(.*)", req.path)
        if not m:
            return NOT_FOUND
        rest = m[1]
        write = req.method in ("PUT", "POST")
        if ("event:write" if write else "event:read") not in scopes:
            return Reply(403, {"detail": "You do not have permission to perform this action."})
        if rest == "issues/" and req.method == "GET":
            return self._issues(req)
        if rest == "integrations/" and req.method == "GET":
            key = req.q("providerKey")
            return Reply(200, [i for i in self.integrations if key is None or i["provider"]["key"] == key])
        if sm := re.fullmatch(r"shortids/([A-Za-z0-9-]+)/", rest):
            found = next((i for i in self.issues.values() if i["shortId"] == sm[1]), None)
            return NOT_FOUND if found is None else Reply(200, {
                "organizationSlug": self.org, "projectSlug": found["project"]["slug"], "groupId": found["id"],
                "shortId": found["shortId"], "group": found})
        im = re.fullmatch(r"issues/(\d+)/(.*)", rest)
        if not im or (issue := self._issue(im[1])) is None:
            return NOT_FOUND
        sub = im[2]
        if sub == "" and req.method == "GET":
            return Reply(200, {**issue, "activity": [{"type": "first_seen"}], "tags": [{"key": "level"}],
                               "firstRelease": None})
        if sub == "" and req.method == "PUT":
            return self._update(issue, req.json() or {})
        if sub == "events/" and req.method == "GET":
            events = [{"id": f"{issue['id']}-{n}", "eventID": uuid.uuid5(uuid.NAMESPACE_OID, f"{issue['id']}-{n}").hex,
                       "groupID": issue["id"], "title": issue["title"], "message": f"event {n}",
                       "dateCreated": "2026-11-20T00:00:00Z", "platform": "python",
                       "tags": [{"key": "env", "value": "prod"}]} for n in range(self.events_per_issue)]
            return self._page(req, events, "per_page")
        if sub == "notes/" and req.method == "POST":
            text = (req.json() or {}).get("text", "")
            notes = self.notes.setdefault(issue["id"], [])
            if any(n["data"]["text"] == text for n in notes):
                return Reply(400, {"detail": "You have already posted that comment."})
            note = {"id": str(len(notes) + 1), "type": "note", "data": {"text": text}, "user": {"id": "1"},
                    "dateCreated": "2026-11-21T00:00:00Z"}
            notes.append(note)
            return Reply(201, note)
        if (xm := re.fullmatch(r"integrations/(\d+)/", sub)) and req.method == "POST":
            if not any(i["id"] == xm[1] for i in self.integrations):
                return NOT_FOUND
            body = req.json() or {}
            if not body.get("title"):
                return Reply(400, {"detail": "title is required"})
            created = {"id": str(len(self.external) + 1), "key": f"acme/api#{len(self.external) + 1}",
                       "url": f"https://github.com/acme/api/issues/{len(self.external) + 1}",
                       "integrationId": xm[1], "displayName": f"acme/api#{len(self.external) + 1}"}
            self.external.append({"issue": issue["id"], "body": body, "created": created})
            return Reply(201, created)
        return NOT_FOUND

    def _issues(self, req: Seen) -> Reply:
        query = req.q("query", "") or ""
        items = list(self.issues.values())
        for status in ("unresolved", "resolved", "ignored"):
            if f"is:{status}" in query:
                items = [i for i in items if i["status"] == status]
        projects = set(req.query.get("project", []))
        if projects:
            items = [i for i in items if i["project"]["id"] in projects]
        return self._page(req, items, "limit")

    def _update(self, issue: dict[str, Any], body: dict[str, Any]) -> Reply:
        changed: dict[str, Any] = {}
        if "status" in body:
            if body["status"] not in STATUSES:
                return Reply(400, {"detail": f"\"{body['status']}\" is not a valid choice."})
            issue["status"] = changed["status"] = body["status"]
            changed["statusDetails"] = body.get("statusDetails", {})
        if "assignedTo" in body:
            who = body["assignedTo"]
            if who and not re.fullmatch(r"(user|team):\d+|[a-z]+", who):
                return Reply(400, {"detail": "Could not parse actor. Format should be `type:id` where type is "
                                             "`team` or `user`."})
            kind, _, ident = who.partition(":") if ":" in who else ("user", "", who)
            issue["assignedTo"] = changed["assignedTo"] = {"type": kind, "id": ident or who} if who else None
        if "priority" in body:
            if body["priority"] not in ("high", "medium", "low"):
                return Reply(400, {"detail": "Invalid priority"})
            issue["priority"] = changed["priority"] = body["priority"]
        for key in ("hasSeen", "isBookmarked"):
            if key in body:
                issue[key] = changed[key] = bool(body[key])
        return Reply(200, changed)

    def _ingest(self, req: Seen) -> Reply:
        auth = req.headers.get("x-sentry-auth", "")
        key = re.search(r"sentry_key=([^,\s]+)", auth)
        if not auth.startswith("Sentry ") or "sentry_version=7" not in auth or not key:
            return Reply(401, {"detail": "missing authorization information"})
        if key[1] != self.dsn_key or req.path != f"/api/{self.project_id}/envelope/":
            return Reply(403, {"detail": "event submission rejected with_reason: ProjectId"})
        if self.ingest_rate_limited:
            return Reply(429, {"detail": "event submission rejected with_reason: RateLimited"},
                         {"Retry-After": "23", "X-Sentry-Rate-Limits": "23:error:organization"})
        lines = req.body.split(b"\n")
        try:
            header, item, payload = json.loads(lines[0]), json.loads(lines[1]), lines[2]
            event = json.loads(payload)
        except (IndexError, ValueError):
            return Reply(400, {"detail": "invalid envelope"})
        if item.get("type") != "event" or item.get("length") != len(payload):
            return Reply(400, {"detail": "invalid envelope item"})
        self.captured.append({"auth": auth, "header": header, "item": item, "event": event})
        return Reply(200, {"id": event["event_id"]})


__all__ = ["FULL", "READ", "SentryImitation"]
