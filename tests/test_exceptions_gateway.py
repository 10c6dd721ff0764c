"""Approving and revoking exceptions through the running gateway over HTTP, with real tokens: the
route authenticates with the gateway's authenticator, takes the role from the token, signs with the
vault's key, reloads policy, and records every step; decisions the exception affects carry its id
into the audit trail."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine import Request, Uid
from engine.exceptions import find
from gateway.config import GatewayConfig
from gateway.exception_lifecycle import SIGNING_KEY
from gateway.serve import demo_user_id
from tests.conftest import POLICIES, put_secret
from tests.exception_fixtures import KEY, REQUESTER, file
from tests.harness import RunningGateway, running_gateway

pytestmark = pytest.mark.anyio

AGENT = "http://agent-7.lan:19999"
ADMIN = demo_user_id("ops_admin")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    state = tmp_path_factory.mktemp("state")
    put_secret(state / "vault", SIGNING_KEY, KEY)  # the key the fixtures file with: approvers.pub's root
    config = GatewayConfig(policies=str(POLICIES), state_dir=str(state), exceptions=str(state / "exceptions"))
    with running_gateway(config) as running:
        yield running


def root(gw: RunningGateway) -> Path:
    return Path(gw.services.engine.exceptions_dir or "")


async def post(gw: RunningGateway, path: str, token: str | None, body: Any = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
        return await http.post(path, headers=headers, json=body)


def agent_egress(gw: RunningGateway) -> Any:
    return gw.services.engine.decide(Request(Uid.of("Provider", "netdata"), "egress", Uid.of("Host", "agent-7.lan"),
                                             {"scheme": "http", "port": 19999}))


async def opsgate_rows(gw: RunningGateway) -> list[tuple[str, str | None, list[str]]]:
    assert gw.services.audit is not None
    rows = await gw.services.audit.store.query(provider="opsgate", limit=1000)
    return [(e.tool, e.caller_id, e.exception_ids) for e in rows if e.tool.startswith("exception.")]


async def test_http_approve_with_real_tokens(gw: RunningGateway) -> None:
    now = gw.services.clock()
    exception_id = file(root(gw), "netdata", 5, {"hosts": [AGENT]}, days=30, at=now)
    url = f"/v1/exceptions/{exception_id}/approve"
    assert not agent_egress(gw).allowed

    assert (await post(gw, url, None)).status_code == 401
    assert (await post(gw, url, gw.token("ops_admin", extra={"exp": 1}))).status_code == 401

    r = await post(gw, url, gw.token("ops_operator"))
    assert r.status_code == 403
    assert r.json()["extra"]["problems"] == ["the approver's role is ops_operator; only an ops_admin may approve"]
    r = await post(gw, url, gw.token("ops_admin", user_id=REQUESTER))
    assert r.status_code == 403
    assert "the requester cannot approve their own exception" in r.json()["detail"]
    assert not agent_egress(gw).allowed

    r = await post(gw, url, gw.token("ops_admin"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["approved_by"] == ADMIN and body["filed_by"] == REQUESTER
    assert body["reloaded"] is True and exception_id in body["active"]
    d = agent_egress(gw)
    assert d.allowed and d.exceptions_applied == (exception_id,)
    record = find(root(gw), exception_id)
    assert record is not None and record.state(now) == "active" and record.approval is not None
    assert record.approval.approved_by == ADMIN

    r = await post(gw, url, gw.token("ops_admin"))
    assert r.status_code == 409 and "already approved" in r.json()["detail"]
    assert (await post(gw, "/v1/exceptions/mcp-exception-nope-5/approve", gw.token("ops_admin"))).status_code == 404

    r = await post(gw, f"/v1/exceptions/{exception_id}/revoke", gw.token("ops_viewer"), {"reason": "done"})
    assert r.status_code == 403
    r = await post(gw, f"/v1/exceptions/{exception_id}/revoke", gw.token("ops_admin"), {"reason": "done"})
    assert r.status_code == 200 and exception_id not in r.json()["active"]
    assert not agent_egress(gw).allowed

    rows = [row for row in await opsgate_rows(gw) if row[2] == [exception_id]]
    assert [(tool, caller) for tool, caller, _ in rows] == [
        ("exception.refused", demo_user_id("ops_operator")), ("exception.refused", REQUESTER),
        ("exception.approved", ADMIN), ("exception.refused", ADMIN), ("exception.refused", demo_user_id("ops_viewer")),
        ("exception.revoked", ADMIN)]


async def test_a_tool_call_under_a_rate_waiver_names_it_in_the_audit_row(gw: RunningGateway) -> None:
    viewer = demo_user_id("ops_viewer")
    now = gw.services.clock()
    exception_id = file(root(gw), "echo", 8, {"bucket": "reads", "limit": "500/hour", "users": [viewer]},
                        days=1, at=now - timedelta(minutes=1))
    r = await post(gw, f"/v1/exceptions/{exception_id}/approve", gw.token("ops_admin"))
    assert r.status_code == 200, r.text

    listing = await _get(gw, "/v1/exceptions", gw.token("ops_viewer"))
    assert {e["id"]: e["state"] for e in listing["exceptions"]}[exception_id] == "active"

    for role in ("ops_viewer", "ops_operator"):
        async with gw.client(gw.token(role)) as c:
            result = await c.call_tool("echo.ping", {"message": role})
        assert not result.is_error
    assert gw.services.audit is not None
    rows = await gw.services.audit.store.query(tool="ping", limit=1000, newest_first=True)
    by_caller = {e.caller_id: e for e in reversed(rows)}
    assert by_caller[viewer].exception_ids == [exception_id]
    assert by_caller[demo_user_id("ops_operator")].exception_ids == []


async def _get(gw: RunningGateway, path: str, token: str) -> Any:
    async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
        r = await http.get(path, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.json()


async def test_a_running_gateway_records_an_expiry_once_without_waiting_for_review(
        tmp_path: Path) -> None:
    import asyncio

    from tests.exception_fixtures import NOW, file_and_approve

    exceptions = tmp_path / "exceptions"
    # Approved for six hours from the fixtures' clock (2026-11-21T12:00Z): long expired by now.
    gone = file_and_approve(exceptions, "netdata", 5, {"hosts": [AGENT]}, days=0.25, at=NOW)

    async def expired_rows(g: RunningGateway) -> list[Any]:
        assert g.services.audit is not None
        rows = await g.services.audit.store.query(provider="opsgate", limit=1000)
        return [e for e in rows if e.tool == "exception.expired"]

    for _ in range(2):  # a second gateway on the same audit store must not record it again
        config = GatewayConfig(policies=str(POLICIES), state_dir=str(tmp_path / "state"), exceptions=str(exceptions))
        with running_gateway(config) as g:
            for _ in range(100):
                if await expired_rows(g):
                    break
                await asyncio.sleep(0.05)
            rows = await expired_rows(g)
            assert [e.exception_ids for e in rows] == [[gone]]
            assert not agent_egress(g).allowed


async def test_filing_over_http_names_the_caller_and_the_filer_cannot_approve(gw: RunningGateway) -> None:
    filer = "f11e0000-0000-4000-8000-00000000000f"
    body = {"provider": "sentry", "rule": 5, "grant": {"hosts": ["http://relay.lan:9000"]},
            "justification": "the relay is only on the LAN", "compensating_controls": ["read-only token"],
            "days": 10, "suffix": "http"}
    assert (await post(gw, "/v1/exceptions", None, body)).status_code == 401
    r = await post(gw, "/v1/exceptions", gw.token("ops_admin", user_id=filer), {**body, "requested_by": ADMIN})
    assert r.status_code == 400  # nobody states a requester: the token does
    r = await post(gw, "/v1/exceptions", gw.token("ops_admin", user_id=filer), body)
    assert r.status_code == 201, r.text
    exception_id = r.json()["exception"]
    assert (exception_id, r.json()["filed_by"], r.json()["state"]) == ("mcp-exception-sentry-5-http", filer, "pending")
    record = find(root(gw), exception_id)
    assert record is not None and record.filer == filer and record.spec is not None
    assert record.spec.requested_by == filer
    assert (await post(gw, "/v1/exceptions", gw.token("ops_admin", user_id=filer), body)).status_code == 409
    r = await post(gw, "/v1/exceptions", gw.token("ops_viewer"), {**body, "rule": 3, "suffix": "events"})
    assert r.status_code == 422 and "can never be waived" in r.json()["detail"]

    r = await post(gw, f"/v1/exceptions/{exception_id}/approve", gw.token("ops_admin", user_id=filer))
    assert r.status_code == 403 and "cannot approve their own" in r.json()["detail"]
    r = await post(gw, f"/v1/exceptions/{exception_id}/approve", gw.token("ops_admin"))
    assert r.status_code == 200 and (r.json()["filed_by"], r.json()["approved_by"]) == (filer, ADMIN)
    rows = [row for row in await opsgate_rows(gw) if row[2] == [exception_id]]
    assert [(tool, caller) for tool, caller, _ in rows] == [
        ("exception.filed", filer), ("exception.refused", filer), ("exception.refused", filer),
        ("exception.approved", ADMIN)]
    assert gw.services.audit is not None  # each step over HTTP names the client it came from
    steps = await gw.services.audit.store.query(provider="opsgate", limit=1000)
    assert {e.client_addr for e in steps if e.exception_ids == [exception_id]} == {"127.0.0.1"}
