"""Connections to one upstream MCP server: a pool of sessions, each leased by one call at a time.

Invariants kept here:
- A session is held by at most one call (its *lease*) from the moment the call takes it until
  its answer is in. Whatever the upstream sends on that session meanwhile (a sampling or
  elicitation request, a log message, progress) therefore belongs to that call and is relayed
  to that call's client only; with no lease, it is refused (requests) or dropped (notifications).
- Each session lives in a task of its own, which entered the `mcp` Client and leaves it when the
  session is closed, so the SDK's task groups open and close in one task.
- A session that failed (the child died, the connection broke, a call timed out) is closed and
  never leased again; new sessions are opened on demand, after a backoff that doubles with each
  consecutive failure to open one (0.5 s up to 30 s) and resets on success.
- At most `size` sessions exist; a call waits for a free one no longer than its own timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from mcp import Client

log = logging.getLogger("opsgate.upstream")

ClientFactory = Callable[["Session"], Client]
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0


class _Watched:
    """A transport's read stream that reports its end (EOF: the child exited, the pipe broke)."""

    def __init__(self, inner: Any, on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def __aenter__(self) -> _Watched:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        return await self._inner.__aexit__(*exc)

    def __aiter__(self) -> _Watched:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._inner.__anext__()
        except (StopAsyncIteration, Exception):
            self._on_end()
            raise


@contextlib.asynccontextmanager
async def watched(transport: Any, on_end: Callable[[], None]) -> AsyncIterator[tuple[Any, Any]]:
    """`transport` (an `mcp` client transport) whose end of input calls `on_end`."""
    async with transport as (read, write):
        yield _Watched(read, on_end), write


class SessionFailed(Exception):
    """The session could not be opened or broke; the message says why (no secret in it)."""


class Session:
    """One connected `mcp` Client, kept open by its own task until `close()`."""

    def __init__(self, factory: ClientFactory, connect_timeout_s: float,
                 on_end: Callable[[Session], None] | None = None) -> None:
        self.factory = factory
        self.on_end = on_end
        self.connect_timeout_s = connect_timeout_s
        self.client: Client | None = None
        self.holder: Any = None  # the CallContext of the call leasing it (providers.sdk.CallContext)
        self.broken = False
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def open(self) -> None:
        self._task = asyncio.create_task(self._run(), name="opsgate-upstream-session")
        try:
            await asyncio.wait_for(self._ready.wait(), self.connect_timeout_s)
        except TimeoutError:
            await self.close()
            raise SessionFailed(f"no answer to the MCP handshake within {self.connect_timeout_s:g}s") from None
        if self.client is None:
            error = self._error
            await self.close()
            raise SessionFailed(describe(error) if error else "the session closed during the handshake")

    async def _run(self) -> None:
        try:
            async with self.factory(self) as client:
                self.client = client
                self._ready.set()
                await self._stop.wait()
        except BaseException as e:  # the session's end, for whatever reason, is reported via `broken`
            self._error = e
            if not isinstance(e, asyncio.CancelledError | Exception):
                raise
        finally:
            self.broken = True
            self.client = None
            self._ready.set()

    def ended(self) -> None:
        """The transport's input ended (the child exited): never lease this session again."""
        if not self.broken:
            self.broken = True
            self._stop.set()
            if self.on_end is not None:
                self.on_end(self)

    @property
    def protocol_version(self) -> str | None:
        return self.client.protocol_version if self.client is not None else None

    async def close(self) -> None:
        self.broken = True
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 10)
            except (TimeoutError, Exception):
                self._task.cancel()
                with contextlib.suppress(BaseException):
                    await self._task


class Pool:
    """Up to `size` sessions to one upstream, leased one call at a time."""

    def __init__(self, factory: ClientFactory, *, size: int, connect_timeout_s: float,
                 on_open: Callable[[Session], Awaitable[None]] | None = None,
                 on_end: Callable[[Session], None] | None = None) -> None:
        self.factory = factory
        self.on_end = on_end  # a session's transport ended by itself (e.g. its child died)
        self.size = size
        self.connect_timeout_s = connect_timeout_s
        self.on_open = on_open  # e.g. list tools and compare them with the pins, once per new session
        self._idle: list[Session] = []
        self._all: set[Session] = set()
        self._free = asyncio.Condition()
        self._failures = 0
        self._retry_at = 0.0
        self._closed = False
        self.last_error: str | None = None

    def retry_in(self) -> float:
        """Seconds until the backoff lets a new session be opened (0: now)."""
        return max(0.0, self._retry_at - time.monotonic())

    @property
    def live(self) -> int:
        return sum(1 for s in self._all if not s.broken)

    @contextlib.asynccontextmanager
    async def lease(self, holder: Any, timeout_s: float) -> AsyncIterator[Session]:
        async with asyncio.timeout(timeout_s):
            session = await self._take()
        session.holder = holder
        try:
            yield session
        except BaseException:
            # A call that failed or was cut short may have left the session mid-exchange: never reuse it.
            await self.discard(session)
            raise
        finally:
            session.holder = None
        await self._give_back(session)

    async def _take(self) -> Session:
        async with self._free:
            while True:
                if self._closed:
                    raise SessionFailed("the upstream is stopped")
                while self._idle:
                    session = self._idle.pop()
                    if not session.broken:
                        return session
                    self._all.discard(session)
                self._all = {s for s in self._all if not s.broken}
                if len(self._all) < self.size:
                    break
                await self._free.wait()
        return await self._open()

    async def _open(self) -> Session:
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            raise SessionFailed(f"the upstream failed to start {self._failures} time(s) in a row "
                                f"({self.last_error}); next attempt in {wait:.1f}s")
        session = Session(self.factory, self.connect_timeout_s, self.on_end)
        self._all.add(session)
        try:
            await session.open()
            if self.on_open is not None:
                await self.on_open(session)
        except BaseException as e:
            self._all.discard(session)
            await session.close()
            self._failures += 1
            self._retry_at = time.monotonic() + min(BACKOFF_MAX_S, BACKOFF_START_S * 2 ** (self._failures - 1))
            self.last_error = describe(e)
            async with self._free:
                self._free.notify()
            if isinstance(e, SessionFailed):
                raise
            raise SessionFailed(self.last_error) from None
        self._failures = 0
        self._retry_at = 0.0
        return session

    async def _give_back(self, session: Session) -> None:
        async with self._free:
            if session.broken or self._closed:
                self._all.discard(session)
            else:
                self._idle.append(session)
            self._free.notify()
        if session.broken:
            await session.close()

    async def discard(self, session: Session) -> None:
        async with self._free:
            self._all.discard(session)
            self._free.notify()
        await session.close()

    async def close(self) -> None:
        self._closed = True
        sessions = list(self._all)
        self._all.clear()
        self._idle.clear()
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        async with self._free:
            self._free.notify_all()


def describe(error: BaseException | None) -> str:
    """An exception as one line for a person: the innermost of any exception group."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    if error is None:
        return "unknown error"
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:300] if text else type(error).__name__


__all__ = ["Pool", "Session", "SessionFailed", "describe", "watched"]
