"""The Socket provider through the real gateway, over real HTTP, against a loopback imitation of
Socket's API: every tool, pagination to the end, upstream 401/403/404/429/500 as clear tool
errors, health ok/degraded/down, role checks, egress, and the API token never leaking."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import GatewayConfig
from tests.conftest import POLICIES, put_secret
from tests.harness import RunningGateway, code_of, refusal_code, running_gateway, serving_app
from tests.upstreams.socket import ALL_SCOPES, SocketState, artifact, build_app, make_alerts, make_repos

pytestmark = pytest.mark.anyio

TOKEN = "sktsec_loopback_" + "Zx9" * 12  # the org API token, only ever in the vault
N_REPOS = 250
N_ALERTS = 47
BUDGET_S = 1.0  # rule 6's 5 s budget, shortened for the degraded test


def policies_allowing(tmp: Path, upstream: str) -> Path:
    """A copy of the canonical bundle whose allowlist also lets `socket` reach the imitation."""
    dst = tmp / "policies"
    shutil.copytree(POLICIES, dst, ignore=shutil.ignore_patterns("tests"))
    allow = yaml.safe_load((dst / "provider-allowlist.yaml").read_text())
    allow["socket"].append(upstream)
    (dst / "provider-allowlist.yaml").write_text(yaml.safe_dump(allow))
    return dst


def fresh_state() -> SocketState:
    s = SocketState(token=TOKEN, repos=make_repos(N_REPOS), alerts=make_alerts(N_ALERTS))
    for purl in ("pkg:npm/express@4.19.2", "pkg:pypi/requests@2.32.3"):
        s.packages[purl] = artifact(purl)
    s.diff_scans["ds-1"] = {"overview": "# Socket Security: 1 new alert", "alerts": "| pkg | alert |\n|---|---|"}
    s.diff_scans["ds-pending"] = None
    return s


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, SocketState]]:
    state = fresh_state()
    with serving_app(build_app(state), "Socket imitation") as url:
        yield url, state


@pytest.fixture(scope="module")
def gw(upstream: tuple[str, SocketState], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    url, _ = upstream
    tmp = tmp_path_factory.mktemp("socket")
    put_secret(tmp / "state" / "vault", "socket_api_key", TOKEN)
    config = GatewayConfig(policies=str(policies_allowing(tmp, url)), state_dir=str(tmp / "state"),
                           provider_urls={"socket": url}, health_timeout_s=BUDGET_S)
    with running_gateway(config) as running:  # the default providers, as `opsgate serve` builds them
        yield running


@pytest.fixture(autouse=True)
def state(upstream: tuple[str, SocketState]) -> SocketState:
    """Each test starts from a well-behaved upstream (the data is kept: tests only add to it)."""
    s = upstream[1]
    s.token, s.scopes, s.quota, s.quota_delay_s = TOKEN, set(ALL_SCOPES), s.max_quota, 0.0
    s.forced.clear()
    s.requests.clear()
    return s


async def call(gw: RunningGateway, role: str, tool: str, args: dict[str, Any] | None = None) -> Any:
    """The structured answer, {"tool_error": ...} for a tool error, or the gateway's error code
    (a JSON-RPC error's, or that of a refusal answered as an isError result)."""
    try:
        async with gw.client(gw.token(role)) as c:
            r = await c.call_tool(f"socket.{tool}", args or {})
    except BaseException as e:
        return code_of(e)
    if refusal_code(r):
        return refusal_code(r)
    if r.is_error:
        return {"tool_error": r.structured_content}
    return r.structured_content


# -- the tools --------------------------------------------------------------------------------

async def test_findings_list_follows_the_cursor_to_the_end_through_an_empty_page(
        gw: RunningGateway, state: SocketState) -> None:
    open_alerts = [a["id"] for a in state.alerts if a["status"] == "open"]
    got = await call(gw, "ops_viewer", "findings.list", {"limit": 1000})
    assert [a["id"] for a in got["items"]] == open_alerts
    assert got["next_cursor"] is None
    cursors = [q.get("startAfterCursor") for m, p, q in state.requests if p.endswith("/alerts")]
    assert "gap-20" in cursors  # the empty page mid-stream did not end the walk
    first = got["items"][0]
    assert first["vulnerability"]["cveId"].startswith("CVE-") and first["locations"][0]["repository"]["slug"]


async def test_findings_list_pages_exactly_with_the_cursor_it_returns(gw: RunningGateway, state: SocketState) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(20):
        args: dict[str, Any] = {"limit": 7, "status": "open"}
        if cursor:
            args["cursor"] = cursor
        page = await call(gw, "ops_viewer", "findings.list", args)
        assert len(page["items"]) <= 7
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [a["id"] for a in state.alerts if a["status"] == "open"]  # nothing lost, nothing twice


async def test_findings_list_filters_reach_socket(gw: RunningGateway, state: SocketState) -> None:
    got = await call(gw, "ops_viewer", "findings.list", {"severity": "critical", "repo": "svc-0001"})
    assert got["items"] and all(a["severity"] == "critical" for a in got["items"])
    assert all(a["locations"][0]["repository"]["slug"] == "svc-0001" for a in got["items"])
    query = next(q for m, p, q in state.requests if p.endswith("/alerts"))
    assert query["filters.alertSeverity"] == "critical" and query["filters.repoSlug"] == "svc-0001"
    assert await call(gw, "ops_viewer", "findings.list", {"severity": "urgent"}) == "INVALID_INPUT"


async def test_repos_list_walks_every_page_and_resumes_mid_page(gw: RunningGateway, state: SocketState) -> None:
    everything = await call(gw, "ops_viewer", "repos.list", {"limit": 1000})
    assert [r["slug"] for r in everything["repos"]] == [r["slug"] for r in state.repos]
    assert everything["next_cursor"] is None
    pages = [q["page"] for m, p, q in state.requests if p.endswith("/repos")]
    assert pages == ["1", "2", "3"]

    first = await call(gw, "ops_viewer", "repos.list", {"limit": 150})
    rest = await call(gw, "ops_viewer", "repos.list", {"limit": 1000, "cursor": first["next_cursor"]})
    assert [r["slug"] for r in first["repos"] + rest["repos"]] == [r["slug"] for r in state.repos]


async def test_package_score_by_purl(gw: RunningGateway) -> None:
    got = await call(gw, "ops_viewer", "package.score",
                     {"purls": ["pkg:npm/express@4.19.2", "pkg:npm/left-pad@0.0.1"]})
    (pkg,) = got["packages"]
    assert pkg["name"] == "express" and pkg["score"]["supplyChain"] == 0.9
    assert pkg["alerts"][0]["severity"] == "middle"  # artifact alerts say "middle", as Socket does
    assert got["not_found"] == ["pkg:npm/left-pad@0.0.1"]
    assert await call(gw, "ops_viewer", "package.score", {"purls": ["express"]}) == "INVALID_INPUT"


async def test_scan_repo_uploads_the_manifests_as_socket_expects(gw: RunningGateway, state: SocketState) -> None:
    manifests = {"package.json": '{"name": "api"}', "services/web/package-lock.json": "{}"}
    got = await call(gw, "ops_operator", "scan.repo",
                     {"repo": "svc-0001", "ref": "main", "commit": "abc1234", "manifests": manifests})
    assert got["scan"]["scan_state"] == "pending" and got["scan"]["repository_slug"] == "svc-0001"
    received = state.scans[-1]
    assert received["id"] == got["scan"]["id"]
    assert received["files"] == manifests  # field name = the manifest's path in the repo
    assert received["params"] == {"repo": "svc-0001", "branch": "main", "commit_hash": "abc1234",
                                  "integration_type": "api"}


async def test_scan_repo_refuses_paths_that_escape_the_repository(gw: RunningGateway, state: SocketState) -> None:
    before = len(state.scans)
    for path in ("../etc/passwd", "/etc/passwd", "a/../../b", "a\nb"):
        assert await call(gw, "ops_operator", "scan.repo", {"repo": "svc-1", "manifests": {path: "x"}}) == \
            "INVALID_INPUT", path
    assert await call(gw, "ops_operator", "scan.repo", {"repo": "../admin", "manifests": {"a.json": "{}"}}) == \
        "INVALID_INPUT"
    assert len(state.scans) == before


async def test_ids_and_slugs_cannot_steer_the_upstream_path(gw: RunningGateway, state: SocketState) -> None:
    for org in ("../acme", "acme/../x", "acme?x=1", "acme#", ""):
        assert await call(gw, "ops_viewer", "repos.list", {"org": org}) == "INVALID_INPUT", org
    for scan_id in ("../../quota", "ds-1/../x", "ds-1?alerts=false"):
        assert await call(gw, "ops_admin", "pr.comment_markdown", {"diff_scan_id": scan_id}) == "INVALID_INPUT"
    assert await call(gw, "ops_viewer", "repos.list", {"cursor": "1:500:0"}) == "INVALID_INPUT"
    assert await call(gw, "ops_viewer", "repos.list", {"cursor": "1:100:100"}) == "INVALID_INPUT"
    assert not [p for m, p, q in state.requests if "/repos" in p or "/diff-scans" in p]


async def test_triage_annotate_sets_state_and_note(gw: RunningGateway, state: SocketState) -> None:
    got = await call(gw, "ops_operator", "triage.annotate",
                     {"alert_key": "QmKey0003", "state": "ignore", "note": "dev-only dependency"})
    assert got == {"org": "acme", "alert_key": "QmKey0003", "state": "ignore", "note": "dev-only dependency"}
    assert state.triage["QmKey0003"]["state"] == "ignore"
    assert state.triage["QmKey0003"]["note"] == "dev-only dependency"


async def test_pr_comment_markdown(gw: RunningGateway) -> None:
    got = await call(gw, "ops_admin", "pr.comment_markdown", {"diff_scan_id": "ds-1"})
    assert got["markdown"].startswith("# Socket Security") and "| pkg | alert |" in got["markdown"]
    pending = await call(gw, "ops_admin", "pr.comment_markdown", {"diff_scan_id": "ds-pending"})
    assert "not finished" in pending["tool_error"]["error"] and pending["tool_error"]["retry_after_s"] > 0


async def test_roles_follow_the_constitution(gw: RunningGateway) -> None:
    scan = {"repo": "svc-0001", "manifests": {"package.json": "{}"}}
    assert await call(gw, "ops_viewer", "scan.repo", scan) == "FORBIDDEN"
    assert await call(gw, "ops_viewer", "triage.annotate", {"alert_key": "k", "state": "warn"}) == "FORBIDDEN"
    assert await call(gw, "ops_operator", "pr.comment_markdown", {"diff_scan_id": "ds-1"}) == "FORBIDDEN"
    assert "markdown" in await call(gw, "ops_admin", "pr.comment_markdown", {"diff_scan_id": "ds-1"})
    async with gw.client(gw.token("ops_viewer")) as c:
        names = {t.name for t in (await c.list_tools()).tools if t.name.startswith("socket.")}
    assert names == {"socket.findings.list", "socket.package.score", "socket.repos.list", "socket.health"}


# -- upstream failures ------------------------------------------------------------------------

async def test_upstream_401_says_to_check_the_vault_secret(gw: RunningGateway, state: SocketState) -> None:
    state.token = "a-rotated-token"
    got = await call(gw, "ops_viewer", "repos.list")
    assert "401" in got["tool_error"]["error"] and "socket_api_key" in got["tool_error"]["error"]


async def test_upstream_403_scope_and_quota(gw: RunningGateway, state: SocketState) -> None:
    state.scopes.discard("alerts:list")
    got = await call(gw, "ops_viewer", "findings.list")
    assert "Insufficient permissions" in got["tool_error"]["error"] and "scope" in got["tool_error"]["error"]
    state.scopes.add("alerts:list")
    state.quota = 50  # a purl lookup costs 100 units
    got = await call(gw, "ops_viewer", "package.score", {"purls": ["pkg:npm/express@4.19.2"]})
    assert "Insufficient max quota" in got["tool_error"]["error"] and "quota" in got["tool_error"]["error"]


async def test_upstream_404(gw: RunningGateway) -> None:
    got = await call(gw, "ops_admin", "pr.comment_markdown", {"diff_scan_id": "no-such-scan"})
    assert "404" in got["tool_error"]["error"] and "no-such-scan" in got["tool_error"]["error"]
    got = await call(gw, "ops_viewer", "repos.list", {"org": "globex"})
    assert "Organization globex not found" in got["tool_error"]["error"]


async def test_upstream_429_becomes_a_retry_after(gw: RunningGateway, state: SocketState) -> None:
    state.force(r"/alerts$", 429, "Too many requests", Retry_After="17")
    got = await call(gw, "ops_viewer", "findings.list")
    assert got["tool_error"]["retry_after_s"] == 17 and "rate limit" in got["tool_error"]["error"]
    assert "items" in await call(gw, "ops_viewer", "findings.list")  # the next call goes through


async def test_upstream_429_mid_pagination_is_an_error_not_a_partial_answer(
        gw: RunningGateway, state: SocketState) -> None:
    state.force(r"/repos$", 429, "slow down", skip=1, Retry_After="3")
    got = await call(gw, "ops_viewer", "repos.list", {"limit": 1000})
    assert got["tool_error"]["retry_after_s"] == 3
    assert [q["page"] for m, p, q in state.requests if p.endswith("/repos")] == ["1", "2"]


async def test_upstream_500_and_unreadable_answers(gw: RunningGateway, state: SocketState) -> None:
    state.force(r"/repos$", 500, "Internal Server Error")
    got = await call(gw, "ops_viewer", "repos.list")
    assert "Socket failed" in got["tool_error"]["error"] and "500" in got["tool_error"]["error"]
    state.force(r"/repos$", 503, "maintenance", Retry_After="30")
    got = await call(gw, "ops_viewer", "repos.list")
    assert got["tool_error"]["retry_after_s"] == 30


async def test_the_token_never_leaks_even_when_socket_echoes_it(gw: RunningGateway, state: SocketState) -> None:
    state.force(r"/alerts$", 400, "bad request from {auth}")
    got = await call(gw, "ops_viewer", "findings.list")
    assert TOKEN not in repr(got) and "[redacted]" in got["tool_error"]["error"]
    state.token = "other"
    got = await call(gw, "ops_viewer", "repos.list")
    assert TOKEN not in repr(got)
    assert gw.services.audit is not None
    rows = await gw.services.audit.store.query(limit=10_000)
    assert rows and all(TOKEN not in repr(r) for r in rows)


# -- health (rule 6) --------------------------------------------------------------------------

async def test_health_ok_degraded_down(gw: RunningGateway, state: SocketState) -> None:
    ok = await call(gw, "ops_viewer", "health")
    assert ok["provider"] == "socket" and ok["status"] == "ok" and ok["error"] is None
    assert [p for m, p, q in state.requests] == ["/v0/quota"]  # the cheap probe, nothing else

    state.quota = 0
    exhausted = await call(gw, "ops_viewer", "health")
    assert exhausted["status"] == "degraded" and "quota exhausted" in exhausted["error"]
    state.quota = state.max_quota

    state.quota_delay_s = BUDGET_S * 3
    slow = await call(gw, "ops_viewer", "health")
    assert slow["status"] == "degraded" and "no answer within" in slow["error"]
    state.quota_delay_s = 0.0

    state.force(r"/quota$", 500, "Internal Server Error")
    assert (await call(gw, "ops_viewer", "health"))["status"] == "down"
    state.token = "revoked"
    down = await call(gw, "ops_viewer", "health")
    assert down["status"] == "down" and "401" in down["error"] and TOKEN not in down["error"]


async def test_gateway_health_aggregates_socket(gw: RunningGateway) -> None:
    import httpx

    async with httpx.AsyncClient() as http:
        viewer = {"Authorization": f"Bearer {gw.token('ops_viewer')}"}  # detail needs a token
        report = (await http.get(gw.url + "/health", headers=viewer)).json()
    socket = next(p for p in report["providers"] if p["provider"] == "socket")
    assert socket["status"] == "ok"


# -- egress (rule 5) --------------------------------------------------------------------------

async def test_an_upstream_outside_the_allowlist_is_refused(upstream: tuple[str, SocketState],
                                                          tmp_path: Path) -> None:
    url, state = upstream
    put_secret(tmp_path / "state" / "vault", "socket_api_key", TOKEN)
    config = GatewayConfig(policies=str(POLICIES), state_dir=str(tmp_path / "state"), provider_urls={"socket": url})
    state.requests.clear()
    with running_gateway(config) as other:
        assert await call(other, "ops_viewer", "repos.list") == "FORBIDDEN"
        health = await call(other, "ops_viewer", "health")
    assert health["status"] == "down" and "may not reach" in health["error"]
    assert state.requests == []  # refused before any connection


async def test_without_the_vault_secret_the_tool_says_which_secret_to_set(
        upstream: tuple[str, SocketState], tmp_path: Path) -> None:
    url, state = upstream
    config = GatewayConfig(policies=str(policies_allowing(tmp_path, url)), state_dir=str(tmp_path / "state"),
                           provider_urls={"socket": url})
    state.requests.clear()
    with running_gateway(config) as bare:
        got = await call(bare, "ops_viewer", "repos.list")
        health = await call(bare, "ops_viewer", "health")
    assert "socket_api_key" in got["tool_error"]["error"] and "not in the vault" in got["tool_error"]["error"]
    assert health["status"] == "down" and "socket_api_key" in health["error"]
    assert state.requests == []
