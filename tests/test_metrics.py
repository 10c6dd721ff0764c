"""GET /metrics through the real gateway: figures that move with real calls, and who may read them.

Calls go through the real mcp client over HTTP; the scrape is parsed with prometheus_client's own
parser. Each assertion compares a scrape before and after, so the tests sharing a gateway do not
depend on each other's order.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import GatewayConfig
from gateway.routes.metrics import SCRAPE_TOKEN, ScrapeCredential
from providers.echo import EchoProvider
from tests.conftest import POLICIES, put_secret
from tests.harness import RunningGateway, code_of, running_gateway

pytestmark = pytest.mark.anyio

LIMIT = 3  # the viewer's reads per hour in this bundle copy
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp = tmp_path_factory.mktemp("metrics")
    policies = tmp / "policies"
    shutil.copytree(POLICIES, policies, ignore=shutil.ignore_patterns("tests"))
    tiers = policies / "tiers" / "rate-tiers.cedar"
    tiers.write_text(tiers.read_text().replace('@id("tier.viewer.reads")\n@limit("100/hour")',
                                               f'@id("tier.viewer.reads")\n@limit("{LIMIT}/hour")'))
    config = GatewayConfig(policies=str(policies), state_dir=str(tmp / "state"))
    with running_gateway(config, providers=[EchoProvider()]) as running:
        yield running


def scrape(url: str, token: str | None) -> httpx.Response:
    return httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=10)


def samples(gw: RunningGateway) -> Samples:
    r = scrape(gw.url, gw.token("ops_admin"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(r.text) for s in family.samples}


def value(s: Samples, name: str, **labels: str) -> float:
    return s.get((name, frozenset(labels.items())), 0.0)


def calls(s: Samples, provider: str, tool: str, decision: str, status: str) -> float:
    return value(s, "opsgate_tool_calls_total", provider=provider, tool=tool, decision=decision, status=status)


async def test_figures_move_with_real_calls(gw: RunningGateway) -> None:
    user = str(uuid.uuid4())  # a fresh budget
    before = samples(gw)
    outcomes: list[str] = []
    viewer = gw.token("ops_viewer", user_id=user)
    for i in range(LIMIT + 2):  # LIMIT allowed, then refused by the tier
        outcomes.append(await _call(gw, viewer, "echo.ping", {"message": f"m{i}"}))
    outcomes.append(await _call(gw, viewer, "echo.create", {"message": "no"}))  # a viewer may not create
    for i in range(3):  # names nobody serves: counted, but under "unknown"
        outcomes.append(await _call(gw, viewer, f"nope.made-up-{uuid.uuid4()}-{i}", {}))
    assert outcomes == ["OK"] * LIMIT + ["RATE_LIMIT"] * 2 + ["FORBIDDEN"] + ["INVALID_INPUT"] * 3
    after = samples(gw)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("opsgate_tool_calls_total", provider="echo", tool="echo.ping", decision="allow", status="ok") == LIMIT
    assert delta("opsgate_tool_calls_total", provider="echo", tool="echo.ping", decision="allow",
                 status="rate_limited") == 2
    assert delta("opsgate_tool_calls_total", provider="echo", tool="echo.create", decision="deny",
                 status="denied") == 1
    assert delta("opsgate_tool_calls_total", provider="unknown", tool="unknown", decision="none",
                 status="invalid_input") == 3
    assert delta("opsgate_rate_limit_refusals_total", bucket="reads", reason="limit") == 2
    # Histograms count every call that reached the pipeline, and every decision the engine made.
    assert delta("opsgate_tool_call_duration_seconds_count", provider="echo") == LIMIT + 3
    assert delta("opsgate_tool_call_duration_seconds_count", provider="unknown") == 3
    assert delta("opsgate_decision_duration_seconds_count") == LIMIT + 3
    assert delta("opsgate_decision_duration_seconds_sum") > 0
    assert delta("opsgate_tool_call_duration_seconds_bucket", provider="echo", le="+Inf") == LIMIT + 3
    # A caller cannot mint series: the made-up names appear nowhere.
    assert not [k for k in after if any("made-up" in v for _, v in k[1])]

    # The audit trail says the same as the counters.
    assert gw.services.audit is not None
    rows = await gw.services.audit.store.query(caller_id=user, limit=100)
    statuses = sorted(r.result["status"] for r in rows)
    assert statuses == sorted(["ok"] * LIMIT + ["rate_limited"] * 2 + ["denied"] + ["invalid_input"] * 3)


async def _call(gw: RunningGateway, token: str, tool: str, args: dict[str, object]) -> str:
    try:
        async with gw.client(token) as c:
            result = await c.call_tool(tool, args)
    except BaseException as e:
        return code_of(e)
    assert not result.is_error, result
    return "OK"


async def test_gauges_are_read_at_scrape_time(gw: RunningGateway, tmp_path: Path) -> None:
    s = samples(gw)
    revision = gw.services.engine.bundle.revision
    assert value(s, "opsgate_policy_bundle_info", revision=revision) == 1
    assert value(s, "opsgate_policy_last_reload_success") == 1
    assert value(s, "opsgate_rate_limiter_up", backend="memory") == 1
    assert value(s, "opsgate_event_store_up", store="sqlite") == 1
    assert ("opsgate_events_outbox_backlog", frozenset()) not in s  # no outbox: SQLite is the store

    broken = gw.services.engine.bundle.root / "broken.cedar"
    broken.write_text('@id("broken")\npermit (principal, action\n')
    try:
        admin = {"Authorization": f"Bearer {gw.token('ops_admin')}"}
        refused = httpx.post(gw.url + "/v1/policy/reload", headers=admin, timeout=30)
        assert refused.status_code == 422
        s2 = samples(gw)
        assert value(s2, "opsgate_policy_last_reload_success") == 0
        assert value(s2, "opsgate_policy_reloads_total", result="refused") == \
            value(s, "opsgate_policy_reloads_total", result="refused") + 1
        assert value(s2, "opsgate_policy_bundle_info", revision=revision) == 1  # the old bundle stays
    finally:
        broken.unlink()
    assert httpx.post(gw.url + "/v1/policy/reload", headers=admin, timeout=30).status_code == 200
    s3 = samples(gw)
    assert value(s3, "opsgate_policy_last_reload_success") == 1


# -- access --------------------------------------------------------------------------------------


async def test_scraping_needs_a_credential(gw: RunningGateway) -> None:
    anonymous = scrape(gw.url, None)
    assert anonymous.status_code == 401 and "opsgate_" not in anonymous.text
    assert scrape(gw.url, "not-a-token").status_code == 401
    assert scrape(gw.url, gw.token("ops_viewer")).status_code == 403  # opsgate.metrics is admin's
    assert scrape(gw.url, gw.token("ops_operator")).status_code == 403
    assert scrape(gw.url, gw.token(None)).status_code == 403
    assert scrape(gw.url, gw.token("ops_admin")).status_code == 200


async def test_a_static_scrape_credential_from_the_vault(tmp_path: Path) -> None:
    state = tmp_path / "state"
    credential = "scrape-" + uuid.uuid4().hex + uuid.uuid4().hex  # pragma: allowlist secret
    put_secret(state / "vault", SCRAPE_TOKEN, credential)
    config = GatewayConfig(state_dir=str(state))
    with running_gateway(config, providers=[EchoProvider()]) as gw:
        assert scrape(gw.url, credential).status_code == 200
        assert scrape(gw.url, credential[:-1] + "x").status_code == 401
        assert scrape(gw.url, None).status_code == 401


async def test_a_short_scrape_credential_is_not_accepted(tmp_path: Path) -> None:
    state = tmp_path / "state"
    short = "short-scrape"  # pragma: allowlist secret
    put_secret(state / "vault", SCRAPE_TOKEN, short)
    with running_gateway(GatewayConfig(state_dir=str(state)), providers=[EchoProvider()]) as gw:
        assert scrape(gw.url, short).status_code == 401


async def test_a_rotated_credential_is_read_again_after_its_ttl(tmp_path: Path) -> None:
    from providers.sdk.vault import EmbeddedVault

    vault = EmbeddedVault(tmp_path / "vault")
    old, new = "a" * 40, "b" * 40
    await vault.set(SCRAPE_TOKEN, old)
    credential = ScrapeCredential(vault)
    assert await credential.matches(old)
    await vault.set(SCRAPE_TOKEN, new)
    assert await credential.matches(old)  # read at most once per TTL: a wrong token is not a vault read
    credential._read_at -= ScrapeCredential.TTL_S
    assert await credential.matches(new) and not await credential.matches(old)
    await vault.close()


@pytest.mark.parametrize(("access", "anonymous_status"), [("off", 404), ("open", 200)])
async def test_metrics_off_and_open(tmp_path: Path, access: str, anonymous_status: int) -> None:
    config = GatewayConfig(state_dir=str(tmp_path / "state"), metrics=access)  # type: ignore[arg-type]
    with running_gateway(config, providers=[EchoProvider()]) as gw:
        assert scrape(gw.url, None).status_code == anonymous_status
        assert scrape(gw.url, gw.token("ops_admin")).status_code == anonymous_status


async def test_outbox_backlog_is_the_journal_s_while_postgres_is_away(tmp_path: Path) -> None:
    config = GatewayConfig(state_dir=str(tmp_path / "state"), events="postgres",
                           database_url="postgresql://postgres@127.0.0.1:1/nowhere")  # nothing listens on port 1
    with running_gateway(config, providers=[EchoProvider()]) as gw:
        before = samples(gw)
        for i in range(5):  # ops_admin: no rate tier applies
            assert await _call(gw, gw.token("ops_admin"), "echo.ping", {"message": f"m{i}"}) == "OK"
        after = samples(gw)
        assert value(after, "opsgate_events_outbox_backlog") == value(before, "opsgate_events_outbox_backlog") + 5
        assert value(after, "opsgate_event_store_up", store="outbox") == 1  # calls still work: they are journaled
        deadline = time.monotonic() + 30
        while value(samples(gw), "opsgate_event_store_degraded") != 1:  # once the shipper has failed
            assert time.monotonic() < deadline, "the outbox never reported Postgres away"
            await asyncio.sleep(0.1)
