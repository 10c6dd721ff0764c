"""Slicing: evaluate only the policies whose scope can match a request.

Invariant: a slice always CONTAINS every policy whose scope matches the request. It may
contain more (a `principal == X` policy when X is only an ancestor, an `is` filter not
checked): that is harmless, because Cedar checks the scope itself and a policy out of scope
contributes no reason and no error. So the decision, reasons and errors of a slice equal
those of the full set — tests/test_differential.py holds us to it.

Each policy is filed under (principal key, action key, resource key), a key being the uid
named by its `==`/`in` scope constraint or None when unconstrained (or `is`-only). A request
looks up every combination of {itself, its ancestors, None} per dimension. Ancestors come
from the same entity data handed to Cedar for that request, never from a separate copy.

Building a Cedar PolicySet costs ~12 us per policy, so slices are cached twice: request key
-> slice, and slice -> compiled PolicySet (identical slices share one handle).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import product
from typing import Any

import cedarpy

Key = str | None


def uid_key(entity: dict[str, str]) -> str:
    return f'{entity["type"]}::"{entity["id"]}"'


def scope_keys(constraint: dict[str, Any]) -> list[Key]:
    """Index keys of a principal/resource/action scope constraint in Cedar's JSON (EST) form."""
    op = constraint.get("op")
    if op == "All" or (op == "is" and "in" not in constraint):
        return [None]
    if op in ("==", "in") and "entity" in constraint:
        return [uid_key(constraint["entity"])]
    if op == "in" and "entities" in constraint:  # action in [A, B]
        return [uid_key(e) for e in constraint["entities"]] or [None]
    if op == "is" and "in" in constraint:
        return [uid_key(constraint["in"]["entity"])]
    raise ValueError(f"unsupported scope constraint {constraint!r} (templates and slots are not supported)")


class Slicer:
    """An immutable index over one list of policies plus its slice caches."""

    CACHE_MAX = 8192

    def __init__(self, ids: Sequence[str], ests: Sequence[str], scopes: Sequence[tuple[list[Key], ...]]) -> None:
        self._ids = list(ids)
        self._ests = list(ests)
        self._buckets: dict[tuple[Key, Key, Key], list[int]] = {}
        self.principal_keys: set[str] = set()
        self.resource_keys: set[str] = set()
        self.action_keys: set[str] = set()
        for i, (pks, aks, rks) in enumerate(scopes):
            for combo in product(pks, aks, rks):
                self._buckets.setdefault(combo, []).append(i)
            self.principal_keys.update(k for k in pks if k)
            self.action_keys.update(k for k in aks if k)
            self.resource_keys.update(k for k in rks if k)
        self._by_request: dict[tuple[Any, ...], tuple[tuple[int, ...], cedarpy.PolicySet]] = {}
        self._by_slice: dict[tuple[int, ...], cedarpy.PolicySet] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def request_key(self, p_keys: Iterable[str], a_keys: Iterable[str], r_keys: Iterable[str]) -> tuple[Any, ...]:
        """Reduce a request to the index keys it can hit: requests that differ only in keys no
        policy names share one slice."""
        return (
            frozenset(k for k in p_keys if k in self.principal_keys),
            frozenset(k for k in a_keys if k in self.action_keys),
            frozenset(k for k in r_keys if k in self.resource_keys),
        )

    def slice(self, key: tuple[Any, ...]) -> tuple[tuple[int, ...], cedarpy.PolicySet]:
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
        hit = (indices, self.policy_set(indices))
        if len(self._by_request) >= self.CACHE_MAX:
            self._by_request.pop(next(iter(self._by_request)))
        self._by_request[key] = hit
        return hit

    def policy_set(self, indices: tuple[int, ...]) -> cedarpy.PolicySet:
        ps = self._by_slice.get(indices)
        if ps is None:
            body = ",".join(f'"{self._ids[i]}":{self._ests[i]}' for i in indices)
            ps = cedarpy.PolicySet.from_json_str('{"staticPolicies":{' + body + '},"templates":{},"templateLinks":[]}')
            if len(self._by_slice) >= self.CACHE_MAX:
                self._by_slice.pop(next(iter(self._by_slice)))
            self._by_slice[indices] = ps
        return ps

    def full_set(self) -> cedarpy.PolicySet:
        """Every policy in one set: the reference the slices must agree with."""
        return self.policy_set(tuple(range(len(self._ids))))

    def warm(self, keys: Iterable[tuple[Any, ...]]) -> None:
        """Build the slices for these request keys ahead of use (e.g. before a bundle swap)."""
        for k in keys:
            self.slice(k)

    def hot_keys(self, n: int = 512) -> list[tuple[Any, ...]]:
        return list(self._by_request)[-n:]


__all__ = ["Slicer", "scope_keys", "uid_key"]
