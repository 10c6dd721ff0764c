"""Slicing: evaluate only the policies whose scope can match a request.

Invariant: a slice always CONTAINS every policy whose scope matches the request. It may
contain more (a `principal == X` policy when X is only an ancestor, an `is` filter not
checked): that is harmless, because Cedar checks the scope itself and a policy out of scope
contributes no reason and no error. So the decision, reasons and errors of a slice equal
those of the full set — tests/test_differential.py holds us to it.

Each policy is filed under (principal key, action key, resource key), a key saying how its
scope names an entity: ("eq", uid), ("in", uid), ("is", type), or None when unconstrained. A
request looks up every combination of its own keys per dimension (request_keys: itself by eq,
itself and its ancestors by in, its type by is, and None). Ancestors come from the same
entity data handed to Cedar for that request, never from a separate copy.

Within a scope slice, policies whose guard (engine/guards.py) is certainly false for the
request's context drop out too: Cedar's cost grows with every policy it evaluates, and most
policies open with such tests on their arguments. The slice then depends on the few context
values the guards look at, so each scope slice keeps its own small cache by that signature.

Building a Cedar PolicySet costs ~12 us per policy, so slices are cached twice: request key
-> slice (per bundle), and slice content -> compiled PolicySet (PolicySets, shared across
bundles, so identical slices share one handle even across reloads).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import cedarpy

from engine.guards import Guard, Signer, excluded, signature_names
from engine.memo import AnswerMemo, Path, memo_for

Key = tuple[str, str] | None


def uid_key(entity: dict[str, str]) -> str:
    return f'{entity["type"]}::"{entity["id"]}"'


def scope_keys(constraint: dict[str, Any]) -> list[Key]:
    """Index keys of a principal/resource/action scope constraint in Cedar's JSON (EST) form:
    ("eq", uid) for `== uid`, ("in", uid) for `in uid`, ("is", type) for `is type`, None when
    unconstrained. `is T in X` is filed under ("in", X) alone (a superset: the type is Cedar's)."""
    op = constraint.get("op")
    if op == "All":
        return [None]
    if op == "==" and "entity" in constraint:
        return [("eq", uid_key(constraint["entity"]))]
    if op == "in" and "entity" in constraint:
        return [("in", uid_key(constraint["entity"]))]
    if op == "in" and "entities" in constraint:  # action in [A, B]
        return [("in", uid_key(e)) for e in constraint["entities"]] or [None]
    if op == "is":
        if "in" in constraint:
            return [("in", uid_key(constraint["in"]["entity"]))]
        return [("is", constraint["entity_type"])]
    raise ValueError(f"unsupported scope constraint {constraint!r} (templates and slots are not supported)")


def request_keys(uid: str, entity_type: str, ancestors: Iterable[str]) -> frozenset[Key]:
    """Every index key a request's principal (or action, or resource) can hit: itself by `==`,
    itself and each ancestor by `in`, its type by `is`."""
    return frozenset((("eq", uid), ("is", entity_type), ("in", uid), *(("in", a) for a in ancestors)))


def policy_set_json(fragments: Iterable[str]) -> str:
    """Cedar's JSON policy-set document for '"<id>":<policy JSON>' fragments."""
    return '{"staticPolicies":{' + ",".join(fragments) + '},"templates":{},"templateLinks":[]}'


class PolicySets:
    """Compiled PolicySets by content, shared by every bundle an engine loads.

    Keyed by the exact JSON of their policies (ids included), so a slice whose policies did not
    change across a reload reuses its handle: the reload neither rebuilds it nor frees it (freeing
    a handle costs ~0.3 ms of held GIL, thousands of them at a swap would stall decisions).
    Bounded; the oldest entries go first.
    """

    def __init__(self, max_entries: int = 16384) -> None:
        self._sets: dict[tuple[str, ...], cedarpy.PolicySet] = {}
        self._max = max_entries

    def get(self, fragments: tuple[str, ...], *, release_gil: bool = False) -> cedarpy.PolicySet:
        ps = self._sets.get(fragments)
        if ps is None:
            ps = cedarpy.PolicySet.from_json_str(policy_set_json(fragments), release_gil=release_gil)
            if len(self._sets) >= self._max:
                self._sets.pop(next(iter(self._sets)))
            self._sets[fragments] = ps
        return ps

    def __len__(self) -> int:
        return len(self._sets)


Slice = tuple[tuple[int, ...], cedarpy.PolicySet]
# What a request evaluates: the slice, and the memo of its answers (None: not memoisable).
Sliced = tuple[tuple[int, ...], cedarpy.PolicySet, AnswerMemo | None]


@dataclass
class _Scoped:
    """A scope slice for one action, and what its policies' argument guards look at."""

    indices: tuple[int, ...]
    ps: cedarpy.PolicySet
    memo: AnswerMemo | None
    signer: Signer | None = None  # the context attributes its guards read, as a cache key
    by_signature: dict[tuple[Any, ...], Sliced] = field(default_factory=dict)


class Slicer:
    """An immutable index over one list of policies plus its request -> slice cache."""

    CACHE_MAX = 8192
    SIGNATURES_MAX = 512  # argument signatures remembered per scope slice

    def __init__(self, fragments: Sequence[str], scopes: Sequence[tuple[Sequence[Key], ...]],
                 sets: PolicySets | None = None, guards: Sequence[Guard] | None = None,
                 reads: Sequence[frozenset[Path]] | None = None) -> None:
        self._fragments = list(fragments)  # '"<id>":<policy JSON>', the unit a PolicySet is built from
        self._guards: list[Guard] = list(guards) if guards is not None else [None] * len(self._fragments)
        # The context paths each policy reads (engine/memo.py); unknown: all of it, never memoised.
        self._reads: list[frozenset[Path]] = (list(reads) if reads is not None
                                              else [frozenset({()})] * len(self._fragments))
        if len(self._guards) != len(self._fragments) or len(self._reads) != len(self._fragments):
            raise ValueError("one guard and one read set per policy")
        self._sets = sets if sets is not None else PolicySets()
        self._buckets: dict[tuple[Key, Key, Key], list[int]] = {}
        self.principal_keys: set[Key] = set()
        self.resource_keys: set[Key] = set()
        self.action_keys: set[Key] = set()
        for i, (pks, aks, rks) in enumerate(scopes):
            for combo in product(pks, aks, rks):
                self._buckets.setdefault(combo, []).append(i)
            self.principal_keys.update(k for k in pks if k)
            self.action_keys.update(k for k in aks if k)
            self.resource_keys.update(k for k in rks if k)
        self._by_request: dict[tuple[Any, ...], tuple[tuple[int, ...], cedarpy.PolicySet]] = {}
        self._by_ancestry: dict[tuple[frozenset[Key], ...], _Scoped] = {}
        self._memos: dict[tuple[int, ...], AnswerMemo | None] = {}
        self._answers: dict[Any, Any] = {}  # every slice's memoised answers, bounded as a whole

    def __len__(self) -> int:
        return len(self._fragments)

    def request_key(self, p_keys: Iterable[Key], a_keys: Iterable[Key], r_keys: Iterable[Key]) -> tuple[Any, ...]:
        """Reduce a request to the index keys it can hit: requests that differ only in keys no
        policy names share one slice."""
        return (
            frozenset(k for k in p_keys if k in self.principal_keys),
            frozenset(k for k in a_keys if k in self.action_keys),
            frozenset(k for k in r_keys if k in self.resource_keys),
        )

    def slice_for(self, p_keys: frozenset[Key], a_keys: frozenset[Key], r_keys: frozenset[Key],
                  context: Mapping[str, Any] | None = None, fields: Mapping[str, Any] | None = None) -> Sliced:
        """The policies Cedar must see for a request, and the memo of their answers (engine/memo.py):
        its scope slice (`slice(request_key(...))`, remembered by the ancestry sets themselves: the
        engine hands in the same cached frozensets call after call, whose hashes Python keeps, so a
        hit costs one dict lookup), less the policies whose guard (engine/guards.py) is certainly
        false for the request's context.

        `context` is the request's context as Cedar gets it (args projected) and `fields` the
        action's declared arguments; the action is fixed by `a_keys` (it holds the action's own
        key), so one scope slice always sees one action's fields."""
        ancestry = (p_keys, a_keys, r_keys)
        scoped = self._by_ancestry.get(ancestry)
        if scoped is None:
            indices, ps = self.slice(self.request_key(p_keys, a_keys, r_keys))
            names = signature_names([self._guards[i] for i in indices])
            scoped = _Scoped(indices, ps, self._memo(indices), Signer(names) if names else None)
            if len(self._by_ancestry) >= self.CACHE_MAX:
                self._by_ancestry.pop(next(iter(self._by_ancestry)))
            self._by_ancestry[ancestry] = scoped
        if scoped.signer is None:
            return scoped.indices, scoped.ps, scoped.memo
        ctx = context or {}
        sig = scoped.signer(ctx)
        hit = scoped.by_signature.get(sig)
        if hit is None:
            declared = fields or {}
            kept = tuple(i for i in scoped.indices if not excluded(self._guards[i], ctx, declared))
            hit = (kept, self._sets.get(tuple(self._fragments[i] for i in kept)), self._memo(kept))
            if len(scoped.by_signature) >= self.SIGNATURES_MAX:
                scoped.by_signature.pop(next(iter(scoped.by_signature)))
            scoped.by_signature[sig] = hit
        return hit

    def _memo(self, indices: tuple[int, ...]) -> AnswerMemo | None:
        """One memo per distinct slice (whoever's requests it serves), all sharing this bundle's
        bounded answers (engine/memo.py)."""
        if indices not in self._memos:
            if len(self._memos) >= self.CACHE_MAX:
                self._memos.pop(next(iter(self._memos)))
            self._memos[indices] = memo_for(frozenset().union(*(self._reads[i] for i in indices)),
                                            self._answers, indices)
        return self._memos[indices]

    def slice(self, key: tuple[Any, ...], *, release_gil: bool = False) -> Slice:
        hit = self._by_request.get(key)
        if hit is not None:
            return hit
        p, a, r = key
        members: set[int] = set()
        buckets = self._buckets
        for combo in product((None, *p), (None, *a), (None, *r)):
            found = buckets.get(combo)
            if found:
                members.update(found)
        indices = tuple(sorted(members))
        hit = (indices, self._sets.get(tuple(self._fragments[i] for i in indices), release_gil=release_gil))
        if len(self._by_request) >= self.CACHE_MAX:
            self._by_request.pop(next(iter(self._by_request)))
        self._by_request[key] = hit
        return hit

    def warm(self, keys: Iterable[tuple[Any, ...]]) -> None:
        """Build the slices for these request keys ahead of use (before a bundle swap); Cedar may
        run on another thread meanwhile."""
        for k in keys:
            self.slice(k, release_gil=True)

    def hot_keys(self, n: int = CACHE_MAX) -> list[tuple[Any, ...]]:
        return list(self._by_request)[-n:]


__all__ = ["Key", "PolicySets", "Slice", "Sliced", "Slicer", "policy_set_json", "request_keys", "scope_keys", "uid_key"]
