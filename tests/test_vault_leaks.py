"""A secret value never appears in logs, spans, events or anything the client receives.

The real gateway (uvicorn, the real mcp client over HTTP, the real engine and embedded vault)
serves a careless `echo` provider: it reads its own secret, sends it to a loopback upstream in a
header, the query string and the body, logs it (with % args, an f-string and a traceback),
echoes it in its answer and raises errors holding it, as a tool error, a refusal and a crash.
Spans go to an in-memory exporter through the gateway's own tracer provider; log records are
captured with the filter `opsgate serve` puts on every log handler. Then the value (in every
spelling the redactor knows: verbatim, base64, percent- and JSON-encoded) is looked for in
every run event, span, log record and client-visible answer and error.

A refused read (another provider's secret) and a missing secret are refusals the client sees
with a reason, and each leaves its own run event.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
import pytest
from mcp.shared.exceptions import MCPError
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gateway.config import GatewayConfig
from otel.redact import install_log_filter, secret_forms
from otel.tracing import OpsgateTracerProvider, routed_provider
from providers.echo import EchoProvider, PingInput
from providers.sdk import CallContext, Refused, ToolError
from providers.sdk.vault import EmbeddedVault
from tests.conftest import POLICIES
from tests.harness import RunningGateway, running_gateway, unwrap

pytestmark = pytest.mark.anyio

SECRET = "echo_live_" + os.urandom(12).hex()  # pragma: allowlist secret (made at run time)
NOT_ECHOS = "socket_live_" + os.urandom(12).hex()
log = logging.getLogger("providers.echo.careless")


class Upstream(BaseHTTPRequestHandler):
    """A loopback imitation of an upstream API: records what it was sent, answers with it."""

    seen: list[dict[str, str]] = []  # noqa: RUF012 (shared by the server's handler instances)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0))).decode()
        self.seen.append({"path": self.path, "authorization": self.headers.get("authorization", ""),
                          "x-api-key": self.headers.get("x-api-key", ""), "body": body})
        answer = json.dumps({"authorization": self.headers.get("authorization", ""), "ok": True}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


class CarelessEcho(EchoProvider):
    """`echo` (so its tools are in the catalogue), doing everything a provider should not."""

    upstream = ""

    async def _ping(self, ctx: CallContext, args: PingInput) -> dict[str, Any]:
        mode = args.message
        if mode == "other":
            await self.get_vault_secret("socket_api_key")
        if mode == "missing":
            await self.get_vault_secret("echo_missing_key")
        key = await self.get_vault_secret("echo_api_key")
        log.info("calling upstream with key %s for %s", key, ctx.tool)
        log.warning(f"key={key}")  # an f-string: the value is in the message itself
        async with self.http(timeout=10) as http:
            r = await http.post(f"{self.upstream}/v1/check?api_key={key}", json={"key": key},
                                headers={"Authorization": f"Bearer {key}", "X-Api-Key": key})
        if mode == "tool_error":
            raise ToolError(f"upstream rejected key {key} (HTTP {r.status_code})", retry_after_s=1)
        if mode == "refuse":
            raise Refused("FORBIDDEN", f"key {key} lacks the scope", key_used=key)
        if mode == "crash":
            raise RuntimeError(f"crashed holding {key}")
        if mode == "log_traceback":
            try:
                raise ValueError(f"bad key {key}")
            except ValueError:
                log.exception("failed with %r", {"api_key": key})
        return {"echo": key, "upstream_saw": r.json()["authorization"],
                "nested": {"list": [key, base64.b64encode(key.encode()).decode()]}}


@dataclass
class Rig:
    gw: RunningGateway
    spans: InMemorySpanExporter
    seen: list[dict[str, str]]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    Upstream.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = tmp_path_factory.mktemp("leaks")
    policies = root / "policies"
    shutil.copytree(POLICIES, policies, ignore=shutil.ignore_patterns("tests"))
    allow = policies / "provider-allowlist.yaml"
    allow.write_text(allow.read_text() + f'echo:\n  - "http://127.0.0.1:{server.server_port}"\n')

    async def seed() -> None:
        vault = EmbeddedVault(root / "state" / "vault")
        await vault.set("echo_api_key", SECRET)
        await vault.set("socket_api_key", NOT_ECHOS)
        await vault.close()

    asyncio.run(seed())
    provider = CarelessEcho()
    provider.upstream = f"http://127.0.0.1:{server.server_port}"
    try:
        with running_gateway(GatewayConfig(policies=str(policies), state_dir=str(root / "state")),
                             providers=[provider]) as gw:
            tracer_provider = routed_provider()
            assert isinstance(tracer_provider, OpsgateTracerProvider)
            spans = InMemorySpanExporter()
            tracer_provider.add_exporter(spans)  # through the gateway's scrubber, as OTLP export would be
            yield Rig(gw, spans, Upstream.seen)
    finally:
        server.shutdown()
        server.server_close()


async def call(gw: RunningGateway, message: str) -> dict[str, Any]:
    """What the client got: the result's content, or the error's message and data."""
    try:
        async with gw.client(gw.token("ops_viewer")) as c:
            r = await c.call_tool("echo.ping", {"message": message})
        return {"is_error": r.is_error, "structured": r.structured_content,
                "text": [getattr(c, "text", None) for c in r.content]}
    except BaseException as e:  # the client wraps errors in exception groups
        err: MCPError = unwrap(e)
        return {"error": err.error.message, "data": err.error.data}


def leaks(text: str) -> list[str]:
    return sorted(f for f in secret_forms(SECRET) if f in text)


async def test_the_value_never_leaves_through_any_channel(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="httpx")  # it logs every request URL, query string included
    # As `opsgate serve` does once logging is set up: a filter on every handler of the root logger
    # (here Litestar's queue handler and pytest's capture handler).
    flt = install_log_filter(rig.gw.services.redactor)
    assert flt in caplog.handler.filters
    rig.spans.clear()
    try:
        answers = {mode: await call(rig.gw, mode)
                   for mode in ("use", "tool_error", "refuse", "crash", "log_traceback")}
    finally:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(flt)

    # The value was really used: the upstream got it in every place it was put.
    assert len(rig.seen) == 5
    assert all(s["authorization"] == f"Bearer {SECRET}" and s["x-api-key"] == SECRET and SECRET in s["path"]
               and SECRET in s["body"] for s in rig.seen)
    # ... and the client got answers and errors, without it.
    assert answers["use"]["structured"]["echo"] == "[REDACTED:secret]"
    assert answers["use"]["structured"]["upstream_saw"] == "Bearer [REDACTED:secret]"
    assert answers["tool_error"]["is_error"] and "upstream rejected key [REDACTED:secret]" in \
        answers["tool_error"]["structured"]["error"]
    assert answers["refuse"]["data"]["code"] == "FORBIDDEN"
    assert answers["crash"]["data"]["code"] == "INTERNAL_ERROR"
    assert answers["log_traceback"]["structured"]["echo"] == "[REDACTED:secret]"
    assert leaks(json.dumps(answers, default=str)) == []

    # Events: every call's row, scrubbed.
    assert rig.gw.services.audit is not None
    rows = await rig.gw.services.audit.store.query(limit=1000)
    assert len([r for r in rows if r.tool == "ping"]) >= 5
    assert leaks(msgspec.json.encode(rows).decode()) == []

    # Spans: names, attributes, events, links and status of every span the calls produced.
    spans = rig.spans.get_finished_spans()
    assert len([s for s in spans if (s.attributes or {}).get("gen_ai.tool.name") == "echo.ping"]) == 5
    read_events = [e for s in spans for e in s.events if e.name == "opsgate.read_secret"]
    assert len(read_events) >= 5 and all(e.attributes["opsgate.secret.name"] == "echo_api_key" for e in read_events)
    for s in spans:
        dumped = json.dumps({"name": s.name, "attributes": dict(s.attributes or {}),
                             "events": [(e.name, dict(e.attributes or {})) for e in s.events],
                             "links": [dict(link.attributes or {}) for link in s.links],
                             "status": s.status.description}, default=str)
        assert leaks(dumped) == [], s.name

    # Logs: the provider's own lines, httpx's request lines, the gateway's crash traceback.
    messages = [r.getMessage() for r in caplog.records]
    assert any("calling upstream with key [REDACTED:secret]" in m for m in messages)
    assert any("HTTP Request: POST" in m for m in messages)
    assert any("echo.ping failed" in m for m in messages)  # the crash, logged with its traceback
    everything = "\n".join([*messages, *(r.exc_text or "" for r in caplog.records), caplog.text])
    assert "crashed holding [REDACTED:secret]" in everything
    assert leaks(everything) == []


async def test_a_refused_read_is_forbidden_with_its_reason_and_its_own_event(rig: Rig) -> None:
    answer = await call(rig.gw, "other")
    assert answer["data"]["code"] == "FORBIDDEN"
    assert "echo may not read secret 'socket_api_key' (no policy permits it)" in answer["error"]
    assert rig.gw.services.audit is not None
    rows = await rig.gw.services.audit.store.query(limit=1000, tool="read_secret")
    denied = [r for r in rows if r.payload["args"]["name"] == "socket_api_key"]
    assert len(denied) == 1
    assert (denied[0].provider, denied[0].decision, denied[0].result["status"]) == ("echo", "deny", "denied")
    assert denied[0].payload["args"]["during"] == "echo.ping"
    call_rows = [r for r in await rig.gw.services.audit.store.query(limit=1000, tool="ping")
                 if r.result.get("code") == "FORBIDDEN"]
    assert call_rows and "socket_api_key" in call_rows[-1].result["message"]
    rows = await rig.gw.services.audit.store.query(limit=1000)
    assert NOT_ECHOS not in msgspec.json.encode(rows).decode()


async def test_a_missing_secret_is_a_tool_error_naming_it_and_an_event(rig: Rig) -> None:
    answer = await call(rig.gw, "missing")
    assert answer["is_error"]
    assert "secret 'echo_missing_key' is not in the vault" in answer["structured"]["error"]
    assert "opsgate vault set echo_missing_key" in answer["structured"]["error"]
    assert rig.gw.services.audit is not None
    rows = await rig.gw.services.audit.store.query(limit=1000, tool="read_secret")
    missing = [r for r in rows if r.payload["args"]["name"] == "echo_missing_key"]
    assert len(missing) == 1
    assert (missing[0].decision, missing[0].result["status"]) == ("allow", "not_found")
    assert missing[0].policy_ids == ["vault.own-secrets-only"]

