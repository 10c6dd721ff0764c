"""The SDK's constitution exports, through the real gateway: each one asks the gateway's policy
and fails closed; an unbound provider gets nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewayConfig
from providers.echo import EchoProvider, PingInput
from providers.sdk import CallContext, Refused
from providers.sdk.vault import EmbeddedVault
from tests.conftest import POLICIES
from tests.harness import RunningGateway, code_of, running_gateway

pytestmark = pytest.mark.anyio

SECRET = "s3cr3t-value-that-must-never-leak"


class ExportsEcho(EchoProvider):
    """`echo.ping`'s message names an SDK export to exercise: `role:<r>`, `host:<url>`,
    `secret:<name>`, `event`."""

    async def _ping(self, ctx: CallContext, args: PingInput) -> dict[str, str]:
        what, _, arg = args.message.partition(":")
        if what == "role":
            await self.require_ops_access(arg)
        elif what == "host":
            self.validate_hostname(arg)
        elif what == "secret":
            value = await self.get_vault_secret(arg)
            return {"length": str(len(value)), "echo": value}  # a careless provider echoing it
        elif what == "event":
            await self.emit_event("ping.extra", {"note": "extra"}, {"status": "ok"})
        return {"done": what}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    state = tmp_path_factory.mktemp("state")
    async def seed() -> None:
        vault = EmbeddedVault(Path(state) / "vault")
        await vault.set("echo_token", SECRET)
        await vault.set("socket_api_key", "not-echos-secret")
        await vault.close()

    asyncio.run(seed())
    config = GatewayConfig(policies=str(POLICIES), state_dir=str(state))
    with running_gateway(config, providers=[ExportsEcho()]) as running:
        yield running


async def ping(gw: RunningGateway, role: str, message: str) -> Any:
    try:
        async with gw.client(gw.token(role)) as c:
            r = await c.call_tool("echo.ping", {"message": message})
        return r.structured_content
    except BaseException as e:
        return code_of(e)


async def test_require_ops_access_follows_the_role_chain(gw: RunningGateway) -> None:
    assert await ping(gw, "ops_admin", "role:ops_operator") == {"done": "role"}
    assert await ping(gw, "ops_operator", "role:ops_operator") == {"done": "role"}
    assert await ping(gw, "ops_viewer", "role:ops_operator") == "FORBIDDEN"
    assert await ping(gw, "ops_operator", "role:ops_admin") == "FORBIDDEN"


async def test_validate_hostname_asks_the_egress_policy(gw: RunningGateway) -> None:
    # echo has no allowlist entry: every host is refused, even ones other providers may reach.
    assert await ping(gw, "ops_viewer", "host:https://api.socket.dev/v0") == "FORBIDDEN"


async def test_a_provider_reads_only_its_own_secrets_and_they_are_redacted(gw: RunningGateway) -> None:
    answer = await ping(gw, "ops_viewer", "secret:echo_token")
    assert answer["length"] == str(len(SECRET))
    assert await ping(gw, "ops_viewer", "secret:socket_api_key") == "FORBIDDEN"
    assert gw.services.audit is not None
    rows = await gw.services.audit.store.query(limit=1000)
    assert rows and all(SECRET not in repr(r) for r in rows)


async def test_emit_event_appends_a_row(gw: RunningGateway) -> None:
    assert await ping(gw, "ops_viewer", "event") == {"done": "event"}
    assert gw.services.audit is not None
    rows = await gw.services.audit.store.query(limit=1000)
    assert any(r.tool == "ping.extra" and r.provider == "echo" for r in rows)


async def test_an_unbound_provider_refuses_every_export() -> None:
    p = EchoProvider()
    with pytest.raises(PermissionError):
        await p.get_vault_secret("echo_token")
    with pytest.raises(PermissionError):
        p.validate_hostname("https://api.socket.dev")
    with pytest.raises(Refused):
        await p.require_ops_access("ops_viewer")  # no caller in context


def test_a_registered_provider_reaches_the_runtime_protocol_and_nothing_more(gw: RunningGateway) -> None:
    provider = gw.services.registry.providers["echo"]
    for name in ("authorize", "egress", "has_role", "read_secret", "emit_event"):
        assert callable(getattr(provider.runtime, name))
    for insides in ("engine", "vault", "audit", "revealed", "clock"):
        assert not hasattr(provider.runtime, insides), insides
