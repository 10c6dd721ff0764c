"""The answer memo: Cedar's answer for a slice, remembered by exactly what its policies can see.

A Cedar answer is a pure function of (policy set, schema, entities, request). For one slice of
one bundle the policy set and schema are fixed; the entities are fixed by what the request
contributes (the engine's entity key); so what remains is the request's context, and of the
context a policy can only observe:

- the values at the paths its conditions read (`context.args.repo`, `context.port`), and
- the context's *shape*: which attributes are present (`has`) and each value's Cedar type,
  which also decides whether the request passes schema validation at all.

So the memo key is the request's entity key, its action, and a skeleton of its context: the
actual value at every path some policy of the slice reads, a type token everywhere else (keys
kept, so presence is exact). Two requests with equal keys get the same answer from Cedar, which
is why answering the second from the memo is exact, not an approximation; the calls that vary only
in what no policy reads (an echo message, a search string no rule looks at) cost one Cedar call
between them.

Bounded: one dict of answers per bundle, shared by all its slices, capped as a whole, so neither
many users nor many values of a read argument can grow it without limit.

What is never memoised:
- a slice with any policy that reads `context.now` or the whole `context`: its answer changes
  with the clock (deviation exceptions expire to the second);
- an answer with errors: a refused request's error text quotes the whole context, and an
  erroring policy is rare and worth evaluating every time.

Type tokens keep Cedar's distinctions that Python blurs: `True == 1` in Python, not in Cedar;
an int outside Cedar's 64-bit Long is kept as its value (Cedar refuses it; such answers carry
errors and are not stored anyway). tests/test_memo.py holds all of this against the real engine.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Hashable, Mapping
from typing import Any

import msgspec

_ENCODE = msgspec.json.Encoder().encode
_CONTEXT = {"Var": "context"}
_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1

Path = tuple[str, ...]
# A trie of read paths: name -> sub-trie; READ_ALL below a name means its whole value is read.
Trie = dict[str, Any]
READ_ALL: Trie = {}


def _chain(expr: Any) -> Path | None:
    """`context.a.b` as ("a", "b"); `context` itself as (); None for anything else."""
    if expr == _CONTEXT:
        return ()
    if isinstance(expr, dict) and len(expr) == 1 and "." in expr:
        body = expr["."]
        inner = _chain(body.get("left")) if isinstance(body, dict) else None
        attr = body.get("attr") if isinstance(body, dict) else None
        if inner is not None and isinstance(attr, str):
            return (*inner, attr)
    return None


def _walk(expr: Any, out: set[Path]) -> None:
    path = _chain(expr)
    if path is not None:
        out.add(path)  # the value at `path` is read (a prefix of a longer chain is not)
        return
    if isinstance(expr, dict):
        has = expr.get("has") if len(expr) == 1 else None
        if isinstance(has, dict) and _chain(has.get("left")) is not None:
            return  # `context.x has a` tests presence only, which the skeleton keeps for every key
        for value in expr.values():
            _walk(value, out)
    elif isinstance(expr, list):
        for value in expr:
            _walk(value, out)


def reads_of(est: str | Mapping[str, Any]) -> frozenset[Path]:
    """The context paths a policy's conditions read the value of, from its JSON (EST) form.
    Conservative: any mention of `context` outside a `.`-chain or a `has` test reads all of it ()."""
    policy = json.loads(est) if isinstance(est, str) else est
    out: set[Path] = set()
    for cond in policy.get("conditions") or []:
        _walk(cond.get("body"), out)
    return frozenset(out)


def trie_of(paths: frozenset[Path]) -> Trie | None:
    """The trie for a slice's read paths; None when the slice cannot be memoised (it reads the
    clock or the whole context)."""
    if any(not p or p[0] == "now" for p in paths):
        return None
    root: Trie = {}
    for path in sorted(paths, key=len):  # shorter first: a read prefix swallows longer paths
        node = root
        for i, name in enumerate(path):
            if node is READ_ALL:
                break
            if i == len(path) - 1:
                node[name] = READ_ALL
            else:
                node = node.setdefault(name, {})
    return root


def _shape(value: Any) -> Hashable:
    """A value's Cedar type, with record keys and set elements (nothing read below here)."""
    kind = type(value)
    if kind is str:
        return str
    if kind is bool:
        return bool
    if kind is int:
        return int if _LONG_MIN <= value <= _LONG_MAX else ("long?", value)
    if kind is dict:
        return tuple((k, _shape(v)) for k, v in value.items())
    if kind is list:
        return ("set", tuple(_shape(v) for v in value))
    return (kind, _ENCODE(value) if kind not in (float, type(None)) else value)


def skeleton(value: Any, trie: Trie) -> Hashable:
    if trie is READ_ALL:
        return (type(value), _ENCODE(value))  # the type: `true` and `1` must not meet
    if type(value) is dict:
        return tuple((k, skeleton(v, trie[k]) if k in trie else _shape(v)) for k, v in value.items())
    return _shape(value)


class AnswerMemo:
    """Cedar's answers for one slice of one bundle (a bundle is immutable: a reload builds new
    slices and so new memos). The answers live in one dict per bundle (`answers`), shared by all
    its slices and bounded as a whole (MAX, the oldest going first), so many users and many
    argument values cannot grow it without limit; a slice's own entries are told apart by its
    policies (`indices`)."""

    MAX = 65536
    __slots__ = ("_answers", "_indices", "_trie")

    def __init__(self, trie: Trie, answers: dict[Hashable, Any], indices: tuple[int, ...]) -> None:
        self._trie = trie
        self._answers = answers
        self._indices = indices

    def key(self, entity_key: Hashable, action: str, ctx: Mapping[str, Any]) -> Hashable:
        trie = self._trie
        shape = tuple((k, skeleton(v, trie[k]) if k in trie else _shape(v))
                      for k, v in ctx.items() if k != "now")
        return (self._indices, entity_key, action, shape)

    def get(self, key: Hashable) -> Any:
        return self._answers.get(key)

    def put(self, key: Hashable, answer: tuple[str, tuple[str, ...], tuple[str, ...]]) -> None:
        if answer[2] or answer[0] == "NoDecision":
            return  # errors quote the request; see the module docstring
        answers = self._answers
        if len(answers) >= self.MAX:
            with contextlib.suppress(RuntimeError, KeyError, StopIteration):  # another thread got there
                answers.pop(next(iter(answers)))
        answers[key] = answer


def memo_for(paths: frozenset[Path], answers: dict[Hashable, Any], indices: tuple[int, ...]) -> AnswerMemo | None:
    trie = trie_of(paths)
    return AnswerMemo(trie, answers, indices) if trie is not None else None


__all__ = ["AnswerMemo", "memo_for", "reads_of", "skeleton", "trie_of"]
