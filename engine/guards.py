"""Guards: the part of a policy's conditions that Python can decide exactly, before Cedar.

Most policies open with tests on the request's context that need no entity data:

    when { context has args && context.args has repo && context.args.repo == "acme/infra" && ... }
    when { (context has port && context.port == 19999) || (context has args && ...) }

A policy's conditions are conjoined in order (`when {A} unless {B}` is `A && !B`), and Cedar
evaluates `&&`, `||` and `!` left to right with short-circuits. So when the conditions are
*certainly false without an error* for a request, the policy contributes no reason and no error,
and leaving it out of the slice cannot change the decision (the slicing invariant in
engine/index.py).

"Certainly" is the whole point. A guard evaluates to one of three values: TRUE, FALSE (both
certain, and without an error on the way) or UNKNOWN (anything else: an expression it does not
model, or one that would raise). Only these forms are modelled:

    context has A              context.args has A
    context.A == <literal>     context.args.A == <literal>      (either side; str, int, bool)
    X && Y     X || Y     !X

Everything else is UNKNOWN, and a test that would ERROR in Cedar (`context.args has A` when the
request has no args, `context.args.A` when A is absent) is UNKNOWN too, never FALSE: an erroring
forbid denies. `==` in Cedar never errors; a value is compared only when it is a str, int or bool
of exactly the literal's type (in Python `True == 1`; in Cedar they differ) and, for arguments,
of the Cedar type the action declares, so Cedar reads it as that very value. A request whose
context does not match its schema is refused by Cedar whatever the policies: no slice changes
that. tests/test_guards.py and tests/test_differential.py hold us to all of this.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

TRUE, FALSE, UNKNOWN = 1, 0, -1

# A guard node: ("and", nodes) | ("or", nodes) | ("not", node) | ("has", path, attr)
#             | ("eq", path, attr, literal) | ("?",). `path` is () for `context`, ("args",) for
#             `context.args`.
Node = tuple[Any, ...]
Guard = Node | None  # None: nothing to decide before Cedar

_CONTEXT = {"Var": "context"}
_ARGS = {".": {"left": _CONTEXT, "attr": "args"}}
_PRIMITIVE = {"String": str, "Long": int, "Bool": bool}
_OPAQUE: Node = ("?",)


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


def _path(expr: Any) -> tuple[str, ...] | None:
    if expr == _CONTEXT:
        return ()
    if expr == _ARGS:
        return ("args",)
    return None


def _literal(expr: Any) -> tuple[bool, Any]:
    value = expr.get("Value", ABSENT) if isinstance(expr, dict) and len(expr) == 1 else ABSENT
    return (True, value) if isinstance(value, str | bool | int) else (False, None)


def _attr(expr: Any) -> tuple[tuple[str, ...], str] | None:
    """`context.A` or `context.args.A` as (path, A)."""
    if isinstance(expr, dict) and len(expr) == 1 and "." in expr:
        path = _path(expr["."].get("left"))
        attr = expr["."].get("attr")
        if path is not None and isinstance(attr, str):
            return path, attr
    return None


def _flatten(op: str, expr: Any) -> list[Any]:
    if isinstance(expr, dict) and len(expr) == 1 and op in expr:
        return _flatten(op, expr[op]["left"]) + _flatten(op, expr[op]["right"])
    return [expr]


def _compile(expr: Any) -> Node:
    if not isinstance(expr, dict) or len(expr) != 1:
        return _OPAQUE
    (op, body), = expr.items()
    if op in ("&&", "||"):
        return ("and" if op == "&&" else "or", tuple(_compile(e) for e in _flatten(op, expr)))
    if op == "!":
        return ("not", _compile(body.get("arg")))
    if op == "has":
        path, attr = _path(body.get("left")), body.get("attr")
        return ("has", path, attr) if path is not None and isinstance(attr, str) else _OPAQUE
    if op == "==":
        for side, other in ((body.get("left"), body.get("right")), (body.get("right"), body.get("left"))):
            target, (ok, value) = _attr(side), _literal(other)
            if target is not None and ok:
                return ("eq", *target, value)
    return _OPAQUE


def _useful(node: Node) -> bool:
    if node[0] in ("and", "or"):
        return any(_useful(n) for n in node[1])
    if node[0] == "not":
        return _useful(node[1])
    return node[0] != "?"


def guard_of(est: str | Mapping[str, Any]) -> Guard:
    """The guard of a policy in Cedar's JSON form: its conditions as one conjunction, `unless`
    bodies negated; None when nothing in them can be decided before Cedar."""
    policy = json.loads(est) if isinstance(est, str) else est
    parts: list[Node] = []
    for cond in policy.get("conditions") or []:
        node = _compile(cond.get("body"))
        parts.append(node if cond.get("kind") == "when" else ("not", node))
    if not parts:
        return None
    guard = ("and", tuple(parts))
    return guard if _useful(guard) else None


def _container(ctx: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    if not path:
        return ctx
    inner = ctx.get(path[0], ABSENT)
    return inner if isinstance(inner, dict) else ABSENT  # absent args: accessing them errors


def _typed(value: Any, declared: Any) -> bool:
    py = _PRIMITIVE.get(declared) if isinstance(declared, str) else None
    return py is not None and type(value) is py


def evaluate(node: Node, ctx: Mapping[str, Any], fields: Mapping[str, Any]) -> int:
    """TRUE, FALSE or UNKNOWN for `node` on a request's context (`args` projected already);
    `fields` maps each argument of the action to (Cedar type, required)."""
    op = node[0]
    if op == "and":
        for n in node[1]:
            r = evaluate(n, ctx, fields)
            if r != TRUE:
                return r
        return TRUE
    if op == "or":
        for n in node[1]:
            r = evaluate(n, ctx, fields)
            if r != FALSE:
                return r
        return FALSE
    if op == "not":
        r = evaluate(node[1], ctx, fields)
        return r if r == UNKNOWN else 1 - r
    if op == "has":
        container = _container(ctx, node[1])
        if container is ABSENT:
            return UNKNOWN
        return TRUE if node[2] in container else FALSE
    if op == "eq":
        path, attr, literal = node[1], node[2], node[3]
        container = _container(ctx, path)
        value = ABSENT if container is ABSENT else container.get(attr, ABSENT)
        if value is ABSENT or type(value) not in (str, int, bool):
            return UNKNOWN  # the access errors, or Cedar holds a value we do not model
        if path and not _typed(value, (fields.get(attr) or (None,))[0]):
            return UNKNOWN
        return TRUE if type(literal) is type(value) and literal == value else FALSE
    return UNKNOWN


def excluded(guard: Guard, ctx: Mapping[str, Any], fields: Mapping[str, Any]) -> bool:
    """True when Cedar would certainly find this policy's conditions false, without error."""
    return guard is not None and evaluate(guard, ctx, fields) == FALSE


def _names(node: Node, out: set[tuple[tuple[str, ...], str]]) -> None:
    if node[0] in ("and", "or"):
        for n in node[1]:
            _names(n, out)
    elif node[0] == "not":
        _names(node[1], out)
    elif node[0] in ("has", "eq"):
        out.add((node[1], node[2]))


def signature_names(guards: list[Guard]) -> tuple[tuple[tuple[str, ...], str], ...]:
    """The context attributes a set of guards looks at, as (path, name)."""
    out: set[tuple[tuple[str, ...], str]] = set()
    for g in guards:
        if g is not None:
            _names(g, out)
    return tuple(sorted(out))


class Signer:
    """The signature of a request's context for one set of guards, as a hashable cache key
    computed at C speed: the raw values of the attributes the guards read, and their types
    (`True` and `1` are one dict key in Python but two values in Cedar). An absent attribute
    reads as None, which Cedar cannot hold (a null in a context is refused whatever the
    policies), so the two never need telling apart."""

    __slots__ = ("arg_names", "ctx_names")

    def __init__(self, names: tuple[tuple[tuple[str, ...], str], ...]) -> None:
        self.ctx_names = tuple(a for p, a in names if not p)
        self.arg_names = tuple(a for p, a in names if p)

    def __call__(self, ctx: Mapping[str, Any]) -> tuple[Any, ...]:
        cv = _hashable(tuple(map(ctx.get, self.ctx_names)))
        args = ctx.get("args")
        if type(args) is dict:
            av = _hashable(tuple(map(args.get, self.arg_names)))
            return (cv, tuple(map(type, cv)), av, tuple(map(type, av)))
        return (cv, tuple(map(type, cv)), type(args))


def _hashable(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """Values as they are when they hash; a value that does not (a list, a record) by its type
    alone: guards never compare such values, they only test their presence."""
    try:
        hash(values)
    except TypeError:
        return tuple(v if type(v) in (str, int, bool, type(None)) else _Opaque(type(v)) for v in values)
    return values


class _Opaque:
    """Stands for an unhashable value in a signature: equal to any other of the same type."""

    __slots__ = ("kind",)

    def __init__(self, kind: type) -> None:
        self.kind = kind

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Opaque) and other.kind is self.kind

    def __hash__(self) -> int:
        return hash(self.kind)


__all__ = ["ABSENT", "FALSE", "TRUE", "UNKNOWN", "Guard", "Signer", "evaluate", "excluded", "guard_of",
           "signature_names"]
