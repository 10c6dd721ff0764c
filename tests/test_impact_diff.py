"""The permission diff (`opsgate policy diff`): pairs of real bundles that differ in one way each,
and the exact rows the diff must report for them, decided by the real engine.

Each pair starts from a copy of the canonical bundle (policies/); the head differs from the base in
one edit a security team would make. An unchanged pair reports nothing, so every row below comes
from the edit alone.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from engine.impact import ArgDependence, ArgPolicy, Loaded, Row, Side, diff_markdown, diff_text, load, permission_diff
from engine.impact.source import Source
from gateway.cli import main
from tests.conftest import NOW, POLICIES
from tests.exception_fixtures import file, file_and_approve

COMMENT_TOOLS = [("echo", "echo.comment"), ("sentry", "sentry.issue.comment"), ("socket", "socket.pr.comment_markdown")]


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("tests"))
    return dst


def side(policies: Path, exceptions: Path | None = None, at: datetime = NOW) -> Loaded:
    return load(Source(str(policies), policies, exceptions), at)


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_the_same_bundle_changes_nothing(bundle_dir: Path, tmp_path: Path) -> None:
    head = copy(bundle_dir, tmp_path / "head")
    d = permission_diff(side(bundle_dir), side(head), NOW)
    assert (d.rows, d.arguments, d.widens) == ((), (), False)
    assert d.decisions > 400  # every role, tool, provider, host and secret was asked, not a sample


def test_a_widened_permit_is_a_gain_for_each_role_it_reaches(bundle_dir: Path, tmp_path: Path) -> None:
    head = copy(bundle_dir, tmp_path / "head")
    edit(head / "rbac.cedar", 'action in Ops::Action::"read",',
         'action in [Ops::Action::"read", Ops::Action::"comment"],')
    d = permission_diff(side(bundle_dir), side(head), NOW)
    # Viewers and operators (in viewer through the role chain) gain every comment tool; admins
    # already had them (rbac.admin.all), so their outcome does not change and no row is shown.
    assert d.rows == tuple(
        Row("tool", role, provider, tool, "gains", True, Side(False),
            Side(True, ("rbac.viewer.read",), "tiers: unlimited"))
        for role in ("ops_viewer", "ops_operator") for provider, tool in COMMENT_TOOLS)
    assert d.widens and d.arguments == ()


def test_an_added_forbid_is_a_loss_with_its_policy_id_on_the_head_side(bundle_dir: Path, tmp_path: Path) -> None:
    head = copy(bundle_dir, tmp_path / "head")
    (head / "freeze.cedar").write_text('@id("freeze.socket-scans")\n'
                                       'forbid (principal, action == Ops::Action::"socket.scan.repo", resource);\n')
    d = permission_diff(side(bundle_dir), side(head), NOW)
    assert d.rows == (
        Row("tool", "ops_operator", "socket", "socket.scan.repo", "loses", False,
            Side(True, ("rbac.operator.scan-annotate-tag",), "tiers: scans 50/3600s"),
            Side(False, ("freeze.socket-scans",))),
        Row("tool", "ops_admin", "socket", "socket.scan.repo", "loses", False,
            Side(True, ("rbac.admin.all", "rbac.operator.scan-annotate-tag"), "tiers: unlimited"),
            Side(False, ("freeze.socket-scans",))),
    )
    assert not d.widens


def test_a_raised_tier_is_a_raised_limit_per_tool_and_bucket(bundle_dir: Path, tmp_path: Path) -> None:
    head = copy(bundle_dir, tmp_path / "head")
    edit(head / "tiers" / "rate-tiers.cedar", '@limit("50/hour")', '@limit("80/hour")')
    d = permission_diff(side(bundle_dir), side(head), NOW)
    assert d.rows == tuple(
        Row("tier", "ops_operator", provider, tool, "raised", True,
            Side(True, ("tier.operator.scans",), "50/3600s"), Side(True, ("tier.operator.scans",), "80/3600s"),
            bucket="scans")
        for provider, tool in (("echo", "echo.scan"), ("socket", "socket.scan.repo")))
    assert d.widens


@pytest.mark.parametrize(("limit", "change", "widens", "shown"), [
    ("40/hour", "lowered", False, "40/3600s"),
    ("1/minute", "raised", True, "1/60s"),  # 60 an hour: more calls, if in smaller bursts
    ("100/2h", "changed", True, "100/7200s"),  # the same rate, twice the burst
    ("25/30m", "changed", False, "25/1800s"),  # the same rate, half the burst
])
def test_a_tier_compared_by_rate_then_burst(bundle_dir: Path, tmp_path: Path, limit: str, change: str, widens: bool,
                                            shown: str) -> None:
    head = copy(bundle_dir, tmp_path / "head")
    edit(head / "tiers" / "rate-tiers.cedar", '@limit("50/hour")', f'@limit("{limit}")')
    d = permission_diff(side(bundle_dir), side(head), NOW)
    assert {(r.change, r.widens, r.base.detail, r.head.detail) for r in d.rows} == {(change, widens, "50/3600s", shown)}
    assert d.widens == widens


def test_an_allowlist_host_and_an_egress_forbid_are_decided_not_read_from_yaml(bundle_dir: Path,
                                                                                tmp_path: Path) -> None:
    head = copy(bundle_dir, tmp_path / "head")
    edit(head / "provider-allowlist.yaml", '  - "*.ingest.sentry.io"\n',
         '  - "*.ingest.sentry.io"\n  - http://relay.sentry.example:8080\n')
    # A hand-written forbid: no YAML changes for this one, only deciding egress can see it.
    (head / "egress-freeze.cedar").write_text(
        '@id("egress.no-bare-socket-dev")\n'
        'forbid (principal, action == Ops::Action::"egress", resource == Ops::Host::"socket.dev");\n')
    d = permission_diff(side(bundle_dir), side(head), NOW)
    assert d.rows == (
        Row("egress", "provider:sentry", "sentry", "http://relay.sentry.example:8080", "gains", True, Side(False),
            Side(True, ("egress:sentry:http://relay.sentry.example:8080",))),
        Row("egress", "provider:socket", "socket", "socket.dev", "loses", False,
            Side(True, ("egress:socket:socket.dev",)), Side(False, ("egress.no-bare-socket-dev",))),
    )
    assert d.widens


ONLY_ACME = ('@id("socket.scan.only-acme")\nforbid (principal, action == Ops::Action::"socket.scan.repo", resource)\n'
             'unless {{ context has args && context.args.repo like "{}" }};\n')


def test_a_changed_argument_condition_is_named_with_the_paths_it_reads(bundle_dir: Path, tmp_path: Path) -> None:
    (bundle_dir / "scans.cedar").write_text(ONLY_ACME.format("acme-*"))
    head = copy(bundle_dir, tmp_path / "head")
    (head / "scans.cedar").write_text(ONLY_ACME.format("oss-*"))
    d = permission_diff(side(bundle_dir), side(head), NOW)
    # Without arguments the forbid holds on both sides (no args: not acme-*), so no row changes;
    # the notice says that for socket.scan.repo this is not the whole story, and why.
    paths = ("context has args", "context.args.repo")
    assert d.rows == ()
    assert d.arguments == (ArgDependence("socket.scan.repo", (
        ArgPolicy("socket.scan.only-acme", "forbid", "changed", paths, paths),)),)
    assert not d.widens
    text = diff_text(d)
    assert "not the whole story" in text and "socket.scan.only-acme (forbid, changed)" in text


def test_an_added_argument_condition_is_listed_as_added(bundle_dir: Path, tmp_path: Path) -> None:
    head = copy(bundle_dir, tmp_path / "head")
    (head / "scans.cedar").write_text(ONLY_ACME.format("acme-*"))
    d = permission_diff(side(bundle_dir), side(head), NOW)
    assert d.arguments == (ArgDependence("socket.scan.repo", (
        ArgPolicy("socket.scan.only-acme", "forbid", "added", None, ("context has args", "context.args.repo")),)),)
    assert {(r.principal, r.target, r.change) for r in d.rows} == {
        ("ops_operator", "socket.scan.repo", "loses"), ("ops_admin", "socket.scan.repo", "loses")}


AGENT = "http://agent-7.lan:19999"


def _exception_rows(eid: str, gained: bool, base_state: str, head_state: str) -> tuple[Row, ...]:
    grant = (f"exception:{eid}:egress:{AGENT}",)
    on, off = Side(True, grant), Side(False)
    egress = Row("egress", "provider:netdata", "netdata", AGENT, "gains" if gained else "loses", gained,
                 off if gained else on, on if gained else off)
    exception = Row("exception", "(exceptions)", "netdata", eid, "into force" if gained else "out of force", False,
                    Side(not gained, () if gained else grant, base_state),
                    Side(gained, grant if gained else (), head_state))
    return egress, exception


def test_an_approved_exception_comes_into_force_with_its_grant(bundle_dir: Path, tmp_path: Path) -> None:
    base_ex, head_ex = tmp_path / "base-ex", tmp_path / "head-ex"
    eid = file(base_ex, "netdata", 5, {"kind": "egress", "hosts": [AGENT]})
    file_and_approve(head_ex, "netdata", 5, {"kind": "egress", "hosts": [AGENT]})
    d = permission_diff(side(bundle_dir, base_ex), side(bundle_dir, head_ex), NOW)
    assert d.rows == _exception_rows(eid, True, "pending", "in force")
    assert d.widens


def test_an_expired_exception_goes_out_of_force_at_the_instant_asked(bundle_dir: Path, tmp_path: Path) -> None:
    base_ex, head_ex = tmp_path / "base-ex", tmp_path / "head-ex"
    # The same waiver in both, the head's filed earlier with a shorter life: in force until
    # NOW + 1 day there, NOW + 30 days in the base. Asked on day 2, only the base still grants it.
    eid = file_and_approve(base_ex, "netdata", 5, {"kind": "egress", "hosts": [AGENT]}, days=30)
    file_and_approve(head_ex, "netdata", 5, {"kind": "egress", "hosts": [AGENT]}, days=11,
                     at=NOW - timedelta(days=10))
    day2 = NOW + timedelta(days=2)
    d = permission_diff(side(bundle_dir, base_ex, day2), side(bundle_dir, head_ex, day2), day2)
    assert d.rows == _exception_rows(eid, False, "in force", "expired")
    assert not d.widens
    # The day before, both still grant it: nothing differs.
    day0 = NOW
    assert permission_diff(side(bundle_dir, base_ex, day0), side(bundle_dir, head_ex, day0), day0).rows == ()


def test_a_user_named_by_a_policy_is_asked_too(bundle_dir: Path, tmp_path: Path) -> None:
    head = copy(bundle_dir, tmp_path / "head")
    (head / "alice.cedar").write_text('@id("alice.may-create")\n'
                                      'permit (principal == Ops::User::"alice", action == Ops::Action::"echo.create",'
                                      ' resource);\n')
    d = permission_diff(side(bundle_dir), side(head), NOW)
    assert {(r.principal, r.target, r.change) for r in d.rows} == {
        ("user:alice as ops_viewer", "echo.create", "gains"), ("user:alice as ops_operator", "echo.create", "gains"),
        ("user:alice (no role)", "echo.create", "gains")}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          capture_output=True, text=True, check=True)
    return done.stdout


def test_cli_diffs_a_git_revision_against_the_working_tree_without_touching_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    copy(POLICIES, repo / "policies")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "policies")
    edit(repo / "policies" / "rbac.cedar", 'action in Ops::Action::"read",',
         'action in [Ops::Action::"read", Ops::Action::"comment"],')
    before = git(repo, "status", "--porcelain")
    monkeypatch.chdir(repo)

    assert main(["policy", "diff", "main", "--format", "json", "--fail-on", "widen", "--at", NOW.isoformat()]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["base"]["label"].startswith("main (") and out["head"]["label"] == "working tree"
    assert out["widens"] is True
    assert {(r["principal"], r["target"]) for r in out["rows"]} == {
        (role, tool) for role in ("ops_viewer", "ops_operator") for _, tool in COMMENT_TOOLS}
    assert git(repo, "status", "--porcelain") == before  # the checkout is as it was

    assert main(["policy", "diff", "main", "main", "--fail-on", "widen"]) == 0  # a revision against itself
    assert "0 change(s)" in capsys.readouterr().out
    assert main(["policy", "diff", "no-such-branch"]) == 2
    assert "neither a bundle folder nor a revision" in capsys.readouterr().err


def test_cli_markdown_is_a_pull_request_comment(bundle_dir: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    head = copy(bundle_dir, tmp_path / "head")
    edit(head / "tiers" / "rate-tiers.cedar", '@limit("50/hour")', '@limit("80/hour")')
    assert main(["policy", "diff", str(bundle_dir), str(head), "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert md.startswith("### Policy impact: ") and "**This change widens access.**" in md
    assert re.search(r"^\| \+ raised \| echo \| limit \[scans\] on echo.scan \| 50/3600s \[tier.operator.scans\] "
                     r"\| 80/3600s \[tier.operator.scans\] \|$", md, re.M), md


def test_cli_refused_head_bundle_exits_1_with_its_issues(bundle_dir: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    head = copy(bundle_dir, tmp_path / "head")
    (head / "broken.cedar").write_text('@id("broken")\npermit (principal, action == Ops::Action::"nope", resource);\n')
    assert main(["policy", "diff", str(bundle_dir), str(head)]) == 1
    assert "broken.cedar [broken]" in capsys.readouterr().err


def test_markdown_and_text_show_every_row(bundle_dir: Path, tmp_path: Path) -> None:
    head = copy(bundle_dir, tmp_path / "head")
    (head / "freeze.cedar").write_text('@id("freeze.socket-scans")\n'
                                       'forbid (principal, action == Ops::Action::"socket.scan.repo", resource);\n')
    d = permission_diff(side(bundle_dir), side(head), NOW)
    for rendered in (diff_text(d), diff_markdown(d)):
        assert "freeze.socket-scans" in rendered and "ops_operator" in rendered and "ops_admin" in rendered
