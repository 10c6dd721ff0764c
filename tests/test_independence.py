"""Provider independence (constitution rule 7) and the import direction, read from the source.

Every module under providers/ is parsed (never imported) and its imports resolved, relative ones
included: a provider package may import the standard library, third-party packages,
`providers.sdk` and itself; never `engine`, `gateway`, `otel`, the tests, or another provider.
The SDK may import none of those either. Dynamic ways round an import statement (`__import__`,
`importlib`, `sys.modules`) are refused outright: no provider has a reason to use them.

Providers also reach the gateway only through the Runtime protocol's methods (authorize, egress,
has_role, read_secret, emit_event), never the runtime object's insides (engine, audit, vault).

Rule 5's static half lives here too: outside the SDK, no provider module opens a socket or builds
an HTTP client of its own, so `self.http()` (egress-checked) is the only way out.

At run time the same rule holds through the egress policy: a provider's HTTP client cannot reach
the gateway or another provider's hosts (tests/test_egress.py).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PROVIDERS = ROOT / "providers"
# Our own top-level packages a provider must never reach into.
OURS_FORBIDDEN = ("engine", "gateway", "otel", "tests", "bench")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    """The absolute modules a `from ... import ...` statement reaches (each name may be a module)."""
    if node.level:
        base = module.split(".")
        if not is_package:
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
        prefix = ".".join([*base, node.module] if node.module else base)
    else:
        prefix = node.module or ""
    return [prefix, *(f"{prefix}.{alias.name}" for alias in node.names if alias.name != "*")]


def violations(root: Path) -> list[str]:
    """Every forbidden import or dynamic-import device in the provider tree at `root`."""
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        parts = module.split(".")
        own = parts[1] if len(parts) > 1 else None  # providers.<own>...; None for providers/__init__.py
        tree = ast.parse(path.read_text(), filename=str(path))
        where = path.relative_to(root.parent)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                targets = resolve(module, path.name == "__init__.py", node)
            elif isinstance(node, ast.Name) and node.id == "__import__":
                found.append(f"{where}:{node.lineno}: __import__")
            elif isinstance(node, ast.Attribute) and node.attr == "modules" and \
                    isinstance(node.value, ast.Name) and node.value.id == "sys":
                found.append(f"{where}:{node.lineno}: sys.modules")
            for target in targets:
                head = target.split(".")
                if head[0] in OURS_FORBIDDEN:
                    found.append(f"{where}:{node.lineno}: imports {target}")
                elif head[0] == "importlib":
                    found.append(f"{where}:{node.lineno}: imports {target} (dynamic imports)")
                elif head[0] == "providers" and len(head) > 1 and head[1] not in ("sdk", own) \
                        and (root / head[1]).is_dir():
                    found.append(f"{where}:{node.lineno}: {own or 'providers'} imports provider {head[1]}")
    return found


# Rule 5's other half: `self.http()` is the only way out, so provider packages (the SDK aside)
# open no sockets and build no HTTP clients of their own. `import httpx` stays allowed for its
# exception and response types.
NETWORK_MODULES = ("socket", "requests", "urllib.request", "urllib3", "aiohttp", "http.client", "httpcore",
                   "httpx2", "websockets", "pycurl", "asyncssh", "paramiko")
CLIENT_FACTORIES = {"AsyncClient", "Client", "AsyncHTTPTransport", "HTTPTransport", "get", "post", "put", "patch",
                    "delete", "head", "options", "request", "stream"}
RAW_CONNECT = {"open_connection", "create_connection", "connect_tcp", "create_datagram_endpoint", "urlopen"}


def network_violations(root: Path) -> list[str]:
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] in ("sdk", "__init__.py"):
            continue
        where = path.relative_to(root.parent)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            bad = [n for n in names if any(n == m or n.startswith(m + ".") for m in NETWORK_MODULES)
                   or (n.startswith("httpx.") and n.split(".", 1)[1] in CLIENT_FACTORIES)]
            if bad:
                found.append(f"{where}:{node.lineno}: imports {bad[-1]}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                func = node.func
                if isinstance(func.value, ast.Name) and func.value.id == "httpx" and func.attr in CLIENT_FACTORIES:
                    found.append(f"{where}:{node.lineno}: calls httpx.{func.attr} (use self.http())")
                elif func.attr in RAW_CONNECT:
                    found.append(f"{where}:{node.lineno}: calls {func.attr} (use self.http())")
    return found


def test_providers_reach_the_network_only_through_the_sdk_client() -> None:
    assert network_violations(PROVIDERS) == []


@pytest.mark.parametrize("source", [
    "import httpx\nc = httpx.AsyncClient()",
    "import httpx\nr = httpx.get('https://evil.example')",
    "from httpx import AsyncClient",
    "import socket",
    "from urllib.request import urlopen",
    "import asyncio\nasync def f():\n    await asyncio.open_connection('evil.example', 443)",
    "import httpcore",
])
def test_the_network_scan_catches_each_way_out(tmp_path: Path, source: str) -> None:
    root = tmp_path / "providers"
    (root / "alpha").mkdir(parents=True)
    (root / "alpha" / "client.py").write_text(source + "\n")
    (root / "alpha" / "ok.py").write_text("import httpx\n\ndef f(r: httpx.Response) -> None:\n"
                                          "    raise httpx.HTTPStatusError('x', request=r.request, response=r)\n")
    found = network_violations(root)
    assert len(found) == 1 and "client.py" in found[0], found


# The runtime a provider is bound to is the gateway's object; Python cannot hide its insides, so
# providers are held to the Runtime protocol's methods (no `self.runtime.engine`, `.audit`, ...).
RUNTIME_METHODS = {"authorize", "egress", "has_role", "read_secret", "emit_event"}


def runtime_violations(root: Path) -> list[str]:
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] in ("sdk", "__init__.py"):
            continue
        where = path.relative_to(root.parent)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                    and node.value.attr in ("runtime", "_runtime") and node.attr not in RUNTIME_METHODS:
                found.append(f"{where}:{node.lineno}: reaches runtime.{node.attr} (only the Runtime protocol)")
            elif isinstance(node, ast.Attribute) and node.attr == "_runtime":
                found.append(f"{where}:{node.lineno}: touches _runtime (use ProviderBase's exports)")
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "bind":
                found.append(f"{where}:{node.lineno}: calls bind (only the gateway binds a provider)")
    return found


def test_providers_use_only_the_runtime_protocol() -> None:
    assert runtime_violations(PROVIDERS) == []


@pytest.mark.parametrize(("source", "bad"), [
    ("def f(self):\n    return self.runtime.engine.bundle", True),
    ("def f(self):\n    return self.runtime.audit", True),
    ("def f(self):\n    return self._runtime", True),
    ("def f(self, rt):\n    self.bind(rt)", True),
    ("def f(self, c):\n    return self.runtime.authorize('p', 'query', ('Table', 't'), {}, c)", False),
])
def test_the_runtime_scan(tmp_path: Path, source: str, bad: bool) -> None:
    root = tmp_path / "providers"
    (root / "alpha").mkdir(parents=True)
    (root / "alpha" / "provider.py").write_text(source + "\n")
    assert bool(runtime_violations(root)) == bad


def test_no_provider_imports_another_provider_the_engine_or_the_gateway() -> None:
    assert violations(PROVIDERS) == []


def test_every_provider_package_is_scanned() -> None:
    packages = {p.parent.name for p in PROVIDERS.glob("*/__init__.py")}
    assert {"sdk", "echo"} <= packages
    scanned = {module_name(p, PROVIDERS).split(".")[1] for p in PROVIDERS.rglob("*.py") if p.parent != PROVIDERS}
    assert packages <= scanned


@pytest.mark.parametrize(("source", "expected"), [
    ("import gateway.runtime", "imports gateway.runtime"),
    ("from engine import Engine", "imports engine"),
    ("from otel.redact import Redactor", "imports otel.redact"),
    ("from providers.beta import client", "alpha imports provider beta"),
    ("from providers import beta", "alpha imports provider beta"),
    ("from ..beta import client", "alpha imports provider beta"),
    ("from .. import beta", "alpha imports provider beta"),
    ("import providers.beta.client", "alpha imports provider beta"),
    ("import importlib\nimportlib.import_module('gateway')", "dynamic imports"),
    ("gw = __import__('gateway')", "__import__"),
    ("import sys\ngw = sys.modules['gateway.registry']", "sys.modules"),
])
def test_the_scan_catches_each_way_in(tmp_path: Path, source: str, expected: str) -> None:
    root = tmp_path / "providers"
    for pkg in ("sdk", "alpha", "beta"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "alpha" / "client.py").write_text(source + "\n")
    found = violations(root)
    assert len(found) >= 1 and any(expected in f for f in found), found


def test_the_scan_allows_the_sdk_and_a_providers_own_modules(tmp_path: Path) -> None:
    root = tmp_path / "providers"
    for pkg in ("sdk", "alpha"):
        (root / pkg).mkdir(parents=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "alpha" / "client.py").write_text(
        "import httpx\nfrom providers.sdk import ProviderBase\nfrom . import models\nfrom .models import X\n"
        "from providers.alpha.models import Y\n")
    (root / "alpha" / "models.py").write_text("X = Y = 1\n")
    assert violations(root) == []
