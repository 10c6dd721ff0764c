"""Constitution rule 4's build-time half: "CI rejects any provider code with hardcoded tokens".

1. detect-secrets scans every file git knows (tracked, or new and not ignored) against the
   committed `.secrets.baseline`; any finding not in it fails, and every finding in it must have
   been audited as a false positive (`"is_secret": false`).
2. No module under providers/ reads the environment (os.environ, os.getenv, dotenv, ...):
   provider credentials come from the vault, through ProviderBase.get_vault_secret, only.

Each check is also run against planted offenders, so a check that quietly stopped looking fails.

A new finding that is not a secret (a test fixture, a name): mark the line with
`# pragma: allowlist secret`, or refresh the baseline and audit it:
    .venv/bin/detect-secrets scan --baseline .secrets.baseline
    .venv/bin/detect-secrets audit .secrets.baseline
A real secret: remove it, and rotate it (`opsgate vault rotate <name>`): it is in git history.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest
from detect_secrets import SecretsCollection
from detect_secrets.settings import transient_settings

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / ".secrets.baseline"


def repo_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"not a git checkout: {e}")
    return sorted(f for f in out.split("\0") if f and f != BASELINE.name and (ROOT / f).is_file())


def scan(root: Path, files: list[str], baseline: dict) -> SecretsCollection:
    """Findings in `files` (relative to `root`) with the baseline's own plugins and filters,
    in this process (the CLI's process pool would fork a test process full of threads)."""
    found = SecretsCollection(root=str(root))
    with transient_settings({"plugins_used": baseline["plugins_used"], "filters_used": baseline["filters_used"]}):
        for f in files:
            found.scan_file(f)
    return found


def describe(found: SecretsCollection, known: Collection[tuple[str, str, str]] = ()) -> list[str]:
    """The findings not in `known` ((file, type, hashed secret): line numbers may move)."""
    return sorted(f"{name}:{s.line_number}: {s.type}" for name, s in found
                  if (name, s.type, s.secret_hash) not in known)


@pytest.fixture(scope="module")
def baseline() -> dict:
    return json.loads(BASELINE.read_text())


def test_no_secret_in_the_repository_beyond_the_audited_baseline(baseline: dict) -> None:
    known = {(name, r["type"], r["hashed_secret"]) for name, results in baseline["results"].items() for r in results}
    new = describe(scan(ROOT, repo_files(), baseline), known)
    assert not new, ("possible secrets not in .secrets.baseline (see this test's docstring for what to do):\n  "
                     + "\n  ".join(new))


def test_every_baseline_entry_was_audited_as_not_a_secret(baseline: dict) -> None:
    unaudited = [f"{name}:{r['line_number']}: {r['type']}" for name, results in baseline["results"].items()
                 for r in results if r.get("is_secret") is not False]
    assert not unaudited, "audit these with `detect-secrets audit .secrets.baseline`:\n  " + "\n  ".join(unaudited)


def test_the_scanner_catches_planted_tokens(baseline: dict, tmp_path: Path) -> None:
    # Built at run time so this file itself holds no token-shaped literal.
    planted = {
        "aws.py": "AWS_KEY = '" + "AKIA" + "IOSFODNN7REALKEY" + "'\n",
        "github.py": "token = 'ghp_" + "1a2B3c4D5e6F7g8H9i0J" + "1k2L3m4N5o6P7q8R'\n",
        "stripe.py": "STRIPE = 'sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc" + "'\n",
        "key.pem": "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----\n",
        "client.py": "api_key = '" + "9c2f1e7a" * 4 + "'\n",
    }
    for name, text in planted.items():
        (tmp_path / name).write_text(text)
    found = scan(tmp_path, sorted(planted), baseline)
    assert {name for name, _ in found} == set(planted), describe(found)


# -- no provider reads the environment -----------------------------------------------------------

ENV_ATTRIBUTES = {"environ", "environb", "getenv", "getenvb"}
ENV_MODULES = {"os", "posix", "nt"}
DOTENV = {"dotenv", "environs", "decouple", "pydantic_settings"}


def env_reads(source: str, filename: str) -> Iterator[str]:
    """Every place in `source` that can read a process environment variable."""
    tree = ast.parse(source, filename)
    aliases: set[str] = set()  # local names bound to os, posix or nt
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                top = a.name.split(".")[0]
                if top in DOTENV:
                    yield f"{filename}:{node.lineno}: imports {a.name}"
                if top in ENV_MODULES:
                    aliases.add(a.asname or top)
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            if module in DOTENV:
                yield f"{filename}:{node.lineno}: imports from {node.module}"
            if module in ENV_MODULES:
                for a in node.names:
                    if a.name in ENV_ATTRIBUTES or a.name == "*":
                        yield f"{filename}:{node.lineno}: imports {a.name} from {node.module}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ENV_ATTRIBUTES and \
                isinstance(node.value, ast.Name) and node.value.id in aliases:
            yield f"{filename}:{node.lineno}: {node.value.id}.{node.attr}"
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr" and \
                len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and node.args[1].value in ENV_ATTRIBUTES:
            yield f"{filename}:{node.lineno}: getattr(..., {node.args[1].value!r})"
        elif isinstance(node, ast.Call) and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id == "__import__")):
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and str(first.value).split(".")[0] in ENV_MODULES | DOTENV:
                yield f"{filename}:{node.lineno}: imports {first.value} dynamically"


def test_no_provider_reads_the_environment() -> None:
    modules = sorted((ROOT / "providers").rglob("*.py"))
    assert any(m.parent.name == "sdk" for m in modules) and len(modules) > 5
    found = [hit for m in modules for hit in env_reads(m.read_text(), str(m.relative_to(ROOT)))]
    assert not found, ("providers must take credentials from the vault (ProviderBase.get_vault_secret), "
                       "never from the environment:\n  " + "\n  ".join(found))


@pytest.mark.parametrize("source", [
    "import os\nkey = os.environ['SOCKET_API_KEY']",
    "import os\nkey = os.getenv('SENTRY_DSN')",
    "import os as o\nkey = o.environ.get('X')",
    "from os import environ\nkey = environ['X']",
    "from os import getenv as g\nkey = g('X')",
    "from os import *\nkey = environ['X']",
    "import os.path\nkey = os.environ['X']",
    "import posix\nkey = posix.environ[b'X']",
    "import dotenv\ndotenv.load_dotenv()",
    "from dotenv import dotenv_values\nkey = dotenv_values()['X']",
    "from pydantic_settings import BaseSettings",
    "import os\nkey = getattr(os, 'environ')['X']",
    "import importlib\nenv = importlib.import_module('os').environ",
    "env = __import__('os').getenv('X')",
    "def f():\n    import os\n    return os.environ['X']",
])
def test_the_environment_check_catches_planted_reads(source: str) -> None:
    assert list(env_reads(source, "planted.py"))


def test_the_environment_check_leaves_ordinary_os_use_alone() -> None:
    assert not list(env_reads("import os\np = os.path.join('a', 'b')\nos.urandom(8)\nenviron = {}\n", "ok.py"))
