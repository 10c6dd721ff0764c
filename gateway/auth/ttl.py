"""A bounded in-process map whose entries carry their own deadline. Not thread-safe: it lives on
one event loop, and every method is synchronous (no await between read and write)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """`get` returns a value only before its deadline; when full, the oldest entry goes first."""

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self._max = max_entries
        self._entries: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def get(self, key: K, now: float) -> V | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[1] <= now:
            del self._entries[key]
            return None
        return hit[0]

    def put(self, key: K, value: V, deadline: float) -> None:
        self._entries.pop(key, None)
        while len(self._entries) >= self._max:
            self._entries.popitem(last=False)
        self._entries[key] = (value, deadline)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


__all__ = ["TtlCache"]
