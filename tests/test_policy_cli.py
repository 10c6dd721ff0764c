"""`opsgate policy check|test|fmt|eval` as the security team uses them: run in-process through
`gateway.cli.main` (plus one real subprocess), judged by what a person would see."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main

POLICIES = Path(__file__).resolve().parents[1] / "policies"
CLOSING = re.compile(r"^(\d+) passed, (\d+) failed$")

VIEWER = {"uid": {"type": "Ops::User", "id": "vera"}, "attrs": {},
          "parents": [{"type": "Ops::Role", "id": "ops_viewer"}]}
OPERATOR = {"uid": {"type": "Ops::User", "id": "otto"}, "attrs": {},
            "parents": [{"type": "Ops::Role", "id": "ops_operator"}]}


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def last_line(out: str) -> str:
    return out.rstrip("\n").splitlines()[-1]


def a_test(name: str, who: dict, action: str, decision: str, reason: list[str], **extra: object) -> dict:
    return {"name": name,
            "request": {"principal": f'Ops::User::"{who["uid"]["id"]}"', "action": f'Ops::Action::"{action}"',
                        "resource": 'Ops::Provider::"socket"', "context": {}},
            "entities": [who], "decision": decision, "reason": reason, "num_errors": 0, **extra}


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A private copy of the canonical bundle (with its tests) to break or extend."""
    return Path(shutil.copytree(POLICIES, tmp_path / "policies"))


def add_tests(bundle: Path, name: str, tests: list[dict], *, alone: bool = True) -> None:
    if alone:
        for f in (bundle / "tests").glob("*.json"):
            f.unlink()
    (bundle / "tests" / name).write_text(json.dumps(tests))


# -- check -------------------------------------------------------------------------------------

def test_check_accepts_the_canonical_bundle(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli(capsys, "policy", "check", str(POLICIES))
    assert rc == 0, err
    assert out.startswith(f"OK {POLICIES}: revision ")
    assert "rbac.cedar: 3" in out and "tiers/rate-tiers.cedar: 4" in out


BREAKAGES = {
    "duplicate @id": ("rbac.cedar", '\n@id("rbac.viewer.read")\npermit (principal, action, resource);\n',
                      "rbac.cedar [rbac.viewer.read]: duplicate @id"),
    "missing @id": ("vault.cedar", "\npermit (principal, action, resource);\n",
                    "vault.cedar [policy1]: policy has no @id annotation"),
    "unknown attribute": ("extra.cedar", '@id("extra.claims-role")\npermit (principal, action, resource)\n'
                          'when { principal.ops_role == "ops_admin" };\n',
                          "extra.cedar [extra.claims-role]: for policy `extra.claims-role`, "
                          "attribute `ops_role`"),
    "unparsable file": ("broken.cedar", '@id("x")\npermit (principal, action',
                        "broken.cedar: does not parse"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_bundle_is_refused_naming_file_and_policy(
        capsys: pytest.CaptureFixture[str], bundle: Path, breakage: str) -> None:
    file, text, expected = BREAKAGES[breakage]
    with (bundle / file).open("a") as f:
        f.write(text)
    rc, out, err = cli(capsys, "policy", "check", str(bundle))
    assert rc == 1 and "OK" not in out
    assert f"{bundle}/{expected}" in err
    # the test command refuses the same bundle instead of running tests against it
    rc, out, err2 = cli(capsys, "policy", "test", str(bundle))
    assert rc == 1 and err2 == err and out == ""


def test_a_bad_tier_limit_is_refused(capsys: pytest.CaptureFixture[str], bundle: Path) -> None:
    tiers = bundle / "tiers" / "rate-tiers.cedar"
    tiers.write_text(tiers.read_text().replace('@limit("50/hour")', '@limit("fifty an hour")'))
    rc, _, err = cli(capsys, "policy", "check", str(bundle))
    assert rc == 1
    assert f"{bundle}/tiers/rate-tiers.cedar [tier.operator.scans]: @limit(" in err


def test_every_issue_is_listed_one_per_line(capsys: pytest.CaptureFixture[str], bundle: Path) -> None:
    for file, text, _ in BREAKAGES.values():
        with (bundle / file).open("a") as f:
            f.write(text)
    rc, _, err = cli(capsys, "policy", "check", str(bundle))
    lines = err.splitlines()
    assert rc == 1
    assert lines[0] == f"{bundle}: policy bundle refused, {len(lines) - 1} issue(s):"
    for _, _, expected in BREAKAGES.values():
        assert sum(expected in line for line in lines) >= 1, expected


def test_a_missing_directory_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path) -> None:
    for command in ("check", "test"):
        rc, out, err = cli(capsys, "policy", command, str(tmp_path / "nope"))
        assert rc == 2 and out == ""
        assert err == f"opsgate policy {command}: {tmp_path / 'nope'}: no such bundle directory\n"


# -- test --------------------------------------------------------------------------------------

def test_canonical_tests_pass_with_full_coverage(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = cli(capsys, "policy", "test", str(POLICIES), "--coverage", "--threshold", "100")
    assert rc == 0, out + err
    assert "coverage: 100.0%" in out and "uncovered" not in out
    m = CLOSING.match(last_line(out))
    assert m and int(m[1]) >= 70 and m[2] == "0"


def test_a_failing_test_shows_what_differed(capsys: pytest.CaptureFixture[str], bundle: Path) -> None:
    add_tests(bundle, "mine.json", [
        a_test("viewer scans", VIEWER, "socket.scan.repo", "allow", ["rbac.operator.scan-annotate-tag"]),
        a_test("viewer reads", VIEWER, "socket.findings.list", "allow", ["rbac.viewer.read"],
               tiers=["reads:999/3600"]),
        a_test("operator reads", OPERATOR, "socket.findings.list", "allow", ["rbac.viewer.read"]),
    ])
    rc, out, _ = cli(capsys, "policy", "test", str(bundle))
    assert rc == 1
    assert "FAIL mine/viewer scans  (mine.json)" in out
    assert "  decision: expected allow, got deny" in out
    assert "  reason: expected [rbac.operator.scan-annotate-tag], got []" in out
    assert "    missing    rbac.operator.scan-annotate-tag  (rbac.cedar)" in out
    assert "  tiers: expected [reads:999/3600], got [reads:100/3600]" in out
    assert "operator reads" not in out  # passing tests are quiet without -v
    assert last_line(out) == "1 passed, 2 failed"


def test_an_action_typo_fails_even_a_deny_expectation(capsys: pytest.CaptureFixture[str],
                                                       bundle: Path) -> None:
    typo = a_test("viewer cannot scan", VIEWER, "socket.scan.rep", "deny", [])
    typo["num_errors"] = 1  # even "expecting" the error does not make the typo pass
    add_tests(bundle, "typo.json", [typo])
    rc, out, _ = cli(capsys, "policy", "test", str(bundle))
    assert rc == 1
    assert 'request: action `Ops::Action::"socket.scan.rep"` does not exist' in out
    assert last_line(out) == "0 passed, 1 failed"


def test_run_selects_tests_by_file_and_name(capsys: pytest.CaptureFixture[str]) -> None:
    vault_tests = json.loads((POLICIES / "tests" / "vault.json").read_text())
    rc, out, _ = cli(capsys, "policy", "test", str(POLICIES), "--run", "^vault/", "-v")
    assert rc == 0
    assert [line for line in out.splitlines() if line.startswith("PASS")] == \
        [f"PASS vault/{t['name']}" for t in vault_tests]
    assert last_line(out) == f"{len(vault_tests)} passed, 0 failed"

    rc, out, err = cli(capsys, "policy", "test", str(POLICIES), "--run", "no such test")
    assert rc == 1 and last_line(out) == "0 passed, 0 failed" and "no test matched" in err


def test_json_format_is_one_parsable_object(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "policy", "test", str(POLICIES), "--format", "json")
    report = json.loads(out)
    assert rc == 0
    assert report["failed"] == 0 and report["passed"] == len(report["tests"]) > 0
    assert report["coverage"] == 100 and report["uncovered"] == []
    first = report["tests"][0]
    assert first["passed"] is True and {"allowed", "reasons", "errors", "tiers"} <= set(first["decision"])


def test_coverage_below_threshold_fails_and_names_uncovered(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(capsys, "policy", "test", str(POLICIES), "--run", "^vault/", "--threshold", "100")
    assert rc == 1
    assert "  uncovered: rbac.viewer.read  (rbac.cedar)" in out
    assert "is below the threshold 100%" in out
    assert CLOSING.match(last_line(out))[2] == "0"  # type: ignore[index]


def test_the_clock_is_pinned_per_test_or_per_run(capsys: pytest.CaptureFixture[str], bundle: Path) -> None:
    (bundle / "freeze.cedar").write_text(
        '@id("freeze.reads")\nforbid (principal, action == Ops::Action::"socket.findings.list", resource)\n'
        'when { context.now >= datetime("2026-06-01T00:00:00Z") };\n')
    add_tests(bundle, "freeze.json", [
        a_test("reads before the freeze", VIEWER, "socket.findings.list", "allow", ["rbac.viewer.read"]),
        a_test("reads during the freeze", VIEWER, "socket.findings.list", "deny", ["freeze.reads"],
               now="2026-07-01T00:00:00Z"),
    ])
    rc, out, _ = cli(capsys, "policy", "test", str(bundle))
    assert rc == 0 and last_line(out) == "2 passed, 0 failed"
    rc, out, _ = cli(capsys, "policy", "test", str(bundle), "--now", "2026-06-15T00:00:00Z")
    assert rc == 1 and "FAIL freeze/reads before the freeze" in out and last_line(out) == "1 passed, 1 failed"
    rc, _, err = cli(capsys, "policy", "test", str(bundle), "--now", "June")
    assert rc == 2 and "--now" in err and "Traceback" not in err


def test_shadow_asserts_the_dryrun_outcome(capsys: pytest.CaptureFixture[str], bundle: Path) -> None:
    (bundle / "dry.cedar").write_text('@id("dry.no-scans")\n@mode("dryrun")\n'
                                      'forbid (principal, action in Ops::Action::"scan", resource);\n')
    add_tests(bundle, "dry.json", [
        a_test("operator scans, a dryrun forbid would deny", OPERATOR, "socket.scan.repo", "allow",
               ["rbac.operator.scan-annotate-tag"], shadow="deny"),
        a_test("operator reads, no shadow difference", OPERATOR, "socket.findings.list", "allow",
               ["rbac.viewer.read"], shadow="deny"),
    ])
    rc, out, _ = cli(capsys, "policy", "test", str(bundle), "--coverage")
    assert rc == 1
    assert "FAIL dry/operator reads, no shadow difference" in out
    assert "  shadow: expected deny, got allow" in out
    assert "uncovered: dry.no-scans" not in out  # the shadow decision covers the dryrun policy
    assert last_line(out) == "1 passed, 1 failed"


def test_malformed_test_files_are_named_and_exit_2(capsys: pytest.CaptureFixture[str], bundle: Path) -> None:
    misspelt = a_test("viewer reads", VIEWER, "socket.findings.list", "allow", ["rbac.viewer.read"])
    misspelt["teirs"] = ["reads:100/3600"]
    add_tests(bundle, "misspelt.json", [misspelt])
    (bundle / "tests" / "truncated.json").write_text('[{"name": ')
    rc, out, err = cli(capsys, "policy", "test", str(bundle))
    assert rc == 2 and out == ""
    assert f"{bundle}/tests/misspelt.json: test #1 'viewer reads': unknown field(s) ['teirs']" in err
    assert f"{bundle}/tests/truncated.json: invalid JSON" in err
    assert "Traceback" not in err


# -- fmt ---------------------------------------------------------------------------------------

UGLY = """// Header: who owns this file and why it exists.

// the rule's own comment
@id("ugly.rule")
permit(principal in Ops::Role::"ops_viewer",action in Ops::Action::"read",resource) when { // inline
  context has args   // trailing
};
// end of file
"""


def comments(text: str) -> list[str]:
    return sorted(line.strip()[line.strip().index("//"):] for line in text.splitlines() if "//" in line)


def test_fmt_lists_diffs_writes_and_keeps_comments(capsys: pytest.CaptureFixture[str], bundle: Path) -> None:
    ugly = bundle / "ugly.cedar"
    ugly.write_text(UGLY)
    canonical = {f: f.read_bytes() for f in bundle.rglob("*.cedar") if f != ugly}

    rc, out, _ = cli(capsys, "policy", "fmt", str(bundle))  # default: list
    assert rc == 0 and out == f"{ugly}\n"
    rc, out, _ = cli(capsys, "policy", "fmt", "-l", "--fail", str(bundle))
    assert rc == 1 and out == f"{ugly}\n"
    rc, out, _ = cli(capsys, "policy", "fmt", "-d", str(ugly))
    assert rc == 0 and f"--- {ugly}" in out
    assert '-permit(principal in Ops::Role::"ops_viewer",action' in out and "+permit (" in out
    assert ugly.read_text() == UGLY  # -l and -d never write

    rc, out, _ = cli(capsys, "policy", "fmt", "-w", str(bundle))
    assert rc == 0 and out == ""
    formatted = ugly.read_text()
    assert formatted != UGLY and comments(formatted) == comments(UGLY)
    # the header comment stays apart from the rule's own comment
    assert formatted.startswith("// Header: who owns this file and why it exists.\n\n"
                                "// the rule's own comment\n")
    assert {f: f.read_bytes() for f in canonical} == canonical  # already formatted: untouched
    rc, out, _ = cli(capsys, "policy", "fmt", "--fail", str(bundle))
    assert rc == 0 and out == ""
    rc, _, _ = cli(capsys, "policy", "check", str(bundle))
    assert rc == 0


def test_fmt_refuses_what_it_cannot_parse(capsys: pytest.CaptureFixture[str], bundle: Path) -> None:
    broken = bundle / "broken.cedar"
    broken.write_text("// keep me\npermit (principal,")
    rc, out, err = cli(capsys, "policy", "fmt", "-w", str(broken))
    assert rc == 2 and out == ""
    assert err.startswith(f"{broken}: does not parse") and len(err.splitlines()) == 1
    assert broken.read_text() == "// keep me\npermit (principal,"
    rc, _, err = cli(capsys, "policy", "fmt", str(bundle / "nope.cedar"))
    assert rc == 2 and "no such file or directory" in err


# -- eval --------------------------------------------------------------------------------------

def test_eval_prints_the_decision(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    request = tmp_path / "req.json"
    request.write_text(json.dumps({
        "principal": 'Ops::User::"vera"', "action": 'Ops::Action::"socket.findings.list"',
        "resource": 'Ops::Provider::"socket"', "context": {"args": {"version": "1.0"}},
        "entities": [VIEWER]}))
    rc, out, err = cli(capsys, "policy", "eval", "--bundle", str(POLICIES), "--request", str(request))
    assert rc == 0, err
    d = json.loads(out)
    assert d["allowed"] is True and d["reasons"] == ["rbac.viewer.read"] and d["errors"] == []
    assert d["tiers"] == [{"policy_id": "tier.viewer.reads", "bucket": "reads", "limit": 100,
                           "period_s": 3600}]
    assert d["policy_files"] == {"rbac.viewer.read": "rbac.cedar",
                                 "tier.viewer.reads": "tiers/rate-tiers.cedar"}
    assert d["mode"] == "enforce" and d["shadow"] is None and len(d["decision_id"]) == 36
    assert len(d["bundle_revision"]) == 16


@pytest.mark.parametrize(("content", "message"), [
    ('{"principal": "Ops::User::\\"vera\\"", "action": "Ops::Action::\\"socket.scna\\"", '
     '"resource": "Ops::Provider::\\"socket\\""}', 'action `Ops::Action::"socket.scna"` does not exist'),
    ('{"principal": ', "invalid JSON"),
    ('{"principal": "vera", "action": "socket.health", "resource": "Ops::Provider::\\"socket\\""}',
     "principal: not an entity uid"),
])
def test_eval_mistakes_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                content: str, message: str) -> None:
    request = tmp_path / "req.json"
    request.write_text(content)
    rc, out, err = cli(capsys, "policy", "eval", "--bundle", str(POLICIES), "--request", str(request))
    assert rc == 2 and out == ""
    assert err.startswith(f"opsgate policy eval: {request}: ") and message in err
    assert len(err.splitlines()) == 1


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = cli(capsys)
    assert rc == 2 and "usage: opsgate" in err


# -- the installed command ----------------------------------------------------------------------

def test_the_opsgate_command_runs_the_canonical_tests() -> None:
    script = Path(sys.executable).with_name("opsgate")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gateway.cli"]
    proc = subprocess.run([*command, "policy", "test", str(POLICIES), "--coverage"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "coverage: 100.0%" in proc.stdout
    assert CLOSING.match(last_line(proc.stdout))[2] == "0"  # type: ignore[index]
