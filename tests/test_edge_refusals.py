"""Issue 13 items 6 and 7: refused requests leave a bounded trace, and admin routes authenticate first.

Item 7: with no token, `POST /v1/data/opsgate/authz` used to read the whole body and answer 400
with the schema's complaint. Now every admin route authenticates (and decides its action) in a
guard, before the body is read: a raw socket announces 5 MB, sends a few bytes, and still gets its
401 (or 403 for a caller whose role may not) while the rest of the body never comes.

Item 6: a 401 used to leave no row and no log line. Now each refusal is counted, and every
interval (and at shutdown) each (client, reason) becomes one `ops.run_events` row (provider
"opsgate", tool "auth.refused") with the count; the log says the first few and a summary. A flood
of 10,000 bad tokens through real HTTP, 3,000 of them from distinct forwarded addresses, writes a
bounded number of rows whose counts add up exactly, and no part of any token reaches the store's
files or the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from gateway.config import GatewayConfig
from gateway.edge.refusals import LOG_FIRST
from providers.echo import EchoProvider
from tests.conftest import POLICIES
from tests.harness import RunningGateway, running_gateway

pytestmark = pytest.mark.anyio

FIVE_MB = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    config = GatewayConfig(policies=str(POLICIES), state_dir=str(tmp_path_factory.mktemp("state")))
    with running_gateway(config, providers=[EchoProvider()]) as running:
        yield running


# -- item 7: authenticate before reading the body --------------------------------------------------


def raw_post(url: str, path: str, *, declared: int, sent: bytes, token: str | None = None) -> tuple[int, dict[str, str],
                                                                                                      bytes]:
    """POST over a raw socket announcing `declared` body bytes and sending only `sent`; the answer.
    The socket's timeout only turns a server that waits for the rest of the body into an error."""
    host, port = url.removeprefix("http://").split(":")
    head = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
            f"Content-Length: {declared}"] + ([f"Authorization: Bearer {token}"] if token else [])
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + sent)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, "the server closed the connection without answering"
            data += chunk
        header_block, _, body = data.partition(b"\r\n\r\n")
        lines = header_block.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        while len(body) < int(headers.get("content-length", "0")):
            chunk = s.recv(65536)
            assert chunk
            body += chunk
    return int(lines[0].split()[1]), headers, body


GUARDED_POSTS = ["/v1/data/opsgate/authz", "/v1/data/opsgate/authz/allow", "/v1/policy/reload", "/v1/exceptions",
                 "/v1/exceptions/mcp-exception-echo-5/approve", "/v1/exceptions/mcp-exception-echo-5/revoke", "/mcp"]


def test_every_route_that_takes_a_body_has_a_guard() -> None:
    """A route added later without a guard would read its body before anyone is authenticated."""
    from litestar.handlers import HTTPRouteHandler

    from gateway.routes import ROUTES

    unguarded = [f"{sorted(h.http_methods)} {sorted(h.paths)}" for h in ROUTES
                 if isinstance(h, HTTPRouteHandler) and h.http_methods - {"GET", "HEAD", "OPTIONS"} and not h.guards]
    assert unguarded == []


@pytest.mark.parametrize("path", GUARDED_POSTS)
@pytest.mark.parametrize("token", [None, "not.a.token", "forged"])
def test_no_valid_token_is_refused_before_the_body_is_read(gw: RunningGateway, path: str, token: str | None) -> None:
    bearer = jwt.encode({"sub": str(uuid.uuid4())}, b"k" * 32, algorithm="HS256") if token == "forged" else token
    status, headers, body = raw_post(gw.url, path, declared=FIVE_MB, sent=b'{"input": {"princ', token=bearer)
    assert status == 401, body
    assert headers["www-authenticate"].startswith("Bearer")
    answer = json.loads(body)
    assert (answer.get("extra") or answer["error"]["data"])["code"] == "UNAUTHENTICATED"


def test_a_role_that_may_not_is_refused_before_the_body_is_read(gw: RunningGateway) -> None:
    status, _, body = raw_post(gw.url, "/v1/data/opsgate/authz", declared=FIVE_MB, sent=b"{",
                               token=gw.token("ops_viewer"))
    assert status == 403 and json.loads(body)["extra"]["code"] == "FORBIDDEN"


async def test_a_whole_5mb_body_without_a_token_gets_401_and_no_schema_details(gw: RunningGateway) -> None:
    junk = json.dumps({"input": {"principal": 5, "padding": "x" * FIVE_MB}}).encode()
    async with httpx.AsyncClient(base_url=gw.url, timeout=60) as http:
        r = await http.post("/v1/data/opsgate/authz", content=junk, headers={"Content-Type": "application/json"})
        small = await http.post("/v1/data/opsgate/authz", json={"input": {"principal": "u1"}})
    for answer in (r, small):
        assert answer.status_code == 401
        text = answer.text.lower()
        assert "principal" not in text and "input" not in text and "validation" not in text and "expected" not in text


# -- item 6: refused authentications, aggregated --------------------------------------------------


def _bad_tokens(gw: RunningGateway) -> list[tuple[str | None, str | None, str]]:
    """(Authorization header value or None, forwarded client or None, expected reason) for 10,000 requests."""
    wrong_key = b"not-the-gateway-key-" + b"x" * 16
    plan: list[tuple[str | None, str | None, str]] = []
    plan += [(f"Bearer junk-{uuid.uuid4().hex}", None, "malformed") for _ in range(3000)]
    plan += [(f"Bearer {jwt.encode({'sub': str(uuid.uuid4()), 'n': i}, wrong_key, algorithm='HS256')}", None,
              "signature") for i in range(2000)]
    plan += [(f"Bearer {gw.token('ops_viewer', ttl_s=-3600)}", None, "expired") for _ in range(1000)]
    plan += [(None, None, "missing") for _ in range(1000)]
    plan += [(f"Bearer junk-{uuid.uuid4().hex}", f"10.0.{i // 256}.{i % 256}", "malformed") for i in range(3000)]
    return plan


async def _flood(url: str, plan: list[tuple[str | None, str | None, str]]) -> list[int]:
    queue = list(enumerate(plan))[::-1]  # popped from the end: sent in plan order
    statuses: list[int] = [0] * len(plan)
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}

    async def worker(http: httpx.AsyncClient) -> None:
        while queue:
            i, (authorization, forwarded, _) = queue.pop()
            headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}
            if authorization:
                headers["Authorization"] = authorization
            if forwarded:
                headers["X-Forwarded-For"] = forwarded
            if i % 2:
                r = await http.post("/mcp", json=body, headers=headers)
            else:
                r = await http.post("/v1/data/opsgate/authz", json={"input": {}}, headers=headers)
            statuses[i] = r.status_code

    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        await asyncio.gather(*(worker(http) for _ in range(8)))
    return statuses


def _refusal_rows(db: Path, total: int) -> list[dict[str, Any]]:
    """The auth.refused rows, once their counts reach `total`: the harness stops waiting for a
    gateway's shutdown after 10 s, and on a busy machine its last rows may still be on their way
    (waited for as an event, up to a minute; what is there then is returned and judged)."""
    deadline = time.monotonic() + 60
    while True:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            rows = conn.execute("select payload, client_addr, caller_id, decision from run_events "
                                "where provider = 'opsgate' and tool = 'auth.refused'").fetchall()
        found = [{**json.loads(p)["args"], "client_addr": c, "caller_id": caller, "decision": d}
                 for p, c, caller, d in rows]
        if sum(r["count"] for r in found) >= total or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


class Lines(logging.Handler):
    """Every log record of the process, formatted (installed after uvicorn has set up its logging)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def text(self) -> str:
        return "\n".join(self.format(r) for r in self.records)


def test_a_flood_of_bad_tokens_leaves_a_bounded_exact_trace_without_any_token(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = GatewayConfig(policies=str(POLICIES), state_dir=str(state), trusted_proxies=("127.0.0.1",),
                           edge_refusal_interval_s=3600)
    log, root = Lines(), logging.getLogger()
    level = root.level
    try:
        with running_gateway(config, providers=[EchoProvider()]) as gw:
            root.addHandler(log)
            root.setLevel(logging.INFO)
            plan = _bad_tokens(gw)
            statuses = asyncio.run(_flood(gw.url, plan))
            refusals: Any = gw.services.refusals
            tracked = len(refusals)
        rows = _refusal_rows(state / "events.db", len(plan))  # written at shutdown: the log's last line too
    finally:
        root.removeHandler(log)
        root.setLevel(level)
    assert statuses == [401] * len(plan)
    reasons = {reason for _, _, reason in plan}
    bound = refusals.max_clients + len(reasons)  # one key per (client, reason), plus "other clients" per reason
    assert tracked <= bound  # bounded memory, however many addresses

    assert len(rows) <= bound
    assert sum(r["count"] for r in rows) == len(plan)  # exact counts: nothing lost to the bound
    local = {r["reason"]: r["count"] for r in rows if r["client_addr"] == "127.0.0.1"}
    assert local == {"malformed": 3000, "signature": 2000, "expired": 1000, "missing": 1000}
    forwarded = [r for r in rows if r["client_addr"] not in ("127.0.0.1", None)]
    assert len(forwarded) == refusals.max_clients - len(local)  # the table filled up with forwarded clients
    assert all(r["client_addr"].startswith("10.0.") and r["count"] == 1 for r in forwarded)
    other = [r for r in rows if r["client_addr"] is None]
    assert [(r["reason"], r["count"]) for r in other] == [("malformed", 3000 - len(forwarded))]
    assert all(r["caller_id"] is None and r["decision"] == "none" and r["first_seen"] <= r["last_seen"] for r in rows)

    edge_lines = [r for r in log.records if r.name == "opsgate.edge"]
    assert len(edge_lines) == LOG_FIRST + 1  # the first few clients, then one summary at the flush
    server_side = [r for r in log.records if r.name.split(".")[0] in ("opsgate", "uvicorn", "litestar", "mcp")]
    assert len(server_side) < 100, log.text[:2000]  # nothing else logs per refused request
    stored = b"".join(p.read_bytes() for p in state.rglob("*") if p.is_file() and "vault" not in p.parts)
    logged = log.text
    assert b"junk-" not in stored and "junk-" not in logged
    assert b"eyJhbGciOiJIUzI1NiIs" not in stored and "eyJhbGciOiJIUzI1NiIs" not in logged  # any JWT header
    for authorization, _, _ in plan:
        if authorization:
            secret_part = authorization.split()[1][-24:]  # the end: random text, or the signature
            assert secret_part.encode() not in stored and secret_part not in logged
