"""Which decisions depend on a tool's arguments: the part of a policy change the no-argument rows
of the permission diff cannot show.

A policy that can apply to a tool's action and whose conditions read `context.args` (a value, or
only whether an argument is there, or whether there are arguments at all) makes that action's
outcome depend on the arguments: a no-argument request (what `tools/list` asks and what the diff
decides) is then not the whole story. For each such action the policies of either bundle are
listed with the argument paths each reads, on each side, and whether the policy is unchanged,
changed (its text differs), added or removed.

The paths come from the policies' own JSON form, the same source the engine's answer memo uses
(engine/memo.py `reads_of`), with presence tests (`has`) added, which the memo need not count.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from engine.bundle import Bundle, PolicyRecord
from engine.memo import reads_of

_CONTEXT = {"Var": "context"}


class ArgPolicy(msgspec.Struct, frozen=True):
    """One policy that reads arguments: the paths on each side (None: not there, or reads none)."""

    policy_id: str
    effect: str
    status: str  # unchanged | changed | added | removed
    base: tuple[str, ...] | None
    head: tuple[str, ...] | None


class ArgDependence(msgspec.Struct, frozen=True):
    action: str
    policies: tuple[ArgPolicy, ...]
    notice: str = "decided with arguments, this action may differ from its no-argument row"


def _chain(expr: Any) -> tuple[str, ...] | None:
    if expr == _CONTEXT:
        return ()
    if isinstance(expr, dict) and len(expr) == 1 and isinstance(expr.get("."), dict):
        inner = _chain(expr["."].get("left"))
        attr = expr["."].get("attr")
        if inner is not None and isinstance(attr, str):
            return (*inner, attr)
    return None


def _presence(expr: Any, out: set[tuple[str, ...]]) -> None:
    """Every `<context chain> has a` test in an expression, as the tested path."""
    if isinstance(expr, dict):
        has = expr.get("has") if len(expr) == 1 else None
        if isinstance(has, dict):
            chain = _chain(has.get("left"))
            if chain is not None and isinstance(has.get("attr"), str):
                out.add((*chain, has["attr"]))
        for v in expr.values():
            _presence(v, out)
    elif isinstance(expr, list):
        for v in expr:
            _presence(v, out)


def argument_paths(est: str) -> tuple[str, ...]:
    """What of `context.args` a policy looks at, readably: `context.args.repo` (its value),
    `context.args has repo`, `context has args`; `context` when it reads the context whole."""
    policy = json.loads(est)
    shown: set[str] = set()
    for path in reads_of(policy):
        if not path:
            shown.add("context")
        elif path[0] == "args":
            shown.add(".".join(("context", *path)))
    tested: set[tuple[str, ...]] = set()
    for cond in policy.get("conditions") or []:
        _presence(cond.get("body"), tested)
    for path in tested:
        if path == ("args",):
            shown.add("context has args")
        elif path[0] == "args":
            shown.add(f"{'.'.join(('context', *path[:-1]))} has {path[-1]}")
    return tuple(sorted(shown))


def _applies(record: PolicyRecord, action_keys: frozenset[Any]) -> bool:
    return any(k is None or k in action_keys for k in record.scope[1])


def _readers(bundle: Bundle, action: str, paths: dict[str, tuple[str, ...]]) -> dict[str, tuple[PolicyRecord,
                                                                                                 tuple[str, ...]]]:
    keys = bundle.ancestors_of_action(action)
    return {r.id: (r, paths[r.id]) for r in (*bundle.policies, *bundle.tiers) if paths[r.id] and _applies(r, keys)}


def _status(b: PolicyRecord | None, h: PolicyRecord | None) -> str:
    if b is None:
        return "added"
    if h is None:
        return "removed"
    return "unchanged" if (b.est, b.mode) == (h.est, h.mode) else "changed"


def argument_dependence(base: Bundle, head: Bundle) -> tuple[ArgDependence, ...]:
    """Every tool action of either catalogue whose outcome depends on its arguments in either bundle."""
    out = []
    base_paths, head_paths = ({r.id: argument_paths(r.est) for r in (*b.policies, *b.tiers)} for b in (base, head))
    for action in sorted({t.name for b in (base, head) for t in b.catalogue.tools}):
        before, after = _readers(base, action, base_paths), _readers(head, action, head_paths)
        if not before and not after:
            continue
        rows = []
        for pid in sorted({*before, *after}):
            b, h = before.get(pid), after.get(pid)
            # A policy in both bundles that reads arguments on one side only is "changed" too.
            rb, rh = b[0] if b else base.by_id.get(pid), h[0] if h else head.by_id.get(pid)
            effect = (h or b)[0].effect  # type: ignore[index]
            rows.append(ArgPolicy(pid, effect, _status(rb, rh), b[1] if b else None, h[1] if h else None))
        out.append(ArgDependence(action, tuple(rows)))
    return tuple(out)


__all__ = ["ArgDependence", "ArgPolicy", "argument_dependence", "argument_paths"]
