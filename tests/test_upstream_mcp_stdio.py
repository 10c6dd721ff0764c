"""An upstream MCP server run by the gateway as a stdio child: a minimal environment with its
secret from the vault, network only through the gateway's egress proxy (and, as root, a network
namespace with nothing else in it), and every way the child can misbehave ending in an answer."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gateway.config import GatewayConfig
from providers.echo import EchoProvider
from tests.conftest import put_secret
from tests.harness import RunningGateway, code_of, running_gateway, serving_app
from tests.upstream_env import bundle, pin, stdio_decl
from tests.upstreams.mcp_fixture import FixtureState

pytestmark = pytest.mark.anyio
TOKEN = "fx-child-token-" + "Q7" * 16  # only ever in the vault


def target_app(name: str) -> Starlette:
    async def hello(request: Any) -> PlainTextResponse:
        return PlainTextResponse(f"hello from {name}")
    return Starlette(routes=[Route("/", hello)])


@pytest.fixture(scope="module")
def targets() -> Iterator[tuple[str, str]]:
    """Two loopback web servers: the child may reach the first, not the second."""
    with serving_app(target_app("allowed"), "allowed") as allowed, serving_app(target_app("other"), "other") as other:
        yield allowed, other


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, targets: tuple[str, str]) -> tuple[Path, Path, FixtureState]:
    tmp = tmp_path_factory.mktemp("stdio")
    state = FixtureState(tmp / "state.json")
    decl = stdio_decl(state.path, secrets=[{"name": "fx_token", "env": "FIXTURE_TOKEN"}],
                      timeouts={"connect_s": 30, "call_s": 5, "list_s": 20})
    policies = bundle(tmp, "fx", decl, allow=[targets[0]])
    put_secret(tmp / "state" / "vault", "fx_token", TOKEN)
    assert pin(policies, tmp / "state", "fx") == 0
    return policies, tmp / "state", state


@pytest.fixture(scope="module")
def gw(setup: tuple[Path, Path, FixtureState]) -> Iterator[RunningGateway]:
    policies, state_dir, _ = setup
    with running_gateway(GatewayConfig(policies=str(policies), state_dir=str(state_dir)),
                         providers=[EchoProvider()]) as running:
        yield running


@pytest.fixture(autouse=True)
def fresh(setup: tuple[Path, Path, FixtureState]) -> FixtureState:
    setup[2].reset()
    return setup[2]


async def call(gw: RunningGateway, tool: str, args: dict[str, Any] | None = None, role: str = "ops_admin") -> Any:
    try:
        async with gw.client(gw.token(role)) as c:
            return await c.call_tool(tool, args or {})
    except BaseException as e:
        return code_of(e)


def upstream(gw: RunningGateway) -> Any:
    return gw.services.registry.providers["fx"]


async def test_a_stdio_child_serves_its_pinned_tools(gw: RunningGateway, fresh: FixtureState) -> None:
    r = await call(gw, "fx.echo", {"message": "over stdio"})
    assert r.structured_content == {"message": "over stdio"}
    assert fresh.calls() == ["echo"]


async def test_the_child_gets_path_its_secret_and_the_proxy_and_nothing_else(gw: RunningGateway) -> None:
    r = await call(gw, "fx.env")
    keys = set(r.structured_content["keys"])
    assert keys <= {"PATH", "FIXTURE_TOKEN", "HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy",
                    "NO_PROXY", "no_proxy", "LC_CTYPE"}, keys
    assert {"PATH", "FIXTURE_TOKEN", "HTTPS_PROXY"} <= keys
    assert not keys & {"HOME", "USER", "PYTHONPATH", "VIRTUAL_ENV"}
    assert r.structured_content["token_sha256"] == hashlib.sha256(TOKEN.encode()).hexdigest()


async def test_the_proxy_lets_the_child_reach_its_allowlist_only_and_records_a_refusal(
        gw: RunningGateway, targets: tuple[str, str]) -> None:
    allowed, other = targets
    ok = (await call(gw, "fx.reach", {"url": allowed + "/"})).structured_content
    assert ok["proxy"].startswith("HTTP/1.1 200") and "hello from allowed" in ok["proxy_body"]
    refused = (await call(gw, "fx.reach", {"url": other + "/"})).structured_content
    assert refused["proxy"].startswith("HTTP/1.1 403") and "hello" not in refused["proxy_body"]
    rows = await gw.services.audit.store.query(provider="fx", tool="egress", limit=50)  # type: ignore[union-attr]
    port = other.rsplit(":", 1)[1]
    assert any(r.payload["args"].get("via") == "proxy" and str(r.payload["args"].get("port")) == port
               for r in rows), [r.payload for r in rows]


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace needs root")
async def test_as_root_the_child_has_no_way_out_but_the_proxy(gw: RunningGateway, targets: tuple[str, str]) -> None:
    await call(gw, "fx.echo", {"message": "start"})
    report = upstream(gw).report()
    assert report["isolation"] == "netns", report
    direct = (await call(gw, "fx.reach", {"url": targets[0] + "/"})).structured_content
    assert direct["direct"].startswith("error"), direct  # even an allowlisted host: only via the proxy
    assert direct["proxy"].startswith("HTTP/1.1 200")


async def test_a_child_dying_mid_call_is_a_clear_error_and_the_next_call_restarts_it(
        gw: RunningGateway, fresh: FixtureState) -> None:
    r = await call(gw, "fx.die")
    assert r.is_error and "connection was lost" in r.content[0].text
    rows = await gw.services.audit.store.query(provider="fx", tool="die", limit=5)  # type: ignore[union-attr]
    assert rows[-1].result["status"] == "tool_error" and "connection was lost" in rows[-1].result["content"]["error"]
    again = await call(gw, "fx.echo", {"message": "back"})
    assert again.structured_content == {"message": "back"}


async def test_a_hanging_call_ends_in_an_error_at_the_declared_timeout(gw: RunningGateway) -> None:
    r = await call(gw, "fx.hang")
    assert r.is_error and "did not answer hang within 5s" in r.content[0].text
    assert (await call(gw, "fx.echo", {"message": "still here"})).structured_content == {"message": "still here"}


async def test_a_flood_of_notifications_does_not_hold_the_call(gw: RunningGateway) -> None:
    r = await call(gw, "fx.flood", {"n": 600})
    assert not r.is_error and r.content[0].text == "flooded 600"


async def test_a_caller_denied_never_reaches_the_child(gw: RunningGateway, fresh: FixtureState) -> None:
    assert await call(gw, "fx.noop", role="ops_viewer") == "FORBIDDEN"
    assert fresh.calls() == []


async def test_rule_7_the_child_cannot_reach_the_gateway_or_another_provider(gw: RunningGateway) -> None:
    """An upstream is a provider: the gateway's own endpoint is not on its allowlist, so the proxy
    refuses it (and, in its namespace, nothing else leads there)."""
    got = (await call(gw, "fx.reach", {"url": gw.url + "/mcp"})).structured_content
    assert got["proxy"].startswith("HTTP/1.1 403"), got
    if upstream(gw).report()["isolation"] == "netns":
        assert got["direct"].startswith("error"), got


def pid_of(state: FixtureState) -> int | None:
    path = state.path.with_name(state.path.name + ".pid")
    return int(path.read_text()) if path.exists() else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_startup_child_is_started_with_the_gateway_and_again_when_it_dies(
        setup: tuple[Path, Path, FixtureState], tmp_path: Path) -> None:
    import signal

    import anyio

    policies, _, state = setup
    (policies / "upstreams" / "fx.yaml").write_text((policies / "upstreams" / "fx.yaml").read_text()
                                                    + "start: startup\n")
    pid_file = state.path.with_name(state.path.name + ".pid")
    pid_file.unlink(missing_ok=True)
    put_secret(tmp_path / "state" / "vault", "fx_token", TOKEN)
    try:
        with running_gateway(GatewayConfig(policies=str(policies), state_dir=str(tmp_path / "state")),
                             providers=[EchoProvider()]) as gw:
            with anyio.fail_after(60):  # started with the gateway, before any call
                while pid_of(state) is None:
                    await anyio.sleep(0.05)
            first = pid_of(state)
            assert first is not None and alive(first)
            os.kill(first, signal.SIGKILL)
            with anyio.fail_after(60):  # started again by itself, no call needed
                while pid_of(state) in (None, first):
                    await anyio.sleep(0.05)
            second = pid_of(state)
            assert second is not None and second != first and alive(second)
            assert (await call(gw, "fx.echo", {"message": "again"})).structured_content == {"message": "again"}
        assert not alive(second)  # stopped with the gateway
    finally:
        text = (policies / "upstreams" / "fx.yaml").read_text()
        (policies / "upstreams" / "fx.yaml").write_text(text.replace("start: startup\n", ""))


def test_check_says_which_isolation_each_upstream_has_and_why(setup: tuple[Path, Path, FixtureState],
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from gateway.cli import main as opsgate

    policies, state_dir, _ = setup
    code = opsgate(["upstream", "check", "--policies", str(policies), "--state-dir", str(state_dir),
                    "--format", "json"])
    (report,) = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["upstream"] == "fx" and report["transport"] == "stdio" and report["reachable"] == "yes"
    expected = "netns" if os.geteuid() == 0 else "proxy-env only"
    assert report["isolation"] == expected and report["why"], report
    assert "fx.echo" in report["served"] and "Legacy_Name" in report["unkinded"] and not report["drifted"]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_through_opsgate_stdio_the_upstreams_questions_and_progress_reach_the_caller(
        tmp_path: Path, mode: str) -> None:
    """The gateway itself over stdio (`opsgate stdio`): a 2025 caller is asked on the connection
    and gets progress and log messages on it; a 2026-07-28 caller answers by input-required rounds."""
    import sys

    import anyio
    from mcp import Client, StdioServerParameters, types

    from gateway.serve import demo_user_id, mint_token, signing_key
    from tests.conftest import ROOT

    state = FixtureState(tmp_path / "fixture.json")
    policies = bundle(tmp_path, "fx", stdio_decl(state.path, protocol="legacy"))
    state_dir = tmp_path / "state"
    assert pin(policies, state_dir, "fx") == 0
    secret = signing_key(GatewayConfig(state_dir=str(state_dir)))
    token = mint_token(secret, issuer=GatewayConfig().auth_issuer, user_id=demo_user_id("ops_viewer"),
                       role="ops_viewer")
    params = StdioServerParameters(command=sys.executable, args=["-m", "gateway.cli", "stdio", "--policies",
                                                                 str(policies), "--state-dir", str(state_dir)],
                                   env={"MCP_VIEWER_JWT": token, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT))
    logs: list[Any] = []
    progress: list[float] = []

    async def sample(ctx: Any, p: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="4"),
                                         model="stdio-test")

    async def on_log(p: types.LoggingMessageNotificationParams) -> None:
        logs.append(p.data)

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    with anyio.fail_after(120):
        async with Client(params, mode=mode, sampling_callback=sample, logging_callback=on_log,
                          log_level="debug") as c:
            sampled = await c.call_tool("fx.sample", {})
            flooded = await c.call_tool("fx.flood", {"n": 3}, progress_callback=on_progress)
    assert sampled.content[0].text == "model said: 4"
    assert flooded.content[0].text == "flooded 3"
    if mode == "legacy":  # over stdio the notifications travel on the connection, before the answer
        assert logs == [{"i": 0}, {"i": 1}, {"i": 2}] and progress == [1, 2, 3]


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_a_namespace_left_by_a_killed_gateway_is_removed_and_a_live_ones_kept() -> None:
    import subprocess

    from providers.sdk.netns import remove_orphans

    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan, live = f"opsgate-fx-{dead.pid}-deadbeef", f"opsgate-fx-{os.getpid()}-cafebabe"
    for name in (orphan, live):
        subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        assert orphan in remove_orphans()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert orphan not in listed and live in listed
    finally:
        for name in (orphan, live):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)


async def test_a_2026_upstream_announcing_a_change_by_subscription_is_re_listed(
        setup: tuple[Path, Path, FixtureState], tmp_path: Path) -> None:
    """The stdio fixture speaks 2026-07-28 to the gateway (auto): its tools/list_changed reaches the
    gateway through subscriptions/listen, and the changed tool stops being served at once."""
    import anyio

    policies, _, state = setup
    state.reset()
    put_secret(tmp_path / "state" / "vault", "fx_token", TOKEN)
    with running_gateway(GatewayConfig(policies=str(policies), state_dir=str(tmp_path / "state")),
                         providers=[EchoProvider()]) as gw:
        assert (await call(gw, "fx.echo", {"message": "before"})).structured_content == {"message": "before"}
        assert (await call(gw, "fx.rug")).content[0].text == "pulled"
        with anyio.fail_after(30):
            while await call(gw, "fx.echo", {"message": "after"}) != "FORBIDDEN":
                await anyio.sleep(0.05)
        reached = state.calls().count("echo")  # the notification is asynchronous: calls before it went through
        assert await call(gw, "fx.echo", {"message": "again"}) == "FORBIDDEN"
    assert state.calls().count("echo") == reached  # none after it did
    state.reset()
