"""`opsgate vault set|list|rotate`, run as an operator runs it (a child process, real stdin or a
real terminal), on both backends. A value goes in by prompt or stdin only and never comes out:
not on stdout, not on stderr, not on the terminal."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from providers.sdk.vault import Vault, open_vault
from tests.vault_pg import PgVault, clear, pgvault_fixture  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parent.parent
VALUE = "sntrys_eyJpYXQiOjE3MzI-this-is-the-value"


@dataclass
class Backend:
    args: list[str]
    vault_args: dict[str, str]

    def vault(self) -> Vault:
        return open_vault(self.vault_args["backend"], state_dir=self.vault_args["state_dir"],  # type: ignore[arg-type]
                          database_url=self.vault_args["database_url"])

    def get(self, name: str) -> str:
        async def read() -> str:
            v = self.vault()
            try:
                return await v.get(name)
            finally:
                await v.close()

        return asyncio.run(read())


@pytest.fixture(params=["embedded", "supabase"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "embedded":
        state = str(tmp_path / "state")
        yield Backend(["--state-dir", state], {"backend": "embedded", "state_dir": state, "database_url": ""})
        return
    pg: PgVault = request.getfixturevalue("pgvault")
    asyncio.run(clear(pg))
    dsn = pg.dsn(pg.operator)
    yield Backend(["--backend", "supabase", "--database-url", dsn],
                  {"backend": "supabase", "state_dir": "", "database_url": dsn})


def opsgate(*args: str, stdin: str | None = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args], input=stdin, capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def test_set_list_rotate_through_stdin(backend: Backend) -> None:
    done = opsgate("vault", "set", "sentry_dsn", *backend.args, stdin=VALUE + "\n")
    assert done.returncode == 0, done.stderr
    assert "sentry_dsn: version 1 stored" in done.stdout
    assert backend.get("sentry_dsn") == VALUE  # the newline a shell pipe adds is not part of it

    done = opsgate("vault", "rotate", "sentry_dsn", *backend.args, stdin=VALUE + "-2")
    assert done.returncode == 0, done.stderr
    assert "sentry_dsn: version 2 stored" in done.stdout
    assert backend.get("sentry_dsn") == VALUE + "-2"

    listed = opsgate("vault", "list", *backend.args)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["name", "version", "updated_at"]
    assert lines[1].split()[:2] == ["sentry_dsn", "2"]
    jsonl = opsgate("vault", "list", "--format", "jsonl", *backend.args)
    assert '"name":"sentry_dsn","version":2' in jsonl.stdout
    missing = opsgate("vault", "rotate", "netdata_token", *backend.args, stdin=VALUE)
    assert missing.returncode == 1
    assert "'netdata_token' is not in the" in missing.stderr and "nothing to rotate" in missing.stderr
    for out in (done, listed, jsonl, missing):
        assert VALUE not in out.stdout + out.stderr


def test_rotate_generate_makes_a_new_value_it_never_shows(backend: Backend) -> None:
    assert opsgate("vault", "set", "opsgate_dev_jwt_secret", *backend.args, stdin=VALUE).returncode == 0
    done = opsgate("vault", "rotate", "opsgate_dev_jwt_secret", "--generate", *backend.args)
    assert done.returncode == 0, done.stderr
    assert "version 2" in done.stdout
    new = backend.get("opsgate_dev_jwt_secret")
    assert new != VALUE and len(new) >= 32
    assert new not in done.stdout + done.stderr


def test_a_value_on_the_command_line_is_refused_without_repeating_it(backend: Backend) -> None:
    for argv in (["socket_api_key", VALUE], ["socket_api_key", f"--value={VALUE}"],
                 ["socket_api_key", "--value", VALUE]):
        for verb in ("set", "rotate"):
            done = opsgate("vault", verb, *argv, *backend.args, stdin=VALUE)
            assert done.returncode == 2
            assert "refusing a secret value on the command line" in done.stderr
            assert VALUE not in done.stdout + done.stderr
    assert "socket_api_key" not in opsgate("vault", "list", *backend.args).stdout


def test_clear_errors_store_nothing_and_show_no_value(backend: Backend) -> None:
    cases = [
        (("vault", "set", "socket_api_key"), "", 2, "no value on stdin"),
        (("vault", "set", "socket_api_key"), "short12", 1, "shorter than 8"),
        (("vault", "set", "Socket-Key"), VALUE, 1, "invalid secret name"),
    ]
    for argv, stdin, code, message in cases:
        done = opsgate(*argv, *backend.args, stdin=stdin)
        assert (done.returncode, message in done.stderr) == (code, True), done.stderr
        assert "short12" not in done.stderr and VALUE not in done.stdout + done.stderr
    if backend.vault_args["backend"] == "embedded":
        assert "no embedded vault" in opsgate("vault", "list", *backend.args).stderr
    else:
        assert opsgate("vault", "list", *backend.args).stdout.splitlines()[1:] == []


def test_unreachable_supabase_is_a_clear_error() -> None:
    done = opsgate("vault", "list", "--backend", "supabase", "--database-url",
                   "postgresql://postgres@127.0.0.1:1/postgres")
    assert done.returncode == 1
    assert "database unreachable" in done.stderr


# -- on a real terminal ---------------------------------------------------------------------


PROMPTS = (b"value for ", b"again, to confirm: ")


def _terminal(argv: list[str], answers: list[str]) -> tuple[int, str]:
    """Run `opsgate argv` with a pseudo-terminal as its controlling terminal; type the k-th answer
    once the k-th prompt has been shown (getpass flushes pending input before it prompts, so an
    answer typed early would be lost). Returns the exit status and all the terminal displayed."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal's side
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "gateway.cli", *argv])
    shown, typed = b"", 0
    deadline = time.monotonic() + 120  # a safety net against a hung child, not an assertion
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.5)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
        prompts = sum(shown.count(p) for p in PROMPTS)
        if typed < len(answers) and typed < prompts and shown.endswith(b": "):
            os.write(fd, (answers[typed] + "\n").encode())
            typed += 1
    else:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_terminal_prompt_does_not_echo_and_confirms(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    code, shown = _terminal(["vault", "set", "netdata_token", "--state-dir", state], [VALUE, VALUE])
    assert code == 0, shown
    assert "value for netdata_token:" in shown and "again, to confirm:" in shown
    assert "netdata_token: version 1 stored" in shown
    assert VALUE not in shown
    backend = Backend([], {"backend": "embedded", "state_dir": state, "database_url": ""})
    assert backend.get("netdata_token") == VALUE

    code, shown = _terminal(["vault", "rotate", "netdata_token", "--state-dir", state], [VALUE + "-a", VALUE + "-b"])
    assert code == 2
    assert "the two values differ; nothing was stored" in shown
    assert VALUE not in shown
    assert backend.get("netdata_token") == VALUE
