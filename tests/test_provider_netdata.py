"""The Netdata provider through the real gateway, over real HTTP, against loopback imitations of
Netdata Cloud and of a local Netdata Agent (tests/upstreams/netdata.py): both targets, paging
alert history to the end, silencing and its role refusals, 401/403/404/429/500, health
ok/degraded/down, and credentials that never leak."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.config import GatewayConfig
from providers.netdata import NetdataProvider
from tests.conftest import POLICIES, put_secret
from tests.harness import RunningGateway, call, ok, running_gateway, tool_error
from tests.upstreams.netdata import NODES, ROOM, SPACE, NetdataAgentImitation, NetdataCloudImitation

pytestmark = pytest.mark.anyio

TOKEN = f"ndc.{uuid.uuid4().hex}"
VIEWER_TOKEN = f"ndc.{uuid.uuid4().hex}"
AGENT_TOKEN = uuid.uuid4().hex
ROOM_ARGS = {"space_id": SPACE, "room_id": ROOM}


@pytest.fixture(scope="module")
def cloud() -> Iterator[NetdataCloudImitation]:
    with NetdataCloudImitation(tokens={TOKEN: "admin", VIEWER_TOKEN: "viewer"}) as imitation:
        yield imitation


@pytest.fixture(scope="module")
def agent() -> Iterator[NetdataAgentImitation]:
    with NetdataAgentImitation(token=AGENT_TOKEN) as imitation:
        yield imitation


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="module")
def gw(cloud: NetdataCloudImitation, agent: NetdataAgentImitation, state: Path,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    put_secret(state / "vault", "netdata_token", TOKEN)
    put_secret(state / "vault", "netdata_agent_token", AGENT_TOKEN)
    policies = tmp_path_factory.mktemp("bundle") / "policies"
    shutil.copytree(POLICIES, policies, ignore=shutil.ignore_patterns("tests"))
    allow_file = policies / "provider-allowlist.yaml"
    allow = yaml.safe_load(allow_file.read_text())
    allow["netdata"] = [*allow["netdata"], f"http://127.0.0.1:{cloud.port}", f"http://127.0.0.1:{agent.port}"]
    allow_file.write_text(yaml.safe_dump(allow))
    config = GatewayConfig(policies=str(policies), state_dir=str(state),
                           provider_urls={"netdata": cloud.url, "netdata_agent": agent.url})
    with running_gateway(config) as running:  # the default providers, pointed at the imitations
        yield running


@pytest.fixture(autouse=True)
def clean(cloud: NetdataCloudImitation, agent: NetdataAgentImitation, state: Path) -> Iterator[None]:
    cloud.reset()
    agent.reset()
    yield
    cloud.reset()
    agent.reset()
    put_secret(state / "vault", "netdata_token", TOKEN)


# -- Cloud reads -------------------------------------------------------------------------------


async def test_spaces_rooms_and_nodes(gw: RunningGateway, cloud: NetdataCloudImitation) -> None:
    spaces = await ok(gw, "ops_viewer", "netdata.spaces.list", {})
    assert spaces == {"spaces": [{"id": SPACE, "slug": "acme", "name": "Acme", "permissions": ["space:ReadAll"]}],
                      "count": 1}
    rooms = await ok(gw, "ops_viewer", "netdata.rooms.list", {"space_id": SPACE})
    assert [r["id"] for r in rooms["rooms"]] == [ROOM]
    nodes = await ok(gw, "ops_viewer", "netdata.nodes.list", ROOM_ARGS)
    assert [n["nd"] for n in nodes["nodes"]] == NODES and nodes["nodes"][0]["state"] == "stale"
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in cloud.requests)
    assert cloud.requests[-1].method == "POST" and cloud.requests[-1].json() == {}


async def test_alerts_list_returns_raised_instances_worst_first(gw: RunningGateway,
                                                                cloud: NetdataCloudImitation) -> None:
    answer = await ok(gw, "ops_viewer", "netdata.alerts.list", ROOM_ARGS)
    assert [(a["name"], a["status"]) for a in answer["alerts"]] == [("disk_space_usage", "CRITICAL"),
                                                                     ("cpu_usage", "WARNING")]
    assert cloud.requests[-1].json() == {"options": ["instances", "values", "summary"]}
    everything = await ok(gw, "ops_viewer", "netdata.alerts.list", {**ROOM_ARGS, "status": []})
    assert everything["count"] == 3


async def test_alert_history_pages_to_the_end(gw: RunningGateway, cloud: NetdataCloudImitation) -> None:
    answer = await ok(gw, "ops_viewer", "netdata.alerts.history", {**ROOM_ARGS, "after": -20000, "limit": 10000})
    assert answer["complete"] is True and answer["count"] == len(cloud.transitions) == 1234
    ids = [t["transition_id"] for t in answer["transitions"]]
    assert len(set(ids)) == 1234
    whens = [t["when"] for t in answer["transitions"]]
    assert whens == sorted(whens, reverse=True)
    bodies = [r.json() for r in cloud.requests]
    assert len(bodies) == 3 and all(b["after"] > 0 for b in bodies)  # relative times sent as unix seconds
    assert bodies[1]["before"] == whens[499]  # each page ends where the last one's oldest was


async def test_alert_history_limit_and_status_filter(gw: RunningGateway, cloud: NetdataCloudImitation) -> None:
    answer = await ok(gw, "ops_viewer", "netdata.alerts.history",
                      {**ROOM_ARGS, "after": -20000, "limit": 50, "status": ["CRITICAL"]})
    assert answer["count"] == 50 and answer["complete"] is False
    assert {t["new"]["status"] for t in answer["transitions"]} == {"CRITICAL"}
    assert cloud.requests[-1].json()["status"] == ["CRITICAL"]


async def test_metrics_query_always_scopes_by_context(gw: RunningGateway, cloud: NetdataCloudImitation) -> None:
    answer = await ok(gw, "ops_viewer", "netdata.metrics.query",
                      {**ROOM_ARGS, "contexts": ["system.cpu"], "points": 5, "nodes": [NODES[1]]})
    assert answer["labels"] == ["time", "user", "system"] and len(answer["data"]) == 5
    assert answer["units"] == "percentage"
    body = cloud.requests[-1].json()
    assert body["scope"] == {"contexts": ["system.cpu"], "nodes": [NODES[1]]}
    assert body["window"] == {"after": -600, "before": 0, "points": 5} and body["format"] == "json2"
    assert await call(gw, "ops_viewer", "netdata.metrics.query", {**ROOM_ARGS, "contexts": []}) == "INVALID_INPUT"


# -- the local Agent as a second target ----------------------------------------------------------


async def test_the_agent_target(gw: RunningGateway, agent: NetdataAgentImitation,
                                cloud: NetdataCloudImitation) -> None:
    alerts = await ok(gw, "ops_viewer", "netdata.alerts.list", {"target": "agent"})
    assert alerts["alerts"] == [{"name": "disk_space_usage", "context": "disk.space", "instance": "disk_space._",
                                 "status": "WARNING", "value": 91.2, "units": "%", "since": 1795000000,
                                 "node": "db-agent"}]
    nodes = await ok(gw, "ops_viewer", "netdata.nodes.list", {"target": "agent"})
    assert nodes["nodes"][0]["nm"] == "db-agent"
    metrics = await ok(gw, "ops_viewer", "netdata.metrics.query",
                       {"target": "agent", "contexts": ["system.cpu", "system.load"], "points": 3})
    assert len(metrics["data"]) == 3
    data = next(r for r in agent.requests if r.path == "/api/v3/data")
    assert data.q("contexts") == "system.cpu,system.load" and data.q("format") == "json2"
    assert all(r.headers["x-netdata-auth"] == f"Bearer {AGENT_TOKEN}" for r in agent.requests)
    assert cloud.requests == []
    # The Agent is not a place for the Cloud token.
    assert all(TOKEN not in str(r.headers) for r in agent.requests)


async def test_cloud_needs_a_room(gw: RunningGateway, cloud: NetdataCloudImitation) -> None:
    assert await call(gw, "ops_viewer", "netdata.nodes.list", {}) == "INVALID_INPUT"
    assert await call(gw, "ops_viewer", "netdata.rooms.list", {"space_id": "../accounts"}) == "INVALID_INPUT"
    assert cloud.requests == []


# -- silencing and roles -------------------------------------------------------------------------


async def test_operator_creates_a_bounded_silence(gw: RunningGateway, cloud: NetdataCloudImitation) -> None:
    answer = await ok(gw, "ops_operator", "netdata.silence.create",
                      {"space_id": SPACE, "name": "maintenance db-1", "node_ids": [NODES[1]],
                       "alert_names": ["cpu_usage"], "starts_at": "2026-11-22T02:00:00Z", "duration_minutes": 90})
    rule = cloud.silences[-1]
    assert answer["created"]["id"] == rule["id"]
    assert rule["starts_at"] == "2026-11-22T02:00:00Z" and rule["lasts_until"] == "2026-11-22T03:30:00Z"
    assert rule["node_ids"] == [NODES[1]] and rule["alert_names"] == ["cpu_usage"] and "room_ids" not in rule


async def test_silence_refusals(gw: RunningGateway, cloud: NetdataCloudImitation) -> None:
    args = {"space_id": SPACE, "name": "quiet", "room_ids": [ROOM]}
    assert await call(gw, "ops_viewer", "netdata.silence.create", args) == "FORBIDDEN"
    assert await call(gw, None, "netdata.silence.create", args) == "FORBIDDEN"
    # No scope would silence the whole space; an end before the start is no rule at all.
    assert await call(gw, "ops_operator", "netdata.silence.create", {"space_id": SPACE, "name": "all"}) \
        == "INVALID_INPUT"
    assert await call(gw, "ops_operator", "netdata.silence.create",
                      {**args, "starts_at": "2026-11-22T02:00:00Z", "lasts_until": "2026-11-22T01:00:00Z"}) \
        == "INVALID_INPUT"
    assert await call(gw, "ops_operator", "netdata.silence.create", {**args, "lasts_until": "tomorrow"}) \
        == "INVALID_INPUT"
    assert cloud.requests == [] and cloud.silences == []


# -- upstream errors -----------------------------------------------------------------------------


async def test_401_names_the_secret(gw: RunningGateway, state: Path) -> None:
    put_secret(state / "vault", "netdata_token", "ndc.revoked")
    err = await tool_error(gw, "ops_viewer", "netdata.spaces.list", {})
    assert "Netdata Cloud refused the credentials (401: ErrUnauthorized: unauthorized)" in err["error"]
    assert "netdata_token" in err["error"] and "ndc.revoked" not in err["error"]


async def test_403_from_the_space_role(gw: RunningGateway, state: Path) -> None:
    put_secret(state / "vault", "netdata_token", VIEWER_TOKEN)
    err = await tool_error(gw, "ops_operator", "netdata.silence.create",
                           {"space_id": SPACE, "name": "quiet", "room_ids": [ROOM]})
    assert "forbidden by Netdata Cloud (403: ErrForbidden: not allowed to manage silencing rules" in err["error"]


async def test_404_for_an_unknown_room(gw: RunningGateway) -> None:
    err = await tool_error(gw, "ops_viewer", "netdata.alerts.list", {"space_id": SPACE, "room_id": "nope"})
    assert err["error"] == "netdata: alerts of room nope: not found (404: ErrNotFound: not found)"


async def test_429_becomes_a_retry_after(gw: RunningGateway, cloud: NetdataCloudImitation) -> None:
    cloud.rate_limited = True
    err = await tool_error(gw, "ops_viewer", "netdata.rooms.list", {"space_id": SPACE})
    assert err["retry_after_s"] == 17 and "rate limited by Netdata Cloud" in err["error"]
    cloud.reset()
    cloud.force(429, {"errorCode": "ErrTooManyRequests"})  # no Retry-After: a conservative default
    err = await tool_error(gw, "ops_viewer", "netdata.rooms.list", {"space_id": SPACE})
    assert err["retry_after_s"] == 60


async def test_500_and_a_token_echoed_back(gw: RunningGateway, cloud: NetdataCloudImitation) -> None:
    cloud.force(500, {"errorCode": "ErrInternal", "errorMessage": "boom for {auth}"})
    err = await tool_error(gw, "ops_viewer", "netdata.spaces.list", {})
    assert err["error"] == "netdata: spaces.list: Netdata Cloud answered 500 (ErrInternal: boom for Bearer ***); " \
                           "try again later"


async def test_the_agent_refusing_its_token(gw: RunningGateway, state: Path, agent: NetdataAgentImitation) -> None:
    put_secret(state / "vault", "netdata_agent_token", "wrong-agent-token")
    try:
        err = await tool_error(gw, "ops_viewer", "netdata.alerts.list", {"target": "agent"})
    finally:
        put_secret(state / "vault", "netdata_agent_token", AGENT_TOKEN)
    assert "the Netdata Agent refused the credentials (401" in err["error"] and "netdata_agent_token" in err["error"]


# -- health (rule 6) ---------------------------------------------------------------------------


async def test_health_ok_probes_cloud_and_agent(gw: RunningGateway, cloud: NetdataCloudImitation,
                                                agent: NetdataAgentImitation) -> None:
    health = await ok(gw, "ops_viewer", "netdata.health", {})
    assert health["status"] == "ok" and health["error"] is None
    assert [r.path for r in cloud.requests] == ["/api/v2/accounts/me"]
    assert [r.path for r in agent.requests] == ["/api/v1/info"]


async def test_health_degraded(gw: RunningGateway, cloud: NetdataCloudImitation,
                               agent: NetdataAgentImitation) -> None:
    provider = gw.services.registry.providers["netdata"]
    assert isinstance(provider, NetdataProvider)
    provider.health_budget_s, cloud.delay_s = 0.2, 1.0
    try:
        health = await ok(gw, "ops_viewer", "netdata.health", {})
    finally:
        provider.health_budget_s = 5.0
    assert health["status"] == "degraded" and "within 0.2s" in health["error"]
    cloud.reset()
    agent.force(500, {"status": "error", "message": "agent broken"})  # Cloud fine, the Agent not
    health = await ok(gw, "ops_viewer", "netdata.health", {})
    assert health["status"] == "degraded" and "the Netdata Agent answered 500" in health["error"]


async def test_health_down(gw: RunningGateway, cloud: NetdataCloudImitation, state: Path) -> None:
    put_secret(state / "vault", "netdata_token", "ndc.revoked")  # accounts/me says: anonymous
    health = await ok(gw, "ops_viewer", "netdata.health", {})
    assert health["status"] == "down" and "anonymous" in health["error"]
    cloud.force(500, {"errorCode": "ErrInternal", "errorMessage": "down"}, path="/api/v2/accounts/me")
    put_secret(state / "vault", "netdata_token", TOKEN)
    health = await ok(gw, "ops_viewer", "netdata.health", {})
    assert health["status"] == "down" and "500" in health["error"]
    async with httpx.AsyncClient() as http:
        viewer = {"Authorization": f"Bearer {gw.token('ops_viewer')}"}  # detail needs a token
        report = (await http.get(gw.url + "/health", headers=viewer)).json()
    assert {p["provider"]: p["status"] for p in report["providers"]}["netdata"] == "down"


async def test_no_credential_reaches_the_audit_trail(gw: RunningGateway) -> None:
    assert gw.services.audit is not None
    rows = await gw.services.audit.store.query(limit=10000)
    assert any(r.provider == "netdata" for r in rows)
    text = repr(rows)
    assert TOKEN not in text and VIEWER_TOKEN not in text and AGENT_TOKEN not in text


async def test_history_that_does_not_move_is_reported_incomplete(gw: RunningGateway,
                                                                 cloud: NetdataCloudImitation) -> None:
    cloud.force(200, {"transitions": cloud.transitions[:500]})  # every page the same
    answer = await ok(gw, "ops_viewer", "netdata.alerts.history", {**ROOM_ARGS, "after": -20000, "limit": 10000})
    assert answer["count"] == 500 and answer["complete"] is False
    assert len(cloud.requests) == 2
