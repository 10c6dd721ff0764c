"""Shared fixtures. Tests use the real engine on real bundles: copies of policies/ in tmp dirs."""

from __future__ import annotations

import logging
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
NOW = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    """A private copy of the canonical bundle that a test may edit."""
    dst = tmp_path / "policies"
    shutil.copytree(POLICIES, dst, ignore=shutil.ignore_patterns("tests"))
    return dst


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


# The mcp client's HTTP library logs every request at INFO; keep test output readable.
logging.getLogger("httpx2").setLevel(logging.WARNING)
logging.getLogger("httpx").setLevel(logging.WARNING)
