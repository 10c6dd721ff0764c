"""Real `opsgate serve` OS processes driven by the real mcp client over real HTTP.

- Two gateway processes sharing one Redis share one rate budget, exactly.
- With Redis unreachable, tiered calls fail closed (RATE_LIMIT with `limiter_error`), untiered
  calls go through, and health/readiness say so.
- SIGHUP reloads the policy bundle; a broken bundle is refused and the old one stays active.

Each gateway is `python -m gateway.cli serve ...` on a free loopback port, with its own copy of
the policy bundle. Processes that share a state dir share the embedded vault, so the same dev
signing key; the tests read that key from the vault before starting them and mint tokens with it.
Redis tests skip when 127.0.0.1:6379 is unreachable, except under CI=true, where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import redis
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from gateway.config import GatewayConfig
from gateway.serve import demo_user_id, mint_token, signing_key
from tests.conftest import POLICIES
from tests.harness import GatewayProcess, free_port, serving_process, unwrap

pytestmark = pytest.mark.anyio

DEAD_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
ISSUER = GatewayConfig().auth_issuer
LIMIT = 40  # the viewer's reads tier in the tests' bundle copy


# -- plumbing ------------------------------------------------------------------------------------




def copy_policies(dst: Path, *, viewer_reads: str | None = None) -> Path:
    shutil.copytree(POLICIES, dst, ignore=shutil.ignore_patterns("tests"))
    if viewer_reads is not None:
        tiers = dst / "tiers" / "rate-tiers.cedar"
        text = tiers.read_text()
        old = '@id("tier.viewer.reads")\n@limit("100/hour")'
        assert text.count(old) == 1, "the viewer's reads tier changed shape; update this test"
        tiers.write_text(text.replace(old, f'@id("tier.viewer.reads")\n@limit("{viewer_reads}")'))
    return dst


def dev_secret(state_dir: Path) -> bytes:
    """The signing key every gateway on `state_dir` will use (created here if it is new)."""
    return signing_key(GatewayConfig(state_dir=str(state_dir)))


@contextlib.contextmanager
def gateway_process(tmp: Path, name: str, *, policies: Path, state_dir: Path,
                    extra: list[str] | None = None) -> Iterator[GatewayProcess]:
    """`opsgate serve` as a child process, ready (GET /health/live answered) when yielded."""
    port = free_port()
    argv = ["gateway.cli", "serve", "--port", str(port), "--policies", str(policies), "--state-dir", str(state_dir),
            *(extra or [])]
    with serving_process(argv, port, tmp / f"{name}.log", name) as gw:
        yield gw


@contextlib.asynccontextmanager
async def mcp_client(url: str, token: str | None, mode: str = "auto") -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    http = httpx2.AsyncClient(headers=headers, timeout=30)
    async with http, Client(streamable_http_client(url + "/mcp", http_client=http), mode=mode) as c:
        yield c




# -- two processes, one Redis budget ------------------------------------------------------------

CLIENTS_PER_GATEWAY = 4
CALLS_PER_CLIENT = 25


async def test_two_gateway_processes_share_one_redis_budget(tmp_path: Path, redis_url: str) -> None:
    policies = copy_policies(tmp_path / "policies", viewer_reads=f"{LIMIT}/hour")
    state = tmp_path / "state"
    secret = dev_secret(state)
    user = str(uuid.uuid4())  # a budget no earlier run has touched
    token = mint_token(secret, issuer=ISSUER, user_id=user, role="ops_viewer")
    limiter_args = ["--limiter", "redis", "--redis-url", redis_url]
    with contextlib.ExitStack() as stack:
        gateways = [stack.enter_context(gateway_process(tmp_path, f"gw{i}", policies=policies, state_dir=state,
                                                        extra=limiter_args))
                    for i in range(2)]
        outcomes: list[tuple[int, str, dict[str, Any] | None]] = []
        ready: list[int] = []
        go = asyncio.Event()

        async def client_run(i: int, gw: GatewayProcess) -> None:
            async with mcp_client(gw.url, token) as c:
                ready.append(i)
                await go.wait()
                for n in range(CALLS_PER_CLIENT):
                    try:
                        result = await c.call_tool("echo.ping", {"message": f"{i}:{n}"})
                    except MCPError as exc:
                        err = unwrap(exc)
                        outcomes.append((i, err.error.data["code"], err.error.data))
                    else:
                        assert not result.is_error, result
                        outcomes.append((i, "OK", None))

        tasks = [asyncio.create_task(client_run(i, gw))
                 for i, gw in enumerate(gateways) for _ in range(CLIENTS_PER_GATEWAY)]
        try:
            while len(ready) < len(tasks):  # every client connected: release them together
                done = [t for t in tasks if t.done()]
                for t in done:
                    t.result()  # a client that failed to connect fails the test here
                await asyncio.sleep(0.01)
            go.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 60)
        finally:
            for t in tasks:
                t.cancel()

        health = [httpx.get(gw.url + "/health/ready", timeout=5).json() for gw in gateways]

    assert len(outcomes) == 2 * CLIENTS_PER_GATEWAY * CALLS_PER_CLIENT
    ok_by_gateway = [sum(1 for i, code, _ in outcomes if i == g and code == "OK") for g in range(2)]
    refused = [data for _, code, data in outcomes if code != "OK"]
    assert sum(ok_by_gateway) == LIMIT, (ok_by_gateway, {code for _, code, _ in outcomes})
    assert all(ok > 0 for ok in ok_by_gateway), f"one gateway admitted everything: {ok_by_gateway}"
    assert len(refused) == len(outcomes) - LIMIT
    for data in refused:
        assert data is not None and data["code"] == "RATE_LIMIT", data
        assert data["bucket"] == "reads" and "limiter_error" not in data, data
        # One emission interval (3600/40 = 90 s) at most: the budget is exhausted, not broken.
        assert 1 <= data["retry_after_s"] <= 90, data
    assert all(h["rate_limiter"]["backend"] == "redis" and h["rate_limiter"]["ok"] for h in health), health

    # The budget lives in Redis, under this user's key, full for one period.
    r = redis.Redis.from_url(redis_url)
    keys: list[bytes] = []
    try:
        keys = list(r.scan_iter(match=f"opsgate:rl:{{{user}:echo}}:*"))
        assert keys == [f"opsgate:rl:{{{user}:echo}}:reads:3600".encode()], keys
        assert 3500_000 < r.pttl(keys[0]) <= 3600_000
    finally:
        for k in keys:
            r.delete(k)
        r.close()


# -- Redis unreachable: fail closed -------------------------------------------------------------


async def test_unreachable_redis_fails_closed_but_untiered_calls_pass(tmp_path: Path) -> None:
    state = tmp_path / "state"
    secret = dev_secret(state)
    viewer = mint_token(secret, issuer=ISSUER, user_id=str(uuid.uuid4()), role="ops_viewer")
    admin = mint_token(secret, issuer=ISSUER, user_id=demo_user_id("ops_admin"), role="ops_admin")
    with gateway_process(tmp_path, "gw", policies=copy_policies(tmp_path / "policies"), state_dir=state,
                         extra=["--limiter", "redis", "--redis-url", DEAD_REDIS_URL]) as gw:
        with pytest.raises(BaseException) as err:
            async with mcp_client(gw.url, viewer) as c:
                await c.call_tool("echo.ping", {"message": "hi"})
        e = unwrap(err.value)
        assert e.error.code == -32029 and e.error.data["code"] == "RATE_LIMIT", e.error
        assert e.error.data["limiter_error"].startswith("rate limiter unavailable"), e.error.data
        assert e.error.data["bucket"] == "reads" and e.error.data["retry_after_s"] >= 1

        async with mcp_client(gw.url, admin) as c:  # no tier applies to ops_admin: no limiter asked
            result = await c.call_tool("echo.ping", {"message": "still here"})
        assert not result.is_error and result.structured_content["message"] == "still here"

        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
            health = (await http.get("/health", headers={"Authorization": f"Bearer {admin}"})).json()
            assert health["rate_limiter"]["ok"] is False and health["rate_limiter"]["backend"] == "redis"
            assert "rate limiter unavailable" in health["rate_limiter"]["error"]
            assert health["status"] != "ok"
            ready = await http.get("/health/ready")
            assert ready.status_code == 503 and ready.json()["rate_limiter"]["ok"] is False
            assert (await http.get("/health/live")).status_code == 200


# -- SIGHUP reload ------------------------------------------------------------------------------


async def wait_for_status(http: httpx.AsyncClient, pred: Any, what: str, timeout_s: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        bundle = (await http.get("/v1/status")).json()["bundle"]
        if pred(bundle):
            return bundle
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: status still {bundle}")
        await asyncio.sleep(0.05)


async def test_sighup_reloads_the_bundle_and_a_broken_one_is_refused(tmp_path: Path) -> None:
    policies = copy_policies(tmp_path / "policies")
    state = tmp_path / "state"
    secret = dev_secret(state)
    viewer = mint_token(secret, issuer=ISSUER, user_id=str(uuid.uuid4()), role="ops_viewer")
    with gateway_process(tmp_path, "gw", policies=policies, state_dir=state) as gw:
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
            before = (await http.get("/v1/status")).json()["bundle"]
            assert before["last_reload_error"] is None
            async with mcp_client(gw.url, viewer) as c:
                assert not (await c.call_tool("echo.ping", {})).is_error

            (policies / "lockdown.cedar").write_text('@id("lockdown")\nforbid (principal, action, resource);\n')
            gw.proc.send_signal(signal.SIGHUP)
            locked = await wait_for_status(http, lambda b: b["revision"] != before["revision"], "SIGHUP reload")
            assert locked["last_reload_error"] is None and locked["policies"] == before["policies"] + 1

            async def assert_locked_down() -> None:
                with pytest.raises(BaseException) as err:
                    async with mcp_client(gw.url, viewer) as c:
                        await c.call_tool("echo.ping", {})
                data = unwrap(err.value).error.data
                assert data["code"] == "FORBIDDEN" and data["policy_ids"] == ["lockdown"], data
                assert data["bundle_revision"] == locked["revision"], data

            await assert_locked_down()

            (policies / "broken.cedar").write_text('@id("broken")\npermit (principal, action\n')
            gw.proc.send_signal(signal.SIGHUP)
            refused = await wait_for_status(http, lambda b: b["last_reload_error"], "refused reload")
            assert refused["revision"] == locked["revision"]
            assert refused["activated_at"] == locked["activated_at"]
            assert any("broken.cedar" in issue for issue in refused["last_reload_error"]), refused
            await assert_locked_down()  # the previous bundle is still the one in force
        assert gw.proc.poll() is None, "SIGHUP must reload, not end the process"
