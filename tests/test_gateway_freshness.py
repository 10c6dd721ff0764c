"""With auth_freshness on, the gateway asks auth.users on every call: a banned or deleted user
is refused even while their token is still valid."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from gateway.config import GatewayConfig
from tests.conftest import POLICIES, admin_sql, require_service
from tests.harness import RunningGateway, code_of, running_gateway, unwrap
from tests.test_gateway_e2e import call

pytestmark = pytest.mark.anyio
ACTIVE, BANNED, DELETED = (str(uuid.uuid4()) for _ in range(3))


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import asyncio

    name = f"opsgate_fresh_{uuid.uuid4().hex[:12]}"

    async def setup() -> None:
        await admin_sql(f'create database "{name}"')
        db = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}")
        await db.execute("create schema auth; create table auth.users (id uuid primary key, banned_until timestamptz,"
                         " deleted_at timestamptz, raw_app_meta_data jsonb)")
        await db.execute("insert into auth.users values ($1, null, null, '{}'), ($2, now() + interval '1 day', null,"
                         " '{}'), ($3, null, now(), '{}')", uuid.UUID(ACTIVE), uuid.UUID(BANNED), uuid.UUID(DELETED))
        await db.close()

    async def teardown() -> None:
        await admin_sql(f'drop database if exists "{name}" with (force)')

    asyncio.run(setup())
    config = GatewayConfig(policies=str(POLICIES), state_dir=str(tmp_path_factory.mktemp("state")),
                           auth_freshness=True, database_url=f"postgresql://postgres@127.0.0.1:5432/{name}")
    try:
        with running_gateway(config) as running:
            yield running
    finally:
        asyncio.run(teardown())


async def test_an_active_user_passes(gw: RunningGateway) -> None:
    assert not (await call(gw, gw.token("ops_viewer", user_id=ACTIVE), "echo.ping")).is_error


@pytest.mark.parametrize(("user", "why"), [(BANNED, "banned"), (DELETED, "deleted"), (str(uuid.uuid4()), "exist")])
async def test_banned_deleted_and_unknown_users_are_refused(gw: RunningGateway, user: str, why: str) -> None:
    with pytest.raises(BaseException) as err:
        await call(gw, gw.token("ops_admin", user_id=user), "echo.ping")
    assert code_of(err.value) == "UNAUTHENTICATED"
    assert why in unwrap(err.value).error.message
