"""Replay: recorded decisions decided again under a candidate bundle, and what would flip.

Each audit row that recorded a decision (allow or deny) and kept its request (engine/impact/
recorded.py) is decided again by the candidate engine: same principal, entities (so the role as it
was), action, resource, context, and the `now` it was decided at. Its outcome is compared with the
recorded one; flips are counted by tool, role and the candidate's deciding policies, with example
event ids.

Invariants:
- A replayed verdict is exactly `Engine.decide` of the candidate on the request as decided (the
  differential test holds us to it), never an estimate.
- Where the audit trail redacted part of the context, the row is replayed only if no policy of the
  candidate that can apply to its action reads that part (engine/memo.py `reads_of`, and the
  action's declared argument types: an argument the schema does not declare is dropped before
  Cedar sees it). A redacted value nobody reads is put back as a value of the type it had (a
  Cedar answer depends on the values policies read and on the context's types, nothing else);
  anything else is reported as not replayable exactly, with the reason, never guessed.
- Pure and incremental: rows in (any iterable, batch after batch), a report out; no I/O. Parts of
  a window replayed apart (by worker processes) add up to the report of the whole (`absorb`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol

import msgspec

from engine.engine import Engine
from engine.impact.recorded import Kept, Redaction, Unreadable, read_kept
from engine.memo import reads_of
from engine.model import Decision

BEFORE_REQUESTS = "recorded before requests were kept"
ALLOW_TO_DENY, DENY_TO_ALLOW = "allow-to-deny", "deny-to-allow"
_PLACEHOLDER = {"String": None, "Long": 0, "Bool": False}  # None: keep the redacted string, a String too


class StoredRow(Protocol):
    """What replay reads of an audit row (otel.events RawEvent has these)."""

    @property
    def id(self) -> str: ...

    @property
    def provider(self) -> str: ...

    @property
    def tool(self) -> str: ...

    @property
    def decision(self) -> str: ...

    @property
    def payload(self) -> bytes | str | None: ...


class Flip(msgspec.Struct, frozen=True):
    direction: str  # allow-to-deny | deny-to-allow
    tool: str
    role: str
    policies: tuple[str, ...]  # the candidate's deciding policy ids (empty: nothing permits it)
    count: int
    examples: tuple[str, ...]  # event ids


class Unreplayable(msgspec.Struct, frozen=True):
    reason: str
    count: int
    examples: tuple[str, ...]


class ReplayReport(msgspec.Struct, frozen=True):
    bundle_revision: str
    rows: int  # audit rows read
    decisions: int  # of those, rows that recorded a decision
    replayed: int
    unchanged: int
    allow_to_deny: int
    deny_to_allow: int
    not_replayable: int
    no_decision: int  # rows that recorded no decision (invalid input, lifecycle rows, ...)
    flips: tuple[Flip, ...]
    unreplayable: tuple[Unreplayable, ...]
    since: str | None = None
    until: str | None = None
    seconds: float | None = None


class Verdict(msgspec.Struct, frozen=True):
    """One row's replay: the candidate's decision, or why there is none."""

    decision: Decision | None
    reason: str | None = None


def who(kept: Kept) -> str:
    """The role a row is counted under: the caller's role as it was, a provider, or no role."""
    if kept.role:
        return kept.role
    if kept.principal.type == "Ops::Provider":
        return f"provider:{kept.principal.id}"
    return "(no role)"


def _overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _declared(types: Any, path: tuple[str, ...]) -> bool:
    """Whether `context.<path>` survives the engine's projection of arguments (engine.catalogue
    `project`): an argument, or part of one, that the action's type leaves out never reaches Cedar."""
    if not path or path[0] != "args" or types is None:
        return True
    t = types
    for name in path[1:]:
        if isinstance(t, tuple) and t[0] == "Record":
            field = t[1].get(name)
            if field is None:
                return False
            t = field[0]
        elif isinstance(t, tuple) and t[0] == "Set":
            t = t[1]
        else:
            return True
    return True


def _put(context: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """`context` with `value` at `path` (copied along the path only)."""
    out = dict(context)
    node: Any = out
    for name in path[:-1]:
        child = node[int(name)] if isinstance(node, list) else node[name]
        child = list(child) if isinstance(child, list) else dict(child)
        if isinstance(node, list):
            node[int(name)] = child
        else:
            node[name] = child
        node = child
    if isinstance(node, list):
        node[int(path[-1])] = value
    else:
        node[path[-1]] = value
    return out


class Replayer:
    """Decides recorded rows again under one candidate engine and keeps the tally."""

    CALLERS = 1 << 17  # entries the caller-keyed caches may hold during a replay

    def __init__(self, engine: Engine, *, examples: int = 3) -> None:
        self.engine = engine
        # A window of traffic holds every caller of a week, not the few a gateway serves at once: the
        # caches that grow with callers (resolved entities per caller and resource, slices per
        # caller's ancestry and action) keep all of them, or each row would evict another's.
        engine.ENTITY_CACHE_MAX = max(engine.ENTITY_CACHE_MAX, self.CALLERS)
        slicer = engine.bundle.enforce
        slicer.CACHE_MAX = max(slicer.CACHE_MAX, self.CALLERS)
        self.examples = examples
        self._readers: dict[str, list[tuple[str, frozenset[tuple[str, ...]]]]] = {}
        self._fixes: dict[tuple[str, tuple[Redaction, ...]], tuple[str | None, tuple[tuple[Any, ...], ...]]] = {}
        self._flips: dict[tuple[str, str, str, tuple[str, ...]], list[Any]] = {}
        self._unreplayable: dict[str, list[Any]] = {}
        self.counts: Counter[str] = Counter()

    # -- one row ------------------------------------------------------------------------------

    def replay(self, kept: Kept) -> Verdict:
        """The candidate's decision on a kept request (redactions put back where nobody reads them),
        or why it cannot be decided exactly."""
        if kept.truncated:
            return Verdict(None, "the request was over the audit trail's size cap (not kept whole)")
        context = kept.context
        if kept.redacted:
            why, fixes = self._fix(kept.action, kept.redacted)
            if why is not None:
                return Verdict(None, why)
            for path, value in fixes:
                context = _put(context, path, value)
        return Verdict(self.engine.decide(kept.request(context), now=kept.now))

    def _fix(self, action: str, redacted: tuple[Redaction, ...]) -> tuple[str | None, tuple[tuple[Any, ...], ...]]:
        """(why not replayable, or None; the values to put back) for these redactions of `action`."""
        hit = self._fixes.get((action, redacted))
        if hit is not None:
            return hit
        types = self.engine.bundle.args_types.get(action)
        fixes: list[tuple[Any, ...]] = []
        why: str | None = None
        for r in redacted:
            if not _declared(types, r.path):
                continue  # dropped before Cedar sees it
            reader = next((pid for pid, reads in self._policies_reading(action)
                           if any(_overlaps(r.path, p) for p in reads)), None)
            shown = ".".join(("context", *r.path))
            if reader is not None:
                why = f"policy {reader} reads {shown}, which the audit trail redacted"
                break
            if r.type not in _PLACEHOLDER:
                why = f"the audit trail redacted {shown} whole (a {r.type.lower()} value; its shape is lost)"
                break
            if _PLACEHOLDER[r.type] is not None:
                fixes.append((r.path, _PLACEHOLDER[r.type]))
        hit = (why, tuple(fixes))
        self._fixes[(action, redacted)] = hit
        return hit

    def _policies_reading(self, action: str) -> list[tuple[str, frozenset[tuple[str, ...]]]]:
        """The candidate's policies that can apply to `action` (by action scope) and read the context."""
        found = self._readers.get(action)
        if found is None:
            b = self.engine.bundle
            keys = b.ancestors_of_action(action)
            found = [(r.id, reads) for r in (*b.policies, *b.tiers)
                     if any(k is None or k in keys for k in r.scope[1]) and (reads := reads_of(r.est))]
            self._readers[action] = found
        return found

    # -- many rows ----------------------------------------------------------------------------

    def feed(self, rows: Iterable[StoredRow]) -> None:
        counts = self.counts
        for row in rows:
            counts["rows"] += 1
            recorded = row.decision
            if recorded != "allow" and recorded != "deny":
                counts["no_decision"] += 1
                continue
            counts["decisions"] += 1
            try:
                kept = read_kept(row.payload)
            except Unreadable as e:
                self._not_replayable(row.id, str(e))
                continue
            if kept is None:
                self._not_replayable(row.id, BEFORE_REQUESTS)
                continue
            verdict = self.replay(kept)
            if verdict.decision is None:
                self._not_replayable(row.id, verdict.reason or "not replayable")
                continue
            counts["replayed"] += 1
            allowed = verdict.decision.allowed
            if allowed == (recorded == "allow"):
                counts["unchanged"] += 1
                continue
            direction = DENY_TO_ALLOW if allowed else ALLOW_TO_DENY
            counts[direction] += 1
            key = (direction, f"{row.provider}.{row.tool}", who(kept), tuple(sorted(verdict.decision.reasons)))
            self._tally(self._flips, key, row.id)

    def _not_replayable(self, event_id: str, reason: str) -> None:
        self.counts["not_replayable"] += 1
        self._tally(self._unreplayable, reason, event_id)

    def _tally(self, table: dict[Any, list[Any]], key: Any, event_id: str) -> None:
        entry = table.get(key)
        if entry is None:
            table[key] = entry = [0, []]
        entry[0] += 1
        if len(entry[1]) < self.examples:
            entry[1].append(event_id)

    def absorb(self, other: ReplayReport) -> None:
        """Add the tally of another part of the window (a worker's report), as if its rows had been
        fed here after those already fed: counts add up, example ids keep the earliest."""
        c = self.counts
        for name in ("rows", "decisions", "replayed", "unchanged", "not_replayable", "no_decision"):
            c[name] += getattr(other, name)
        c[ALLOW_TO_DENY] += other.allow_to_deny
        c[DENY_TO_ALLOW] += other.deny_to_allow
        for f in other.flips:
            self._group(self._flips, (f.direction, f.tool, f.role, f.policies), f.count, f.examples)
        for u in other.unreplayable:
            self._group(self._unreplayable, u.reason, u.count, u.examples)

    def _group(self, table: dict[Any, list[Any]], key: Any, n: int, examples: tuple[str, ...]) -> None:
        entry = table.setdefault(key, [0, []])
        entry[0] += n
        entry[1] += examples[:max(0, self.examples - len(entry[1]))]

    def report(self) -> ReplayReport:
        c = self.counts
        flips = sorted((Flip(d, tool, role, pols, n, tuple(ex)) for (d, tool, role, pols), (n, ex)
                        in self._flips.items()), key=lambda f: (f.direction != DENY_TO_ALLOW, -f.count, f.tool,
                                                                f.role, f.policies))
        unrep = sorted((Unreplayable(reason, n, tuple(ex)) for reason, (n, ex) in self._unreplayable.items()),
                       key=lambda u: (-u.count, u.reason))
        return ReplayReport(
            bundle_revision=self.engine.bundle.revision, rows=c["rows"], decisions=c["decisions"],
            replayed=c["replayed"], unchanged=c["unchanged"], allow_to_deny=c[ALLOW_TO_DENY],
            deny_to_allow=c[DENY_TO_ALLOW], not_replayable=c["not_replayable"], no_decision=c["no_decision"],
            flips=tuple(flips), unreplayable=tuple(unrep))


__all__ = ["ALLOW_TO_DENY", "BEFORE_REQUESTS", "DENY_TO_ALLOW", "Flip", "ReplayReport", "Replayer", "StoredRow",
           "Unreplayable", "Verdict", "who"]
