"""What the gateway vouches for about deviation exceptions that the repository cannot: which were
revoked (the append-only audit trail) and which key is the root of approvers.pub (pinned in the
vault on first sight). The engine gets them as data (engine.exceptions.Trust) at every load.

Invariants:
- Fail closed: when the audit trail or the vault cannot be read, or the gateway has not started
  (nor an outbox shipped what an earlier process left in it), the engine is told `unavailable` and
  no exception grants anything; the watcher reloads once they can be read again.
- A revocation this process made or saw (a revocation.json on disk) is remembered for its lifetime,
  beside the audit trail's rows, so one not yet shipped by an outbox still counts.
- The vault's approvers' key signs only once approvers.pub trusts it. On an approvers.pub with no
  key (and nothing pinned), it becomes the root, trusted on first use, and is pinned: never otherwise.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.exceptions import PUBLIC_KEYS, REVOCATION, Trust, public_key_line, read_chain, scan
from gateway.exception_lifecycle import LifecycleEvents, Refused, approval_key
from providers.sdk.vault import SecretNotFound

log = logging.getLogger("opsgate.exceptions")

PIN = "opsgate_exception_root_key"  # vault secret: approvers.pub's root line as first seen
READ_TIMEOUT_S = 30.0
DRAIN_S = 5.0  # at start-up, how long an outbox may take to ship what an earlier process left
EXPIRY_CHECK_S = 30.0
PAGE = 10_000
ROOT_HEADER = ("# Ed25519 public keys that sign exception filings and approvals (engine/exceptions/approvers.py).\n"
               "# The first key is the root, trusted on first use and pinned by each gateway; every other line is\n"
               "# `<key id> <key> <signer key id> <signature>`, added by `opsgate exception add-key`.\n")


async def revoked_ids(store: Any) -> set[str]:
    """Every exception an `exception.revoked` row names, oldest first, all pages."""
    ids: set[str] = set()
    after: str | None = None
    while True:
        rows = await store.query(provider="opsgate", tool="exception.revoked", limit=PAGE, after_id=after)
        for e in rows:
            ids.update(e.exception_ids)
        if len(rows) < PAGE:
            return ids
        after = rows[-1].id


async def pinned_root(vault: Any, root_dir: str | Path, *, pin: bool) -> str | None:
    """The root line this vault pinned; with `pin`, approvers.pub's current root is pinned when
    nothing is yet (trust on first sight). None: nothing pinned (nor anything to pin)."""
    try:
        return await vault.get(PIN)
    except SecretNotFound:
        root = read_chain(root_dir).root if pin else None
        if root is None:
            return None
        await vault.create(PIN, root)
        return await vault.get(PIN)


async def read_trust(root_dir: str | Path, store: Any, vault: Any, *, pin: bool = False,
                     also_revoked: Iterable[str] = ()) -> Trust:
    """Trust as the audit trail and the vault say now. Raises what they raise (callers that load
    exceptions turn that into `unavailable`)."""
    if store is None or vault is None:
        return Trust(unavailable="this gateway has no audit store or no vault to vouch for revocations and keys")
    revoked = await revoked_ids(store)
    root = await pinned_root(vault, root_dir, pin=pin)
    return Trust(revoked=frozenset(revoked | set(also_revoked)), root=root)


async def trusted_key(exception_id: str, root_dir: str | Path, vault: Any) -> str:
    """The vault's approvers' key, once approvers.pub trusts it (created in the vault if absent:
    call this only after the step's own checks passed). On a file with no key and nothing pinned
    it becomes the root and is pinned. Raises Refused (409) when the file does not trust it."""
    key = await approval_key(vault)
    line = public_key_line(key)
    chain = read_chain(root_dir, await pinned_root(vault, root_dir, pin=True))
    if chain.refused:
        raise Refused(exception_id, [chain.refused], 409)
    if chain.root is None:
        path = Path(root_dir) / PUBLIC_KEYS
        path.parent.mkdir(parents=True, exist_ok=True)
        head = "" if path.exists() and path.read_text().strip() else ROOT_HEADER
        with path.open("a") as f:
            f.write(head + line + "\n")
        await vault.create(PIN, line)
        log.warning("%s had no key: this vault's key %s is now its root (commit the file)", path, line.split()[0])
        return key
    if line.split()[0] not in chain.keys:
        raise Refused(exception_id, [
            f"this vault's signing key {line.split()[0]} is not trusted by {PUBLIC_KEYS}: an approver whose key is "
            f"trusted adds it with `opsgate exception add-key '{line}' --token-file ...`, then commit the file"], 409)
    return key


class TrustSource:
    """The engine's `exception_trust`: asked at every load, from any thread; reads on the serving loop."""

    def __init__(self, root_dir: str | Path | None, store: Any, vault: Any) -> None:
        self.root_dir = Path(root_dir) if root_dir is not None else None
        self.store = store
        self.vault = vault
        self._loop: asyncio.AbstractEventLoop | None = None
        self._seen_revoked: set[str] = set()
        self._earlier_events_shipped = not hasattr(store, "drain")

    def remember_revoked(self, exception_id: str) -> None:
        self._seen_revoked.add(exception_id)

    async def read(self, *, pin: bool = False) -> Trust:
        """Trust now (raises when the audit trail or the vault fails). Runs on the serving loop."""
        if self.root_dir is not None and self.root_dir.is_dir():
            self._seen_revoked |= {d.name for d in self.root_dir.iterdir() if (d / REVOCATION).exists()}
        if not self._earlier_events_shipped:
            self._earlier_events_shipped = await self.store.drain(DRAIN_S)
            if not self._earlier_events_shipped:
                return Trust(unavailable="the audit outbox has not yet shipped the events an earlier process left "
                                         "(revocations among them) to the audit store")
        return await read_trust(self.root_dir or ".", self.store, self.vault, pin=pin,
                                also_revoked=self._seen_revoked)

    async def vouch(self) -> Trust:
        """For a load: read and pin, or say why not (never raises: the load then grants nothing)."""
        try:
            return await self.read(pin=True)
        except Exception as e:  # any failure to read is a reason to grant nothing, never to grant
            log.warning("exceptions held back: the audit trail or the vault could not be read (%s)", type(e).__name__)
            return Trust(unavailable=f"the audit trail or the vault could not be read ({type(e).__name__})")

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def __call__(self) -> Trust:
        loop = self._loop
        if loop is None or loop.is_closed():
            return Trust(unavailable="the gateway has not started: exceptions wait until the audit trail is read")
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is loop:  # a load on the serving loop itself cannot wait for it
            return Trust(unavailable="a load on the serving loop cannot read the audit trail")
        future = asyncio.run_coroutine_threadsafe(self.vouch(), loop)
        try:
            return future.result(READ_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return Trust(unavailable=f"the audit trail did not answer within {READ_TIMEOUT_S:.0f} s")


def held_back(services: Any) -> bool:
    """Did the active bundle load without its exceptions because the gateway could not vouch?"""
    compiled = services.engine.bundle.exceptions
    return compiled is not None and compiled.unavailable is not None


async def _reload(services: Any) -> None:
    ok, issues = await asyncio.get_running_loop().run_in_executor(None, services.reload_here)
    if not ok:
        log.error("policy bundle refused while loading exceptions: %s", "; ".join(str(i) for i in issues))


async def exceptions_ready(services: Any) -> None:
    """At start-up, on the serving loop, before serving: bind the trust source, then load the
    exceptions the first load held back (it ran before the audit trail could be read)."""
    source: TrustSource | None = services.exception_trust
    if source is None:
        return
    source.bind(asyncio.get_running_loop())
    if held_back(services):
        await _reload(services)


async def watch_exceptions(services: Any) -> None:
    """Every EXPIRY_CHECK_S: record the expiries nobody recorded yet (the engine stops an exception
    at its expiry second without I/O; this writes the row), and reload when the last load held
    exceptions back because the audit trail could not be read."""
    source: TrustSource | None = services.exception_trust
    root = services.engine.exceptions_dir
    if source is None or root is None or services.audit is None:
        return
    events = LifecycleEvents(services.audit.store)
    while True:
        try:
            if held_back(services):
                await _reload(services)
            trust = await source.read()
            if trust.unavailable is None:
                await events.record_expiries(scan(root, trust), services.clock())
        except Exception as e:  # the next round tries again; serving never depends on this
            log.warning("exception housekeeping failed: %s", type(e).__name__)
        await asyncio.sleep(EXPIRY_CHECK_S)


__all__ = ["PIN", "TrustSource", "exceptions_ready", "pinned_root", "read_trust", "revoked_ids", "trusted_key",
           "watch_exceptions"]
