"""Tracing: the SDK's SERVER span is the call's span (enriched, not duplicated), ours hang under it,
nothing is exported unless an endpoint is configured."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from mcp import Client, types
from mcp.server.lowlevel.server import Server
from mcp.shared.exceptions import MCPError
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode, format_span_id, format_trace_id

from otel.tracing import (
    OTLP_PACKAGE,
    OpsgateTracerProvider,
    ScrubbingExporter,
    TracingConfig,
    TracingError,
    current_span_ids,
    decision_span,
    enrich_call_span,
    http_span,
    routed_provider,
    safe_url,
    setup_tracing,
    use_provider,
)

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class FakeDecision:
    decision_id: str = "d-1"
    allowed: bool = True
    reasons: tuple[str, ...] = ("viewer-reads", "exc-42")
    errors: tuple[str, ...] = ()
    bundle_revision: str = "rev-abc"
    mode: str = "enforce"
    exceptions_applied: tuple[str, ...] = ("exc-42",)
    latency_us: float = 51.5


@pytest.fixture
def mem() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = setup_tracing(TracingConfig(service_version="9.9"), exporters=[exporter])
    yield exporter
    provider.shutdown()


def tool_server(seen: dict[str, Any]) -> Server[Any]:
    """A real low-level MCP server whose tool does what the gateway's handler will do."""

    async def on_list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[types.Tool(name=n, input_schema={"type": "object"})
                                            for n in ("echo.ping", "echo.denied")])

    async def on_call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        seen["ids"] = current_span_ids()
        with decision_span(tool=params.name) as d:
            decision = FakeDecision(allowed=params.name == "echo.ping")
            d.record(decision)
        enrich_call_span(caller_id="u-1", role="viewer", tool=params.name, decision=decision.allowed,
                         policy_ids=decision.reasons, bundle_revision=decision.bundle_revision,
                         exception_ids=decision.exceptions_applied, decision_id=decision.decision_id,
                         rate_bucket="reads", session_id="s-1",
                         error_type=None if decision.allowed else "FORBIDDEN")
        if not decision.allowed:
            raise MCPError(-32003, "denied")
        with http_span("get", "https://user:pw@api.example.com:8443/v1/items?token=abc&page=2#frag") as h:
            h.response(200)
        return types.CallToolResult(content=[types.TextContent(type="text", text="ok")])

    return Server("t", on_list_tools=on_list_tools, on_call_tool=on_call_tool)


def only(spans: list[ReadableSpan], **where: Any) -> list[ReadableSpan]:
    return [s for s in spans if all((s.attributes or {}).get(k) == v for k, v in where.items())]


async def test_one_server_span_per_tools_call_carries_opsgate_attributes(mem: InMemorySpanExporter) -> None:
    seen: dict[str, Any] = {}
    async with Client(tool_server(seen)) as client:
        result = await client.call_tool("echo.ping", {})
    assert not result.is_error
    spans = list(mem.get_finished_spans())
    calls = only(spans, **{"mcp.method.name": "tools/call"})
    assert len(calls) == 1 and calls[0].kind is SpanKind.SERVER
    assert [s for s in spans if s.name.startswith("tools/call")] == calls  # no second span of ours
    call = calls[0]
    attrs = dict(call.attributes or {})
    assert attrs["gen_ai.tool.name"] == "echo.ping" and attrs["gen_ai.operation.name"] == "execute_tool"
    assert {k: v for k, v in attrs.items() if k.startswith("ops.") or k == "mcp.session.id"} == {
        "ops.caller_id": "u-1", "ops.role": "viewer", "ops.decision": "allow", "ops.decision_id": "d-1",
        "ops.policy_ids": ("viewer-reads", "exc-42"), "ops.bundle_revision": "rev-abc",
        "ops.exception_ids": ("exc-42",), "ops.rate_bucket": "reads", "mcp.session.id": "s-1"}
    assert call.resource.attributes["service.name"] == "opsgate"
    assert call.resource.attributes["service.version"] == "9.9"

    # The handler ran inside the SDK's span: its ids are the SERVER span's.
    assert seen["ids"] == (format_trace_id(call.context.trace_id), format_span_id(call.context.span_id))

    (decide,) = [s for s in spans if s.name == "opsgate.decide"]
    assert decide.kind is SpanKind.INTERNAL
    assert decide.parent is not None and decide.parent.span_id == call.context.span_id
    assert decide.context.trace_id == call.context.trace_id
    assert dict(decide.attributes or {}) == {
        "ops.tool": "echo.ping", "ops.decision": "allow", "ops.decision_id": "d-1",
        "ops.policy_ids": ("viewer-reads", "exc-42"), "ops.bundle_revision": "rev-abc",
        "ops.exception_ids": ("exc-42",), "ops.decision.latency_us": 51.5}

    (http,) = [s for s in spans if s.kind is SpanKind.CLIENT and s.name == "GET"]
    assert http.parent is not None and http.parent.span_id == call.context.span_id
    assert dict(http.attributes or {}) == {
        "http.request.method": "GET", "url.full": "https://REDACTED:REDACTED@api.example.com:8443/v1/items?"
                                                  "token=REDACTED&page=REDACTED",
        "server.address": "api.example.com", "server.port": 8443, "http.response.status_code": 200}


async def test_a_refused_call_keeps_our_error_type_beside_the_sdks(mem: InMemorySpanExporter) -> None:
    async with Client(tool_server({})) as client:
        with pytest.raises(MCPError):
            await client.call_tool("echo.denied", {})
    (call,) = only(list(mem.get_finished_spans()), **{"mcp.method.name": "tools/call"})
    assert call.attributes is not None
    assert call.attributes["ops.decision"] == "deny"
    assert call.attributes["ops.error_type"] == "FORBIDDEN"
    assert call.attributes["error.type"] == "-32003"  # the SDK writes the JSON-RPC code after the handler
    assert call.status.status_code is StatusCode.ERROR


async def test_each_call_gets_its_own_trace(mem: InMemorySpanExporter) -> None:
    async with Client(tool_server({})) as client:
        for _ in range(3):
            await client.call_tool("echo.ping", {})
    calls = only(list(mem.get_finished_spans()), **{"mcp.method.name": "tools/call"})
    assert len(calls) == 3 and len({c.context.trace_id for c in calls}) == 3


def test_no_recording_span_means_no_ids(mem: InMemorySpanExporter) -> None:
    assert current_span_ids() == (None, None)
    with trace.get_tracer("t").start_as_current_span("x") as span:
        assert current_span_ids() == (format_trace_id(span.get_span_context().trace_id),
                                      format_span_id(span.get_span_context().span_id))
    enrich_call_span(caller_id="u", role=None, tool="t")  # no current span: a no-op, not an error


def test_nothing_is_exported_or_recorded_without_an_endpoint_but_ids_are_kept() -> None:
    provider = setup_tracing(TracingConfig())
    try:
        assert provider.span_processors == ()
        with trace.get_tracer("t").start_as_current_span("x") as outer:
            assert not outer.is_recording()  # nobody could read what it recorded
            with decision_span(tool="echo.ping") as d:  # nobody would see it: not even started
                d.record(FakeDecision())
                assert trace.get_current_span() is outer
            trace_id, span_id = current_span_ids()  # what an ops.run_events row gets
            assert (trace_id, span_id) == (format_trace_id(outer.get_span_context().trace_id),
                                           format_span_id(outer.get_span_context().span_id))
            with trace.get_tracer("t").start_as_current_span("child") as child:  # parenting still holds
                assert child.get_span_context().trace_id == outer.get_span_context().trace_id
        exporter = InMemorySpanExporter()
        provider.add_exporter(exporter)  # from now on spans are recorded, and exported
        with trace.get_tracer("t").start_as_current_span("y") as span:
            assert span.is_recording()
        assert [s.name for s in exporter.get_finished_spans()] == ["y"]
    finally:
        provider.shutdown()


def test_an_in_memory_exporter_is_the_only_processor() -> None:
    exporter = InMemorySpanExporter()
    provider = setup_tracing(TracingConfig(), exporters=[exporter])
    try:
        (processor,) = provider.span_processors
        assert isinstance(processor, SimpleSpanProcessor) and processor.span_exporter is exporter
    finally:
        provider.shutdown()


def test_otlp_endpoint_needs_the_exporter_package() -> None:
    config = TracingConfig(otlp_endpoint="http://127.0.0.1:9/v1/traces")
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
    except ImportError:
        with pytest.raises(TracingError, match=OTLP_PACKAGE):
            setup_tracing(config)
        return
    provider = setup_tracing(config)  # no span is made, so nothing is sent
    try:
        (processor,) = provider.span_processors
        assert isinstance(processor, BatchSpanProcessor)
    finally:
        provider.shutdown()


def test_setting_up_twice_installs_the_global_hook_once_and_the_last_wins(caplog: pytest.LogCaptureFixture) -> None:
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    caplog.set_level(logging.WARNING)
    p1 = setup_tracing(TracingConfig(), exporters=[first])
    hook = trace.get_tracer_provider()
    p2 = setup_tracing(TracingConfig(), exporters=[second])
    try:
        assert trace.get_tracer_provider() is hook
        assert not [r for r in caplog.records if "Overriding" in r.getMessage()]
        assert routed_provider() is p2
        tracer = trace.get_tracer("mcp-python-sdk")  # as the SDK holds it: resolved per span
        with tracer.start_as_current_span("a"):
            pass
        with use_provider(p1), tracer.start_as_current_span("b"):
            pass
        assert [s.name for s in second.get_finished_spans()] == ["a"]
        assert [s.name for s in first.get_finished_spans()] == ["b"]
    finally:
        p1.shutdown()
        p2.shutdown()
    assert routed_provider() is None
    with tracer.start_as_current_span("c") as span:
        assert not span.is_recording()


def test_a_dryrun_decision_with_errors_says_so(mem: InMemorySpanExporter) -> None:
    with decision_span() as d:
        d.record(FakeDecision(allowed=False, reasons=(), exceptions_applied=(), mode="dryrun",
                              errors=("policy p7: attribute missing",), latency_us=0.0))
    (span,) = mem.get_finished_spans()
    attrs = dict(span.attributes or {})
    assert attrs.pop("ops.decision.latency_us") > 0  # the block's own time when the engine gave none
    assert attrs == {"ops.decision": "deny", "ops.decision_id": "d-1", "ops.bundle_revision": "rev-abc",
                     "ops.decision.errors": ("policy p7: attribute missing",), "ops.decision.mode": "dryrun"}


def test_http_span_records_failures() -> None:
    exporter = InMemorySpanExporter()
    provider = setup_tracing(TracingConfig(), exporters=[exporter])
    try:
        with http_span("post", "http://svc.internal/hook") as h:
            h.response(503)
        with pytest.raises(ConnectionError), http_span("GET", "https://api.example.com/x"):
            raise ConnectionError("refused")
    finally:
        provider.shutdown()
    failed, broken = exporter.get_finished_spans()
    assert failed.attributes is not None and broken.attributes is not None
    assert failed.attributes["error.type"] == "503" and failed.attributes["server.port"] == 80
    assert failed.status.status_code is StatusCode.ERROR
    assert broken.attributes["error.type"] == "ConnectionError" and broken.status.status_code is StatusCode.ERROR
    assert "http.response.status_code" not in broken.attributes


@pytest.mark.parametrize(("url", "expected"), [
    ("https://api.example.com/v1/x", "https://api.example.com/v1/x"),
    ("https://tok@api.example.com/", "https://REDACTED:REDACTED@api.example.com/"),
    ("https://a:b@c@api.example.com/p?x=1&x=2&k", "https://REDACTED:REDACTED@api.example.com/p?x=REDACTED&x=REDACTED&k=REDACTED"),
    ("http://[::1]:8080/p#secret", "http://[::1]:8080/p"),
    ("http://[::1/", "[unparsable url]"),
])
def test_safe_url(url: str, expected: str) -> None:
    assert safe_url(url) == expected


class Scrub:
    def redact_text(self, text: Any) -> str:
        return str(text).replace("hunter2hunter2", "[REDACTED:secret]")


def test_the_scrubbing_exporter_cleans_attributes_events_and_status() -> None:
    exporter = InMemorySpanExporter()
    provider = setup_tracing(TracingConfig(), exporters=[exporter], scrubber=Scrub())
    try:
        assert isinstance(provider, OpsgateTracerProvider)
        assert isinstance(provider.span_processors[0].span_exporter, ScrubbingExporter)  # type: ignore[attr-defined]
        with pytest.raises(ValueError), trace.get_tracer("t").start_as_current_span("x") as span:
            span.set_attributes({"a": "key=hunter2hunter2", "b": ("x", "hunter2hunter2"), "n": 3})
            raise ValueError("bad key hunter2hunter2")
    finally:
        provider.shutdown()
    (span,) = exporter.get_finished_spans()
    text = repr((span.attributes, [(e.name, e.attributes) for e in span.events], span.status.description))
    assert "hunter2hunter2" not in text and text.count("[REDACTED:secret]") >= 5  # traceback: twice
    assert span.attributes == {"a": "key=[REDACTED:secret]", "b": ("x", "[REDACTED:secret]"), "n": 3}


def test_our_names_are_the_semantic_conventions() -> None:
    pytest.importorskip("opentelemetry.semconv")
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes, mcp_attributes
    from opentelemetry.semconv.attributes import error_attributes, http_attributes, server_attributes, url_attributes

    assert [mcp_attributes.MCP_METHOD_NAME, mcp_attributes.MCP_SESSION_ID, gen_ai_attributes.GEN_AI_TOOL_NAME,
            gen_ai_attributes.GEN_AI_OPERATION_NAME, gen_ai_attributes.GenAiOperationNameValues.EXECUTE_TOOL.value,
            error_attributes.ERROR_TYPE, http_attributes.HTTP_REQUEST_METHOD,
            http_attributes.HTTP_RESPONSE_STATUS_CODE, url_attributes.URL_FULL, server_attributes.SERVER_ADDRESS,
            server_attributes.SERVER_PORT] == [
        "mcp.method.name", "mcp.session.id", "gen_ai.tool.name", "gen_ai.operation.name", "execute_tool",
        "error.type", "http.request.method", "http.response.status_code", "url.full", "server.address", "server.port"]
