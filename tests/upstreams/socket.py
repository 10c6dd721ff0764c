"""A loopback imitation of Socket.dev's REST API (PROVIDER-APIS.md, "Socket.dev").

Faithful where the provider depends on it: `/v0` paths, Bearer or Basic (token as username)
auth, token scopes per endpoint, hourly quota units per endpoint (403 "Insufficient max
quota"), error bodies `{"error": {"message", "details"}}`, 429 with `Retry-After`, page-number
paging for repos (`nextPage`), cursor paging for alerts (`endCursor`, with an empty page
mid-stream), NDJSON for purl lookups, multipart full-scan uploads, and 202 for an unfinished
diff scan. Tests steer it through `SocketState` (scopes, quota, forced failures, delays) and
read what it received from `requests`, `scans` and `triage`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from litestar import Litestar, Request, Response, route

ALL_SCOPES = frozenset({"full-scans:list", "full-scans:create", "repo:list", "alerts:list", "packages:list",
                        "triage:alerts-update"})
SEVERITIES = ("low", "medium", "high", "critical")


@dataclass
class Forced:
    """A failure to answer instead of the real response (`times` requests, or forever if None)."""

    path: str  # regex searched in the request path
    status: int
    message: str
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = 1
    skip: int = 0  # matching requests answered normally before this failure starts


@dataclass
class SocketState:
    token: str
    org: str = "acme"
    scopes: set[str] = field(default_factory=lambda: set(ALL_SCOPES))
    quota: int = 100_000
    max_quota: int = 100_000
    quota_delay_s: float = 0.0
    repos: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    empty_page_after: int = 20  # the alerts stream answers one empty page once this many were given
    alerts_page_cap: int = 20  # Socket may give fewer alerts than per_page asks for (even none)
    packages: dict[str, dict[str, Any]] = field(default_factory=dict)
    diff_scans: dict[str, dict[str, str] | None] = field(default_factory=dict)  # None: not finished (202)
    forced: list[Forced] = field(default_factory=list)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    scans: list[dict[str, Any]] = field(default_factory=list)
    triage: dict[str, dict[str, Any]] = field(default_factory=dict)

    def force(self, path: str, status: int, message: str, *, times: int | None = 1, skip: int = 0,
              **headers: str) -> None:
        self.forced.append(Forced(path, status, message, {k.replace("_", "-"): v for k, v in headers.items()},
                                  times, skip))


def make_repos(n: int) -> list[dict[str, Any]]:
    return [{"id": f"repo-{i:04d}", "slug": f"svc-{i:04d}", "name": f"svc-{i:04d}", "default_branch": "main",
             "head_full_scan_id": f"scan-{i:04d}", "visibility": "private", "archived": i % 50 == 0,
             "html_url": f"https://github.com/acme/svc-{i:04d}", "updated_at": "2026-11-01T00:00:00.000Z"}
            for i in range(n)]


def make_alerts(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        sev = SEVERITIES[i % 4]
        out.append({
            "id": f"alert-{i:04d}", "key": f"QmKey{i:04d}", "type": "criticalCVE" if sev == "critical" else "cve",
            "title": f"Vulnerability {i}", "severity": sev, "status": "cleared" if i % 7 == 0 else "open",
            "category": "vulnerability", "createdAt": "2026-10-01T00:00:00.000Z",
            "clearedAt": "2026-10-02T00:00:00.000Z" if i % 7 == 0 else None,
            "dashboardUrl": f"https://socket.dev/dashboard/org/acme/alerts/{i}",
            "vulnerability": {"cveId": f"CVE-2026-{1000 + i}", "ghsaIds": [f"GHSA-{i:04d}-xxxx-yyyy"],
                              "cvssScore": 7.5, "epssScore": 0.02, "isKev": i % 11 == 0},
            "locations": [{"repository": {"slug": f"svc-{i % 3:04d}"}, "branch": {"name": "main"},
                           "artifact": {"type": "npm", "name": f"lib{i}", "version": "1.0.0"}}]})
    return out


def artifact(purl: str) -> dict[str, Any]:
    kind, rest = purl.removeprefix("pkg:").split("/", 1)
    name, _, version = rest.partition("@")
    return {"type": kind, "name": name, "version": version, "id": f"id-{name}", "inputPurl": purl,
            "score": {"overall": 0.82, "supplyChain": 0.9, "vulnerability": 1.0, "quality": 0.7,
                      "maintenance": 0.8, "license": 1.0},
            "alerts": [{"key": f"QmPkg-{name}", "type": "usesEval", "severity": "middle", "category": "supplyChainRisk",
                        "file": f"package/{name}.js", "action": "warn"}]}


# Scope and quota units per endpoint (PROVIDER-APIS.md: scans/repos 1, alerts 10, purl 100, quota 0).
ENDPOINTS: list[tuple[str, str, str | None, int]] = [
    ("GET", r"^/v0/quota$", None, 0),
    ("GET", r"^/v0/organizations$", None, 0),
    ("GET", r"^/v0/orgs/[^/]+/repos$", "repo:list", 1),
    ("POST", r"^/v0/orgs/[^/]+/full-scans$", "full-scans:create", 1),
    ("GET", r"^/v0/orgs/[^/]+/alerts$", "alerts:list", 10),
    ("POST", r"^/v0/orgs/[^/]+/purl$", "packages:list", 100),
    ("POST", r"^/v0/orgs/[^/]+/triage/alerts$", "triage:alerts-update", 1),
    ("GET", r"^/v0/orgs/[^/]+/diff-scans/[^/]+/gfm$", "full-scans:list", 1),
]


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response({"error": {"message": message, "details": None}}, status_code=status, headers=headers or {})


def presented_token(request: Request[Any, Any, Any]) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return None
        return user if not password else None
    return None


def build_app(state: SocketState) -> Litestar:
    async def gate(request: Request[Any, Any, Any]) -> Response[Any] | None:
        """Auth, forced failures, scopes and quota: what every Socket endpoint does first."""
        path = request.url.path
        state.requests.append((request.method, path, dict(request.query_params)))
        for f in list(state.forced):
            if re.search(f.path, path):
                if f.skip > 0:
                    f.skip -= 1
                    continue
                if f.times is not None:
                    f.times -= 1
                    if f.times <= 0:
                        state.forced.remove(f)
                # A careless upstream may echo what it was sent; the provider must scrub it.
                return error(f.status, f.message.replace("{auth}", request.headers.get("authorization", "")),
                             f.headers)
        if presented_token(request) != state.token:
            return error(401, "Invalid API key or token")
        for method, pattern, scope, units in ENDPOINTS:
            if method == request.method and re.match(pattern, path):
                if scope is not None and scope not in state.scopes:
                    return error(403, f"Insufficient permissions for API method (needs {scope})")
                if units > state.quota:
                    return error(403, "Insufficient max quota for API method")
                state.quota -= units
                return None
        return error(404, "Not found")

    def org_or_404(org: str) -> Response[Any] | None:
        return None if org == state.org else error(404, f"Organization {org} not found")

    @route("/v0/quota", http_method=["GET"])
    async def quota(request: Request[Any, Any, Any]) -> Response[Any]:
        denied = await gate(request)
        if state.quota_delay_s:
            await asyncio.sleep(state.quota_delay_s)  # a slow upstream
        if denied is not None:
            return denied
        return Response({"quota": state.quota, "maxQuota": state.max_quota,
                         "nextWindowRefresh": "2026-11-21T20:00:00.000Z"})

    @route("/v0/organizations", http_method=["GET"])
    async def organizations(request: Request[Any, Any, Any]) -> Response[Any]:
        if (denied := await gate(request)) is not None:
            return denied
        return Response({"organizations": {"org-1": {"id": "org-1", "name": "Acme", "image": None,
                                                     "plan": "team", "slug": state.org}}})

    @route("/v0/orgs/{org:str}/repos", http_method=["GET"])
    async def repos(request: Request[Any, Any, Any]) -> Response[Any]:
        org = request.path_params["org"]
        if (denied := await gate(request) or org_or_404(org)) is not None:
            return denied
        per_page = int(request.query_params.get("per_page", "30"))
        page = int(request.query_params.get("page", "1"))
        if not 1 <= per_page <= 100 or page < 1:
            return error(400, "per_page must be between 1 and 100")
        start = (page - 1) * per_page
        results = state.repos[start:start + per_page]
        more = start + per_page < len(state.repos)
        return Response({"results": results, "nextPage": page + 1 if more else None})

    @route("/v0/orgs/{org:str}/full-scans", http_method=["POST"])
    async def full_scan(request: Request[Any, Any, Any]) -> Response[Any]:
        org = request.path_params["org"]
        if (denied := await gate(request) or org_or_404(org)) is not None:
            return denied
        q = request.query_params
        if not q.get("repo"):
            return error(400, "repo is required")
        form = await request.form()
        files = {}
        for name, value in form.multi_items():
            content = await value.read() if hasattr(value, "read") else str(value).encode()
            files[name] = content.decode()
        if not files:
            return error(400, "No manifest files were uploaded")
        scan_id = str(uuid.uuid4())
        state.scans.append({"id": scan_id, "params": dict(q), "files": files})
        return Response({"id": scan_id, "organization_slug": org, "repository_slug": q["repo"],
                         "branch": q.get("branch"), "commit_hash": q.get("commit_hash"),
                         "html_report_url": f"https://socket.dev/dashboard/org/{org}/sbom/{scan_id}",
                         "api_url": f"https://api.socket.dev/v0/orgs/{org}/full-scans/{scan_id}",
                         "scan_state": "pending",
                         "unmatchedFiles": sorted(n for n in files if not n.endswith((".json", ".lock", ".txt")))},
                        status_code=201)

    @route("/v0/orgs/{org:str}/alerts", http_method=["GET"])
    async def alerts(request: Request[Any, Any, Any]) -> Response[Any]:
        org = request.path_params["org"]
        if (denied := await gate(request) or org_or_404(org)) is not None:
            return denied
        q = request.query_params
        per_page = int(q.get("per_page", "1000"))
        if not 1 <= per_page <= 5000:
            return error(400, "per_page must be between 1 and 5000")
        chosen = [a for a in state.alerts
                  if a["status"] == q.get("filters.alertStatus", "open")
                  and ("filters.alertSeverity" not in q or a["severity"] == q["filters.alertSeverity"])
                  and ("filters.repoSlug" not in q
                       or any(loc["repository"]["slug"] == q["filters.repoSlug"] for loc in a["locations"]))]
        cursor = q.get("startAfterCursor")
        if cursor is None:
            pos, gap_done = 0, False
        elif m := re.fullmatch(r"(pos|gap)-(\d+)", cursor):
            pos, gap_done = int(m[2]), m[1] == "gap"
        else:
            return error(400, "Invalid startAfterCursor")
        if pos == state.empty_page_after and not gap_done and pos < len(chosen):
            return Response({"endCursor": f"gap-{pos}", "items": []})  # an empty page mid-stream
        items = chosen[pos:pos + min(per_page, state.alerts_page_cap)]
        end = pos + len(items)
        return Response({"endCursor": f"pos-{end}" if end < len(chosen) else None, "items": items})

    @route("/v0/orgs/{org:str}/purl", http_method=["POST"])
    async def purl(request: Request[Any, Any, Any]) -> Response[Any]:
        org = request.path_params["org"]
        if (denied := await gate(request) or org_or_404(org)) is not None:
            return denied
        if request.query_params.get("alerts") != "true":
            return error(400, "imitation expects alerts=true")
        body = await request.json()
        components = body.get("components") if isinstance(body, dict) else None
        if not isinstance(components, list) or not 1 <= len(components) <= 1024:
            return error(400, "components must hold 1 to 1024 purls")
        lines = [json.dumps(state.packages[c["purl"]]) for c in components if c.get("purl") in state.packages]
        return Response("\n".join(lines) + "\n", media_type="application/x-ndjson")

    @route("/v0/orgs/{org:str}/triage/alerts", http_method=["POST"])
    async def triage(request: Request[Any, Any, Any]) -> Response[Any]:
        org = request.path_params["org"]
        if (denied := await gate(request) or org_or_404(org)) is not None:
            return denied
        body = await request.json()
        entries = body.get("alertTriage") if isinstance(body, dict) else None
        if not isinstance(entries, list) or not entries:
            return error(400, "alertTriage must be a non-empty array")
        for e in entries:
            if e.get("state") not in ("block", "ignore", "inherit", "monitor", "warn") or not e.get("alertKey"):
                return error(400, f"invalid triage entry {e!r}")
            state.triage[e["alertKey"]] = {"uuid": str(uuid.uuid4()), "alert_key": e["alertKey"],
                                           "state": e["state"], "note": e.get("note", "")}
        return Response({"result": "ok"})

    @route("/v0/orgs/{org:str}/diff-scans/{scan_id:str}/gfm", http_method=["GET"])
    async def gfm(request: Request[Any, Any, Any]) -> Response[Any]:
        org = request.path_params["org"]
        if (denied := await gate(request) or org_or_404(org)) is not None:
            return denied
        scan_id = request.path_params["scan_id"]
        if scan_id not in state.diff_scans:
            return error(404, f"Diff scan {scan_id} not found")
        found = state.diff_scans[scan_id]
        if found is None:
            return Response({"status": "processing"}, status_code=202)
        return Response({"diff_scan": {"id": scan_id, "gfm": found}})

    return Litestar([quota, organizations, repos, full_scan, alerts, purl, triage, gfm], debug=False)


__all__ = ["ALL_SCOPES", "SocketState", "artifact", "build_app", "make_alerts", "make_repos"]
