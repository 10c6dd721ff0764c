"""Constitution rule 3 end to end: every tool call leaves exactly one ops.run_events row, committed
before the answer; when it cannot be committed the answer is withheld (EVENT_STORE_UNAVAILABLE).
With Postgres, "committed" means journaled in the local outbox: an outage does not stop calls,
a full or unwritable journal does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import GatewayConfig
from providers.echo import EchoProvider, PingInput
from providers.sdk import CallContext
from tests.conftest import POLICIES
from tests.harness import RunningGateway, code_of, refusal_code, running_gateway

pytestmark = pytest.mark.anyio


class CountingEcho(EchoProvider):
    """Echo that counts how often a tool really ran."""

    def __init__(self) -> None:
        self.ran = 0

    async def _ping(self, ctx: CallContext, args: PingInput) -> dict[str, str]:
        self.ran += 1
        return await super()._ping(ctx, args)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    config = GatewayConfig(policies=str(POLICIES), state_dir=str(tmp_path_factory.mktemp("state")))
    with running_gateway(config) as running:
        yield running


async def events_of(gw: RunningGateway, caller: str) -> list[Any]:
    assert gw.services.audit is not None
    return await gw.services.audit.store.query(caller_id=caller, limit=1000)


async def attempt(gw: RunningGateway, token: str, tool: str, args: dict[str, Any] | None = None) -> str:
    try:
        async with gw.client(token) as c:
            result = await c.call_tool(tool, args or {})
    except BaseException as e:
        return code_of(e)
    code = refusal_code(result)
    return f"isError {code}" if code else "tool_error" if result.is_error else "ok"


@pytest.mark.parametrize(("role", "tool", "args", "answer", "decision", "status", "policy_ids"), [
    ("ops_viewer", "echo.ping", {"message": "hi"}, "ok", "allow", "ok", ["rbac.viewer.read"]),
    ("ops_viewer", "echo.ping", {"fail": True}, "tool_error", "allow", "tool_error", ["rbac.viewer.read"]),
    ("ops_admin", "echo.ping", {"crash": True}, "INTERNAL_ERROR", "allow", "error",
     ["rbac.admin.all", "rbac.viewer.read"]),
    ("ops_viewer", "echo.comment", {}, "FORBIDDEN", "deny", "denied", []),
    # Answered as the tool's result (the model's to fix); the row is the same as ever.
    ("ops_viewer", "echo.ping", {"message": 5}, "isError INVALID_INPUT", "none", "invalid_input", []),
    ("ops_viewer", "echo.nope", {}, "INVALID_INPUT", "none", "invalid_input", []),
])
async def test_every_call_shape_leaves_exactly_one_row(gw: RunningGateway, role: str, tool: str,
                                                       args: dict[str, Any], answer: str, decision: str,
                                                       status: str, policy_ids: list[str]) -> None:
    import uuid

    user = str(uuid.uuid4())
    assert await attempt(gw, gw.token(role, user_id=user), tool, args) == answer
    rows = await events_of(gw, user)
    assert len(rows) == 1, rows
    row = rows[0]
    provider, _, local = tool.partition(".")
    assert (row.provider, row.tool, row.caller_id) == (provider, local, user)
    assert row.decision == decision and sorted(row.policy_ids) == sorted(policy_ids)
    assert row.result["status"] == status
    assert {k: v for k, v in row.payload.items() if k != "_request"} == {"args": args}
    # A decided call keeps the request as decided, for `opsgate policy replay` (tests/test_impact_replay.py).
    assert ("_request" in row.payload) == (decision != "none")
    if decision != "none":
        assert row.bundle_revision == gw.services.engine.bundle.revision
    assert row.duration_ms >= 0 and row.created_at.endswith("+00:00")


async def test_a_rate_limited_call_is_a_row_with_its_bucket(tmp_path: Path) -> None:
    import re
    import shutil

    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    tiers = policies / "tiers" / "rate-tiers.cedar"
    tiers.write_text(re.sub(r'@limit\("100/hour"\)', '@limit("2/hour")', tiers.read_text()))
    with running_gateway(GatewayConfig(policies=str(policies), state_dir=str(tmp_path / "s"))) as gw:
        token = gw.token("ops_viewer")
        answers = [await attempt(gw, token, "echo.ping") for _ in range(3)]
        assert answers == ["ok", "ok", "RATE_LIMIT"]
        rows = await gw.services.audit.store.query(limit=10)  # type: ignore[union-attr]
        assert [r.result["status"] for r in rows] == ["ok", "ok", "rate_limited"]
        assert rows[2].result["bucket"] == "reads" and rows[2].result["retry_after_s"] > 0


async def test_postgres_down_calls_flow_through_the_outbox_until_it_is_full(tmp_path: Path) -> None:
    echo = CountingEcho()
    config = GatewayConfig(policies=str(POLICIES), state_dir=str(tmp_path), events="postgres",
                           database_url="postgresql://postgres@127.0.0.1:1/nowhere", events_outbox_max=2)
    with running_gateway(config, providers=[echo]) as gw:
        token = gw.token("ops_viewer")
        # The database is unreachable, but each call is journaled locally first: answers flow.
        assert await attempt(gw, token, "echo.ping") == "ok"
        assert await attempt(gw, token, "echo.ping") == "ok"
        assert echo.ran == 2
        async with httpx.AsyncClient(base_url=gw.url) as http:
            ready = await http.get("/health/ready")
            assert ready.status_code == 200  # still serving: the outbox holds the events
            outbox = ready.json()["events"]["outbox"]
            assert ready.json()["events"]["status"] == "degraded" and outbox["backlog"] == 2
            assert outbox["shipping"] == "failing" and "127.0.0.1" in outbox["last_error"]
        # The outbox is full: a new call is refused before its tool runs, and for a moment nothing runs.
        assert await attempt(gw, token, "echo.ping") == "EVENT_STORE_UNAVAILABLE"
        assert await attempt(gw, token, "echo.ping") == "EVENT_STORE_UNAVAILABLE"
        assert echo.ran == 2


async def test_an_unwritable_store_at_disk_withholds_answers_and_stops_tools(tmp_path: Path) -> None:
    echo = CountingEcho()
    config = GatewayConfig(policies=str(POLICIES), state_dir=str(tmp_path), events_durability="disk")
    with running_gateway(config, providers=[echo]) as gw:
        token = gw.token("ops_viewer")
        assert await attempt(gw, token, "echo.ping") == "ok"
        store = gw.services.audit.store  # type: ignore[union-attr]
        # The database stops taking writes under the gateway, as on EIO or ENOSPC.
        store._wconn.execute("pragma query_only=1")  # type: ignore[attr-defined]
        assert await attempt(gw, token, "echo.ping") == "EVENT_STORE_UNAVAILABLE"
        assert echo.ran == 2  # it ran (its start was recorded), but its answer could not be: withheld
        assert await attempt(gw, token, "echo.ping") == "EVENT_STORE_UNAVAILABLE"
        assert echo.ran == 2  # while the store is failing, no tool runs at all


async def test_an_unwritable_store_at_process_stops_tools_and_loses_no_outcome(tmp_path: Path) -> None:
    """At "process" (the default) an answer waits for its outcome's line in the intent log, not for
    the SQLite commit behind it. When commits start failing, the answer already journaled is
    released, every later tool is refused until commits work again, and no row is lost."""
    import time
    import uuid

    echo = CountingEcho()
    user = str(uuid.uuid4())
    with running_gateway(GatewayConfig(policies=str(POLICIES), state_dir=str(tmp_path)), providers=[echo]) as gw:
        token = gw.token("ops_viewer", user_id=user)
        assert await attempt(gw, token, "echo.ping") == "ok"
        store = gw.services.audit.store  # type: ignore[union-attr]
        store.RETRY_S = 0.05  # type: ignore[attr-defined]
        await store.flush()  # type: ignore[attr-defined]  # the first call's row is in before the trouble
        store._wconn.execute("pragma query_only=1")  # type: ignore[attr-defined]
        assert await attempt(gw, token, "echo.ping") == "ok"  # journaled; its commit fails behind it
        deadline = time.monotonic() + 10
        while (answer := await attempt(gw, token, "echo.ping")) != "EVENT_STORE_UNAVAILABLE":
            assert answer == "ok" and time.monotonic() < deadline, answer  # until the failure is seen
        ran = echo.ran
        assert await attempt(gw, token, "echo.ping") == "EVENT_STORE_UNAVAILABLE"
        assert echo.ran == ran  # refused before the tool: nothing runs while outcomes cannot land
        store._wconn.execute("pragma query_only=0")  # type: ignore[attr-defined]
        while (answer := await attempt(gw, token, "echo.ping")) != "ok":  # the retry commits; open again
            assert time.monotonic() < deadline + 10, answer
        rows = await events_of(gw, user)
        answered = [r for r in rows if r.result["status"] == "ok"]
        assert len(answered) == echo.ran  # every tool that ran has its row, written behind or not
        refused = [r for r in rows if r.result["status"] == "unrecorded"]  # the refusals are rows too
        assert refused and len(answered) + len(refused) == len(rows), [r.result for r in rows]


async def test_rows_carry_the_trace_and_never_a_secret(gw: RunningGateway) -> None:
    import re
    import uuid

    user = str(uuid.uuid4())
    secret = gw.secret.decode()  # a vault secret (the signing key) smuggled into the arguments
    assert await attempt(gw, gw.token("ops_viewer", user_id=user), "echo.ping",
                         {"message": f"key={secret} and more"}) == "ok"
    (row,) = await events_of(gw, user)
    stored = repr(row)
    assert secret not in stored and "[REDACTED:secret]" in row.payload["args"]["message"]
    assert secret not in repr(row.result)
    assert row.trace_id is not None and re.fullmatch(r"[0-9a-f]{32}", row.trace_id)
    assert row.span_id is not None and re.fullmatch(r"[0-9a-f]{16}", row.span_id)


async def test_decision_api_calls_are_events(gw: RunningGateway) -> None:
    import uuid

    admin = str(uuid.uuid4())
    query = {"input": {"principal": 'Ops::User::"u1"', "action": "echo.scan", "resource": 'Ops::Provider::"echo"',
                       "entities": [{"uid": {"type": "Ops::User", "id": "u1"},
                                     "parents": [{"type": "Ops::Role", "id": "ops_viewer"}]}]}}
    async with httpx.AsyncClient(base_url=gw.url,
                                 headers={"Authorization": f"Bearer {gw.token('ops_admin', user_id=admin)}"}) as http:
        answer = (await http.post("/v1/data/opsgate/authz", json=query)).json()
    (row,) = await events_of(gw, admin)
    assert (row.provider, row.tool, row.decision) == ("opsgate", "decide", "deny")
    assert row.result == {"status": "answered", "allow": False, "decision_id": answer["decision_id"]}
    assert row.payload["args"]["path"] == "opsgate/authz" and row.payload["args"]["action"] == "echo.scan"
