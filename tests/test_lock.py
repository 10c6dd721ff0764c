"""Every dependency is locked: uv.lock must agree with pyproject.toml (`make lock` refreshes it).

`make test` installs with `uv sync --locked`, which already refuses a stale lock; this test says
so in the suite too, and proves the check would catch a dependency added without locking.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

UV = Path(sys.executable).parent / "uv"


def lock_check(project: Path) -> subprocess.CompletedProcess[str]:
    # --offline: the check needs no registry when the lock satisfies the project
    return subprocess.run([str(UV), "lock", "--check", "--offline", "--project", str(project)],
                          capture_output=True, text=True, timeout=60)


def test_the_lock_agrees_with_pyproject() -> None:
    done = lock_check(ROOT)
    assert done.returncode == 0, f"uv.lock is stale: run `make lock`\n{done.stderr}"


def test_a_dependency_added_without_locking_is_caught(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    text = (tmp_path / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(
        text.replace('dependencies = [\n', 'dependencies = [\n    "six>=1.16",\n', 1))
    done = lock_check(tmp_path)
    assert done.returncode != 0


def test_uv_itself_is_pinned_with_hashes_from_the_lock() -> None:
    line = subprocess.run([sys.executable, str(ROOT / "scripts" / "uv_requirement.py")], capture_output=True,
                          text=True, check=True).stdout
    assert line.startswith("uv==") and line.count("--hash=sha256:") >= 2
    version = subprocess.run([str(UV), "--version"], capture_output=True, text=True, check=True).stdout.split()[1]
    assert line.split()[0] == f"uv=={version}"
