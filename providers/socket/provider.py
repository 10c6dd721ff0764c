"""The Socket.dev provider: supply-chain scans, alerts, package scores, triage and PR comments.

Talks to Socket's REST API (`<base_url>/v0`, PROVIDER-APIS.md) with the org token from the
vault (`socket_api_key`), through the SDK's egress-checked client only. Socket's own MCP
server offers package scores, organizations, alerts, a threat feed and package files; this
provider adds what it lacks: starting a full scan from manifests, triaging an alert, the
PR-comment markdown of a diff scan and repository listing, plus exact resumable paging and a
rule-6 health check on `/quota`.

Options (keyword arguments, all optional): `org` (the org slug; otherwise the token's only
organization), `timeout_s` (per request, default 30), `max_pages` (upstream pages one call
may walk, default 20), `health_budget_s` (rule 6, default 5).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import msgspec
from msgspec import UNSET

from providers.sdk import CallContext, HealthStatus, ProviderBase, Refused, Tool, ToolError
from providers.socket.client import SocketClient, decode, decode_ndjson, seg
from providers.socket.inputs import (
    FindingsListInput,
    PackageScoreInput,
    PrCommentInput,
    ReposListInput,
    ScanRepoInput,
    TriageAnnotateInput,
)
from providers.socket.models import (
    AlertsPage,
    Artifact,
    DiffScan,
    FullScan,
    OrgAlert,
    Organizations,
    Quota,
    Repo,
    ReposPage,
)

DEFAULT_BASE_URL = "https://api.socket.dev"
REPOS_PER_PAGE = 100  # Socket's maximum for /repos
ALERTS_PER_PAGE = 5000  # Socket's maximum for /alerts


class FindingsPage(msgspec.Struct):
    items: list[OrgAlert]
    next_cursor: str | None  # pass back as `cursor`; null means the end


class ReposResult(msgspec.Struct):
    repos: list[Repo]
    next_cursor: str | None


class ScoreResult(msgspec.Struct):
    packages: list[Artifact]
    not_found: list[str]


class ScanResult(msgspec.Struct):
    scan: FullScan
    manifests_sent: list[str]


class TriageResult(msgspec.Struct):
    org: str
    alert_key: str
    state: str
    note: str | None


class PrComment(msgspec.Struct):
    diff_scan_id: str
    markdown: str
    overview: str
    alerts: str


class SocketProvider(ProviderBase):
    name = "socket"

    def __init__(self, base_url: str = DEFAULT_BASE_URL, *, org: str | None = None, timeout_s: float = 30.0,
                 max_pages: int = 20, health_budget_s: float | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.org = org
        self.timeout_s = timeout_s
        self.max_pages = max_pages
        if health_budget_s is not None:
            self.health_budget_s = health_budget_s
        self._quota: Quota | None = None

    def tools(self) -> list[Tool]:
        return [
            Tool("scan.repo", "scan", ScanRepoInput,
                 "Start a Socket full scan of a repository from its manifest files (path -> content); "
                 "answers the scan id, state and report URL.", self._scan_repo),
            Tool("findings.list", "read", FindingsListInput,
                 "The organization's Socket alerts, filtered by severity, status and repo; follows Socket's "
                 "cursor to `limit` items and answers `next_cursor` to continue (null at the end).",
                 self._findings_list),
            Tool("package.score", "read", PackageScoreInput,
                 "Socket scores (supply chain, vulnerability, quality, maintenance, license) and alerts for "
                 "package URLs such as pkg:npm/express@4.19.2.", self._package_score),
            Tool("repos.list", "read", ReposListInput,
                 "The organization's repositories in Socket, up to `limit`; `next_cursor` continues.", self._repos),
            Tool("triage.annotate", "annotate", TriageAnnotateInput,
                 "Set an alert's triage state (block, ignore, inherit, monitor, warn) and note for the "
                 "organization.", self._triage),
            Tool("pr.comment_markdown", "comment", PrCommentInput,
                 "The GitHub-flavoured markdown of a diff scan, ready to post as a pull-request comment "
                 "(posting is the caller's step).", self._pr_comment),
        ]

    # -- plumbing ---------------------------------------------------------------------------

    async def _token(self) -> str:
        try:
            return await self.get_vault_secret("socket_api_key")
        except PermissionError as e:
            raise Refused("FORBIDDEN", str(e)) from None
        except LookupError as e:
            raise ToolError(str(e)) from None

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[SocketClient]:
        token = await self._token()
        async with self.http(base_url=f"{self.base_url}/v0", timeout=self.timeout_s, follow_redirects=False,
                             headers={"Authorization": f"Bearer {token}", "Accept": "application/json",
                                      "User-Agent": "opsgate-socket/1.0"}) as http:
            yield SocketClient(http, token)

    async def _org(self, client: SocketClient, given: str | msgspec.UnsetType) -> str:
        if given is not UNSET:
            return str(given)
        if self.org:
            return self.org
        orgs = await client.get("/organizations", Organizations, doing="listing the token's organizations")
        slugs = sorted(o.slug for o in orgs.organizations.values())
        if len(slugs) != 1:
            raise ToolError(f"the Socket token sees {len(slugs)} organizations ({', '.join(slugs) or 'none'}); "
                            "pass `org`")
        self.org = slugs[0]
        return self.org

    # -- tools ------------------------------------------------------------------------------

    async def _scan_repo(self, ctx: CallContext, args: ScanRepoInput) -> ScanResult:
        async with self._client() as c:
            org = await self._org(c, args.org)
            params: dict[str, Any] = {"repo": args.repo, "integration_type": "api"}
            for key, value in (("branch", args.ref), ("commit_hash", args.commit),
                               ("pull_request", args.pull_request)):
                if value is not UNSET:
                    params[key] = value
            # Socket's multipart form: the field name is the manifest's path in the repository.
            files = [(path, (path.rsplit("/", 1)[-1], body.encode(), "application/octet-stream"))
                     for path, body in sorted(args.manifests.items())]
            scan = await c.post(f"/orgs/{seg(org)}/full-scans", FullScan, params=params, files=files,
                                doing=f"starting a full scan of {org}/{args.repo}")
        return ScanResult(scan, sorted(args.manifests))

    async def _findings_list(self, ctx: CallContext, args: FindingsListInput) -> FindingsPage:
        async with self._client() as c:
            org = await self._org(c, args.org)
            params: dict[str, Any] = {"filters.alertStatus": args.status}
            if args.severity is not UNSET:
                params["filters.alertSeverity"] = args.severity
            if args.repo is not UNSET:
                params["filters.repoSlug"] = args.repo
            items: list[OrgAlert] = []
            cursor = None if args.cursor is UNSET else str(args.cursor)
            for _ in range(self.max_pages):
                # Ask for exactly what is still wanted, so a page never has to be cut (the cursor
                # Socket returns marks the end of the page it gave).
                page_params = {**params, "per_page": min(args.limit - len(items), ALERTS_PER_PAGE)}
                if cursor is not None:
                    page_params["startAfterCursor"] = cursor
                page = await c.get(f"/orgs/{seg(org)}/alerts", AlertsPage, params=page_params,
                                   doing=f"listing {org}'s alerts")
                items.extend(page.items)
                if page.endCursor is not None and page.endCursor == cursor:
                    raise ToolError(f"Socket returned the same alerts cursor twice for {org}; stopping")
                cursor = page.endCursor  # empty pages can occur mid-stream: only null is the end
                if cursor is None or len(items) >= args.limit:
                    break
        # Not cut to `limit`: should Socket ever give more than asked, cutting would lose alerts
        # that the cursor has already passed.
        return FindingsPage(items, cursor)

    async def _repos(self, ctx: CallContext, args: ReposListInput) -> ReposResult:
        # Socket pages by number with per_page up to 100, so a call that stops mid-page remembers
        # (page, per_page, items already given) in its cursor: continuing loses and repeats nothing.
        if args.cursor is UNSET:
            page, per_page, skip = 1, min(args.limit, REPOS_PER_PAGE), 0
        else:
            page, per_page, skip = (int(x) for x in str(args.cursor).split(":"))
            if not 1 <= per_page <= REPOS_PER_PAGE or skip >= per_page or page < 1:
                raise Refused("INVALID_INPUT", f"cursor {args.cursor!r} was not produced by socket.repos.list")
        repos: list[Repo] = []
        next_cursor: str | None = None
        async with self._client() as c:
            org = await self._org(c, args.org)
            for _ in range(self.max_pages):
                got = await c.get(f"/orgs/{seg(org)}/repos", ReposPage, params={"per_page": per_page, "page": page},
                                  doing=f"listing {org}'s repositories")
                fresh = got.results[skip:]
                room = args.limit - len(repos)
                repos.extend(fresh[:room])
                if len(fresh) > room:
                    next_cursor = f"{page}:{per_page}:{skip + room}"
                    break
                if got.nextPage is None:
                    next_cursor = None
                    break
                page, skip = got.nextPage, 0
                next_cursor = f"{page}:{per_page}:0"
                if len(repos) >= args.limit:
                    break
        return ReposResult(repos, next_cursor)

    async def _package_score(self, ctx: CallContext, args: PackageScoreInput) -> ScoreResult:
        async with self._client() as c:
            org = await self._org(c, args.org)
            response = await c.send("POST", f"/orgs/{seg(org)}/purl", params={"alerts": "true"},
                                    json={"components": [{"purl": p} for p in args.purls]},
                                    doing=f"looking up {len(args.purls)} package(s)")
        packages = decode_ndjson(response.content, Artifact, "looking up packages")
        found = {p.inputPurl for p in packages}
        return ScoreResult(packages, [p for p in args.purls if p not in found])

    async def _triage(self, ctx: CallContext, args: TriageAnnotateInput) -> TriageResult:
        entry: dict[str, Any] = {"alertKey": args.alert_key, "state": args.state}
        if args.note is not UNSET:
            entry["note"] = args.note
        async with self._client() as c:
            org = await self._org(c, args.org)
            await c.send("POST", f"/orgs/{seg(org)}/triage/alerts", json={"alertTriage": [entry]},
                         doing=f"triaging alert {args.alert_key} in {org}")
        return TriageResult(org, args.alert_key, args.state, None if args.note is UNSET else str(args.note))

    async def _pr_comment(self, ctx: CallContext, args: PrCommentInput) -> PrComment:
        async with self._client() as c:
            org = await self._org(c, args.org)
            doing = f"fetching the PR comment of diff scan {args.diff_scan_id}"
            response = await c.send("GET", f"/orgs/{seg(org)}/diff-scans/{seg(args.diff_scan_id)}/gfm",
                                    doing=doing, ok=(200, 202))
            if response.status_code == 202:
                raise ToolError(f"diff scan {args.diff_scan_id} is not finished yet; try again shortly",
                                retry_after_s=10)
            diff = decode(response.content, DiffScan, doing)
        gfm = diff.diff_scan.gfm
        return PrComment(args.diff_scan_id, "\n\n".join(p for p in (gfm.overview, gfm.alerts) if p),
                         gfm.overview, gfm.alerts)

    # -- health (rule 6) --------------------------------------------------------------------

    async def probe(self) -> None:
        """Socket's cheapest authenticated call: `/quota` costs no quota units."""
        self._quota = None
        async with self._client() as c:
            self._quota = await c.get("/quota", Quota, doing="checking the token's quota")

    async def health(self) -> HealthStatus:
        status = await super().health()
        quota = self._quota
        if status.status == "ok" and quota is not None and quota.quota <= 0:
            # The API answers, but every unit-costing call will be refused until the window refreshes.
            return msgspec.structs.replace(status, status="degraded",
                                           error=f"quota exhausted until {quota.nextWindowRefresh}")
        return status


__all__ = ["DEFAULT_BASE_URL", "SocketProvider"]
