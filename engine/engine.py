"""The decision engine: one active bundle, `decide()`, and atomic reload.

Semantics on top of Cedar's, all of them toward deny:
- NoDecision (an invalid request, entities that break the schema) denies.
- A forbid whose condition errors counts as SATISFIED: Cedar skips erroring policies, which
  would let a broken forbid fail open. It is then among the reasons, and its error among the
  errors. An erroring permit simply grants nothing (Cedar's own behaviour).
- A policy id we cannot attribute an error to is treated like an erroring forbid.
- Tier evaluation that errors denies: without it we cannot know the limit.

`decide()` never raises because of a policy; it reads the active bundle once, so a reload
that swaps the bundle mid-call cannot mix two revisions into one decision.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cedarpy
import msgspec

from engine.allowlist import host_entities
from engine.bundle import Bundle, load_bundle, parse_limit
from engine.catalogue import project
from engine.index import Slicer, uid_key
from engine.model import BundleError, Decision, Issue, Request, Shadow, Tier

# Cedar's message for a policy that failed to evaluate. Anchored: other errors (a refused
# request) quote caller-supplied context, which may contain text shaped like this.
_ERRORED = re.compile(r"error while evaluating policy `([^`]*)`")
_ENCODE = msgspec.json.Encoder().encode
_ALLOW = cedarpy.Decision.Allow


def new_decision_id() -> str:
    """A UUIDv7 (time-ordered, so audit rows index well) as a string."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms << 80) | (0x7 << 76) | ((rand >> 64) & 0xFFF) << 64 | (0b10 << 62) | (rand & ((1 << 62) - 1))
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def cedar_datetime(now: datetime) -> dict[str, Any]:
    if now.tzinfo is None:
        raise ValueError("the engine's clock must be timezone-aware")
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
    return {"__extn": {"fn": "datetime", "arg": stamp}}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Verdict(msgspec.Struct, frozen=True):
    allowed: bool
    reasons: tuple[str, ...]
    errors: tuple[str, ...]


def verdict(result: cedarpy.AuthzResult, effect_of: Callable[[str], str | None]) -> Verdict:
    """Cedar's answer with erroring forbids counted as satisfied (see the module docstring)."""
    errors = tuple(result.diagnostics.errors)
    reasons = tuple(result.diagnostics.reasons)
    allowed = result.decision == _ALLOW
    if errors:
        failing = []
        for err in errors:
            m = _ERRORED.match(err)
            pid = m[1] if m else None
            if pid is None or effect_of(pid) != "permit":
                allowed = False
                if pid is not None:
                    failing.append(pid)
        if failing:
            forbids = reasons if result.decision != _ALLOW else ()
            reasons = tuple(dict.fromkeys((*forbids, *failing)))
    return Verdict(allowed, reasons, errors)


class _Resolved(msgspec.Struct, frozen=True):
    entities: Any  # cedarpy.Entities, or None when the request's entities are invalid
    principal_keys: frozenset[str]
    resource_keys: frozenset[str]
    error: str | None = None


class Engine:
    """Holds the active bundle; thread-safe; `decide()` is the only hot path."""

    ENTITY_CACHE_MAX = 4096

    def __init__(self, bundle: Bundle, *, clock: Callable[[], datetime] = utcnow,
                 extra_policies: Callable[[], Iterable[tuple[str, str]]] | None = None) -> None:
        self._bundle = bundle
        self._clock = clock
        self._extra = extra_policies or (lambda: ())
        self._resolved: dict[tuple[Any, ...], _Resolved] = {}
        self._reload_lock = threading.Lock()
        self.last_error: BundleError | None = None
        self.activated_at = utcnow()

    @classmethod
    def from_dir(cls, root: str | Path, **kw: Any) -> Engine:
        extra = kw.get("extra_policies")
        return cls(load_bundle(root, extra_policies=extra() if extra else ()), **kw)

    @property
    def bundle(self) -> Bundle:
        return self._bundle

    # -- reload ---------------------------------------------------------------------------------

    def reload(self, root: str | Path | None = None) -> tuple[bool, tuple[Issue, ...]]:
        """Load the bundle again (from `root` or the same directory) and swap it in atomically.

        On any problem the current bundle stays active and the problems are returned (and kept
        in `last_error` for status). The new bundle's hottest slices are built before the swap,
        so decisions do not pay for them afterwards.
        """
        with self._reload_lock:
            old = self._bundle
            try:
                new = load_bundle(root or old.root, extra_policies=self._extra())
            except BundleError as e:
                self.last_error = e
                return False, e.issues
            new.enforce.warm(old.enforce.hot_keys())
            new.tier_index.warm(old.tier_index.hot_keys())
            self._bundle = new
            self._resolved = {}
            self.last_error = None
            self.activated_at = utcnow()
            return True, ()

    def status(self) -> dict[str, Any]:
        s = self._bundle.status()
        s["activated_at"] = self.activated_at.isoformat()
        s["last_reload_error"] = [str(i) for i in self.last_error.issues] if self.last_error else None
        return s

    # -- deciding -------------------------------------------------------------------------------

    def decide(self, req: Request, *, now: datetime | None = None) -> Decision:
        start = time.perf_counter_ns()
        b = self._bundle
        ctx = dict(req.context)
        ctx["now"] = cedar_datetime(now or self._clock())
        if "args" in ctx:
            types = b.args_types.get(req.action)
            if types is not None:
                ctx["args"] = project(ctx["args"], types)
        resolved = self._resolve(b, req)
        if resolved.entities is None:
            return self._decision(b, start, Verdict(False, (), (resolved.error or "invalid entities",)))
        action_keys = b.ancestors_of_action(req.action)
        # Encoded once here with msgspec: cedarpy would re-encode a dict with stdlib json on every
        # evaluation (enforce, dryrun, tiers), and it accepts the JSON text as is.
        request = {"principal": req.principal.as_cedar(), "action": {"type": "Ops::Action", "id": req.action},
                   "resource": req.resource.as_cedar(), "context": _ENCODE(ctx).decode()}
        keys = (resolved.principal_keys, action_keys, resolved.resource_keys)
        effect_of = b.effect_of
        v = self._evaluate(b.enforce, keys, request, resolved.entities, b, effect_of)

        shadow = None
        if b.dryrun_ids:
            _, dry_ps = b.everything.slice(b.everything.request_key(*keys))
            sv = verdict(cedarpy.is_authorized(request, dry_ps, resolved.entities, b.schema), effect_of)
            if sv.allowed != v.allowed:
                shadow = Shadow(sv.allowed, sv.reasons)

        tiers: tuple[Tier, ...] = ()
        if v.allowed and len(b.tier_index):
            tier_key = b.tier_index.request_key(*keys)
            indices, tier_ps = b.tier_index.slice(tier_key)
            if indices:
                tv = verdict(cedarpy.is_authorized(request, tier_ps, resolved.entities, b.schema), effect_of)
                if tv.errors:
                    v = Verdict(False, v.reasons, (*v.errors, *(f"rate tier: {e}" for e in tv.errors)))
                elif tv.allowed:
                    tiers = tuple(_tier(b, pid, req.action) for pid in sorted(tv.reasons))
        return self._decision(b, start, v, shadow, tiers)

    @staticmethod
    def _evaluate(slicer: Slicer, keys: tuple[frozenset[str], ...], request: dict[str, Any], entities: Any,
                  b: Bundle, effect_of: Callable[[str], str | None]) -> Verdict:
        _, ps = slicer.slice(slicer.request_key(*keys))
        return verdict(cedarpy.is_authorized(request, ps, entities, b.schema), effect_of)

    def _decision(self, b: Bundle, start: int, v: Verdict, shadow: Shadow | None = None,
                  tiers: tuple[Tier, ...] = ()) -> Decision:
        applied = tuple(r for r in v.reasons if r in b.by_id and "exception" in b.by_id[r].annotations)
        return Decision(
            decision_id=new_decision_id(), allowed=v.allowed, reasons=v.reasons, errors=v.errors,
            bundle_revision=b.revision, mode="dryrun" if shadow else "enforce", shadow=shadow, tiers=tiers,
            exceptions_applied=tuple(b.by_id[r].annotations["exception"] for r in applied),
            latency_us=(time.perf_counter_ns() - start) / 1000)

    def _resolve(self, b: Bundle, req: Request) -> _Resolved:
        """The Cedar entities for a request and the ancestor keys of its principal and resource,
        both from the same data. Cached per bundle by what the request contributes."""
        is_host = req.resource.type == "Ops::Host"
        key = (b.revision, _ENCODE(req.entities) if req.entities else b"", req.principal, req.resource)
        hit = self._resolved.get(key)
        if hit is not None:
            return hit
        extra = [e.as_cedar() for e in req.entities]
        if is_host and not any(e.uid == req.resource for e in req.entities):
            extra += host_entities(req.resource.id)
        parents = dict(b.static_parents)
        for e in extra:
            k = f'{e["uid"]["type"]}::"{e["uid"]["id"]}"'
            parents[k] = [f'{p["type"]}::"{p["id"]}"' for p in e["parents"]]
        try:
            if extra:
                ents = cedarpy.Entities.from_json_str(b.static_entities_json[:-1] + ("," if b.static_entities
                                                      else "") + _ENCODE(extra).decode()[1:], b.schema)
            else:
                ents = b.static_entities_handle
            # Keys as the index and `parents` spell them (uid_key, unescaped). str(Uid) escapes
            # '"', so a uid with a quote would miss its own ancestors and the slice would lose
            # every policy filed under them, forbids included.
            resolved = _Resolved(ents, _with_ancestors(uid_key(req.principal.as_cedar()), parents, b),
                                 _with_ancestors(uid_key(req.resource.as_cedar()), parents, b))
        except ValueError as e:
            resolved = _Resolved(None, frozenset(), frozenset(), f"invalid request entities: {e}")
        if len(self._resolved) >= self.ENTITY_CACHE_MAX:
            self._resolved.pop(next(iter(self._resolved)))
        self._resolved[key] = resolved
        return resolved




def _with_ancestors(key: str, parents: dict[str, list[str]], b: Bundle) -> frozenset[str]:
    seen = {key}
    stack = list(parents.get(key, ()))
    while stack:
        k = stack.pop()
        if k in seen:
            continue
        seen.add(k)
        static = b.static_ancestors.get(k)
        if static is not None and k not in parents:
            seen.update(static)
        else:
            stack.extend(parents.get(k, ()))
    return frozenset(seen)


def _tier(b: Bundle, pid: str, action: str) -> Tier:
    ann = b.by_id[pid].annotations
    limit, period = parse_limit(ann["limit"]) or (0, 1)
    return Tier(policy_id=pid, bucket=ann["bucket"].replace("{tool}", action), limit=limit, period_s=period)


__all__ = ["Engine", "Verdict", "cedar_datetime", "new_decision_id", "utcnow", "verdict"]
