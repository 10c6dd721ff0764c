"""The Sentry provider through the real gateway, over real HTTP, against a loopback imitation of
Sentry's web API and DSN ingest (tests/upstreams/sentry.py): paging to the end, role refusals,
401/403/404/429/500, health ok/degraded/down, and credentials that never leak."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.config import GatewayConfig
from providers.sentry import SentryProvider
from providers.sentry.api import retry_after
from providers.sentry.envelope import DSN, InvalidDSN
from tests.conftest import POLICIES, put_secret
from tests.harness import RunningGateway, call, ok, running_gateway, tool_error
from tests.upstreams.sentry import FULL, READ, SentryImitation

pytestmark = pytest.mark.anyio

TOKEN = f"sntrys_full_{uuid.uuid4().hex}"
READ_TOKEN = f"sntrys_read_{uuid.uuid4().hex}"
DSN_KEY = uuid.uuid4().hex
UNRESOLVED = 200  # the imitation's 250 issues, every fifth resolved


def allowlisted_bundle(dst: Path, provider: str, *entries: str) -> Path:
    """A private copy of the policy bundle whose allowlist also lets `provider` reach `entries`."""
    shutil.copytree(POLICIES, dst, ignore=shutil.ignore_patterns("tests"))
    path = dst / "provider-allowlist.yaml"
    allow = yaml.safe_load(path.read_text())
    allow[provider] = [*allow.get(provider, []), *entries]
    path.write_text(yaml.safe_dump(allow))
    return dst


@pytest.fixture(scope="module")
def upstream() -> Iterator[SentryImitation]:
    with SentryImitation(tokens={TOKEN: FULL, READ_TOKEN: READ}, dsn_key=DSN_KEY) as imitation:
        yield imitation


@pytest.fixture(scope="module")
def vault_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="module")
def gw(upstream: SentryImitation, vault_dir: Path, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[RunningGateway]:
    put_secret(vault_dir / "vault", "sentry_auth_token", TOKEN)
    put_secret(vault_dir / "vault", "sentry_dsn", f"http://{DSN_KEY}@127.0.0.1:{upstream.port}/42")
    policies = allowlisted_bundle(tmp_path_factory.mktemp("bundle") / "policies", "sentry",
                                  f"http://127.0.0.1:{upstream.port}")
    config = GatewayConfig(policies=str(policies), state_dir=str(vault_dir), provider_urls={"sentry": upstream.url})
    with running_gateway(config) as running:  # the default providers, pointed at the imitation
        yield running


@pytest.fixture(autouse=True)
def clean(upstream: SentryImitation, vault_dir: Path) -> Iterator[None]:
    upstream.reset()
    yield
    upstream.reset()
    upstream.rate_limited = upstream.ingest_rate_limited = False
    put_secret(vault_dir / "vault", "sentry_auth_token", TOKEN)


# -- reads and paging ------------------------------------------------------------------------


async def test_issues_list_follows_link_cursors_to_the_end(gw: RunningGateway, upstream: SentryImitation) -> None:
    answer = await ok(gw, "ops_viewer", "sentry.issues.list", {"limit": 1000})
    assert answer["count"] == UNRESOLVED and answer["next_cursor"] is None
    ids = [i["id"] for i in answer["issues"]]
    assert len(set(ids)) == UNRESOLVED
    assert all(i["status"] == "unresolved" for i in answer["issues"])
    pages = [r for r in upstream.requests if r.path.endswith("/issues/")]
    assert [r.q("cursor") for r in pages] == [None, "0:100:0"]  # stopped when next said results="false"
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" and r.q("limit") == "100" for r in pages)
    assert all(r.q("query") == "is:unresolved" and r.q("statsPeriod") == "24h" for r in pages)


async def test_a_limit_stops_early_and_the_cursor_resumes(gw: RunningGateway) -> None:
    first = await ok(gw, "ops_viewer", "sentry.issues.list", {"limit": 150})
    assert first["count"] == 150 and first["next_cursor"]
    rest = await ok(gw, "ops_viewer", "sentry.issues.list", {"limit": 1000, "cursor": first["next_cursor"]})
    assert rest["next_cursor"] is None
    ids = [i["id"] for i in first["issues"] + rest["issues"]]
    assert len(ids) == len(set(ids)) == UNRESOLVED


async def test_issues_list_filters_by_project(gw: RunningGateway, upstream: SentryImitation) -> None:
    answer = await ok(gw, "ops_viewer", "sentry.issues.list", {"project": [43], "limit": 1000})
    assert answer["count"] == UNRESOLVED // 2 and {i["project"]["slug"] for i in answer["issues"]} == {"web"}
    assert upstream.requests[-1].query["project"] == ["43"]


async def test_issue_get_by_short_id(gw: RunningGateway) -> None:
    issue = await ok(gw, "ops_viewer", "sentry.issue.get", {"issue_id": "API-3"})
    assert issue["id"] == "1002" and issue["shortId"] == "API-3" and "activity" in issue and "tags" in issue


async def test_issue_events_page_to_the_end(gw: RunningGateway, upstream: SentryImitation) -> None:
    answer = await ok(gw, "ops_viewer", "sentry.issue.events", {"issue_id": "1000", "limit": 1000})
    assert answer["count"] == 130 and answer["next_cursor"] is None
    assert len({e["eventID"] for e in answer["events"]}) == 130
    assert [r.q("per_page") for r in upstream.requests] == ["100", "100"]


# -- writes and roles --------------------------------------------------------------------------


async def test_operator_updates_status_and_triages(gw: RunningGateway, upstream: SentryImitation) -> None:
    answer = await ok(gw, "ops_operator", "sentry.issue.update", {"issue_id": "WEB-2", "status": "ignored",
                                                                  "ignore_minutes": 30})
    assert answer == {"issue_id": "1001", "changed": {"status": "ignored",
                                                       "statusDetails": {"ignoreDuration": 30}}}
    assert upstream.issues["1001"]["status"] == "ignored"
    put = next(r for r in upstream.requests if r.method == "PUT")
    assert put.json() == {"status": "ignored", "statusDetails": {"ignoreDuration": 30}}

    answer = await ok(gw, "ops_operator", "sentry.issue.triage", {"issue_id": "1001", "assigned_to": "team:5",
                                                                  "priority": "high"})
    assert answer["changed"] == {"assignedTo": {"type": "team", "id": "5"}, "priority": "high"}
    assert upstream.issues["1001"]["priority"] == "high"


async def test_role_refusals_end_to_end(gw: RunningGateway, upstream: SentryImitation) -> None:
    assert await call(gw, "ops_viewer", "sentry.issue.update", {"issue_id": "1000", "status": "resolved"}) \
        == "FORBIDDEN"
    assert await call(gw, "ops_viewer", "sentry.issue.triage", {"issue_id": "1000", "priority": "low"}) \
        == "FORBIDDEN"
    assert await call(gw, "ops_operator", "sentry.issue.comment", {"issue_id": "1000", "text": "x"}) == "FORBIDDEN"
    assert await call(gw, "ops_operator", "sentry.issue.create_external",
                      {"issue_id": "1000", "title": "x"}) == "FORBIDDEN"
    assert await call(gw, "ops_operator", "sentry.message.capture", {"message": "x"}) == "FORBIDDEN"
    assert await call(gw, None, "sentry.issues.list", {}) == "FORBIDDEN"  # no role at all
    assert upstream.requests == []  # refused before anything reached Sentry


async def test_bad_input_is_refused_before_sentry(gw: RunningGateway, upstream: SentryImitation) -> None:
    assert await call(gw, "ops_viewer", "sentry.issue.get", {"issue_id": "../../organizations"}) == "INVALID_INPUT"
    assert await call(gw, "ops_viewer", "sentry.issues.list", {"limit": 0}) == "INVALID_INPUT"
    assert await call(gw, "ops_operator", "sentry.issue.update", {"issue_id": "1000"}) == "INVALID_INPUT"
    assert await call(gw, "ops_operator", "sentry.issue.update",
                      {"issue_id": "1000", "status": "resolved", "ignore_minutes": 5}) == "INVALID_INPUT"
    assert upstream.requests == []


async def test_admin_comments_once(gw: RunningGateway, upstream: SentryImitation) -> None:
    answer = await ok(gw, "ops_admin", "sentry.issue.comment", {"issue_id": "1003", "text": "looking into it"})
    assert answer["note"]["type"] == "note" and answer["note"]["data"] == {"text": "looking into it"}
    again = await tool_error(gw, "ops_admin", "sentry.issue.comment", {"issue_id": "1003", "text": "looking into it"})
    assert "You have already posted that comment." in again["error"]


async def test_admin_creates_an_external_issue_through_the_installed_integration(
        gw: RunningGateway, upstream: SentryImitation) -> None:
    answer = await ok(gw, "ops_admin", "sentry.issue.create_external",
                      {"issue_id": "API-1", "title": "Fix Error 0", "description": "seen 10 times",
                       "fields": {"repo": "acme/api"}})
    assert answer["integration"] == {"id": "24", "name": "acme-gh"}
    assert answer["external_issue"]["url"] == "https://github.com/acme/api/issues/1"
    assert upstream.external[-1]["body"] == {"repo": "acme/api", "title": "Fix Error 0",
                                             "description": "seen 10 times"}
    lookup = next(r for r in upstream.requests if r.path.endswith("/integrations/") and r.method == "GET")
    assert lookup.q("providerKey") == "github"

    missing = await tool_error(gw, "ops_admin", "sentry.issue.create_external",
                               {"issue_id": "1000", "title": "x", "provider": "jira"})
    assert "no jira integration is installed" in missing["error"]


async def test_message_capture_sends_a_dsn_envelope(gw: RunningGateway, upstream: SentryImitation) -> None:
    answer = await ok(gw, "ops_admin", "sentry.message.capture",
                      {"message": "Critical findings detected", "level": "warning", "tags": {"repo": "acme/api"}})
    [captured] = upstream.captured
    assert answer == {"event_id": captured["event"]["event_id"], "level": "warning"}
    assert f"sentry_key={DSN_KEY}" in captured["auth"] and "sentry_version=7" in captured["auth"]
    event = captured["event"]
    assert event["message"] == {"formatted": "Critical findings detected"} and event["level"] == "warning"
    assert event["tags"]["repo"] == "acme/api" and event["tags"]["opsgate.decision_id"]
    assert captured["header"]["event_id"] == event["event_id"]


# -- upstream errors ---------------------------------------------------------------------------


async def test_401_names_the_secret_not_the_token(gw: RunningGateway, vault_dir: Path) -> None:
    put_secret(vault_dir / "vault", "sentry_auth_token", "sntrys_revoked")
    err = await tool_error(gw, "ops_viewer", "sentry.issues.list", {})
    assert "authentication failed (401: Invalid token)" in err["error"] and "sentry_auth_token" in err["error"]
    assert "sntrys_revoked" not in err["error"]


async def test_a_token_echoed_by_the_upstream_is_scrubbed(gw: RunningGateway, upstream: SentryImitation) -> None:
    upstream.force(401, {"detail": "bad credentials: {auth}"})
    err = await tool_error(gw, "ops_viewer", "sentry.issue.get", {"issue_id": "1000"})
    assert "Bearer ***" in err["error"] and TOKEN not in err["error"]


async def test_403_when_the_token_lacks_a_scope(gw: RunningGateway, vault_dir: Path) -> None:
    put_secret(vault_dir / "vault", "sentry_auth_token", READ_TOKEN)
    err = await tool_error(gw, "ops_operator", "sentry.issue.update", {"issue_id": "1000", "status": "resolved"})
    assert "forbidden (403: You do not have permission to perform this action.)" in err["error"]
    assert "event:write" in err["error"]


async def test_404_for_an_unknown_issue(gw: RunningGateway) -> None:
    err = await tool_error(gw, "ops_viewer", "sentry.issue.get", {"issue_id": "999999"})
    assert err["error"] == "sentry: issue 999999: not found (404: The requested resource does not exist)"
    err = await tool_error(gw, "ops_viewer", "sentry.issue.events", {"issue_id": "NOPE-1"})
    assert "short id NOPE-1: not found (404" in err["error"]


async def test_429_becomes_a_retry_after(gw: RunningGateway, upstream: SentryImitation) -> None:
    upstream.rate_limited = True
    err = await tool_error(gw, "ops_viewer", "sentry.issues.list", {})
    assert "rate limited by Sentry" in err["error"] and "Limit is 40 requests in 1 seconds" in err["error"]
    assert 1 <= err["retry_after_s"] <= 37  # from X-Sentry-Rate-Limit-Reset (Sentry sends no Retry-After)

    upstream.ingest_rate_limited = True
    err = await tool_error(gw, "ops_admin", "sentry.message.capture", {"message": "x"})
    assert err["retry_after_s"] == 23  # ingest's Retry-After


async def test_500_is_a_clear_tool_error(gw: RunningGateway, upstream: SentryImitation) -> None:
    upstream.force(500, {"detail": "Internal Error"})
    err = await tool_error(gw, "ops_viewer", "sentry.issue.get", {"issue_id": "1000"})
    assert err["error"] == "sentry: issue 1000: Sentry answered 500 (Internal Error); try again later"
    assert "retry_after_s" not in err


async def test_ingest_refusing_the_dsn(gw: RunningGateway, vault_dir: Path, upstream: SentryImitation) -> None:
    put_secret(vault_dir / "vault", "sentry_dsn", f"http://wrongkey@127.0.0.1:{upstream.port}/42")
    try:
        err = await tool_error(gw, "ops_admin", "sentry.message.capture", {"message": "x"})
        assert "refused the DSN (403" in err["error"] and "sentry_dsn" in err["error"]
        assert "wrongkey" not in err["error"]
    finally:
        put_secret(vault_dir / "vault", "sentry_dsn", f"http://{DSN_KEY}@127.0.0.1:{upstream.port}/42")


async def test_a_dsn_pointing_off_the_allowlist_is_refused(gw: RunningGateway, vault_dir: Path,
                                                           upstream: SentryImitation) -> None:
    # "localhost" is not on the allowlist even though it reaches the same server: egress says no.
    put_secret(vault_dir / "vault", "sentry_dsn", f"http://{DSN_KEY}@localhost:{upstream.port}/42")
    try:
        assert await call(gw, "ops_admin", "sentry.message.capture", {"message": "exfiltrate"}) == "FORBIDDEN"
        assert upstream.captured == []
    finally:
        put_secret(vault_dir / "vault", "sentry_dsn", f"http://{DSN_KEY}@127.0.0.1:{upstream.port}/42")


# -- health (rule 6) ---------------------------------------------------------------------------


async def test_health_ok_uses_the_api_root(gw: RunningGateway, upstream: SentryImitation) -> None:
    health = await ok(gw, "ops_viewer", "sentry.health", {})
    assert health["provider"] == "sentry" and health["status"] == "ok" and health["error"] is None
    assert [r.path for r in upstream.requests] == ["/api/0/"]


async def test_health_degraded_when_slower_than_the_budget(gw: RunningGateway, upstream: SentryImitation) -> None:
    provider = gw.services.registry.providers["sentry"]
    assert isinstance(provider, SentryProvider)
    provider.health_budget_s, upstream.delay_s = 0.2, 1.0
    try:
        health = await ok(gw, "ops_viewer", "sentry.health", {})
    finally:
        provider.health_budget_s = 5.0
    assert health["status"] == "degraded" and "within 0.2s" in health["error"]


async def test_health_down_on_failure(gw: RunningGateway, upstream: SentryImitation, vault_dir: Path) -> None:
    upstream.force(500, {"detail": "Internal Error"})
    health = await ok(gw, "ops_viewer", "sentry.health", {})
    assert health["status"] == "down" and "500" in health["error"]
    upstream.reset()
    put_secret(vault_dir / "vault", "sentry_auth_token", "sntrys_revoked")
    health = await ok(gw, "ops_viewer", "sentry.health", {})
    assert health["status"] == "down" and "401" in health["error"] and "sntrys_revoked" not in health["error"]
    async with httpx.AsyncClient() as http:  # the gateway's aggregate shows it too
        viewer = {"Authorization": f"Bearer {gw.token('ops_viewer')}"}  # detail needs a token
        report = (await http.get(gw.url + "/health", headers=viewer)).json()
    assert {p["provider"]: p["status"] for p in report["providers"]}["sentry"] == "down"


async def test_no_credential_reaches_the_audit_trail(gw: RunningGateway) -> None:
    assert gw.services.audit is not None
    rows = await gw.services.audit.store.query(limit=10000)
    assert any(r.provider == "sentry" for r in rows)
    text = repr(rows)
    assert TOKEN not in text and READ_TOKEN not in text and DSN_KEY not in text


# -- pieces ------------------------------------------------------------------------------------


def test_dsn_parsing_never_repeats_the_key() -> None:
    dsn = DSN.parse("https://abc123@o4504.ingest.sentry.io/4711")
    assert dsn.envelope_url == "https://o4504.ingest.sentry.io/api/4711/envelope/"
    assert "sentry_key=abc123" in dsn.auth_header
    assert DSN.parse("https://k@sentry.example.com/prefix/9").envelope_url == \
        "https://sentry.example.com/prefix/api/9/envelope/"
    for bad in ("not a url", "https://o1.ingest.sentry.io/1", "https://secretkey@o1.ingest.sentry.io/x"):
        with pytest.raises(InvalidDSN) as e:
            DSN.parse(bad)
        assert "secretkey" not in str(e.value)


def test_retry_after_prefers_retry_after_then_reset() -> None:
    def r(headers: dict[str, str]) -> httpx.Response:
        return httpx.Response(429, headers=headers)

    assert retry_after(r({"Retry-After": "12"})) == 12
    assert retry_after(r({"X-Sentry-Rate-Limit-Reset": "1000"}), now=990.5) == 10
    assert retry_after(r({"X-Sentry-Rate-Limits": "60:error:organization, 5::key"})) == 60
    assert retry_after(r({})) == 60


async def test_an_upstream_that_pages_in_circles_cannot_loop_the_gateway(gw: RunningGateway,
                                                                         upstream: SentryImitation) -> None:
    upstream.force(200, [], {"Link": f'<{upstream.url}/x>; rel="next"; results="true"; cursor="0:0:0"'})
    answer = await ok(gw, "ops_viewer", "sentry.issues.list", {"limit": 1000})
    assert answer == {"issues": [], "count": 0, "next_cursor": None}
    assert len(upstream.requests) == 2
