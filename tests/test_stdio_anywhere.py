"""`opsgate stdio` launched as desktop MCP clients launch it: a command, its arguments and an
environment, in a folder of the client's choosing (here: an empty temporary folder).

The README's client snippet is run exactly as written (its placeholders filled in) with the real
`mcp` stdio client; started with nothing to go on, stdio refuses and creates nothing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters

from gateway.cli.serve import STDIO_SNIPPET
from gateway.config import GatewayConfig
from gateway.serve import mint_token, signing_key
from tests.conftest import POLICIES, ROOT

OPSGATE = Path(sys.executable).with_name("opsgate")  # the console script of the venv running the tests


def readme_snippet() -> dict:
    blocks = re.findall(r"```json\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    (snippet,) = [b for b in blocks if '"mcpServers"' in b]
    return json.loads(snippet)


def test_the_readme_snippet_is_the_one_stdio_prints() -> None:
    assert readme_snippet() == json.loads(STDIO_SNIPPET)


@pytest.mark.skipif(not OPSGATE.exists(), reason="the opsgate console script is not installed in this venv")
@pytest.mark.anyio
async def test_the_readme_snippet_serves_from_an_empty_folder(tmp_path: Path) -> None:
    conf, launch = tmp_path / "conf", tmp_path / "client-folder"
    conf.mkdir()
    launch.mkdir()
    (conf / "opsgate.toml").write_text(f'policies = "{POLICIES}"\nstate_dir = "state"\n')
    secret = signing_key(GatewayConfig(state_dir=str(conf / "state")))
    token = mint_token(secret, issuer=GatewayConfig().auth_issuer, user_id=str(uuid.uuid4()), role="ops_viewer")
    text = json.dumps(readme_snippet()["mcpServers"]["opsgate"])
    for placeholder, value in (("/path/to/opsgate/.venv/bin/opsgate", str(OPSGATE)),
                               ("/path/to/opsgate.toml", str(conf / "opsgate.toml")),
                               ("<your access token>", token)):
        assert placeholder in text
        text = text.replace(placeholder, value)
    server = json.loads(text)
    params = StdioServerParameters(command=server["command"], args=server["args"], env=server["env"], cwd=str(launch))
    with anyio.fail_after(60):
        async with Client(params) as c:
            result = await c.call_tool("echo.ping", {"message": "from a desktop client"})
    assert not result.is_error and result.structured_content == {"message": "from a desktop client"}
    assert list(launch.iterdir()) == []


def bare_stdio(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(cwd), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "gateway.cli", "stdio", *argv], cwd=cwd, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv", [[], ["--policies", str(POLICIES)]])
def test_stdio_with_nothing_to_go_on_refuses_and_creates_nothing(tmp_path: Path, argv: list[str]) -> None:
    done = bare_stdio(*argv, cwd=tmp_path)
    assert done.returncode == 2
    assert "--config /path/to/opsgate.toml" in done.stderr and '"mcpServers"' in done.stderr
    assert "--state-dir" in done.stderr and done.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no .opsgate/, no vault, in a folder the client happened to pick
