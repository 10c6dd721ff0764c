"""The governed tool call, independent of transport (HTTP and stdio run this same code).

    validate args -> decide (Cedar) -> rate tiers -> limiter -> provider -> result

Every step that refuses raises GatewayError with a stable code; nothing is silently dropped
or emptied. This is the one place that asks the engine for enforcement and the one place that
turns engine and provider outcomes into protocol errors. A refusal the model behind the client
can correct (gateway.errors.MODEL_CODES: its arguments, a table, a column, a failed query) is
answered as the tool's result with `isError: true` instead, after the same audit row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, Protocol, get_args, get_origin

import anyio
import msgspec
from mcp import types

from engine import Decision, Engine, Entity, Request, Uid, utcnow
from engine.impact import Asked
from gateway.audit import Audit
from gateway.errors import MODEL_CODES, Code, GatewayError
from gateway.paging import cursor_offset, make_cursor
from gateway.registry import Registered, Registry
from otel.events import RunEvent
from otel.tracing import decision_span, enrich_call_span
from providers.sdk import CallContext, ProviderBase, Refused, ToolError, current_call
from providers.sdk.tool import parse_arguments

log = logging.getLogger("opsgate.pipeline")


class Caller(Protocol):
    """Who is calling: an authenticated user id (uuid) and its ops role, if any."""

    @property
    def id(self) -> str: ...

    @property
    def role(self) -> str | None: ...


class RateLimiter(Protocol):
    async def hit_all(self, user: str, provider: str, tiers: Sequence[Any]) -> list[Any]: ...


class CallMetrics(Protocol):
    """Where each call's outcome is counted (gateway/metrics.py): told once per call, by _record."""

    def call(self, provider: str, tool: str, decision: str, status: str, seconds: float,
             decision_us: float | None, refused: Sequence[tuple[str, bool]]) -> None: ...


class CallResult(msgspec.Struct):
    """What a call produced besides its MCP result: the decision and rate-limit outcomes
    (for headers and the audit trail)."""

    decision: Decision | None = None
    limits: list[Any] = []
    started: RunEvent | None = None  # the call's intent, once the audit trail has journaled it
    asked: Asked | None = None  # the request as decided, kept in the audit row for `opsgate policy replay`


def principal(user_id: str, role: str | None) -> tuple[Uid, tuple[Entity, ...]]:
    """A caller as Cedar sees it: the user, whose one parent is its ops role (if any)."""
    uid = Uid.of("User", user_id)
    return uid, (Entity(uid, (Uid.of("Role", role),) if role else ()),)


def principal_of(caller: Caller) -> tuple[Uid, tuple[Entity, ...]]:
    return principal(caller.id, caller.role)


def to_result(value: Any, scrub: Callable[[str], str] | None = None) -> types.CallToolResult:
    """The MCP result of a tool's return value. `scrub` (the redactor's text scrub) is applied to
    its JSON text, so a vault secret a provider put in its answer never reaches the client.
    A provider relaying an MCP server returns the server's own CallToolResult: passed on whole
    (images, audio, resources, structured content, isError), scrubbed the same way."""
    if isinstance(value, types.CallToolResult):
        return _scrubbed_result(value, scrub)
    data = msgspec.to_builtins(value)
    text = msgspec.json.encode(data).decode()
    if scrub is not None:
        clean = scrub(text)
        if clean != text:  # the scrub keeps JSON valid: its marks hold no quote or backslash
            try:
                data = msgspec.json.decode(clean)
            except msgspec.DecodeError:
                raise GatewayError(Code.INTERNAL_ERROR, "the tool's result was withheld: it could not be "
                                   "scrubbed of secrets") from None
            text = clean
    structured = data if isinstance(data, dict) else {"result": data}
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], structured_content=structured)


def _scrubbed_result(result: types.CallToolResult, scrub: Callable[[str], str] | None) -> types.CallToolResult:
    if scrub is None:
        return result
    text = result.model_dump_json(by_alias=True, exclude_none=True)
    clean = scrub(text)
    if clean == text:
        return result
    try:
        return types.CallToolResult.model_validate_json(clean)
    except ValueError:
        raise GatewayError(Code.INTERNAL_ERROR, "the tool's result was withheld: it could not be scrubbed of "
                           "secrets") from None


# How long a client may reuse a listing (the 2026-07-28 cache hint `ttlMs`): as long as the gateway
# itself reuses one (Pipeline.LIST_TTL_S). Listings differ per caller, so they are always `private`.
LIST_CACHE_TTL_MS = 1000

# A call cancelled before it ended (the client sent notifications/cancelled, or left the SSE stream
# its answer was to come on): still exactly one row, saying so.
CANCELLED = {"status": "cancelled", "message": "the caller cancelled the call before it ended"}

STATUS = {Code.FORBIDDEN: "denied", Code.USER_ID_REQUIRED: "invalid_input", Code.TABLE_NOT_ALLOWED: "denied",
          Code.COLUMN_NOT_ALLOWED: "denied", Code.RATE_LIMIT: "rate_limited", Code.INVALID_INPUT: "invalid_input",
          Code.EVENT_STORE_UNAVAILABLE: "unrecorded"}


class Pipeline:
    def __init__(self, engine: Engine, registry: Registry, limiter: RateLimiter | None,
                 clock: Callable[[], datetime] = utcnow, audit: Audit | None = None,
                 scrub: Callable[[str], str] | None = None, page_size: int = 100,
                 metrics: CallMetrics | None = None) -> None:
        self.engine = engine
        self.registry = registry
        self.limiter = limiter
        self.clock = clock
        self.audit = audit
        # Applied to everything a provider says that goes back to the client (results, tool
        # errors, refusals): vault secrets never leave the gateway, even if a provider echoes one.
        self.scrub = scrub or (lambda text: text)
        self.page_size = max(1, page_size)  # tools per tools/list page; the rest follow by cursor
        self.metrics = metrics
        self._listings: dict[tuple[str, str | None, str], tuple[float, list[types.Tool]]] = {}

    def visible_tools(self, caller: Caller) -> list[Registered]:
        """The tools this caller may call at all: each tool's own decision, asked without args."""
        uid, entities = principal_of(caller)
        now = self.clock()
        return [t for t in self.registry.tools
                if t.provider.serves(t.tool.name)
                and self.engine.decide(Request(uid, t.name, Uid.of("Provider", t.provider.name), {}, entities),
                                       now=now).allowed]

    # MCP clients list tools around every call (the SDK client does, to validate structured
    # output), and a listing is one decision per served tool: 40 tools cost ~2.7 ms. A listing is
    # not an enforcement point (every call is decided afresh), so a caller's listing is reused for
    # up to this long under the same bundle revision; a reload shows at once.
    LIST_TTL_S = 1.0
    LIST_CACHE_MAX = 4096

    def list_tools(self, caller: Caller, cursor: str | None = None) -> types.ListToolsResult:
        """One page of the caller's listing; `cursor` (a `nextCursor` of an earlier page) resumes
        it. A cursor that is not this caller's, under this bundle revision, is INVALID_INPUT."""
        revision = self.engine.bundle.revision
        tools = self._listing(caller, revision)
        start = 0 if cursor is None else cursor_offset(cursor, caller.id, caller.role, revision)
        end = start + self.page_size
        return types.ListToolsResult(
            tools=tools[start:end], ttl_ms=LIST_CACHE_TTL_MS, cache_scope="private",
            next_cursor=make_cursor(caller.id, caller.role, revision, end) if end < len(tools) else None)

    def _listing(self, caller: Caller, revision: str) -> list[types.Tool]:
        key = (caller.id, caller.role, revision)
        now = time.monotonic()
        hit = self._listings.get(key)
        if hit is not None and now - hit[0] < self.LIST_TTL_S:
            return hit[1]
        tools = [_listed(t) for t in self.visible_tools(caller)]
        if len(self._listings) >= self.LIST_CACHE_MAX:
            self._listings.clear()  # bounded; a full sweep is cheaper than bookkeeping an LRU
        self._listings[key] = (now, tools)
        return tools

    async def call_tool(self, caller: Caller, name: str, arguments: dict[str, Any] | None,
                        out: CallResult | None = None, peer: Any = None) -> types.CallToolResult:
        """Govern and run one call, then record exactly one audit event for whatever happened,
        before anything is returned or raised to the caller. A refusal the model can correct is
        returned as an isError result; any other is raised. `peer` is the calling client as a
        relaying provider may address it (providers.sdk.peer), where the transport has one."""
        out = out if out is not None else CallResult()
        start = time.perf_counter()
        registered = self.registry.get(name)
        served = registered.provider.name if registered is not None else None
        try:
            result = await self._call(caller, name, arguments, out, peer)
        except asyncio.CancelledError:
            # The row is written even as the call is torn down; a store that cannot take it has logged
            # that, and the call is over either way.
            with anyio.CancelScope(shield=True), contextlib.suppress(GatewayError):
                await self._record(caller, name, served, arguments, out, start, CANCELLED)
            raise
        except GatewayError as e:
            extra = _provider_data(e, registered.provider) if registered is not None else {}
            await self._record(caller, name, served, arguments, out, start, _refused(e))
            if registered is not None and e.code in MODEL_CODES:
                return _model_error(e, extra)
            e.data = {**extra, **e.data}  # the gateway's own keys win
            raise
        await self._record(caller, name, served, arguments, out, start, {
            "status": "tool_error" if result.is_error else "ok", "content": result.structured_content})
        return result

    async def _record(self, caller: Caller, name: str, provider: str | None, arguments: Any, out: CallResult,
                      start: float, result: dict[str, Any]) -> None:
        """The call's one audit row, then its one count in the metrics. `provider`: who serves `name`
        (None: nobody; the metrics then say "unknown" rather than the caller's made-up name)."""
        _annotate_span(caller, name, out, result.get("code"))
        status = result["status"]
        try:
            if self.audit is not None:
                await self.audit.record(caller_id=caller.id, tool=name, arguments=arguments, decision=out.decision,
                                        result=result, duration_ms=int((time.perf_counter() - start) * 1000),
                                        started=out.started, asked=out.asked)
        except GatewayError:
            status = STATUS[Code.EVENT_STORE_UNAVAILABLE]  # the caller gets no answer but this refusal
            raise
        finally:
            if self.metrics is not None:
                _count(self.metrics, name, provider, out, status, time.perf_counter() - start)

    async def _call(self, caller: Caller, name: str, arguments: dict[str, Any] | None,
                    out: CallResult, peer: Any = None) -> types.CallToolResult:
        registered = self.registry.get(name)
        if registered is None:
            raise GatewayError(Code.INVALID_INPUT, f"unknown tool {name!r}")
        try:
            args = parse_arguments(registered.tool.input, arguments or {})
        except ValueError as e:  # msgspec.ValidationError is one; so is a pinned JSON Schema's refusal
            raise _invalid(name, registered.tool.input, arguments or {}, caller, e) from None

        provider = registered.provider.name
        decision = await self._govern(caller, name, provider, {"args": msgspec.to_builtins(args)}, out, arguments)
        ctx = CallContext(caller_id=caller.id, tool=name, decision_id=decision.decision_id, role=caller.role,
                          peer=peer)
        token = current_call.set(ctx)
        try:
            value = await registered.tool.handler(ctx, args)
        except Refused as e:
            raise _refusal(e, decision, self.scrub) from None
        except ToolError as e:
            message = self.scrub(e.message)
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=message)], is_error=True,
                structured_content={"error": message, **({"retry_after_s": e.retry_after_s}
                                                         if e.retry_after_s is not None else {})})
        except Exception:
            log.exception("tool %s failed (decision %s)", name, decision.decision_id)
            raise GatewayError(Code.INTERNAL_ERROR, f"{name} failed unexpectedly; see the gateway log for "
                               f"decision {decision.decision_id}", decision_id=decision.decision_id) from None
        finally:
            current_call.reset(token)
        return to_result(value, self.scrub)

    # -- resources: governed like tools, by their catalogue action ------------------------------

    def list_resources(self, caller: Caller) -> types.ListResourcesResult:
        """The resources this caller may read: each one's action decided without arguments."""
        uid, entities = principal_of(caller)
        now = self.clock()
        return types.ListResourcesResult(resources=[
            types.Resource(uri=r.uri, name=r.resource.name, description=r.resource.description,
                           mime_type=r.resource.mime_type)
            for r in self.registry.resources
            if self.engine.decide(Request(uid, r.action, Uid.of("Provider", r.provider.name), {}, entities),
                                  now=now).allowed])

    async def read_resource(self, caller: Caller, uri: str, out: CallResult | None = None) -> types.ReadResourceResult:
        """Govern and read one resource; exactly one audit event, as for a tool call."""
        out = out if out is not None else CallResult()
        start = time.perf_counter()
        registered = self.registry.resource(uri)
        name = registered.action if registered is not None else "resources/read"
        served = registered.provider.name if registered is not None else None
        try:
            if registered is None:
                raise GatewayError(Code.INVALID_INPUT, f"unknown resource {uri!r}")
            decision = await self._govern(caller, name, registered.provider.name, {"args": {}}, out, {"uri": uri})
            ctx = CallContext(caller_id=caller.id, tool=name, decision_id=decision.decision_id, role=caller.role)
            token = current_call.set(ctx)
            try:
                text = self.scrub(await registered.resource.handler(ctx))
            except Refused as e:
                raise _refusal(e, decision, self.scrub) from None
            except Exception:
                log.exception("resource %s failed (decision %s)", uri, decision.decision_id)
                raise GatewayError(Code.INTERNAL_ERROR, f"{uri} failed unexpectedly; see the gateway log for "
                                   f"decision {decision.decision_id}", decision_id=decision.decision_id) from None
            finally:
                current_call.reset(token)
        except GatewayError as e:
            if registered is not None:
                e.data = {**_provider_data(e, registered.provider), **e.data}
            await self._record(caller, name, served, {"uri": uri}, out, start, _refused(e))
            raise
        await self._record(caller, name, served, {"uri": uri}, out, start, {"status": "ok", "content": {
            "uri": uri, "chars": len(text)}})
        return types.ReadResourceResult(contents=[
            types.TextResourceContents(uri=uri, mime_type=registered.resource.mime_type, text=text)])

    # -- relayed resources and prompts (providers fronting MCP servers) ---------------------------

    def _relaying(self, caller: Caller, kind: str) -> list[ProviderBase]:
        """Providers whose `<provider>.<kind>` action exists and that this caller may use at all."""
        uid, entities = principal_of(caller)
        now = self.clock()
        found = []
        for provider in self.registry.providers.values():
            action = f"{provider.name}.{kind}"
            if self.engine.bundle.catalogue.get(action) is not None and self.engine.decide(
                    Request(uid, action, Uid.of("Provider", provider.name), {}, entities), now=now).allowed:
                found.append(provider)
        return found

    async def relayed_resources(self, caller: Caller) -> list[types.Resource]:
        """The resources of relaying providers the caller may read, as their servers list them now
        (a server that cannot be listed contributes nothing and is logged)."""
        out: list[types.Resource] = []
        for provider in self._relaying(caller, "resources.read"):
            try:
                out += await provider.relayed_resources()
            except Exception as e:
                log.warning("listing %s's resources failed: %s", provider.name, e)
        return out

    async def read_relayed_resource(self, caller: Caller, uri: str, out: CallResult) -> types.ReadResourceResult:
        provider = next((p for p in self.registry.providers.values() if p.relays_resource(uri)), None)
        if provider is None:
            raise GatewayError(Code.INVALID_INPUT, f"unknown resource {uri!r}")
        return await self._relayed(caller, provider, "resources.read", {"uri": uri}, out,
                                   lambda ctx: provider.read_relayed_resource(ctx, uri))

    async def relayed_prompts(self, caller: Caller) -> list[types.Prompt]:
        out: list[types.Prompt] = []
        for provider in self._relaying(caller, "prompts.get"):
            try:
                out += [p.model_copy(update={"name": f"{provider.name}.{p.name}"})
                        for p in await provider.relayed_prompts()]
            except Exception as e:
                log.warning("listing %s's prompts failed: %s", provider.name, e)
        return out

    async def get_relayed_prompt(self, caller: Caller, name: str, arguments: dict[str, str] | None,
                                 out: CallResult) -> types.GetPromptResult:
        provider_name, _, local = name.partition(".")
        provider = self.registry.providers.get(provider_name)
        if provider is None or not local or self.engine.bundle.catalogue.get(f"{provider_name}.prompts.get") is None:
            raise GatewayError(Code.INVALID_INPUT, f"unknown prompt {name!r}")
        return await self._relayed(caller, provider, "prompts.get", {"name": local}, out,
                                   lambda ctx: provider.get_relayed_prompt(ctx, local, arguments))

    async def _relayed(self, caller: Caller, provider: ProviderBase, kind: str, args: dict[str, Any], out: CallResult,
                       fetch: Callable[[CallContext], Any]) -> Any:
        """Govern `<provider>.<kind>` with `args`, fetch, scrub; exactly one audit row."""
        name = f"{provider.name}.{kind}"
        start = time.perf_counter()
        try:
            decision = await self._govern(caller, name, provider.name, {"args": args}, out, args)
            ctx = CallContext(caller_id=caller.id, tool=name, decision_id=decision.decision_id, role=caller.role)
            token = current_call.set(ctx)
            try:
                result = await fetch(ctx)
            except ToolError as e:
                raise GatewayError(Code.INTERNAL_ERROR, self.scrub(e.message), decision_id=decision.decision_id) \
                    from None
            except Refused as e:
                raise _refusal(e, decision, self.scrub) from None
            finally:
                current_call.reset(token)
            text = result.model_dump_json(by_alias=True, exclude_none=True)
            clean = self.scrub(text)
            if clean != text:
                result = type(result).model_validate_json(clean)
        except GatewayError as e:
            await self._record(caller, name, provider.name, args, out, start, _refused(e))
            raise
        await self._record(caller, name, provider.name, args, out, start, {"status": "ok",
                                                                           "content": {"chars": len(clean)}})
        return result

    async def _govern(self, caller: Caller, name: str, provider: str, context: dict[str, Any],
                      out: CallResult, arguments: Any) -> Decision:
        """Decide `name` for the caller, apply its rate tiers, check the audit store; raise
        GatewayError on any refusal. Tools and resources alike."""
        uid, entities = principal_of(caller)
        query, now = Request(uid, name, Uid.of("Provider", provider), context, entities), self.clock()
        with decision_span(tool=name) as span:
            decision = self.engine.decide(query, now=now)
            span.record(decision)
        out.decision, out.asked = decision, Asked(query, now, caller.role)
        if not decision.allowed:
            why = ", ".join(decision.reasons) if decision.reasons else "no policy permits it"
            raise GatewayError(Code.FORBIDDEN, f"{name} denied for role {caller.role or 'none'} ({why})",
                               decision_id=decision.decision_id, policy_ids=list(decision.reasons),
                               errors=list(decision.errors) or None, bundle_revision=decision.bundle_revision)

        if decision.tiers:
            if self.limiter is None:
                raise GatewayError(Code.INTERNAL_ERROR, "rate tiers apply but no rate limiter is configured",
                                   decision_id=decision.decision_id)
            out.limits = await self.limiter.hit_all(caller.id, provider, decision.tiers)
            refused = [o for o in out.limits if not o.allowed]
            if refused:
                worst = max(refused, key=lambda o: o.retry_after_s)
                reason = worst.error or f"limit of {worst.limit} per {worst.period_s}s in bucket {worst.bucket!r}"
                raise GatewayError(Code.RATE_LIMIT, f"{name}: {reason}", decision_id=decision.decision_id,
                                   retry_after_s=worst.retry_after_s, bucket=worst.bucket,
                                   limiter_error=worst.error)

        if self.audit is not None:  # no unauditable operations: a crash from here on leaves an `interrupted` row
            out.started = await self.audit.begin(caller_id=caller.id, tool=name, arguments=arguments,
                                                  decision=decision, asked=out.asked)
        return decision


def _listed(t: Registered) -> types.Tool:
    tool = types.Tool(name=t.name, description=t.tool.description, input_schema=t.input_schema)
    if t.tool.title is None and t.tool.output_schema is None and t.tool.annotations is None:
        return tool
    return tool.model_copy(update={"title": t.tool.title, "output_schema": t.tool.output_schema,
                                   "annotations": None if t.tool.annotations is None
                                   else types.ToolAnnotations.model_validate(t.tool.annotations)})


def _refused(e: GatewayError) -> dict[str, Any]:
    """The audit row's result for a refusal (the same whichever way the caller is told)."""
    return {"status": STATUS.get(e.code, "error"), "code": str(e.code), "message": e.message,
            **{k: e.data[k] for k in ("retry_after_s", "bucket", "limiter_error", "reason") if k in e.data}}


def _count(metrics: CallMetrics, name: str, provider: str | None, out: CallResult, status: str,
           seconds: float) -> None:
    d = out.decision
    metrics.call(provider or "unknown", name if provider is not None else "unknown",
                 "none" if d is None else ("allow" if d.allowed else "deny"), status, seconds,
                 None if d is None else d.latency_us, [(o.bucket, o.unavailable) for o in out.limits if not o.allowed])


def _provider_data(e: GatewayError, provider: ProviderBase) -> dict[str, Any]:
    """What the provider adds to every error of its tools (e.g. Omega's `_canon` envelope)."""
    try:
        extra = provider.error_data(str(e.code), e.message)
    except Exception:  # a broken hook must not hide the error it decorates
        log.exception("%s.error_data failed", provider.name)
        return {}
    return {k: v for k, v in extra.items() if v is not None}


def _model_error(e: GatewayError, extra: dict[str, Any]) -> types.CallToolResult:
    """A refusal the model can correct, as the tool's own answer (isError, SEP-1303): the provider's
    envelope (Omega's `_canon`) around `error: {code, message, ...}`, in structured content and as
    its JSON text."""
    body = {**{k: v for k, v in extra.items() if k != "error"}, "error": {**extra.get("error", {}), **e.payload}}
    return types.CallToolResult(content=[types.TextContent(type="text", text=msgspec.json.encode(body).decode())],
                                is_error=True, structured_content=body)


def _invalid(name: str, struct: Any, arguments: dict[str, Any], caller: Caller,
             error: ValueError) -> GatewayError:
    """INVALID_INPUT, unless a required argument is missing (or null) whose field names its own
    code: `Meta(extra={"if_missing": {"code": ..., "message": ...}})`, e.g. Omega's userId, which the
    spec answers with USER_ID_REQUIRED. The message may name the caller's own id (`{caller_id}`)."""
    fields = msgspec.structs.fields(struct) if isinstance(struct, type) and issubclass(struct, msgspec.Struct) else ()
    for f in fields:
        rule = _if_missing(f.type)
        if rule is not None and arguments.get(f.encode_name) is None and rule.get("code") in Code.__members__:
            return GatewayError(Code(rule["code"]), str(rule.get("message", f"{f.encode_name} is required"))
                                .format(caller_id=caller.id))
    return GatewayError(Code.INVALID_INPUT, f"invalid arguments for {name}: {error}")


def _if_missing(annotation: Any) -> dict[str, Any] | None:
    if get_origin(annotation) is not Annotated:
        return None
    for meta in get_args(annotation)[1:]:
        rule = meta.extra.get("if_missing") if isinstance(meta, msgspec.Meta) and meta.extra else None
        if isinstance(rule, dict):
            return rule
    return None


def _refusal(e: Refused, decision: Decision, scrub: Callable[[str], str]) -> GatewayError:
    """A provider's refusal as a gateway error with its stable code and the call's decision id,
    scrubbed of secrets like everything else a provider says."""
    code = Code(e.code) if e.code in Code.__members__ else Code.FORBIDDEN
    data = {k: scrub(v) if isinstance(v, str) else v for k, v in e.data.items()}
    return GatewayError(code, scrub(e.message), **{**data, "decision_id": decision.decision_id})


def _annotate_span(caller: Caller, name: str, out: CallResult, error_code: str | None) -> None:
    """opsgate's view of the call on the SDK's SERVER span (the current span in the tool handler)."""
    d = out.decision
    refused = [o.bucket for o in out.limits if not o.allowed]
    enrich_call_span(caller_id=caller.id, role=caller.role, tool=name,
                     decision=None if d is None else d.allowed, decision_id=None if d is None else d.decision_id,
                     policy_ids=() if d is None else d.reasons,
                     bundle_revision=None if d is None else d.bundle_revision,
                     exception_ids=() if d is None else d.exceptions_applied,
                     rate_bucket=refused or [o.bucket for o in out.limits] or None, error_type=error_code)


__all__ = ["LIST_CACHE_TTL_MS", "CallMetrics", "CallResult", "Caller", "Pipeline", "RateLimiter", "principal",
           "principal_of", "to_result"]
