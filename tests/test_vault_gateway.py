"""The gateway on either vault backend (`vault = "embedded" | "supabase"`): its signing key is
generated into that vault on first start, and a provider reads its own secret from it through
the `read_secret` decision, and no other provider's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gateway.config import GatewayConfig
from gateway.serve import DEV_SECRET, open_configured_vault
from providers.echo import EchoProvider, PingInput
from providers.sdk import CallContext
from tests.conftest import POLICIES
from tests.harness import RunningGateway, code_of, running_gateway
from tests.vault_pg import PgVault, clear, pgvault_fixture  # noqa: F401 (a fixture)

pytestmark = pytest.mark.anyio

VALUE = "echo-upstream-key-0123456789"


class SecretEcho(EchoProvider):
    """`echo.ping` reads the secret its message names and answers with its length."""

    async def _ping(self, ctx: CallContext, args: PingInput) -> dict[str, int]:
        return {"length": len(await self.get_vault_secret(args.message))}


@dataclass
class Served:
    gw: RunningGateway
    config: GatewayConfig


@pytest.fixture(scope="module", params=["embedded", "supabase"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    state = tmp_path_factory.mktemp("state")
    if request.param == "embedded":
        config = GatewayConfig(policies=str(POLICIES), state_dir=str(state))
    else:
        pg: PgVault = request.getfixturevalue("pgvault")
        asyncio.run(clear(pg))
        config = GatewayConfig(policies=str(POLICIES), state_dir=str(state), vault="supabase",
                               database_url=pg.dsn(pg.operator))

    async def seed() -> None:
        vault = open_configured_vault(config)
        try:
            await vault.set("echo_api_key", VALUE)
            await vault.set("socket_api_key", "socket-upstream-key-0123456789")
        finally:
            await vault.close()

    asyncio.run(seed())
    with running_gateway(config, providers=[SecretEcho()]) as running:
        yield Served(running, config)


async def ping(gw: RunningGateway, message: str) -> Any:
    try:
        async with gw.client(gw.token("ops_viewer")) as c:
            r = await c.call_tool("echo.ping", {"message": message})
        return r.structured_content
    except BaseException as e:
        return code_of(e)


async def test_the_signing_key_lives_in_the_configured_vault(served: Served) -> None:
    vault = open_configured_vault(served.config)
    try:
        assert (await vault.get(DEV_SECRET)).encode() == served.gw.secret
        assert {s.name for s in await vault.list()} >= {DEV_SECRET, "echo_api_key", "socket_api_key"}
    finally:
        await vault.close()
    # With Supabase Vault nothing is kept locally.
    assert (Path(served.config.state_dir) / "vault").exists() == (served.config.vault == "embedded")


async def test_a_provider_reads_its_own_secret_from_either_backend(served: Served) -> None:
    gw = served.gw
    assert await ping(gw, "echo_api_key") == {"length": len(VALUE)}
    assert await ping(gw, "socket_api_key") == "FORBIDDEN"
    assert await ping(gw, "opsgate_dev_jwt_secret") == "FORBIDDEN"  # the gateway's own key is nobody's


async def test_a_rotation_is_seen_on_the_next_read(served: Served) -> None:
    vault = open_configured_vault(served.config)
    try:
        info = await vault.set("echo_api_key", VALUE + "-rotated")
    finally:
        await vault.close()
    assert info.version >= 2
    assert await ping(served.gw, "echo_api_key") == {"length": len(VALUE) + len("-rotated")}
