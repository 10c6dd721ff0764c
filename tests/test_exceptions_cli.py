"""`opsgate exception ...` as an approver uses it: real tokens verified as the gateway verifies them,
the real embedded vault holding the signing key, every lifecycle step an ops.run_events row
(SQLite under --state-dir, and Postgres with --events postgres)."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from engine.exceptions import scan
from gateway.cli import main
from gateway.config import GatewayConfig
from gateway.exception_lifecycle import approve, revoke
from gateway.serve import mint_token, signing_key
from otel.events import SqliteEventStore, apply_migrations
from otel.events.postgres import PostgresEventStore
from tests.conftest import ROOT, admin_sql, require_service
from tests.exception_fixtures import ADMIN, ADMIN_ACTOR, KEY, REQUESTER, file

AGENT = "http://agent-7.lan:19999"
VIEWER = str(uuid.uuid5(uuid.NAMESPACE_URL, "exceptions:viewer"))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    state = tmp_path / "state"
    secret = signing_key(GatewayConfig(state_dir=str(state)))
    tokens = {}
    for name, uid, role in (("requester", REQUESTER, "ops_admin"), ("admin", ADMIN, "ops_admin"),
                            ("viewer", VIEWER, "ops_viewer")):
        path = tmp_path / f"{name}.jwt"
        path.write_text(mint_token(secret, issuer="opsgate-dev", user_id=uid, role=role))
        tokens[name] = str(path)
    forged = tmp_path / "forged.jwt"
    forged.write_text(mint_token(b"x" * 48, issuer="opsgate-dev", user_id=ADMIN, role="ops_admin"))
    tokens["forged"] = str(forged)
    return {"dir": str(tmp_path / "exceptions"), "state": str(state), "tokens": tokens}


def opsgate(env: dict[str, Any], *args: str, token: str | None = None, state: bool = True) -> int:
    extra = ["--dir", env["dir"]]
    if state:
        extra += ["--state-dir", env["state"]]
    if token:
        extra += ["--token-file", env["tokens"][token]]
    return main(["exception", *args, *extra])


def events(env: dict[str, Any]) -> list[tuple[str, str | None, list[str], dict[str, Any]]]:
    async def read() -> list[Any]:
        store = SqliteEventStore(Path(env["state"]) / "events.db")
        try:
            return await store.query(provider="opsgate", limit=1000)
        finally:
            await store.close()
    return [(e.tool, e.caller_id, e.exception_ids, e.payload or {}) for e in asyncio.run(read())]


NEW = ("new", "--provider", "netdata", "--rule", "5", "--host", AGENT, "--justification",
       "the agent exposes metrics only on the LAN", "--control", "read-only API key", "--days", "30")


def test_file_approve_revoke_through_the_cli(env: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    assert opsgate(env, *NEW, token="requester") == 0
    exception_id = "mcp-exception-netdata-5"
    assert (Path(env["dir"]) / exception_id / "README.md").read_text().startswith(f"# {exception_id}")

    assert opsgate(env, "approve", exception_id, token="requester") == 1
    assert "the requester cannot approve their own exception" in capsys.readouterr().err
    assert opsgate(env, "approve", exception_id, token="viewer") == 1
    assert "role is ops_viewer; only an ops_admin may approve" in capsys.readouterr().err
    assert opsgate(env, "approve", exception_id, token="forged") == 2
    assert "the token does not verify" in capsys.readouterr().err
    assert opsgate(env, "approve", exception_id) == 2  # no token at all
    capsys.readouterr()

    assert opsgate(env, "approve", exception_id, token="admin") == 0
    out = capsys.readouterr().out
    assert f"approved {exception_id} (filed by {REQUESTER})" in out
    # the vault's key became approvers.pub's root at the first filing, and was pinned there
    assert len([ln for ln in (Path(env["dir"]) / "approvers.pub").read_text().splitlines()
                if not ln.startswith("#")]) == 1
    assert opsgate(env, "show", exception_id, state=False) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["state"] == "active" and shown["approved_by"] == ADMIN

    assert opsgate(env, "revoke", exception_id, "--reason", "agent moved behind the proxy", token="admin") == 0
    assert opsgate(env, "list", "--format", "json", state=False) == 0
    capsys.readouterr()

    steps = [(tool, caller, ids) for tool, caller, ids, _ in events(env)]
    assert steps == [("exception.filed", REQUESTER, [exception_id]),
                     ("exception.refused", REQUESTER, [exception_id]),
                     ("exception.refused", VIEWER, [exception_id]),
                     ("exception.approved", ADMIN, [exception_id]),
                     ("exception.revoked", ADMIN, [exception_id])]


def test_filing_a_rule_3_waiver_is_refused_and_recorded(env: dict[str, Any],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    args = list(NEW)
    args[args.index("5")] = "3"
    assert opsgate(env, *args, token="requester") == 1
    err = capsys.readouterr().err
    assert "rule 3 (event sourcing) can never be waived" in err
    assert not Path(env["dir"], "mcp-exception-netdata-3").exists()
    ((tool, caller, ids, payload),) = events(env)
    assert (tool, caller, ids) == ("exception.refused", REQUESTER, ["mcp-exception-netdata-3"])
    assert payload["step"] == "filing"


def test_lint_finds_tampering_and_passes_clean_bundles(env: dict[str, Any],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert opsgate(env, *NEW, token="requester") == 0
    assert opsgate(env, "approve", "mcp-exception-netdata-5", token="admin") == 0
    capsys.readouterr()
    assert opsgate(env, "lint", state=False) == 0
    assert "1 exceptions, 0 problems" in capsys.readouterr().out
    spec = Path(env["dir"], "mcp-exception-netdata-5", "exception.yaml")
    spec.write_text(spec.read_text().replace("rule: 5", "rule: 3"))
    assert opsgate(env, "lint", state=False) == 1
    out = capsys.readouterr().out
    assert "mcp-exception-netdata-5: rule 3 (event sourcing) can never be waived" in out
    spec.write_text(spec.read_text().replace("rule: 3", "rule: 5").replace(AGENT, "http://agent-9.lan:19999"))
    assert opsgate(env, "lint", state=False) == 1
    assert "edited after approval" in capsys.readouterr().out


def test_lint_passes_on_the_repository_exceptions_dir(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["exception", "lint", "--dir", str(ROOT / "exceptions")]) == 0, capsys.readouterr().out


def _fixture_set(root: Path) -> dict[str, str]:
    """One exception in every state, relative to the real clock (the CLI reviews at the current time)."""
    now = datetime.now(UTC).replace(microsecond=0)
    ids = {"active": file(root, "netdata", 5, {"hosts": [AGENT]}, days=60, at=now),
           "expiring": file(root, "sentry", 6, {}, days=5, at=now),
           "expired": file(root, "socket", 9, {"tools": ["socket.scan.repo"]}, days=30, at=now - timedelta(days=40)),
           "revoked": file(root, "netdata", 8, {"bucket": "reads", "limit": "200/hour"}, days=30, at=now),
           "pending": file(root, "sentry", 7, {"tools": ["socket.findings.list"]}, days=30, at=now),
           "invalid": file(root, "socket", 10, {}, days=30, at=now)}
    for state, at in (("active", now), ("expiring", now), ("expired", now - timedelta(days=40)),
                      ("revoked", now), ("invalid", now)):
        approve(root, ids[state], ADMIN_ACTOR, KEY, at)
    revoke(root, ids["revoked"], ADMIN_ACTOR, "the quota was raised upstream", now, KEY)
    (root / ids["invalid"] / "README.md").write_text("# edited after approval\n")
    return ids


def test_review_reports_every_state_and_records_itself(env: dict[str, Any],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    ids = _fixture_set(Path(env["dir"]))
    assert {r.id: r.state(datetime.now(UTC)) for r in scan(env["dir"])} == {
        ids["active"]: "active", ids["expiring"]: "active", ids["expired"]: "expired", ids["revoked"]: "revoked",
        ids["pending"]: "pending", ids["invalid"]: "invalid"}

    assert opsgate(env, "review", "--format", "json", token="admin") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["last_review"] is None
    names = {k: [r["id"] for r in report[k]] for k in ("active", "expiring", "expired", "revoked", "pending",
                                                        "invalid")}
    assert names == {"active": sorted([ids["active"], ids["expiring"]]), "expiring": [ids["expiring"]],
                     "expired": [ids["expired"]], "revoked": [ids["revoked"]], "pending": [ids["pending"]],
                     "invalid": [ids["invalid"]]}
    assert report["revoked"][0]["revocation_reason"] == "the quota was raised upstream"
    assert any("edited after approval" in p for p in report["invalid"][0]["problems"])

    report_dir = Path(env["state"]) / "reports"
    assert opsgate(env, "review", "--report-dir", str(report_dir), token="admin") == 0
    markdown = capsys.readouterr().out
    assert f"last review: {report['reviewed_at']}" in markdown
    for title, key in (("## Active (2)", "active"), ("## Expiring within 14 days (1)", "expiring"),
                       ("## Expired (auto-revoked) (1)", "expired"), ("## Revoked (1)", "revoked"),
                       ("## Pending approval (1)", "pending"),
                       ("## Invalid (refused: fix or withdraw) (1)", "invalid")):
        section = markdown.split(title, 1)[1].split("## ", 1)[0]
        assert ids[key] in section, (title, section)
    assert sorted(p.suffix for p in report_dir.iterdir()) == [".json", ".md"]

    history = json.loads((Path(env["dir"]) / "REVIEWS.json").read_text())
    assert [h["reviewed_by"] for h in history] == [ADMIN, ADMIN]
    assert history[0]["counts"] == {"active": 2, "expiring": 1, "expired": 1, "revoked": 1, "pending": 1,
                                    "invalid": 1}
    rows = events(env)
    assert [r[0] for r in rows].count("exception.reviewed") == 2
    expired = [r for r in rows if r[0] == "exception.expired"]
    assert [r[2] for r in expired] == [[ids["expired"]]]  # recorded once, when first observed
    assert opsgate(env, "lint", state=False) == 1  # the tampered one fails CI


@pytest.fixture
def pg_url() -> Iterator[str]:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = f"opsgate_exc_{secrets.token_hex(4)}"

    async def create() -> None:
        await admin_sql(f"create database {name}")
        conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:5432/{name}")
        try:
            await conn.execute((ROOT / "tests" / "supabase_stub.sql").read_text())
            await apply_migrations(conn, ROOT / "supabase" / "migrations")
            await conn.executemany("insert into auth.users (id, raw_app_meta_data) values ($1, $2::jsonb)",
                                   [(REQUESTER, '{"ops_role": "ops_admin"}'), (ADMIN, '{"ops_role": "ops_admin"}')])
        finally:
            await conn.close()

    async def drop() -> None:
        await admin_sql(f"drop database if exists {name} with (force)")

    asyncio.run(create())
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        asyncio.run(drop())


def test_lifecycle_rows_go_to_postgres_with_database_url(env: dict[str, Any], pg_url: str) -> None:
    pg = ["--events", "postgres", "--database-url", pg_url]
    assert opsgate(env, *NEW, *pg, token="requester") == 0
    assert opsgate(env, "approve", "mcp-exception-netdata-5", *pg, token="admin") == 0

    async def read() -> list[Any]:
        store = PostgresEventStore(pg_url)
        try:
            return await store.query(provider="opsgate", limit=100)
        finally:
            await store.close()
    rows = asyncio.run(read())
    assert [(e.tool, e.caller_id, e.exception_ids) for e in rows] == [
        ("exception.filed", REQUESTER, ["mcp-exception-netdata-5"]),
        ("exception.approved", ADMIN, ["mcp-exception-netdata-5"])]
    assert not (Path(env["state"]) / "events.db").exists()


def test_new_asks_for_what_the_flags_leave_out_on_a_terminal(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    class Terminal:
        def isatty(self) -> bool:
            return True

    expires = (datetime.now(UTC) + timedelta(days=20)).replace(microsecond=0).isoformat()
    answers = iter(["netdata", "5", expires, AGENT, "http://agent-8.lan:19999", "",
                    "the agents are only reachable on the LAN", "read-only key", "alert on every call", ""])
    prompts: list[str] = []

    def fake_input(prompt: str) -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("builtins.input", fake_input)
    assert opsgate(env, "new", token="requester") == 0, capsys.readouterr().err
    (record,) = scan(env["dir"])
    assert record.filer == REQUESTER
    assert record.state(datetime.now(UTC)) == "pending" and record.spec is not None
    assert record.spec.grant.hosts == [AGENT, "http://agent-8.lan:19999"]  # type: ignore[union-attr]
    assert record.spec.compensating_controls == ["read-only key", "alert on every call"]
    assert prompts[0] == "provider (e.g. netdata): "
