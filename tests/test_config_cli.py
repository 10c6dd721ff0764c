"""`opsgate config check|show`, and every command resolving its configuration the same way, run as
real processes from folders that are not the checkout (as an operator or a service manager does).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from gateway.cli import build_parser
from gateway.cli.settings import resolve
from gateway.config import GatewayConfig
from gateway.config.loader import load
from gateway.serve import edge_of, mint_token, signing_key
from tests.conftest import POLICIES, ROOT
from tests.harness import free_port

PASSWORD = "hunter2-Zq9"  # pragma: allowlist secret


def opsgate(*argv: str, cwd: Path, env: dict[str, str] | None = None,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`opsgate ...` in a clean environment (none of this process's OPSGATE_* variables)."""
    base = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(cwd), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "gateway.cli", *argv], cwd=cwd, env={**base, **(env or {})},
                          input=stdin, capture_output=True, text=True, timeout=120)


@contextlib.contextmanager
def serving(argv: list[str], port: int, log: Path, *, cwd: Path, env: dict[str, str]) -> Iterator[Path]:
    """`opsgate <argv>` from `cwd` with only `env` (and PATH, HOME, PYTHONPATH), yielded once it is
    live on `port`; terminated afterwards. Yields the log file."""
    import httpx

    base = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(cwd), "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", *argv], cwd=cwd, env={**base, **env},
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"exited with {proc.returncode}:\n{log.read_text()}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"not live after 30 s:\n{log.read_text()}"
            time.sleep(0.05)
        yield log
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def folder(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.mkdir(parents=True)
    return path


# -- config check ----------------------------------------------------------------------------


def test_check_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    conf = folder(tmp_path, "conf")
    (conf / "opsgate.toml").write_text(
        f'port = "8080"\nlimter = "redis"\ndatabase_url = "postgresql://gw:{PASSWORD}@db/postgres"\n'
        '[tracing]\notlp_endpoint = 4318\n')
    done = opsgate("config", "check", cwd=conf)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[-1] == "4 problems in the configuration"
    assert sorted(line.split(": ")[1] for line in lines[:-1]) == ["database_url", "limter", "port",
                                                                  "tracing.otlp_endpoint"]
    assert PASSWORD not in done.stdout + done.stderr


def test_check_says_which_good_file_it_checked(tmp_path: Path) -> None:
    conf = folder(tmp_path, "etc")
    (conf / "gw.toml").write_text(f'policies = "{POLICIES}"\nport = 9000\n')
    done = opsgate("config", "check", "--config", str(conf / "gw.toml"), cwd=folder(tmp_path, "elsewhere"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == f"{conf / 'gw.toml'}: ok (2 keys set in the file, 0 by the environment, 0 by flags)"


def test_check_without_any_file_exits_1(tmp_path: Path) -> None:
    done = opsgate("config", "check", cwd=tmp_path)
    assert done.returncode == 1 and "no configuration file" in done.stdout


def test_the_production_example_passes_check(tmp_path: Path) -> None:
    done = opsgate("config", "check", "--config", str(ROOT / "deploy" / "opsgate.toml"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith(f"{ROOT / 'deploy' / 'opsgate.toml'}: ok")
    config = load(config_file=str(ROOT / "deploy" / "opsgate.toml")).config
    assert config.limiter == "redis"
    assert (config.vault, config.events, config.omega.backend) == ("supabase", "postgres", "postgres")
    # the constitution's hostname is served (issue 12: it used to answer 421), a look-alike is not
    allowed = edge_of(config).allowed
    assert allowed.host_ok("mcp.insightpulseai.com", "https") and allowed.origin_ok("https://mcp.insightpulseai.com")
    assert not allowed.host_ok("mcp.insightpulseai.com.evil.example", "https")


def test_the_checkouts_own_file_passes_check() -> None:
    done = opsgate("config", "check", cwd=ROOT)
    assert done.returncode == 0 and done.stdout.startswith(f"{ROOT / 'opsgate.toml'}: ok"), done.stdout


# -- config show -----------------------------------------------------------------------------


def test_show_names_the_source_of_every_value(tmp_path: Path) -> None:
    conf = folder(tmp_path, "conf")
    (conf / "opsgate.toml").write_text('host = "0.0.0.0"\n[tracing]\notlp_endpoint = "http://127.0.0.1:4318/v1/traces"\n')
    done = opsgate("config", "show", "--format", "json", "--port", "9001", "--set", "omega.viewer=anon", cwd=conf,
                   env={"OPSGATE_EVENTS_OUTBOX_MAX": "5"})
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["file"] == str(conf / "opsgate.toml")
    settings = shown["settings"]
    assert settings["port"] == {"value": 9001, "source": "flag --port"}
    assert settings["host"] == {"value": "0.0.0.0", "source": "file"}
    assert settings["tracing.otlp_endpoint"]["source"] == "file"
    assert settings["events_outbox_max"] == {"value": 5, "source": "env OPSGATE_EVENTS_OUTBOX_MAX"}
    assert settings["omega.viewer"] == {"value": "anon", "source": "flag --set omega.viewer"}
    assert settings["limiter"] == {"value": "memory", "source": "default"}
    assert settings["state_dir"] == {"value": str(conf / ".opsgate"), "source": "default"}


def test_show_prints_toml_that_check_accepts_back(tmp_path: Path) -> None:
    conf = folder(tmp_path, "conf")
    (conf / "opsgate.toml").write_text('port = 9002\n[provider_urls]\nsentry = "https://sentry.example"\n')
    done = opsgate("config", "show", cwd=conf)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("port = 9002") and line.endswith("# file") for line in lines)
    assert any(line.startswith("limiter = \"memory\"") and line.endswith("# default") for line in lines)
    copy = folder(tmp_path, "copy")
    (copy / "opsgate.toml").write_text(done.stdout)
    assert tomllib.loads(done.stdout)["provider_urls"] == {"sentry": "https://sentry.example"}
    assert opsgate("config", "check", cwd=copy).returncode == 0


# -- serve's flags ---------------------------------------------------------------------------


def subcommand(name: str) -> argparse.ArgumentParser:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


@pytest.mark.parametrize("name", ["serve", "stdio"])
def test_every_flag_has_help_with_its_default(name: str) -> None:
    missing = [a.option_strings[-1] for a in subcommand(name)._actions
               if a.option_strings and a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)
               and "default" not in (a.help or "")]
    assert missing == []


def test_upstream_is_a_hidden_alias_of_provider_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("OPSGATE_")]:
        monkeypatch.delenv(name)
    args = build_parser().parse_args(["serve", "--upstream", "sentry=https://old.example",
                                      "--provider-url", "socket=https://new.example"])
    assert resolve(args).config.provider_urls == {"sentry": "https://old.example", "socket": "https://new.example"}
    assert "--upstream is deprecated; use --provider-url" in capsys.readouterr().err
    assert "--upstream" not in subcommand("serve").format_help()


def test_serve_refuses_a_bad_configuration_listing_every_problem(tmp_path: Path) -> None:
    conf = folder(tmp_path, "conf")
    (conf / "opsgate.toml").write_text('port = "x"\n[tracing]\notlp_endpont = "http://c"\n')
    done = opsgate("serve", "--redis-url", f"redis://:{PASSWORD}@10.0.0.5:6379/0", cwd=conf)
    assert done.returncode == 2
    assert "opsgate serve: 3 configuration problems:" in done.stderr
    for key in ("port", "tracing.otlp_endpont", "redis_url"):
        assert f": {key}: " in done.stderr
    assert PASSWORD not in done.stderr and not (conf / ".opsgate").exists()


# -- other commands resolve the same way -----------------------------------------------------


def test_vault_set_from_another_folder_uses_the_configured_state_dir(tmp_path: Path) -> None:
    conf, elsewhere = folder(tmp_path, "etc"), folder(tmp_path, "tmp")
    (conf / "opsgate.toml").write_text('state_dir = "state"\n')
    env = {"OPSGATE_CONFIG": str(conf / "opsgate.toml")}
    done = opsgate("vault", "set", "socket_api_key", cwd=elsewhere, env=env, stdin="sktsec_not_a_real_key_123456\n")
    assert done.returncode == 0, done.stderr
    assert f"embedded vault at {conf / 'state'}/vault" in done.stdout
    assert (conf / "state" / "vault" / "vault.db").exists() and list(elsewhere.iterdir()) == []
    listed = opsgate("vault", "list", cwd=elsewhere, env=env)
    assert "socket_api_key" in listed.stdout, listed.stderr


def test_a_gateway_started_from_its_configuration_file_alone_answers_a_tool_call(tmp_path: Path) -> None:
    """No flags: the file (named by OPSGATE_CONFIG, as a service manager would) says everything, and
    its relative paths point beside it, not at the empty folder the process starts in."""
    import shutil

    conf, cwd = folder(tmp_path, "etc/opsgate"), folder(tmp_path, "run")
    shutil.copytree(POLICIES, conf / "bundle", ignore=shutil.ignore_patterns("tests"))
    port = free_port()
    (conf / "opsgate.toml").write_text(f'port = {port}\npolicies = "bundle"\nstate_dir = "state"\n'
                                       'auth_issuer = "https://issuer.example/auth/v1"\n')
    env = {"OPSGATE_CONFIG": str(conf / "opsgate.toml")}
    url = f"http://127.0.0.1:{port}"
    with serving(["serve"], port, tmp_path / "gw.log", cwd=cwd, env=env) as log:
        secret = signing_key(GatewayConfig(state_dir=str(conf / "state")))  # the key the gateway generated there
        token = mint_token(secret, issuer="https://issuer.example/auth/v1", user_id=str(uuid.uuid4()),
                           role="ops_viewer")

        async def call() -> dict:
            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
            async with http, Client(streamable_http_client(url + "/mcp", http_client=http)) as c:
                result = await c.call_tool("echo.ping", {"message": "configured"})
            return result.structured_content

        import anyio

        assert anyio.run(call) == {"message": "configured"}
        assert f"configuration: {conf / 'opsgate.toml'}" in log.read_text()
    assert list(cwd.iterdir()) == []  # nothing created where the process happened to start
    events = opsgate("events", "query", "--since", "2000-01-01T00:00:00Z", "--tool", "ping", cwd=cwd, env=env)
    assert events.returncode == 0, events.stderr
    assert [json.loads(line)["tool"] for line in events.stdout.splitlines()] == ["ping"]
