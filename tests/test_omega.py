"""Pulse Omega end to end: the spec's acceptance checklist and hostile inputs, through the real
gateway with the real mcp client, on the embedded SQLite database and on Postgres (RLS as under
Supabase, the provider connecting as an authenticator that is only anon or authenticated).

Every refusal is asserted by its stable code, carries the `_canon` envelope, and leaves the
database exactly as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError

from gateway.config import GatewayConfig
from gateway.serve import demo_user_id
from tests.conftest import require_service
from tests.harness import RunningGateway, running_gateway, unwrap
from tests.omega_env import OmegaEnv, postgres_env, sqlite_env

pytestmark = pytest.mark.anyio

VIEWER, OPERATOR, ADMIN = (demo_user_id(r) for r in ("ops_viewer", "ops_operator", "ops_admin"))
CANON_KEYS = {"mode": "observer_only", "authority": "none", "write_paths": ["pulse_improvements:proposed_only"]}
BLOBS = {"payload", "content", "reasoning_steps", "context_snapshot", "rule", "requirements", "proposed_change",
         "guardian_review"}
GUARDIAN_REVIEW = {"proposed_by": "mcp_external_llm", "source": "mcp", "requires_human_approval": True}


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OmegaEnv]:
    if request.param == "sqlite":
        yield sqlite_env(tmp_path_factory.mktemp("omega"))
        return
    require_service("PostgreSQL", "127.0.0.1", 5432)
    yield from postgres_env()


@pytest.fixture
def gw(env: OmegaEnv, tmp_path: Path) -> Iterator[RunningGateway]:
    """A fresh gateway per test (its own in-memory rate budget) on the module's database."""
    with running_gateway(GatewayConfig(state_dir=str(tmp_path), omega=env.omega)) as g:
        yield g


def assert_canon(envelope: dict[str, Any]) -> None:
    canon = envelope["_canon"]
    assert {k: canon[k] for k in CANON_KEYS} == CANON_KEYS
    assert canon["timestamp"].endswith("Z")


async def call(gw: RunningGateway, tool: str, args: dict[str, Any], role: str = "ops_viewer") -> dict[str, Any]:
    async with gw.client(gw.token(role)) as c:
        result = await c.call_tool(tool, args)
    assert not result.is_error, result
    body = result.structured_content
    assert body is not None
    assert_canon(body)
    assert json.loads(result.content[0].text) == body
    return body["result"]


# What the model can correct comes back as the tool's own answer (isError, the spec's envelope
# around `error`); what only the client can handle is a JSON-RPC error (its data carries the
# envelope too). Either way the code is the spec's.
MODEL_CODES = {"INVALID_INPUT", "USER_ID_REQUIRED", "TABLE_NOT_ALLOWED", "COLUMN_NOT_ALLOWED", "QUERY_FAILED"}


async def refused(gw: RunningGateway, tool: str, args: dict[str, Any], role: str = "ops_viewer",
                  mode: str = "auto") -> dict[str, Any]:
    """The refusal of a call, asserted to travel the way its code says: for an isError result its
    `error` object (code, message, policy ids ...), for a JSON-RPC error its data. Both carry `_canon`."""
    async with gw.client(gw.token(role), mode) as c:
        try:
            result = await c.call_tool(tool, args)
        except MCPError as e:
            data = e.error.data
            assert data["code"] not in MODEL_CODES, f"{data['code']} must be the tool's answer, not a protocol error"
            assert_canon(data)
            assert data["error"]["code"] == data["code"]
            return data
    assert result.is_error, result
    body = result.structured_content
    assert body is not None and set(body) == {"_canon", "error"}, body
    assert_canon(body)
    assert json.loads(result.content[0].text) == body
    assert body["error"]["code"] in MODEL_CODES, f"{body['error']['code']} must be a JSON-RPC error"
    return body["error"]


# -- the spec's acceptance checklist --------------------------------------------------------------


async def test_health_report_with_user_id_returns_a_non_empty_envelope(gw: RunningGateway) -> None:
    result = await call(gw, "omega.health_report", {"userId": VIEWER})
    assert result["user_id"] == VIEWER
    assert result["status"] in ("healthy", "attention", "degraded")
    areas = result["areas"]
    assert areas["drafting"]["total"] == 8 and areas["sessions"]["total"] == 4
    assert areas["calibration"]["resolved"] == 36 and areas["calibration"]["ece"] is not None


async def test_query_an_allowlisted_table_with_a_user_id_filter(gw: RunningGateway, env: OmegaEnv) -> None:
    result = await call(gw, "omega.query", {"table": "pulse_drafts", "userId": VIEWER,
                                            "filters": {"status": "pending_review"}, "limit": 50})
    expected = env.rows("select count(*) from pulse_drafts where user_id = ? and status = 'pending_review'", VIEWER)
    assert result["count"] == expected[0][0] == 3
    assert {r["user_id"] for r in result["rows"]} == {VIEWER}
    assert {r["status"] for r in result["rows"]} == {"pending_review"}
    # Omitted select: the safe columns (as policy says), no blobs.
    assert result["columns"] == ["id", "user_id", "status", "channel", "title", "confidence", "created_at",
                                 "updated_at"]
    assert not BLOBS & set(result["rows"][0])


async def test_propose_improvement_inserts_a_proposal(gw: RunningGateway, env: OmegaEnv) -> None:
    result = await call(gw, "omega.propose_improvement", {
        "userId": OPERATOR, "improvementType": "threshold_change", "targetComponent": "guardian",
        "proposedChange": {"confidence_threshold": 0.75}, "expectedImpact": "Reduce false positives by 15%"},
        role="ops_operator")
    proposal = result["proposal"]
    assert proposal["status"] == "proposed" and proposal["user_id"] == OPERATOR
    rows = env.rows("select user_id, status, improvement_type, guardian_review, proposed_change "
                    "from pulse_improvements where id = ?", proposal["id"])
    assert len(rows) == 1
    user_id, status, kind, review, change = rows[0]
    assert (str(user_id), status, kind) == (OPERATOR, "proposed", "threshold_change")
    assert json.loads(review) == GUARDIAN_REVIEW
    assert json.loads(change) == {"confidence_threshold": 0.75}


def test_the_service_role_is_referenced_nowhere_in_the_provider() -> None:
    root = Path(__file__).resolve().parent.parent / "providers" / "omega"
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix in (".py", ".sql")]
    assert len(files) >= 8
    for path in files:
        text = path.read_text().lower()
        for needle in ("service_role", "service-role", "servicerole", "service role", "bypassrls",
                       "supabase_service", "postgres@", "set role postgres"):
            assert needle not in text, f"{path.name} mentions {needle!r}"
        for line in text.splitlines():  # providers import only the SDK (and themselves)
            if line.startswith(("import ", "from ")):
                assert not line.split()[1].startswith(("engine", "gateway", "providers.echo")), (path.name, line)


# -- every tool says something meaningful ---------------------------------------------------------


async def test_every_tool_returns_something_meaningful(gw: RunningGateway) -> None:
    state = await call(gw, "omega.get_state", {"userId": VIEWER})
    assert state["drafts"]["open"] and state["goals"]["active"] and state["signals"]["open"]
    assert sum(state["drafts"]["by_status"].values()) == 8

    risk = await call(gw, "omega.risk_report", {"userId": VIEWER})
    assert risk["count"] > 0 and risk["overall"] in ("high", "critical")
    assert {"signal", "goal", "session", "calibration"} <= {r["category"] for r in risk["risks"]}
    assert len(risk["guardian_constraints"]) == 6

    cal = await call(gw, "omega.analyze_calibration", {"userId": VIEWER})
    assert cal["resolved"] == 36 and cal["bins"] and cal["assessment"] == "overconfident"
    assert set(cal["by_domain"]) == {"drafting", "prioritization", "timing", "risk"}
    assert cal["autonomy"]["advisory_only"] is True
    timing = await call(gw, "omega.analyze_calibration", {"userId": VIEWER, "domain": "timing", "bins": 5})
    assert timing["predictions"] == 10 and len(timing["bins"]) <= 5

    sessions = await call(gw, "omega.query", {"table": "pulse_sessions", "userId": VIEWER,
                                              "filters": {"status": "failed"}})
    chain = await call(gw, "omega.get_reasoning_chain", {"userId": VIEWER, "sessionId": sessions["rows"][0]["id"]})
    assert chain["session"]["status"] == "failed"
    assert chain["step_count"] == len(chain["steps"]) >= 3
    assert chain["steps"][0]["step"] == 1 and "thought" in chain["steps"][0]
    assert chain["predictions"]

    sim = await call(gw, "omega.simulate_impact", {
        "changeType": "autonomy_change", "targetComponent": "guardian",
        "proposedChange": {"autonomy_level": 3}, "currentValues": {"autonomy_level": 1}})
    assert sim["risk_level"] == "critical" and sim["hard_constraints_touched"] == ["autonomy_level"]
    assert sim["requires_human_approval"] is True


async def test_global_tables_need_no_user_id(gw: RunningGateway) -> None:
    levels = await call(gw, "omega.query", {"table": "pulse_autonomy_levels", "orderBy": "level", "ascending": True})
    assert [r["level"] for r in levels["rows"]] == [0, 1, 2, 3]
    assert "requirements" not in levels["columns"]
    constraints = await call(gw, "omega.query", {"table": "pulse_constraints", "select": "name,severity",
                                                 "filters": {"enforced": True}})
    assert constraints["columns"] == ["name", "severity"] and constraints["count"] == 5


async def test_resources_in_both_client_modes(gw: RunningGateway) -> None:
    for mode in ("auto", "legacy"):
        async with gw.client(gw.token("ops_operator"), mode=mode) as c:
            assert len((await c.list_resources()).resources) == 3, mode
            read = await c.read_resource("omega://autonomy-levels")
        assert len(json.loads(read.contents[0].text)["result"]["autonomy_levels"]) == 4, mode


async def test_resources_are_listed_read_decided_and_audited(gw: RunningGateway) -> None:
    async with gw.client(gw.token("ops_viewer")) as c:
        listed = await c.list_resources()
        assert {str(r.uri) for r in listed.resources} == {"omega://schema", "omega://constraints",
                                                          "omega://autonomy-levels"}
        bodies = {}
        for uri in ("omega://schema", "omega://constraints", "omega://autonomy-levels"):
            read = await c.read_resource(uri)
            assert read.contents[0].mime_type == "application/json"
            bodies[uri] = json.loads(read.contents[0].text)
            assert_canon(bodies[uri])
        with pytest.raises(BaseException) as info:
            await c.read_resource("omega://secrets")
        assert unwrap(info.value).error.data["code"] == "INVALID_INPUT"
    assert bodies["omega://schema"]["result"]["tables"]["pulse_constraints"]["scope"] == "global"
    assert len(bodies["omega://constraints"]["result"]["constraints"]) == 6
    assert bodies["omega://autonomy-levels"]["result"]["autonomy_levels"][0]["name"] == "observe"
    rows = await gw.services.audit.store.query(caller_id=VIEWER, provider="omega", limit=100)
    tools = sorted(r.tool for r in rows)
    assert tools == ["resource.autonomy-levels", "resource.constraints", "resource.schema"]
    assert all(r.decision == "allow" and r.result["status"] == "ok" for r in rows)
    unknown = await gw.services.audit.store.query(caller_id=VIEWER, tool="resources/read", limit=10)
    assert len(unknown) == 1 and unknown[0].result["code"] == "INVALID_INPUT"


async def test_a_caller_without_a_role_sees_no_omega_tools_or_resources(gw: RunningGateway) -> None:
    async with gw.client(gw.token(None)) as c:
        assert not [t for t in (await c.list_tools()).tools if t.name.startswith("omega.")]
        assert (await c.list_resources()).resources == []
        with pytest.raises(BaseException) as info:
            await c.read_resource("omega://constraints")
    data = unwrap(info.value).error.data
    assert data["code"] == "FORBIDDEN"
    assert_canon(data)


# -- hostile inputs: the right code, nothing changed ----------------------------------------------

HOSTILE_QUERIES = [
    ("table injection", {"table": "pulse_drafts; drop table pulse_drafts; --", "userId": VIEWER}, "TABLE_NOT_ALLOWED"),
    ("quoted table injection", {"table": 'pulse_drafts" where 1=1 --', "userId": VIEWER}, "TABLE_NOT_ALLOWED"),
    ("non-allowlisted table", {"table": "auth.users", "userId": VIEWER}, "TABLE_NOT_ALLOWED"),
    ("catalog table", {"table": "pg_catalog.pg_authid"}, "TABLE_NOT_ALLOWED"),
    ("run events", {"table": "ops.run_events", "userId": VIEWER}, "TABLE_NOT_ALLOWED"),
    ("column injection", {"table": "pulse_drafts", "userId": VIEWER, "select": ["id, (select 1) as x"]},
     "COLUMN_NOT_ALLOWED"),
    ("column injection as text", {"table": "pulse_drafts", "userId": VIEWER, "select": "id,payload--"},
     "COLUMN_NOT_ALLOWED"),
    ("blocked column in select", {"table": "pulse_sessions", "userId": VIEWER, "select": ["id", "reasoning_steps"]},
     "COLUMN_NOT_ALLOWED"),
    ("blocked column in filters", {"table": "pulse_drafts", "userId": VIEWER, "filters": {"content": "x"}},
     "COLUMN_NOT_ALLOWED"),
    ("filter key injection", {"table": "pulse_drafts", "userId": VIEWER, "filters": {"1=1 or status": "x"}},
     "COLUMN_NOT_ALLOWED"),
    ("order injection", {"table": "pulse_drafts", "userId": VIEWER, "orderBy": "created_at; delete from pulse_drafts"},
     "COLUMN_NOT_ALLOWED"),
    ("order by a blob", {"table": "pulse_drafts", "userId": VIEWER, "orderBy": "payload"}, "COLUMN_NOT_ALLOWED"),
    ("limit 10,000", {"table": "pulse_drafts", "userId": VIEWER, "limit": 10000}, "INVALID_INPUT"),
    ("limit injection", {"table": "pulse_drafts", "userId": VIEWER, "limit": "5; drop table pulse_drafts"},
     "INVALID_INPUT"),
    ("limit zero", {"table": "pulse_drafts", "userId": VIEWER, "limit": 0}, "INVALID_INPUT"),
    ("no userId on a user table", {"table": "pulse_signals"}, "USER_ID_REQUIRED"),
    ("another user's rows", {"table": "pulse_drafts", "userId": ADMIN}, "FORBIDDEN"),
    ("unknown argument", {"table": "pulse_drafts", "userId": VIEWER, "sql": "select 1"}, "INVALID_INPUT"),
]


@pytest.mark.parametrize(("label", "args", "code"), HOSTILE_QUERIES, ids=[h[0] for h in HOSTILE_QUERIES])
async def test_hostile_queries_are_refused_and_change_nothing(gw: RunningGateway, env: OmegaEnv, label: str,
                                                              args: dict[str, Any], code: str) -> None:
    before = env.snapshot()
    data = await refused(gw, "omega.query", args)
    assert data["code"] == code, data
    assert env.snapshot() == before


@pytest.mark.parametrize("value", ["x' or '1'='1", "x'; delete from pulse_drafts; --", "' union select payload --"])
async def test_injection_in_filter_values_is_just_a_value(gw: RunningGateway, env: OmegaEnv, value: str) -> None:
    before = env.snapshot()
    result = await call(gw, "omega.query", {"table": "pulse_drafts", "userId": VIEWER, "filters": {"status": value}})
    assert result["rows"] == []
    assert env.snapshot() == before


async def test_user_id_is_required_by_every_user_scoped_tool(gw: RunningGateway, env: OmegaEnv) -> None:
    before = env.snapshot()
    for tool, args in [("omega.get_state", {}), ("omega.health_report", {}), ("omega.risk_report", {}),
                       ("omega.analyze_calibration", {}), ("omega.get_reasoning_chain", {"sessionId": "x"})]:
        assert (await refused(gw, tool, args))["code"] == "USER_ID_REQUIRED", tool
    assert (await refused(gw, "omega.propose_improvement", {
        "improvementType": "t", "targetComponent": "guardian", "proposedChange": {}}, "ops_operator"))["code"] \
        == "USER_ID_REQUIRED"
    for tool in ("omega.get_state", "omega.risk_report"):
        assert (await refused(gw, tool, {"userId": ADMIN}))["code"] == "FORBIDDEN"
    assert env.snapshot() == before


async def test_proposals_cannot_set_their_own_status_or_reviewer(gw: RunningGateway, env: OmegaEnv) -> None:
    base = {"userId": OPERATOR, "improvementType": "threshold_change", "targetComponent": "guardian",
            "proposedChange": {"confidence_threshold": 0.5}}
    before = env.snapshot()
    for extra in ({"status": "approved"}, {"guardianReview": {"proposed_by": "human"}},
                  {"guardian_review": {"requires_human_approval": False}},
                  {"id": "00000000-0000-0000-0000-000000000001"}):
        assert (await refused(gw, "omega.propose_improvement", {**base, **extra}, "ops_operator"))["code"] \
            == "INVALID_INPUT", extra
    # Another user's name on the proposal, or a viewer (who observes only).
    assert (await refused(gw, "omega.propose_improvement", {**base, "userId": VIEWER}, "ops_operator"))["code"] \
        == "FORBIDDEN"
    assert (await refused(gw, "omega.propose_improvement", {**base, "userId": VIEWER}, "ops_viewer"))["code"] \
        == "FORBIDDEN"
    assert env.snapshot() == before
    # Inside proposedChange a "status" is only data: the row is still a proposal with the MCP review.
    sneaky = await call(gw, "omega.propose_improvement", {
        **base, "proposedChange": {"status": "approved", "guardian_review": {"requires_human_approval": False}}},
        role="ops_operator")
    rows = env.rows("select status, guardian_review from pulse_improvements where id = ?", sneaky["proposal"]["id"])
    assert rows[0][0] == "proposed" and json.loads(rows[0][1]) == GUARDIAN_REVIEW


async def test_omega_errors_and_results_are_one_event_each(gw: RunningGateway) -> None:
    await call(gw, "omega.simulate_impact", {"changeType": "prompt_update", "targetComponent": "drafter",
                                             "proposedChange": {"tone": "brief"}})
    await refused(gw, "omega.query", {"table": "nope"})
    rows = await gw.services.audit.store.query(caller_id=VIEWER, provider="omega", limit=100)
    assert sorted((r.tool, r.result["status"]) for r in rows) == [("query", "denied"), ("simulate_impact", "ok")]
    denied = next(r for r in rows if r.tool == "query")
    assert denied.result["code"] == "TABLE_NOT_ALLOWED"


async def test_thirty_calls_per_tool_per_minute(gw: RunningGateway) -> None:
    args = {"changeType": "prompt_update", "targetComponent": "drafter", "proposedChange": {}}
    async with gw.client(gw.token("ops_admin")) as c:
        for _ in range(30):
            assert not (await c.call_tool("omega.simulate_impact", args)).is_error
        with pytest.raises(BaseException) as info:
            await c.call_tool("omega.simulate_impact", args)
        # Another tool has its own budget.
        assert not (await c.call_tool("omega.get_state", {"userId": ADMIN})).is_error
    data = unwrap(info.value).error.data
    assert data["code"] == "RATE_LIMIT" and data["bucket"] == "omega.simulate_impact"
    assert_canon(data)


# -- row-level security, and failures of the database ----------------------------------------------


async def test_rls_alone_hides_another_users_rows(env: OmegaEnv, bundle_dir: Path, tmp_path: Path) -> None:
    """With the policy's own-rows rule removed, the database still shows nothing of another user."""
    text = (bundle_dir / "omega.cedar").read_text()
    start = text.index('@id("omega.own-rows-only")')
    end = text.index("// Safe columns")
    (bundle_dir / "omega.cedar").write_text(text[:start] + text[end:])
    config = GatewayConfig(state_dir=str(tmp_path), omega=env.omega, policies=str(bundle_dir))
    with running_gateway(config) as gw:
        other = await call(gw, "omega.query", {"table": "pulse_drafts", "userId": ADMIN})
        own = await call(gw, "omega.query", {"table": "pulse_drafts", "userId": VIEWER})
    assert other["rows"] == [] and own["count"] == 8


async def test_the_database_shows_a_caller_only_its_own_rows(env: OmegaEnv) -> None:
    """Postgres: RLS exactly as PostgREST applies it, for the provider's own login. SQLite (no
    roles): the backend's stand-in for RLS."""
    if env.backend == "sqlite":
        from providers.omega.db import SqliteDatabase, Viewer

        db = SqliteDatabase(env.sqlite_path or "", seed=False)
        me = Viewer("authenticated", {"sub": VIEWER, "role": "authenticated"})
        rows = await db.fetch(me, "pulse_drafts", ["user_id"], [], None, False, 200)
        assert {r["user_id"] for r in rows} == {VIEWER}
        assert await db.fetch(me, "pulse_drafts", ["user_id"], [("user_id", ADMIN)], None, False, 200) == []
        assert await db.fetch(Viewer("anon"), "pulse_drafts", ["id"], [], None, False, 200) == []
        assert len(await db.fetch(Viewer("anon"), "pulse_constraints", ["id"], [], None, False, 200)) == 6
        return
    import asyncpg

    conn = await asyncpg.connect(env.omega.database_url)  # the authenticator login the provider uses
    try:
        who = await conn.fetchrow(
            "select rolsuper, rolbypassrls, rolinherit from pg_roles where rolname = current_user")
        assert tuple(who) == (False, False, False)
        granted = {r[0] for r in await conn.fetch(
            "select b.rolname from pg_auth_members m join pg_roles b on b.oid = m.roleid "
            "join pg_roles u on u.oid = m.member where u.rolname = current_user")}
        assert granted == {"anon", "authenticated"}
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # holds nothing by itself (noinherit)
            await conn.fetch("select 1 from public.pulse_constraints")
        async with conn.transaction():
            await conn.execute("set local role authenticated")
            await conn.execute("select set_config('request.jwt.claims', $1, true)",
                               json.dumps({"sub": VIEWER, "role": "authenticated"}))
            owners = {str(r[0]) for r in await conn.fetch("select user_id from public.pulse_drafts")}
            assert owners == {VIEWER}
            for sql in ("update public.pulse_drafts set status = 'x'", "delete from public.pulse_goals",
                        "insert into public.pulse_improvements (user_id, improvement_type, target_component, status, "
                        f"guardian_review) values ('{VIEWER}', 't', 'g', 'approved', "
                        "'{\"proposed_by\": \"mcp_external_llm\", \"source\": \"mcp\", \"requires_human_approval\": "
                        "true}')"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    async with conn.transaction():  # a savepoint, rolled back by the error
                        await conn.execute(sql)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with conn.transaction():
                await conn.execute("set local role anon")
                await conn.fetch("select count(*) from public.pulse_drafts")
        async with conn.transaction():
            await conn.execute("set local role anon")
            assert (await conn.fetch("select count(*) from public.pulse_constraints"))[0][0] == 6
    finally:
        await conn.close()


async def test_anon_viewer_warns_at_start_up_and_sees_no_user_rows(env: OmegaEnv, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    import msgspec

    caplog.set_level("WARNING", logger="opsgate.omega")
    config = GatewayConfig(state_dir=str(tmp_path), omega=msgspec.structs.replace(env.omega, viewer="anon"))
    with running_gateway(config) as gw:
        assert any("anon" in r.getMessage() and "empty" in r.getMessage() for r in caplog.records)
        if env.backend == "postgres":  # anon has no grant on user tables at all
            assert (await refused(gw, "omega.query", {"table": "pulse_drafts", "userId": VIEWER}))["code"] \
                == "QUERY_FAILED"
        else:
            assert (await call(gw, "omega.query", {"table": "pulse_drafts", "userId": VIEWER}))["rows"] == []
        assert (await call(gw, "omega.query", {"table": "pulse_constraints"}))["count"] == 6


async def test_an_unreachable_database_is_query_failed(env: OmegaEnv, tmp_path: Path) -> None:
    import msgspec

    broken = (msgspec.structs.replace(env.omega, database_url=env.omega.database_url + "_missing")
              if env.backend == "postgres" else msgspec.structs.replace(env.omega, sqlite_path=str(tmp_path)))
    with running_gateway(GatewayConfig(state_dir=str(tmp_path), omega=broken)) as gw:
        data = await refused(gw, "omega.query", {"table": "pulse_constraints"})
        assert data["code"] == "QUERY_FAILED" and "_missing" not in data["message"]
        async with gw.client(gw.token("ops_viewer")) as c:
            health = (await c.call_tool("omega.health", {})).structured_content
        assert health["status"] == "down"


# -- the policy decides, the provider follows -----------------------------------------------------


async def test_the_security_team_changes_tables_and_columns_without_python(env: OmegaEnv, bundle_dir: Path,
                                                                          tmp_path: Path) -> None:
    with (bundle_dir / "omega.cedar").open("a") as f:
        f.write('\n@id("omega.column-not-allowed.titles")\nforbid (principal, action == Ops::Action::"query", '
                'resource == Ops::Table::"pulse_drafts")\nwhen { context.columns.contains("title") };\n')
    entities = json.loads((bundle_dir / "entities.json").read_text())
    goals = next(e for e in entities if e["uid"]["id"] == "pulse_goals")
    goals["parents"] = []  # no longer omega's: off the allowlist
    signals = next(e for e in entities if e["uid"]["id"] == "pulse_signals")
    signals["attrs"]["safe_columns"] = ["id", "user_id", "severity"]
    (bundle_dir / "entities.json").write_text(json.dumps(entities))
    config = GatewayConfig(state_dir=str(tmp_path), omega=env.omega, policies=str(bundle_dir))
    with running_gateway(config) as gw:
        drafts = await call(gw, "omega.query", {"table": "pulse_drafts", "userId": VIEWER})
        assert "title" not in drafts["columns"] and "status" in drafts["columns"]
        data = await refused(gw, "omega.query", {"table": "pulse_drafts", "userId": VIEWER, "select": ["title"]})
        assert data["code"] == "COLUMN_NOT_ALLOWED" and data["policy_ids"] == ["omega.column-not-allowed.titles"]
        assert (await refused(gw, "omega.query", {"table": "pulse_goals", "userId": VIEWER}))["code"] \
            == "TABLE_NOT_ALLOWED"
        # The purpose-built tools read through the same door: get_state reads draft titles first.
        assert (await refused(gw, "omega.get_state", {"userId": VIEWER}))["code"] == "COLUMN_NOT_ALLOWED"
        signals_rows = await call(gw, "omega.query", {"table": "pulse_signals", "userId": VIEWER})
        assert signals_rows["columns"] == ["id", "user_id", "severity"]


def test_resource_actions_are_in_the_catalogue_as_reads() -> None:
    from engine import load_bundle
    from engine.catalogue import decision_shape
    from gateway.registry import Registry
    from providers.omega import OmegaProvider
    from tests.conftest import POLICIES

    catalogue = load_bundle(POLICIES).catalogue
    registry = Registry([OmegaProvider()])
    assert registry.drift(catalogue) == []
    assert len(registry.resources) == 3
    for r in registry.resources:
        entry = catalogue.get(r.action)
        assert entry is not None, f"{r.action} is not in policies/tools.json: run `opsgate policy catalogue --write`"
        assert (entry.kind, decision_shape(entry.input_schema)) == ("read", decision_shape(r.input_schema)), r.action


# -- issues 3 and 14: the Omega codes through the gateway, in both client modes ------------------

@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_every_omega_error_code_is_reachable_in_both_client_modes(env: OmegaEnv, tmp_path: Path,
                                                                        mode: str) -> None:
    """The spec shows its errors as the tool's response: every code a model can act on arrives as an
    isError result in the envelope, in 2026-07-28 and 2025-11-25 alike; a denial stays JSON-RPC."""
    import msgspec

    cases = {
        "USER_ID_REQUIRED": {"table": "pulse_drafts"},
        "TABLE_NOT_ALLOWED": {"table": "auth_users"},
        "COLUMN_NOT_ALLOWED": {"table": "pulse_drafts", "userId": VIEWER, "select": "payload"},
        "INVALID_INPUT": {"table": "pulse_drafts", "userId": VIEWER, "limit": 201},
    }
    with running_gateway(GatewayConfig(state_dir=str(tmp_path / "ok"), omega=env.omega)) as gw:
        for code, args in cases.items():
            error = await refused(gw, "omega.query", args, mode=mode)
            assert error["code"] == code, (mode, args, error)
        data = await refused(gw, "omega.query", {"table": "pulse_drafts", "userId": ADMIN}, mode=mode)
        assert data["code"] == "FORBIDDEN" and data["policy_ids"] == ["omega.own-rows-only"]
    broken = (msgspec.structs.replace(env.omega, database_url=env.omega.database_url + "_missing")
              if env.backend == "postgres" else msgspec.structs.replace(env.omega, sqlite_path=str(tmp_path)))
    with running_gateway(GatewayConfig(state_dir=str(tmp_path / "broken"), omega=broken)) as gw:
        assert (await refused(gw, "omega.query", {"table": "pulse_constraints"}, mode=mode))["code"] == "QUERY_FAILED"


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_missing_user_id_says_what_to_send(gw: RunningGateway, mode: str) -> None:
    """Without userId (or with null) every user-scoped tool answers USER_ID_REQUIRED naming the
    caller's own id, which the schema describes; sending it as told then works."""
    for tool, args in [("omega.get_state", {}), ("omega.risk_report", {"userId": None}),
                       ("omega.query", {"table": "pulse_goals"}),
                       ("omega.get_reasoning_chain", {"sessionId": "x"})]:
        error = await refused(gw, tool, args, mode=mode)
        assert error["code"] == "USER_ID_REQUIRED", (tool, error)
        assert f'"userId": "{VIEWER}"' in error["message"] and "sub" in error["message"], error
    assert (await call(gw, "omega.get_state", {"userId": VIEWER}))["user_id"] == VIEWER


async def test_every_omega_schema_marks_and_describes_user_id(gw: RunningGateway) -> None:
    """The schema says what the call needs: userId required (and described) wherever the spec requires
    it; optional, and saying when it is needed, only on omega.query (global tables need none)."""
    async with gw.client(gw.token("ops_operator")) as c:
        tools = {t.name: t.input_schema for t in (await c.list_tools()).tools if t.name.startswith("omega.")}
    user_scoped = {"omega.get_state", "omega.health_report", "omega.risk_report", "omega.analyze_calibration",
                   "omega.get_reasoning_chain", "omega.propose_improvement"}
    assert user_scoped <= set(tools)
    for name in user_scoped:
        schema = tools[name]
        assert "userId" in schema["required"], name
        user_id = schema["properties"]["userId"]
        assert user_id["type"] == "string" and "default" not in user_id, name
        assert "own user id" in user_id["description"] and "sub" in user_id["description"], name
    query = tools["omega.query"]
    assert "userId" not in query["required"] and "user-scoped" in query["properties"]["userId"]["description"]
    assert "userId" not in tools["omega.simulate_impact"]["properties"]
