"""Issue 13, items 1-4: the attacks on the Deviation Protocol as reported, against the real gateway
over real HTTP, with the real CLI, real files and the real embedded vault and audit store. Each
test reproduces its attack first; on the code before the fix the attack succeeded (an approval
answered 200, an exception came back active, a refused request created the signing key).

The gateway and the CLI share one state dir (vault, audit store) as `make run` does; an attacker's
own tooling is a second state dir with its own vault and its own development token key.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine import Request, Uid
from engine.exceptions import PUBLIC_KEYS, new_private_key, public_key_line
from gateway.cli import main
from gateway.config import GatewayConfig
from gateway.exception_lifecycle import SIGNING_KEY
from gateway.serve import mint_token, signing_key
from providers.sdk.vault import EmbeddedVault
from tests.conftest import POLICIES, put_secret
from tests.exception_fixtures import forge_approval, raw_spec
from tests.harness import RunningGateway, free_port, running_gateway

pytestmark = pytest.mark.anyio

A = str(uuid.uuid5(uuid.NAMESPACE_URL, "hostile:admin-a"))  # the admin who wants the exception
B = str(uuid.uuid5(uuid.NAMESPACE_URL, "hostile:admin-b"))  # another admin
VIEWER = str(uuid.uuid5(uuid.NAMESPACE_URL, "hostile:viewer"))
STRANGER = str(uuid.uuid4())  # any uuid at all
AGENT = "http://agent-7.lan:19999"
ID = "mcp-exception-netdata-5"
NEW = ("new", "--provider", "netdata", "--rule", "5", "--host", AGENT, "--justification",
       "the agent serves metrics only on the LAN", "--control", "read-only API key", "--days", "30")


@dataclass
class World:
    tmp: Path
    state: Path  # the gateway's (and the CLI's) vault and audit store
    ex: Path  # the exceptions directory

    @property
    def config(self) -> GatewayConfig:
        return GatewayConfig(policies=str(POLICIES), state_dir=str(self.state), exceptions=str(self.ex))

    def token(self, uid: str, role: str, state: Path | None = None) -> str:
        """A token the given state dir's development key signs (the gateway's by default)."""
        secret = signing_key(GatewayConfig(state_dir=str(state or self.state)))
        return mint_token(secret, issuer="opsgate-dev", user_id=uid, role=role)

    def token_file(self, uid: str, role: str, state: Path | None = None) -> str:
        path = self.tmp / f"{uuid.uuid4().hex}.jwt"
        path.write_text(self.token(uid, role, state))
        return str(path)

    async def cli(self, *args: str, uid: str | None = None, role: str = "ops_admin", state: Path | None = None) -> int:
        """`opsgate exception ...` run as `uid`, with `state` (the gateway's by default) as its vault
        (in a thread: the command runs its own event loop)."""
        extra = ["--dir", str(self.ex), "--state-dir", str(state or self.state)]
        if uid is not None:
            extra += ["--token-file", self.token_file(uid, role, state)]
        return await asyncio.to_thread(main, ["exception", *args, *extra])

    @contextlib.contextmanager
    def gateway(self, config: GatewayConfig | None = None) -> Iterator[RunningGateway]:
        with running_gateway(config or self.config) as gw:
            yield gw


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path, tmp_path / "state", tmp_path / "exceptions")


def attacker(world: World, name: str = "evil") -> tuple[Path, str]:
    """A state dir of the attacker's own: its vault holds a fresh approvers' key (returned)."""
    state = world.tmp / name
    key = new_private_key()
    put_secret(state / "vault", SIGNING_KEY, key)
    return state, key


async def post(gw: RunningGateway, path: str, token: str, body: Any = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
        return await http.post(path, headers={"Authorization": f"Bearer {token}"}, json=body)


async def get(gw: RunningGateway, path: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
        return await http.get(path, headers={"Authorization": f"Bearer {token}"})


async def approve(gw: RunningGateway, world: World, uid: str, exception_id: str = ID) -> httpx.Response:
    return await post(gw, f"/v1/exceptions/{exception_id}/approve", world.token(uid, "ops_admin"))


async def reload(gw: RunningGateway, world: World) -> None:
    r = await post(gw, "/v1/policy/reload", world.token(B, "ops_admin"))
    assert r.status_code == 200, r.text


async def states(gw: RunningGateway, world: World) -> dict[str, str]:
    r = await get(gw, "/v1/exceptions", world.token(VIEWER, "ops_viewer"))
    assert r.status_code == 200, r.text
    return {e["id"]: e["state"] for e in r.json()["exceptions"]}


def egress_allowed(gw: RunningGateway, host: str = "agent-7.lan", provider: str = "netdata") -> bool:
    """The running gateway's own egress decision for the waived host."""
    return gw.services.engine.decide(Request(Uid.of("Provider", provider), "egress", Uid.of("Host", host),
                                             {"scheme": "http", "port": 19999})).allowed


# -- item 1: self-approval through a stated requester ----------------------------------------------------


async def test_item1_new_with_requested_by_then_self_approval(world: World,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    with world.gateway() as gw:
        filed = await world.cli(*NEW, "--requested-by", STRANGER)  # admin A, claiming any uuid, proving nothing
        if not (world.ex / ID).exists():  # refused (below): write what it used to write, by hand
            (world.ex / ID).mkdir(parents=True)
            (world.ex / ID / "exception.yaml").write_text(
                raw_spec("netdata", 5, f"  kind: egress\n  hosts: [{AGENT}]", requested_by=STRANGER,
                         at=gw.services.clock().replace(microsecond=0)))
            (world.ex / ID / "README.md").write_text("# the agent serves metrics only on the LAN\n")

        r = await approve(gw, world, A)  # A approves "someone else's" exception
        assert r.status_code == 422, r.text
        assert "not filed by a verified identity" in r.json()["detail"]
        assert not egress_allowed(gw)
        assert (await states(gw, world))[ID] == "invalid"
    assert filed == 2
    assert "--requested-by proves nothing" in capsys.readouterr().err


async def test_item1_token_file_filing_then_editing_requested_by(world: World) -> None:
    with world.gateway() as gw:
        assert await world.cli(*NEW, uid=A) == 0  # filed with A's token: the receipt names A
        spec = world.ex / ID / "exception.yaml"
        filed_text = spec.read_text()
        spec.write_text(filed_text.replace(A, STRANGER))  # while pending

        r = await approve(gw, world, A)
        assert r.status_code == 403, r.text
        assert "the requester cannot approve their own exception" in r.json()["detail"]
        assert not egress_allowed(gw)
        r = await approve(gw, world, B)  # nor anyone else: the edited request is not the filed one
        assert r.status_code == 422 and "edited after it was filed" in r.json()["detail"]
        assert not egress_allowed(gw)

        spec.write_text(filed_text)  # the request as filed: B may approve it, and it is A's
        r = await approve(gw, world, B)
        assert r.status_code == 200, r.text
        assert (r.json()["filed_by"], r.json()["approved_by"]) == (A, B)
        assert egress_allowed(gw)


# -- item 2: deleting revocation.json brings a revoked exception back ------------------------------------


async def test_item2_rm_revocation_json_and_reload(world: World) -> None:
    with world.gateway() as gw:
        assert await world.cli(*NEW, uid=A) == 0
        assert (await approve(gw, world, B)).status_code == 200
        assert egress_allowed(gw)
        r = await post(gw, f"/v1/exceptions/{ID}/revoke", world.token(B, "ops_admin"), {"reason": "moved"})
        assert r.status_code == 200, r.text
        assert not egress_allowed(gw)

        (world.ex / ID / "revocation.json").unlink()
        await reload(gw, world)
        assert not egress_allowed(gw)
        assert (await states(gw, world))[ID] == "revoked"
        r = await approve(gw, world, B)
        assert r.status_code == 409 and "revocation is permanent" in r.json()["detail"]

        assert gw.services.audit is not None  # the row is the anchor: the CLI reads it from the same store
        for _ in range(100):
            if await gw.services.audit.store.query(provider="opsgate", tool="exception.revoked"):
                break
            await asyncio.sleep(0.05)
        assert await world.cli("approve", ID, uid=B) == 1
    with world.gateway() as gw:  # a restart: the new process knows only what the audit trail says
        assert not egress_allowed(gw)
        assert (await states(gw, world))[ID] == "revoked"


# -- item 3: approvers.pub trusted as committed ----------------------------------------------------------


async def test_item3_a_random_key_appended_to_approvers_pub(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    evil, evil_key = attacker(world)
    with world.gateway() as gw:
        assert await world.cli(*NEW, uid=A) == 0  # A files; the gateway's vault key is the root
        with (world.ex / PUBLIC_KEYS).open("a") as f:
            f.write(public_key_line(evil_key) + "\n")  # the commit
        # ... and A approves "as B" with the attacker's own tooling, vault and token key
        approved = await world.cli("approve", ID, uid=B, state=evil)
        await reload(gw, world)
        assert not egress_allowed(gw)
        assert (await states(gw, world))[ID] != "active"
        assert approved == 1 and "is not trusted by approvers.pub" in capsys.readouterr().err

        # written by hand instead, signed with the appended key: ignored all the same
        forge_approval(world.ex, ID, expires_at=gw.services.clock() + timedelta(days=29), approved_by=B,
                       filed_by=A, key=evil_key, approved_at=gw.services.clock())
        await reload(gw, world)
        assert not egress_allowed(gw)
        status = gw.services.engine.status()["exceptions"]
        assert "does not trust" in status["refused"][ID]
        evil_kid = public_key_line(evil_key).split()[0]
        assert any(evil_kid in line and "not endorsed" in line for line in status["approvers"]["ignored"])
    capsys.readouterr()
    assert main(["exception", "lint", "--dir", str(world.ex)]) == 1
    assert f"key {evil_kid} is ignored" in capsys.readouterr().out


async def test_item3_approvers_pub_replaced_wholesale(world: World) -> None:
    evil, evil_key = attacker(world)
    with world.gateway() as gw:
        assert await world.cli(*NEW, uid=A) == 0
        assert (await approve(gw, world, B)).status_code == 200  # the gateway pinned approvers.pub's root
        assert egress_allowed(gw)
        original = (world.ex / PUBLIC_KEYS).read_text()

        (world.ex / PUBLIC_KEYS).write_text(public_key_line(evil_key) + "\n")  # a new "first" key
        relay = ("new", "--provider", "sentry", "--rule", "5", "--host", "http://relay.lan:19999",
                 "--justification", "relay", "--control", "none", "--days", "30")
        assert await world.cli(*relay, uid=A, state=evil) == 0  # the attacker's own vault trusts its own root
        assert await world.cli("approve", "mcp-exception-sentry-5", uid=B, state=evil) == 0
        await reload(gw, world)
        assert not egress_allowed(gw, "relay.lan", "sentry")
        assert not egress_allowed(gw)  # nothing signed is trusted while the root is not the pinned one
        refused = gw.services.engine.status()["exceptions"]["refused"]
        assert "pinned" in refused["mcp-exception-sentry-5"] and "replaced" in refused["mcp-exception-sentry-5"]

        (world.ex / PUBLIC_KEYS).write_text(original)
        await reload(gw, world)
        assert egress_allowed(gw) and not egress_allowed(gw, "relay.lan", "sentry")


async def test_item3_add_key_is_how_an_approver_key_is_added(world: World,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    desk = world.tmp / "desk"  # another approver's own vault
    with world.gateway() as gw:
        assert await world.cli(*NEW, uid=A) == 0
        capsys.readouterr()
        assert await asyncio.to_thread(main, ["exception", "key", "--state-dir", str(desk)]) == 0
        line = capsys.readouterr().out.strip()
        assert await world.cli("add-key", line, uid=VIEWER, role="ops_viewer") == 1  # an ops_admin's step
        assert await world.cli("add-key", line, uid=B) == 0  # endorsed by the gateway vault's (root) key
        assert len((world.ex / PUBLIC_KEYS).read_text().splitlines()[-1].split()) == 4
        assert await world.cli("approve", ID, uid=B, state=desk) == 0
        await reload(gw, world)
        assert egress_allowed(gw)
    assert main(["exception", "lint", "--dir", str(world.ex)]) == 0


# -- item 4: a refused approve creates the signing key -----------------------------------------------------


async def test_item4_refused_approvals_touch_no_secret(world: World) -> None:
    desk = world.tmp / "desk"  # the filer's own machine, not the gateway's vault
    assert await world.cli(*NEW, uid=A, state=desk) == 0
    with world.gateway() as gw:
        viewer = world.token(VIEWER, "ops_viewer")
        assert (await post(gw, f"/v1/exceptions/{ID}/approve", viewer)).status_code == 403
        r = await post(gw, "/v1/exceptions/mcp-exception-nope-5/approve", world.token(B, "ops_admin"))
        assert r.status_code == 404
        assert (await post(gw, f"/v1/exceptions/{ID}/revoke", viewer, {"reason": "x"})).status_code == 403
        vault = EmbeddedVault(world.state / "vault")
        try:
            names = [s.name for s in await vault.list()]
        finally:
            await vault.close()
    assert SIGNING_KEY not in names


# -- failing closed ----------------------------------------------------------------------------------------


async def test_exceptions_grant_nothing_while_the_audit_trail_cannot_be_read(world: World) -> None:
    with world.gateway() as gw:
        assert await world.cli(*NEW, uid=A) == 0
        assert (await approve(gw, world, B)).status_code == 200
        assert egress_allowed(gw)
    unreachable = GatewayConfig(policies=str(POLICIES), state_dir=str(world.state), exceptions=str(world.ex),
                                events="postgres", database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/x")
    with world.gateway(unreachable) as gw:
        assert not egress_allowed(gw)
        status = gw.services.engine.status()["exceptions"]
        assert status["active"] == [] and "audit trail" in status["unavailable"]
        r = await approve(gw, world, B)
        assert r.status_code == 503 and "audit trail" in r.json()["detail"]
