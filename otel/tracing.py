"""Tracing: the gateway's TracerProvider, and the spans and attributes opsgate adds to a call.

The MCP SDK already opens a SERVER span per inbound message (`mcp.server._otel.OpenTelemetryMiddleware`,
first in `Server.middleware`), and the tool handler runs inside it. Its tracer comes from the global API,
once, at import: `mcp.shared._otel._tracer = opentelemetry.trace.get_tracer("mcp-python-sdk")`, a
ProxyTracer that binds on first use to whatever global provider is set by then, for good. So opsgate
does not open a second span per call: it enriches the SDK's (`enrich_call_span`) and hangs its own
spans under it (`decision_span`, `http_span`).

The global provider can be set once per process, but each gateway (and each test) holds its own
provider. So `setup_tracing` installs, once, a router as the global provider: every tracer it hands out
(the SDK's included) starts each span on the provider bound in the current context (`use_provider`),
else on the process's active one (the last `setup_tracing(..., activate=True)`); with neither, spans
are non-recording. If some other global provider was set first (opentelemetry-instrument, say), the
SDK's spans go there and opsgate's to its own provider; a warning says so.

Nothing leaves the process unless `TracingConfig.otlp_endpoint` is set. Exporters get spans whose
text (attribute values, event attributes such as exception messages, status descriptions) went
through the redactor, when one is given.

Spans are *recorded* only while something exports them (`ExportGate`, the provider's sampler).
Without an exporter, every span still exists, with its trace and span ids, parenting and context
propagation (so each `ops.run_events` row carries the ids of its call's span), but it holds no
attributes: recording them costs more than a policy decision (~0.25 ms a call on the reference
machine) and nothing could read them. With an exporter, sampling is the SDK's default (parent
based, always on).

Attributes (semantic conventions where they exist, `ops.*` for ours):

    SERVER span (the SDK's)  mcp.method.name, mcp.protocol.version, jsonrpc.request.id,
                             gen_ai.operation.name, gen_ai.tool.name, error.type      (SDK)
                             mcp.session.id, ops.caller_id, ops.role, ops.decision, ops.decision_id,
                             ops.policy_ids, ops.bundle_revision, ops.exception_ids, ops.rate_bucket,
                             ops.error_type                                            (enrich_call_span)
    opsgate.decide INTERNAL  ops.tool, ops.decision, ops.decision_id, ops.policy_ids, ops.bundle_revision,
                             ops.exception_ids, ops.decision.latency_us, and when they apply
                             ops.decision.mode ("dryrun") and ops.decision.errors
    <METHOD> CLIENT          http.request.method, url.full (no userinfo, query values, fragment),
                             server.address, server.port, http.response.status_code, error.type

Empty sequences and None values are left out: an absent ops.exception_ids means none applied.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import msgspec
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler, SamplingResult
from opentelemetry.trace import SpanKind, Status, StatusCode, format_span_id, format_trace_id

log = logging.getLogger("opsgate.otel")

OTLP_PACKAGE = "opentelemetry-exporter-otlp-proto-http"
SERVICE_NAME = "opsgate"
TRACER_NAME = "opsgate"


class TracingConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`otlp_endpoint`: an OTLP/HTTP traces URL (`http://collector:4318/v1/traces`); None exports nothing."""

    otlp_endpoint: str | None = None
    otlp_headers: dict[str, str] = {}
    otlp_timeout_s: float = 10.0
    service_version: str | None = None


class TracingError(Exception):
    """Tracing was configured in a way this process cannot honour (e.g. the exporter is not installed)."""


class Scrubber(Protocol):
    def redact_text(self, text: Any) -> str: ...


# -- the provider ---------------------------------------------------------------------------


class ExportGate(Sampler):
    """Records a span only while the provider has somewhere to send it; otherwise the span is
    created unrecorded, ids and context intact (see the module docstring)."""

    _DROP = SamplingResult(Decision.DROP)

    def __init__(self) -> None:
        self.exporting = False
        self._sampler = ParentBased(ALWAYS_ON)

    def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None, attributes: Any = None,
                      links: Any = None, trace_state: Any = None) -> SamplingResult:
        if not self.exporting:
            return self._DROP
        return self._sampler.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"ExportGate{{{self._sampler.get_description() if self.exporting else 'no exporter'}}}"


class OpsgateTracerProvider(SdkTracerProvider):
    """An SDK TracerProvider that records spans only while it exports them (`ExportGate`), remembers
    its processors (to show nothing is exported) and drops out of the router when shut down."""

    def __init__(self, *, resource: Resource, scrubber: Scrubber | None = None, shutdown_on_exit: bool = False):
        self.gate = ExportGate()
        super().__init__(resource=resource, shutdown_on_exit=shutdown_on_exit, sampler=self.gate)
        self.scrubber = scrubber
        self.span_processors: tuple[SpanProcessor, ...] = ()

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        super().add_span_processor(span_processor)
        self.span_processors = (*self.span_processors, span_processor)
        self.gate.exporting = True

    def add_exporter(self, exporter: SpanExporter, *, batch: bool = False) -> SpanProcessor:
        """Export to `exporter` (through the scrubber, if any): batched, or synchronously (tests)."""
        if self.scrubber is not None:
            exporter = ScrubbingExporter(exporter, self.scrubber)
        processor: SpanProcessor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self.add_span_processor(processor)
        return processor

    def shutdown(self) -> None:
        deactivate(self)
        super().shutdown()


def setup_tracing(config: TracingConfig, *, exporters: Iterable[SpanExporter] = (), scrubber: Scrubber | None = None,
                  activate: bool = True) -> OpsgateTracerProvider:
    """A provider for service "opsgate"; OTLP/HTTP export only when `config.otlp_endpoint` is set.

    `exporters` are added synchronously (tests: an InMemorySpanExporter). `scrubber` (an
    `otel.redact.Redactor`) scrubs every exported span's text. `activate` makes this the provider
    that spans of the SDK and of opsgate go to, unless a context binds another (`use_provider`).
    Calling this again is harmless: the global hook is installed once, the last activated wins.
    """
    attributes = {"service.name": SERVICE_NAME}
    if config.service_version:
        attributes["service.version"] = config.service_version
    provider = OpsgateTracerProvider(resource=Resource.create(attributes), scrubber=scrubber,
                                     shutdown_on_exit=config.otlp_endpoint is not None)
    if config.otlp_endpoint:
        provider.add_exporter(_otlp_exporter(config), batch=True)
    for exporter in exporters:
        provider.add_exporter(exporter)
    install_router()
    if activate:
        activate_provider(provider)
    return provider


def _otlp_exporter(config: TracingConfig) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as e:
        endpoint = safe_url(config.otlp_endpoint or "")
        raise TracingError(f"tracing.otlp_endpoint is set ({endpoint}) but the package {OTLP_PACKAGE!r} is not "
                           f"installed: pip install {OTLP_PACKAGE}") from e
    return OTLPSpanExporter(endpoint=config.otlp_endpoint, headers=dict(config.otlp_headers) or None,
                            timeout=config.otlp_timeout_s)


# -- routing the global API to the gateway's provider -----------------------------------------

_active: trace.TracerProvider | None = None
_bound: contextvars.ContextVar[trace.TracerProvider | None] = contextvars.ContextVar("opsgate_tracer_provider",
                                                                                      default=None)
_install_lock = threading.Lock()
_warned_foreign = False
_NOOP = trace.NoOpTracer()


def activate_provider(provider: trace.TracerProvider) -> None:
    """Route spans to `provider` wherever no context binds another."""
    global _active
    _active = provider


def deactivate(provider: trace.TracerProvider) -> None:
    """Stop routing spans to `provider` if it is the active one."""
    global _active
    if _active is provider:
        _active = None


@contextlib.contextmanager
def use_provider(provider: trace.TracerProvider) -> Iterator[None]:
    """Route spans started in this context (and tasks created from it) to `provider`."""
    token = _bound.set(provider)
    try:
        yield
    finally:
        _bound.reset(token)


def routed_provider() -> trace.TracerProvider | None:
    """The provider a span started here would go to."""
    return _bound.get() or _active


def _exporting() -> bool:
    """Would a span started here be recorded? (Only our provider can say no: ExportGate.)"""
    provider = _bound.get() or _active
    return provider is not None and (not isinstance(provider, OpsgateTracerProvider) or provider.gate.exporting)


class _RoutedTracer(trace.Tracer):
    """A tracer that resolves its provider at every span start."""

    def __init__(self, name: str, version: str | None, schema_url: str | None, attributes: Any) -> None:
        self._scope = (name, version, schema_url, attributes)
        self._tracers: weakref.WeakKeyDictionary[trace.TracerProvider, trace.Tracer] = weakref.WeakKeyDictionary()

    def _tracer(self) -> trace.Tracer:
        provider = _bound.get() or _active
        if provider is None:
            return _NOOP
        tracer = self._tracers.get(provider)
        if tracer is None:
            tracer = self._tracers[provider] = provider.get_tracer(*self._scope)
        return tracer

    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:  # type: ignore[override]
        return self._tracer().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        return self._tracer().start_as_current_span(*args, **kwargs)


class _Router(trace.TracerProvider):
    def get_tracer(self, instrumenting_module_name: str, instrumenting_library_version: str | None = None,
                   schema_url: str | None = None, attributes: Any = None) -> trace.Tracer:
        return _RoutedTracer(instrumenting_module_name, instrumenting_library_version, schema_url, attributes)


_ROUTER = _Router()
_OPS_TRACER = _ROUTER.get_tracer(TRACER_NAME)


def install_router() -> bool:
    """Make the router the global provider (once per process). False if another provider got there first."""
    global _warned_foreign
    with _install_lock:
        current = trace.get_tracer_provider()
        if current is _ROUTER:
            return True
        if isinstance(current, trace.ProxyTracerProvider):
            trace.set_tracer_provider(_ROUTER)
            if trace.get_tracer_provider() is _ROUTER:
                return True
        if not _warned_foreign:
            _warned_foreign = True
            log.warning("a global TracerProvider (%s) was installed before opsgate's: the MCP SDK's SERVER spans go "
                        "there, opsgate's own spans to opsgate's provider", type(current).__name__)
        return False


# -- the current span -----------------------------------------------------------------------


def current_span_ids() -> tuple[str | None, str | None]:
    """(trace id as 32 hex, span id as 16 hex) of the current span, recorded or not (ExportGate);
    (None, None) when there is none (no tracing set up, or outside any span)."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None, None
    return format_trace_id(ctx.trace_id), format_span_id(ctx.span_id)


def _compact(pairs: dict[str, Any]) -> dict[str, Any]:
    """Attribute values as OTel takes them: sequences as tuples of str; None and empty sequences left out
    (absent means none, and each attribute costs the SDK about a microsecond)."""
    out: dict[str, Any] = {}
    for key, value in pairs.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple, set, frozenset)):
            if not value:
                continue
            value = tuple(str(v) for v in value)
        out[key] = value
    return out


def _verdict(decision: bool | str | None) -> str | None:
    if isinstance(decision, bool):
        return "allow" if decision else "deny"
    return decision


def enrich_call_span(*, caller_id: str, role: str | None, tool: str, decision: bool | str | None = None,
                     policy_ids: Sequence[str] = (), bundle_revision: str | None = None,
                     exception_ids: Sequence[str] = (), rate_bucket: str | Sequence[str] | None = None,
                     error_type: str | None = None, decision_id: str | None = None,
                     session_id: str | None = None) -> None:
    """Put opsgate's view of a tool call on the current span: the SDK's SERVER span when called from the
    tool handler. `decision` is True/"allow", False/"deny", or None (refused before deciding).

    `error_type` also goes to `error.type`, but the SDK overwrites that with the JSON-RPC code when the
    handler raises an MCPError; `ops.error_type` keeps ours.
    """
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes = _compact({
        "ops.caller_id": caller_id, "ops.role": role, "ops.decision": _verdict(decision),
        "ops.decision_id": decision_id, "ops.policy_ids": policy_ids, "ops.bundle_revision": bundle_revision,
        "ops.exception_ids": exception_ids, "ops.rate_bucket": rate_bucket, "mcp.session.id": session_id,
        "ops.error_type": error_type, "error.type": error_type})
    existing = getattr(span, "attributes", None) or {}
    if "gen_ai.tool.name" not in existing:
        attributes["gen_ai.tool.name"] = tool
    if "gen_ai.operation.name" not in existing:
        attributes["gen_ai.operation.name"] = "execute_tool"
    span.set_attributes(attributes)


def set_session_id(session_id: str | None) -> None:
    """`mcp.session.id` on the current span (the transport knows it; the pipeline does not)."""
    if session_id:
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("mcp.session.id", session_id)


# -- opsgate's own spans --------------------------------------------------------------------


class DecisionLike(Protocol):
    """What `DecisionSpan.record` reads from an engine Decision (otel does not import the engine)."""

    decision_id: str
    allowed: bool
    reasons: Sequence[str]
    bundle_revision: str


class DecisionSpan:
    """The "opsgate.decide" span; `record(decision)` inside the block, the attributes land at its end."""

    __slots__ = ("_manager", "_start", "attributes", "latency_us", "span")

    def __init__(self, tool: str | None, tracer: trace.Tracer | None) -> None:
        # Unrecorded, this span would be invisible: no exporter sees it and no row carries its id
        # (rows take the call's span). So without an exporter there is none; it saves a tenth of a
        # governed call's cost.
        self._manager: Any = None
        if tracer is not None or _exporting():
            self._manager = (tracer or _OPS_TRACER).start_as_current_span("opsgate.decide", kind=SpanKind.INTERNAL)
        self.attributes: dict[str, Any] = {"ops.tool": tool} if tool else {}
        self.latency_us: float | None = None
        self.span: trace.Span = trace.INVALID_SPAN
        self._start = 0

    def __enter__(self) -> DecisionSpan:
        if self._manager is not None:
            self.span = self._manager.__enter__()
        self._start = time.perf_counter_ns()
        return self

    def record(self, decision: DecisionLike) -> None:
        if not self.span.is_recording():
            return
        self.attributes.update(_compact({
            "ops.decision": "allow" if decision.allowed else "deny", "ops.decision_id": decision.decision_id,
            "ops.policy_ids": decision.reasons, "ops.bundle_revision": decision.bundle_revision,
            "ops.exception_ids": getattr(decision, "exceptions_applied", None),
            "ops.decision.errors": getattr(decision, "errors", None)}))  # Cedar's, should a policy fail
        mode = getattr(decision, "mode", "enforce")
        if mode != "enforce":
            self.attributes["ops.decision.mode"] = str(mode)
        latency = getattr(decision, "latency_us", None)
        if latency:
            self.latency_us = float(latency)

    def __exit__(self, *exc: Any) -> Any:
        if self._manager is None:
            return None
        if not self.span.is_recording():
            return self._manager.__exit__(*exc)
        latency = self.latency_us if self.latency_us is not None else (time.perf_counter_ns() - self._start) / 1e3
        self.attributes["ops.decision.latency_us"] = round(latency, 1)
        self.span.set_attributes(self.attributes)
        return self._manager.__exit__(*exc)


def decision_span(*, tool: str | None = None, tracer: trace.Tracer | None = None) -> DecisionSpan:
    """An INTERNAL span "opsgate.decide" around one policy decision, a child of the current span:

        with decision_span(tool=name) as span:
            decision = engine.decide(...)
            span.record(decision)

    `ops.decision.latency_us` is the engine's own figure when the decision carries one, else the block's."""
    return DecisionSpan(tool, tracer)


def safe_url(url: str) -> str:
    """`url` fit for url.full: userinfo replaced by REDACTED, query values by REDACTED, no fragment."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            host = netloc.rpartition("@")[2]
            netloc = f"REDACTED:REDACTED@{host}"
        query = "&".join(f"{quote(k, safe='')}=REDACTED" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "[unparsable url]"


class HttpSpan:
    def __init__(self, span: trace.Span) -> None:
        self.span = span

    def response(self, status_code: int) -> None:
        """Record the response status; 4xx and 5xx mark the span as an error (client span convention)."""
        self.span.set_attribute("http.response.status_code", status_code)
        if status_code >= 400:
            self.span.set_attribute("error.type", str(status_code))
            self.span.set_status(Status(StatusCode.ERROR))


@contextlib.contextmanager
def http_span(method: str, url: str, *, tracer: trace.Tracer | None = None) -> Iterator[HttpSpan]:
    """A CLIENT span for one upstream HTTP call; call `.response(status)` when the answer is in."""
    method = method.upper()
    attributes: dict[str, Any] = {"http.request.method": method, "url.full": safe_url(url)}
    try:
        parts = urlsplit(url)
        if parts.hostname:
            attributes["server.address"] = parts.hostname
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
        if port:
            attributes["server.port"] = port
    except ValueError:
        pass
    with (tracer or _OPS_TRACER).start_as_current_span(method, kind=SpanKind.CLIENT, attributes=attributes,
                                                         record_exception=False) as span:
        try:
            yield HttpSpan(span)
        except BaseException as e:
            span.set_attribute("error.type", type(e).__qualname__)
            raise


# -- export ---------------------------------------------------------------------------------


class ScrubbingExporter(SpanExporter):
    """Hands `inner` copies of the spans with every string scrubbed (attributes, events, links, status)."""

    def __init__(self, inner: SpanExporter, scrubber: Scrubber) -> None:
        self.inner = inner
        self.scrubber = scrubber

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([self._scrub(s) for s in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def _attributes(self, attributes: Any) -> dict[str, Any] | None:
        if not attributes:
            return None
        text = self.scrubber.redact_text
        return {k: text(v) if isinstance(v, str) else
                tuple(text(x) if isinstance(x, str) else x for x in v) if isinstance(v, tuple) else v
                for k, v in attributes.items()}

    def _scrub(self, span: ReadableSpan) -> ReadableSpan:
        text = self.scrubber.redact_text
        status = span.status
        if status.description:
            status = Status(status.status_code, text(status.description))
        return ReadableSpan(
            name=text(span.name), context=span.context, parent=span.parent, resource=span.resource,
            attributes=self._attributes(span.attributes),
            events=[Event(e.name, self._attributes(e.attributes), e.timestamp) for e in span.events],
            links=[trace.Link(link.context, self._attributes(link.attributes)) for link in span.links],
            kind=span.kind, status=status, start_time=span.start_time, end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope)


__all__ = ["OTLP_PACKAGE", "DecisionLike", "DecisionSpan", "ExportGate", "HttpSpan", "OpsgateTracerProvider",
           "Scrubber", "ScrubbingExporter", "TracingConfig", "TracingError", "activate_provider", "current_span_ids",
           "deactivate", "decision_span", "enrich_call_span", "http_span", "install_router", "routed_provider",
           "safe_url", "set_session_id", "setup_tracing", "use_provider"]
