"""`POST /v1/policy/diff`: the permission diff between the active bundle and a candidate folder on
the server, for ops_admin only, and never for a path outside the configured candidate folder."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.config import GatewayConfig
from tests.conftest import POLICIES
from tests.harness import RunningGateway, running_gateway

FREEZE = '@id("freeze.socket-scans")\nforbid (principal, action == Ops::Action::"socket.scan.repo", resource);\n'


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningGateway, Path, Path]]:
    root = tmp_path_factory.mktemp("route")
    candidates, outside = root / "candidates", root / "outside"
    candidates.mkdir()
    # A valid bundle that differs from the active one, but outside the candidate folder: a naive
    # route (join and load) would happily diff it.
    shutil.copytree(POLICIES, outside / "policies", ignore=shutil.ignore_patterns("tests"))
    (outside / "policies" / "freeze.cedar").write_text(FREEZE)
    shutil.copytree(outside, candidates / "freeze")
    (candidates / "as-policies-dir").symlink_to(candidates / "freeze" / "policies")  # a link inside: fine
    (candidates / "escape").symlink_to(outside)
    (candidates / "inner-link").mkdir()
    (candidates / "inner-link" / "policies").symlink_to(outside / "policies")
    shutil.copytree(POLICIES, candidates / "file-link" / "policies", ignore=shutil.ignore_patterns("tests"))
    (candidates / "file-link" / "policies" / "rbac.cedar").unlink()
    (candidates / "file-link" / "policies" / "rbac.cedar").symlink_to(outside / "policies" / "rbac.cedar")
    shutil.copytree(POLICIES, candidates / "broken" / "policies", ignore=shutil.ignore_patterns("tests"))
    (candidates / "broken" / "policies" / "x.cedar").write_text('@id("x")\npermit (principal, action == '
                                                                'Ops::Action::"nope", resource);\n')
    config = GatewayConfig(policies=str(POLICIES), state_dir=str(root / "state"), exceptions=str(root / "none"),
                           policy_candidates=str(candidates))
    with running_gateway(config) as gw:
        yield gw, candidates, outside


def post(gw: RunningGateway, role: str | None, body: dict[str, Any], user: str | None = None) -> httpx.Response:
    token = gw.token(role, user_id=user)
    return httpx.post(gw.url + "/v1/policy/diff", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=60)


async def rows_of(gw: RunningGateway, user: str) -> list[Any]:
    return await gw.services.audit.store.query(caller_id=user, limit=10)  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_admin_gets_the_diff_and_it_is_recorded(setup: tuple[RunningGateway, Path, Path]) -> None:
    gw, _, _ = setup
    admin = str(uuid.uuid4())
    for name in ("freeze", "as-policies-dir"):
        r = post(gw, "ops_admin", {"candidate": name, "at": "2026-11-21T12:00:00Z"}, admin)
        assert r.status_code == 200, r.text
        diff = r.json()
        assert diff["base"] == {"label": "active", "revision": gw.services.engine.bundle.revision}
        assert [(row["principal"], row["target"], row["change"], row["head"]["policy_ids"]) for row in diff["rows"]] \
            == [("ops_operator", "socket.scan.repo", "loses", ["freeze.socket-scans"]),
                ("ops_admin", "socket.scan.repo", "loses", ["freeze.socket-scans"])]
        assert diff["widens"] is False and diff["at"] == "2026-11-21T12:00:00+00:00"
    rows = await rows_of(gw, admin)
    assert [(r.provider, r.tool, r.result["status"], r.result["changes"]) for r in rows] == [
        ("opsgate", "policy.diff", "answered", 2)] * 2


def test_only_ops_admin_may_diff(setup: tuple[RunningGateway, Path, Path]) -> None:
    gw, _, _ = setup
    assert post(gw, "ops_operator", {"candidate": "freeze"}).status_code == 403
    assert httpx.post(gw.url + "/v1/policy/diff", json={"candidate": "freeze"}).status_code == 401


@pytest.mark.parametrize(("name", "status"), [
    ("../outside", 400), ("..", 400), (".", 400), ("freeze/policies", 400), ("/etc", 400), (".hidden", 400),
    ("", 400), ("no-such", 404),
    ("escape", 400),  # a link to a folder outside
    ("inner-link", 400),  # policies/ inside is a link to a folder outside
    ("file-link", 400),  # one policy file is a link to a file outside
])
def test_a_candidate_never_leads_outside_the_candidate_folder(setup: tuple[RunningGateway, Path, Path], name: str,
                                                              status: int) -> None:
    gw, _, _ = setup
    r = post(gw, "ops_admin", {"candidate": name})
    assert r.status_code == status, r.text
    assert "rows" not in r.text


def test_a_refused_candidate_is_422_with_its_issues(setup: tuple[RunningGateway, Path, Path]) -> None:
    gw, _, _ = setup
    r = post(gw, "ops_admin", {"candidate": "broken"})
    assert r.status_code == 422
    assert any("x.cedar [x]" in i for i in r.json()["extra"]["issues"])


def test_without_a_configured_folder_the_route_is_off(tmp_path: Path) -> None:
    config = GatewayConfig(policies=str(POLICIES), state_dir=str(tmp_path / "state"), exceptions=str(tmp_path / "x"))
    with running_gateway(config) as gw:
        r = post(gw, "ops_admin", {"candidate": "freeze"})
    assert r.status_code == 404 and "policy_candidates" in r.text
