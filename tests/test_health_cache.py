"""GET /health cannot be turned into a vendor-probing, audit-row-writing machine by traffic (issue 13.5).

Before: every anonymous hit ran every provider's health(): 20 hits wrote 60 audit rows (one
missing-secret row per provider and hit) and, with secrets set, called each vendor 20 times.
Now: anonymous callers get the status only, every caller is answered from one probe at a time,
cached for `health_cache_s`, and per-provider detail needs a token with an ops role.

The gateway is the real one over HTTP; Socket is its loopback imitation over real HTTP (its
secret in the vault, so each probe is one `GET /v0/quota` there); Sentry has no secret, so each
probe is one `read_secret` refusal row in the audit trail.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from gateway.config import GatewayConfig
from gateway.health_cache import HealthCache
from providers.echo import EchoProvider
from providers.sentry import SentryProvider
from providers.socket import SocketProvider
from tests.conftest import POLICIES, put_secret
from tests.harness import RunningGateway, running_gateway, serving_app
from tests.upstreams.socket import SocketState, build_app

pytestmark = pytest.mark.anyio

TOKEN = "sktsec_health_" + "Qw7" * 12  # pragma: allowlist secret
HITS = 25


@pytest.fixture
def socket_api() -> Iterator[tuple[str, SocketState]]:
    state = SocketState(token=TOKEN)
    with serving_app(build_app(state), "Socket imitation") as url:
        yield url, state


@pytest.fixture
def gw(socket_api: tuple[str, SocketState], tmp_path: Path) -> Iterator[RunningGateway]:
    url, _ = socket_api
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies, ignore=shutil.ignore_patterns("tests"))
    allow = yaml.safe_load((policies / "provider-allowlist.yaml").read_text())
    allow["socket"].append(url)
    (policies / "provider-allowlist.yaml").write_text(yaml.safe_dump(allow))
    put_secret(tmp_path / "state" / "vault", "socket_api_key", TOKEN)
    # A long cache: the counts below must not depend on how long the test takes.
    config = GatewayConfig(policies=str(policies), state_dir=str(tmp_path / "state"), health_cache_s=600)
    with running_gateway(config, providers=[EchoProvider(), SocketProvider(base_url=url), SentryProvider()]) as g:
        yield g


def vendor_probes(state: SocketState) -> int:
    return sum(1 for _, path, _ in state.requests if path == "/v0/quota")


async def secret_rows(gw: RunningGateway) -> int:
    assert gw.services.audit is not None
    rows = await gw.services.audit.store.query(provider="sentry", tool="read_secret", limit=1000)
    return len(rows)


async def test_concurrent_anonymous_hits_probe_once(gw: RunningGateway, socket_api: tuple[str, SocketState]) -> None:
    _, state = socket_api
    state.quota_delay_s = 0.3  # the probe is slow, so the hits arrive while it runs
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
        answers = await asyncio.gather(*(http.get("/health") for _ in range(HITS)))
    assert [a.status_code for a in answers] == [200] * HITS
    bodies = [a.json() for a in answers]
    assert all(set(b) == {"status"} for b in bodies), bodies[0]  # nothing about providers, limiter, store
    assert {b["status"] for b in bodies} == {"down"}  # Sentry has no secret: its health is down
    assert vendor_probes(state) == 1
    assert await secret_rows(gw) == 1

    # Token holders read the same probe: no number of viewers multiplies it either.
    viewer = {"Authorization": f"Bearer {gw.token('ops_viewer')}"}
    async with httpx.AsyncClient(base_url=gw.url, timeout=30, headers=viewer) as http:
        details = await asyncio.gather(*(http.get("/health") for _ in range(HITS)))
    assert [d.status_code for d in details] == [200] * HITS
    report = details[0].json()
    statuses = {p["provider"]: p["status"] for p in report["providers"]}
    assert statuses == {"echo": "ok", "socket": "ok", "sentry": "down"}
    assert report["rate_limiter"]["ok"] and report["status"] == "down" and report["age_s"] >= 0
    assert vendor_probes(state) == 1
    assert await secret_rows(gw) == 1


async def test_detail_needs_a_token_with_an_ops_role(gw: RunningGateway) -> None:
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
        assert set((await http.get("/health")).json()) == {"status"}
        bad = await http.get("/health", headers={"Authorization": "Bearer not-a-token"})
        assert bad.status_code == 401 and "providers" not in bad.text
        no_role = await http.get("/health", headers={"Authorization": f"Bearer {gw.token(None)}"})
        assert no_role.status_code == 403 and "providers" not in no_role.text
        for role in ("ops_viewer", "ops_operator", "ops_admin"):
            ok = await http.get("/health", headers={"Authorization": f"Bearer {gw.token(role)}"})
            assert ok.status_code == 200 and {p["provider"] for p in ok.json()["providers"]} == {
                "echo", "socket", "sentry"}


# -- the cache itself: single flight and age, with a probe held open by an event ---------------------


async def test_one_probe_at_a_time_then_one_per_max_age() -> None:
    now = [100.0]
    release = asyncio.Event()
    started = 0

    async def probe() -> int:
        nonlocal started
        started += 1
        await release.wait()
        return started

    cache = HealthCache(probe, max_age_s=5.0, clock=lambda: now[0])
    waiters = [asyncio.create_task(cache.get()) for _ in range(100)]
    while started == 0:
        await asyncio.sleep(0)
    for _ in range(10):  # every waiter has arrived while the one probe is held open
        await asyncio.sleep(0)
    release.set()
    answers = await asyncio.gather(*waiters)
    assert started == 1 and {value for value, _ in answers} == {1}

    now[0] += 4.9
    value, age = await cache.get()
    assert (value, started) == (1, 1) and age == pytest.approx(4.9)
    now[0] += 0.1  # max_age_s after the probe finished: the next caller probes again
    assert (await cache.get())[0] == 2 and started == 2


async def test_a_caller_going_away_does_not_cancel_the_probe_others_wait_for() -> None:
    release = asyncio.Event()
    runs = 0

    async def probe() -> str:
        nonlocal runs
        runs += 1
        await release.wait()
        return "ok"

    cache = HealthCache(probe, max_age_s=60.0)
    first = asyncio.create_task(cache.get())
    while runs == 0:
        await asyncio.sleep(0)
    second = asyncio.create_task(cache.get())
    await asyncio.sleep(0)
    first.cancel()
    release.set()
    assert (await second)[0] == "ok" and runs == 1
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_failed_probe_is_not_cached() -> None:
    runs = 0

    async def probe() -> str:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("broken")
        return "ok"

    cache = HealthCache(probe, max_age_s=60.0)
    with pytest.raises(RuntimeError):
        await cache.get()
    assert (await cache.get())[0] == "ok" and runs == 2
