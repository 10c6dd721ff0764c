"""A real gateway serving the console (demo users on, as `opsgate serve --demo-tokens`), for the
console's tests: HTTP-level hostile tests and the browser tests share it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.config import GatewayConfig
from gateway.serve import build_app, demo_user_id
from providers.echo import EchoProvider
from tests.conftest import POLICIES, ROOT
from tests.harness import RunningGateway, call, serving_app

FILER = "0b7e8f2a-6d1c-4e5b-9a3f-2c4d6e8f0a1b"  # an ops_admin who files (not the demo admin)
ADMIN = demo_user_id("ops_admin")
VIEWER = demo_user_id("ops_viewer")


@dataclass
class ConsoleGateway:
    gw: RunningGateway
    root: Path  # the test's folder: policies/, exceptions/, state/, candidates/
    app: Any = None  # the Litestar app (its state holds the console's parts)

    @property
    def url(self) -> str:
        return self.gw.url

    @property
    def exceptions(self) -> Path:
        return self.root / "exceptions"

    def token(self, role: str | None, user_id: str | None = None) -> str:
        return self.gw.token(role, user_id=user_id)

    def calls(self, role: str, tool: str, args: dict[str, Any], n: int = 1) -> list[Any]:
        """Tool calls through the real gateway with the real mcp client (rows for the trail)."""

        async def run() -> list[Any]:
            return [await call(self.gw, role, tool, args) for _ in range(n)]

        # On a thread of its own: Playwright's sync API keeps an event loop running in this one.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, run()).result()

    def file_with_cli(self, *, justification: str, provider: str = "netdata", host: str = "http://agent-7.lan:19999",
                      suffix: str | None = None, days: int = 30) -> str:
        """`opsgate exception new` as FILER (an ops_admin), against this gateway's vault and store."""
        token_file = self.root / f"filer-{suffix or 'x'}.jwt"
        token_file.write_text(self.token("ops_admin", FILER))
        args = [sys.executable, "-m", "gateway.cli", "exception", "new", "--provider", provider, "--rule", "5",
                "--host", host, "--justification", justification, "--control", "read-only API key",
                "--control", "<b>alerting</b> on use", "--days", str(days), "--token-file", str(token_file),
                "--dir", str(self.exceptions), "--state-dir", str(self.root / "state")]
        if suffix:
            args += ["--suffix", suffix]
        done = subprocess.run(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        return f"mcp-exception-{provider}-5" + (f"-{suffix}" if suffix else "")


@contextlib.contextmanager
def console_gateway(root: Path, *, demo: bool = True, port: int | None = None,
                    prepare: Callable[[Path], None] | None = None, **settings: Any) -> Iterator[ConsoleGateway]:
    """The gateway on a copy of the canonical bundle in `root` (`prepare(root)` may add to it first)."""
    shutil.copytree(POLICIES, root / "policies", ignore=shutil.ignore_patterns("tests"))
    (root / "policies" / "console-dryrun.cedar").write_text(DRYRUN)
    (root / "exceptions").mkdir()
    candidate = root / "candidates" / "viewers-comment"
    shutil.copytree(POLICIES, candidate, ignore=shutil.ignore_patterns("tests"))
    (candidate / "viewer-comment.cedar").write_text(
        '@id("rbac.viewer.comment")\npermit (principal in Ops::Role::"ops_viewer", action in Ops::Action::"comment", '
        "resource);\n")
    if prepare is not None:
        prepare(root)
    config = GatewayConfig(policies=str(root / "policies"), exceptions=str(root / "exceptions"),
                           state_dir=str(root / "state"), policy_candidates=str(root / "candidates"), **settings)
    app, services, secret = build_app(config, providers=[EchoProvider()], demo_tokens=demo)
    with serving_app(app, "gateway", port=port) as url:
        yield ConsoleGateway(RunningGateway(url, services, secret, config.auth_issuer), root, app)


DRYRUN_ID = "console.dryrun.viewers-no-ping"
# A policy being tried out: it would deny viewers' pings, so every viewer ping's row carries its shadow.
DRYRUN = f'''@id("{DRYRUN_ID}")
@mode("dryrun")
forbid (principal in Ops::Role::"ops_viewer", action == Ops::Action::"echo.ping", resource);
'''
CSRF = re.compile(r'name="_csrf" value="([^"]+)"')


def signed_in(cg: ConsoleGateway, *, role: str | None = None, token: str | None = None) -> httpx.Client:
    """An HTTP client with a console session: as a demo role, or with a pasted token."""
    client = httpx.Client(base_url=cg.url, follow_redirects=False, timeout=30)
    page = client.get("/console/signin")
    flow_csrf = CSRF.search(page.text)
    assert flow_csrf is not None, page.text
    if token is not None:
        r = client.post("/console/signin/token", data={"_csrf": flow_csrf[1], "token": token})
    else:
        r = client.post("/console/signin/demo", data={"_csrf": flow_csrf[1], "role": role})
    assert r.status_code == 303 and r.headers["location"] == "/console/trail", (r.status_code, r.text[:500])
    return client


def csrf_of(client: httpx.Client, path: str = "/console/trail") -> str:
    m = CSRF.search(client.get(path).text)
    assert m is not None
    return m[1]


__all__ = ["ADMIN", "CSRF", "DRYRUN_ID", "FILER", "VIEWER", "ConsoleGateway", "console_gateway", "csrf_of", "signed_in"]
