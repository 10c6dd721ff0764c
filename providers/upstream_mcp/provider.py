"""UpstreamProvider: one ProviderBase adapter, instantiated per declared upstream MCP server.

The gateway serves each pinned tool that has a kind as `<upstream>.<tool>`, so the pipeline,
catalogue, engine and audit treat it as any provider's tool. What this adapter adds:

- Only pinned tools, exactly as pinned: the description, schemas and annotations a client sees
  are the pins'; arguments are validated against the pinned input schema before the upstream is
  asked, and a structured result against the pinned output schema after.
- Drift: the upstream's tools are listed when a session opens, on `tools/list_changed` and every
  `relist_s`. A pinned tool whose live definition differs, or that vanished, is not served (a call
  is refused FORBIDDEN with `reason: definition_changed`, and it leaves tools/list); a new tool is
  never served. Each distinct change is recorded once as a `<upstream>.definition_changed` row
  with the diff (and, for input schemas, whether rule 9 would call it compatible).
- Every way an upstream can misbehave ends in an answer to the caller: a JSON-RPC error, a hang
  (past `timeouts.call_s`), a death mid-call, an oversized or schema-violating answer each become
  a tool error that says which, and the session involved is not reused.
- Secrets come from the vault at connect time only (`get_vault_secret`: a `read_secret` decision),
  as HTTP headers (`http`) or child environment variables (`stdio`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jsonschema
from mcp import Client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from providers.sdk import CallContext, ProviderBase, Refused, Tool, ToolError, current_call
from providers.sdk.tool import JsonSchemaInput
from providers.upstream_mcp import child
from providers.upstream_mcp.drift import Change, compare, live_definition
from providers.upstream_mcp.pool import Pool, Session, SessionFailed, describe, watched
from providers.upstream_mcp.relay import Relay
from providers.upstream_mcp.spec import UpstreamSpec

log = logging.getLogger("opsgate.upstream")
Breaking = Callable[[dict[str, Any], dict[str, Any]], list[str]]  # rule 9: (pinned, live) input schema -> problems


class UpstreamProvider(ProviderBase):
    name = "upstream"  # replaced per instance by the upstream's own name
    relays_callers = True

    def __init__(self, spec: Any, *, breaking: Breaking | None = None, health_budget_s: float = 5.0,
                 isolate: Any = None) -> None:
        self.spec = UpstreamSpec.of(spec)
        self.name = self.spec.name  # type: ignore[misc]
        self.decl = self.spec.declaration
        self.health_budget_s = health_budget_s
        self.breaking = breaking
        self.isolate = isolate  # providers.sdk.netns.Isolation for a stdio child, or None
        self.pins = {t.name: t for t in self.spec.pins.tools} if self.spec.pins is not None else {}
        self.local = {local: up for up, local in self.spec.served.items()}
        self.pool = Pool(self._client, size=self.decl.pool, connect_timeout_s=self.decl.timeouts.connect_s,
                         on_open=self._on_open, on_end=self._ended)
        self._died = asyncio.Event()
        self.drifted: dict[str, str] = {}  # upstream tool name -> why it is not served
        self.listed = False
        self.recorded: set[str] = set()
        self.isolation = "egress client" if self.decl.transport == "http" else "none"
        self.isolation_reason = ""
        self._proxy: Any = None
        self._proxy_url: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._relist_lock = asyncio.Lock()
        self._validators: dict[str, Any] = {}  # upstream tool name -> its pinned output schema's validator

    # -- what is served ---------------------------------------------------------------------

    def tools(self) -> list[Tool]:
        out = []
        for upstream_name, local in self.spec.served.items():
            pin = self.pins[upstream_name]
            kind = self.decl.tools[upstream_name].kind
            try:
                schema = JsonSchemaInput(pin.input_schema)
            except Exception as e:  # a pinned schema that is no schema: that tool is not served, the rest are
                log.error("%s.%s is not served: its pinned input schema is invalid (%s)", self.name, local,
                          describe(e))
                continue
            out.append(Tool(local, kind, schema,  # type: ignore[arg-type]
                            pin.description or pin.title or upstream_name, self._handler(upstream_name),
                            title=pin.title, output_schema=pin.output_schema, annotations=pin.annotations))
        return out

    def serves(self, tool: str) -> bool:
        upstream_name = self.local.get(tool)
        return upstream_name is None or upstream_name not in self.drifted

    def _handler(self, upstream_name: str) -> Callable[[CallContext, dict[str, Any]], Any]:
        async def handler(ctx: CallContext, args: dict[str, Any]) -> Any:
            return await self.call(ctx, upstream_name, args)
        return handler

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self.decl.transport == "stdio":
            await self._start_proxy()
        self._spawn(self._supervise())

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self.pool.close()
        if self._proxy is not None:
            await self._proxy.close()
        if self.isolate is not None:
            await self.isolate.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ended(self, session: Session) -> None:
        log.warning("%s: the upstream's %s ended", self.name, "child" if self.decl.transport == "stdio" else "session")
        self._died.set()

    async def _supervise(self) -> None:
        """Start-up children and http upstreams are listed at once, everything every relist_s; a
        start-up child that dies is started again at once, then after a backoff that doubles with
        each failure to start (0.5 s to 30 s, the pool's)."""
        keep = self.decl.start == "startup" or self.decl.transport == "http"
        first = keep
        while True:
            if first:
                try:
                    await self.relist()
                except Exception as e:  # a down upstream is a health answer, not a crash; try again later
                    log.warning("%s: listing the upstream's tools failed: %s", self.name, describe(e))
            first = True
            self._died.clear()
            wait = self.decl.relist_s
            if keep and self.pool.live == 0:  # nothing running: try again after the pool's backoff
                wait = min(wait, max(0.5, self.pool.retry_in()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._died.wait(), wait)

    async def _start_proxy(self) -> None:
        self._proxy = self.egress_proxy()
        if self.isolate is not None:
            try:
                sock = await self.isolate.open()
                self._proxy_url = await self._proxy.start(sock=sock)
                self.isolation, self.isolation_reason = "netns", self.isolate.describe()
                return
            except Exception as e:  # the host does not allow it: say so, and fall back to the proxy alone
                self.isolation_reason = f"no network namespace: {describe(e)}"
                await self.isolate.close()
                self.isolate = None
        self._proxy_url = await self._proxy.start()
        self.isolation = "proxy-env only"
        self.isolation_reason = self.isolation_reason or "the child is given the proxy variables; nothing stops " \
                                                         "it from connecting directly"

    # -- sessions -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _client(self, session: Session) -> AsyncIterator[Client]:
        secrets = {s.name: await self.get_vault_secret(s.name) for s in self.decl.secrets}
        relay = Relay(self.name, session, self._list_changed, self._record_relay)
        session.relay = relay  # type: ignore[attr-defined]
        if self.decl.transport == "http":
            assert self.decl.url is not None
            headers = {s.header: s.format.replace("{value}", secrets[s.name]) for s in self.decl.secrets
                       if s.header}
            http = self.mcp_http_client(headers=headers, timeout=self.decl.timeouts.connect_s,
                                        read_timeout=max(self.decl.timeouts.call_s, 30.0))
            async with http, Client(streamable_http_client(self.decl.url, http_client=http), mode=self.decl.protocol,
                                    **relay.callbacks()) as client, self._listening(client):
                yield client
            return
        if self._proxy_url is None:
            await self._start_proxy()
        env = {s.env: s.format.replace("{value}", secrets[s.name]) for s in self.decl.secrets if s.env}
        netns = self.isolate.name if self.isolate is not None and self.isolation == "netns" else None
        params = child.parameters(self.decl, env, self._proxy_url, netns)
        async with Client(watched(stdio_client(params), session.ended), mode=self.decl.protocol,
                          **relay.callbacks()) as client, self._listening(client):
            yield client

    @contextlib.asynccontextmanager
    async def _listening(self, client: Client) -> AsyncIterator[None]:
        """On a 2026-07-28 session, hear the upstream's tools/list_changed by subscriptions/listen
        (2025 sessions deliver it as a notification, see relay.Relay.message)."""
        if client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            yield
            return

        async def listen() -> None:
            try:
                async with client.listen(tools_list_changed=True) as subscription:
                    async for _ in subscription:
                        await self._list_changed()
            except Exception as e:  # an upstream without subscriptions: periodic re-listing remains
                log.info("%s: not listening for tool changes: %s", self.name, describe(e))

        task = asyncio.create_task(listen())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def _record_relay(self, holder: Any, method: str, outcome: dict[str, Any]) -> None:
        token = current_call.set(holder)  # the row is the caller's: the question came during their call
        try:
            await self.emit_event("relay", {"method": method, "during": getattr(holder, "tool", None)}, outcome)
        except Exception as e:  # the answer stands either way
            log.error("%s: could not record a relayed %s: %s", self.name, method, type(e).__name__)
        finally:
            current_call.reset(token)

    async def _on_open(self, session: Session) -> None:
        await self._list(session)

    async def _list_changed(self) -> None:
        if self.listed:  # before the first listing there is nothing to compare yet
            self._spawn(self.relist())

    async def relist(self) -> None:
        """List the upstream's tools on a session of the pool and apply the result."""
        async with self._relist_lock, self.pool.lease(None, self.decl.timeouts.connect_s) as session:
            if not getattr(session, "fresh_listing", False):
                await self._list(session)
            session.fresh_listing = False  # type: ignore[attr-defined]

    async def live_definitions(self) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """The upstream's tools as it lists them now (pinned shape), and what it says of itself;
        nothing is applied or recorded (`opsgate upstream pin` and `diff`)."""
        self.pool.on_open = None
        async with self.pool.lease(None, self.decl.timeouts.connect_s) as session:
            live = await self._listing(session)
            info = session.client.server_info if session.client is not None else None
            server = {"protocol_version": session.protocol_version,
                      **({"name": info.name, "version": info.version} if info is not None else {})}
        return live, server

    async def _list(self, session: Session) -> None:
        live = await self._listing(session)
        session.fresh_listing = True  # type: ignore[attr-defined]
        await self._apply(live)

    async def _listing(self, session: Session) -> dict[str, dict[str, Any]]:
        assert session.client is not None
        live: dict[str, dict[str, Any]] = {}
        cursor: str | None = None
        async with asyncio.timeout(self.decl.timeouts.list_s):
            for _ in range(100):  # a paginator that never ends cannot hang the gateway
                page = await session.client.list_tools(cursor=cursor, cache_mode="bypass")
                for tool in page.tools:
                    live[tool.name] = live_definition(tool)
                cursor = page.next_cursor
                if cursor is None:
                    break
        return live

    async def _apply(self, live: dict[str, dict[str, Any]]) -> None:
        changes = compare(self.spec.pins, live)
        self.drifted = {c.tool: f"{c.change}: {'; '.join(c.diff)}" for c in changes if c.change != "added"}
        self.listed = True
        for change in changes:
            if change.key not in self.recorded:
                self.recorded.add(change.key)
                await self._record(change)

    async def _record(self, change: Change) -> None:
        payload: dict[str, Any] = {"upstream": self.name, "tool": change.tool, "change": change.change,
                                   "diff": list(change.diff), "served_as": self.spec.served.get(change.tool)}
        pin = self.pins.get(change.tool)
        if change.change == "changed" and pin is not None and change.live is not None:
            old, new = pin.input_schema, change.live.get("input_schema", {})
            if old == new:
                payload["schema_change"] = "none"
            elif self.breaking is not None:
                problems = self.breaking(old, new)
                payload["schema_change"] = "breaking" if problems else "compatible"
                payload["breaking"] = problems
        log.warning("%s: tool %s %s since it was pinned; not served", self.name, change.tool, change.change)
        try:
            await self.emit_event("definition_changed", payload, {"status": "not_served", "change": change.change})
        except Exception as e:  # the tool stays unserved either way
            log.error("%s: could not record a definition change: %s", self.name, type(e).__name__)

    # -- calls --------------------------------------------------------------------------------

    async def call(self, ctx: CallContext, upstream_name: str, args: dict[str, Any]) -> Any:
        timeout = self.decl.timeouts.call_s
        if not self.listed:
            try:
                await self.relist()
            except (SessionFailed, TimeoutError, MCPError, OSError) as e:
                raise ToolError(f"{self.name} is unavailable: {describe(e)}") from None
        if upstream_name in self.drifted:
            raise Refused("FORBIDDEN", f"{ctx.tool}: its definition changed since it was pinned "
                                       f"({self.drifted[upstream_name][:300]}); not served until it is re-pinned",
                          reason="definition_changed")
        started = time.monotonic()
        try:
            async with self.pool.lease(ctx, timeout) as session:
                session.relay.reset()  # type: ignore[attr-defined]
                assert session.client is not None
                async with asyncio.timeout(timeout):
                    result = await session.client.call_tool(
                        upstream_name, args, read_timeout_seconds=timeout,
                        progress_callback=session.relay.progress)  # type: ignore[attr-defined]
        except TimeoutError:
            raise ToolError(f"{self.name} did not answer {upstream_name} within {timeout:g}s "
                            f"({time.monotonic() - started:.1f}s); the call was cancelled upstream") from None
        except SessionFailed as e:
            raise ToolError(f"{self.name} is unavailable: {e}") from None
        except MCPError as e:
            if e.error.code == CONNECTION_CLOSED:
                raise ToolError(f"{self.name} failed during {upstream_name} (the upstream connection was lost: "
                                f"{e.error.message[:200]})") from None
            raise ToolError(f"{self.name} answered {upstream_name} with an error: {e.error.message[:300]}") from None
        except RuntimeError as e:
            if "structured content" not in str(e):
                raise ToolError(f"{self.name} failed during {upstream_name} ({describe(e)})") from None
            # the SDK checks structured content against the listed schema, which is the pinned one (no drift)
            raise ToolError(f"{self.name} answered {upstream_name} with a result that violates its pinned output "
                            f"schema: {str(e).rsplit(':', 1)[-1].strip()[:200]}") from None
        except Exception as e:  # the connection broke (the child died mid-call, the server went away)
            raise ToolError(f"{self.name} failed during {upstream_name} (the upstream connection was lost: "
                            f"{describe(e)})") from None
        return self._checked(upstream_name, result)

    def _checked(self, upstream_name: str, result: Any) -> Any:
        size = len(result.model_dump_json(by_alias=True, exclude_none=True))
        if size > self.decl.max_result_bytes:
            raise ToolError(f"{self.name} answered {upstream_name} with {size} bytes, over the limit of "
                            f"{self.decl.max_result_bytes}; the answer was not relayed")
        schema = self.pins[upstream_name].output_schema
        if schema is not None and not result.is_error:
            if result.structured_content is None:
                raise ToolError(f"{self.name} answered {upstream_name} without the structured content its "
                                "pinned output schema requires")
            validator = self._validators.get(upstream_name)
            if validator is None:
                validator = self._validators[upstream_name] = jsonschema.validators.validator_for(schema)(schema)
            error = jsonschema.exceptions.best_match(validator.iter_errors(result.structured_content))
            if error is not None:
                raise ToolError(f"{self.name} answered {upstream_name} with a result that violates its pinned "
                                f"output schema: {error.message[:200]}")
        return result

    # -- resources and prompts (relayed live; governed by <name>.resources.read / .prompts.get) --

    async def _with_session(self, work: Callable[[Client], Any], what: str) -> Any:
        try:
            async with self.pool.lease(current_call.get(), self.decl.timeouts.call_s) as session, \
                    asyncio.timeout(self.decl.timeouts.call_s):
                assert session.client is not None
                return await work(session.client)
        except TimeoutError:
            raise ToolError(f"{self.name} did not answer {what} within {self.decl.timeouts.call_s:g}s") from None
        except SessionFailed as e:
            raise ToolError(f"{self.name} is unavailable: {e}") from None
        except MCPError as e:
            raise ToolError(f"{self.name} answered {what} with an error: {e.error.message[:300]}") from None

    async def relayed_resources(self) -> list[Any]:
        if self.decl.resources is None:
            return []

        async def listing(client: Client) -> list[Any]:
            out, cursor = [], None
            for _ in range(100):
                page = await client.list_resources(cursor=cursor, cache_mode="bypass")
                out += page.resources
                cursor = page.next_cursor
                if cursor is None:
                    break
            return out

        resources = await self._with_session(listing, "resources/list")
        self.resource_uris = {str(r.uri) for r in resources}
        return resources

    def relays_resource(self, uri: str) -> bool:
        return self.decl.resources is not None and uri in getattr(self, "resource_uris", set())

    async def read_relayed_resource(self, ctx: CallContext, uri: str) -> Any:
        result = await self._with_session(lambda client: client.read_resource(uri, cache_mode="bypass"),
                                          "resources/read")
        size = len(result.model_dump_json(by_alias=True, exclude_none=True))
        if size > self.decl.max_result_bytes:
            raise ToolError(f"{self.name} answered resources/read with {size} bytes, over the limit of "
                            f"{self.decl.max_result_bytes}")
        return result

    async def relayed_prompts(self) -> list[Any]:
        if self.decl.prompts is None:
            return []

        async def listing(client: Client) -> list[Any]:
            return list((await client.list_prompts(cache_mode="bypass")).prompts)

        return await self._with_session(listing, "prompts/list")

    async def get_relayed_prompt(self, ctx: CallContext, name: str, arguments: dict[str, str] | None) -> Any:
        return await self._with_session(lambda client: client.get_prompt(name, arguments), "prompts/get")

    # -- health (rule 6) ---------------------------------------------------------------------

    async def probe(self) -> None:
        """An MCP ping (server/discover on 2026-07-28 sessions, which have no ping)."""
        async with self.pool.lease(None, self.health_budget_s) as session:
            assert session.client is not None
            if session.protocol_version in MODERN_PROTOCOL_VERSIONS:
                await session.client.session.discover()
            else:
                await session.client.session.send_ping()

    def report(self) -> dict[str, Any]:
        """What `opsgate upstream check` prints about this upstream."""
        return {"upstream": self.name, "transport": self.decl.transport, "isolation": self.isolation,
                "why": self.isolation_reason, "served": sorted(f"{self.name}.{v}" for v in self.spec.served.values()),
                "pinned": sorted(self.pins), "unkinded": sorted(t for t in self.pins if t not in self.spec.served),
                "drifted": dict(sorted(self.drifted.items())), "sessions": self.pool.live,
                "last_error": self.pool.last_error}


__all__ = ["UpstreamProvider"]
