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


def require_service(name: str, host: str, port: int) -> None:
    """Skip when a local service is down, except in CI, where a missing service is a failure."""
    import os
    import socket

    try:
        socket.create_connection((host, port), 1).close()
    except OSError:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"{name} is not reachable at {host}:{port}")
