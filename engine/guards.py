"""Argument guards: the part of a policy's condition that Python can decide exactly, before Cedar.

Most tool policies open their first `when` clause with tests on the call's arguments:

    when { context has args && context.args has repo && context.args.repo == "acme/infra" && ... }

Cedar evaluates `&&` left to right and stops at the first false operand. So when one of these
leading tests is certainly false for a request, and every test before it is certainly true, the
policy is certainly unsatisfied *without an error*: it contributes no reason and no error, and
leaving it out of the slice cannot change the decision (the slicing invariant in engine/index.py).

"Certainly" is the whole point, so a guard is only the longest prefix of conjuncts of these forms:

    context has args                     false when the request has no args
    context.args has X                   false when args are present and X is not
    context.args.X == <literal>          false when X is present, of its declared primitive
    <literal> == context.args.X          type, and not equal to the literal

Anything else ends the guard. A test that would ERROR in Cedar (`context.args has X` without
args, `context.args.X` when X is absent) is never treated as false: evaluation stops there and the
policy stays in the slice, because an erroring forbid denies. `==` in Cedar never errors, and a
value is only compared when its Python type matches the Cedar type the action declares for it, so
Cedar parses it as that very value (tests/test_differential.py holds us to all of this).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# A test: ("ctx",) for `context has args`; ("has", X); ("eq", X, literal).
Test = tuple[Any, ...]
Guard = tuple[Test, ...]

_CONTEXT = {"Var": "context"}
_ARGS = {".": {"left": _CONTEXT, "attr": "args"}}
_PRIMITIVE = {"String": str, "Long": int, "Bool": bool}


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


def _conjuncts(expr: Any) -> list[Any]:
    if isinstance(expr, dict) and "&&" in expr:
        return _conjuncts(expr["&&"]["left"]) + _conjuncts(expr["&&"]["right"])
    return [expr]


def _literal(expr: Any) -> tuple[bool, Any]:
    value = expr.get("Value", ABSENT) if isinstance(expr, dict) and len(expr) == 1 else ABSENT
    if isinstance(value, str | bool | int):
        return True, value
    return False, None


def _arg_attr(expr: Any) -> str | None:
    if isinstance(expr, dict) and len(expr) == 1 and "." in expr and expr["."].get("left") == _ARGS:
        return expr["."]["attr"]
    return None


def _test(expr: Any) -> Test | None:
    if not isinstance(expr, dict) or len(expr) != 1:
        return None
    if "has" in expr:
        left, attr = expr["has"].get("left"), expr["has"].get("attr")
        if left == _CONTEXT and attr == "args":
            return ("ctx",)
        if left == _ARGS and isinstance(attr, str):
            return ("has", attr)
        return None
    if "==" in expr:
        left, right = expr["=="].get("left"), expr["=="].get("right")
        for side, other in ((left, right), (right, left)):
            attr = _arg_attr(side)
            ok, value = _literal(other)
            if attr is not None and ok:
                return ("eq", attr, value)
    return None


def guard_of(est: str | Mapping[str, Any]) -> Guard:
    """The guard of a policy in Cedar's JSON form (empty: nothing to decide before Cedar)."""
    policy = json.loads(est) if isinstance(est, str) else est
    conditions = policy.get("conditions") or []
    if not conditions or conditions[0].get("kind") != "when":
        return ()
    tests: list[Test] = []
    for expr in _conjuncts(conditions[0].get("body")):
        test = _test(expr)
        if test is None:
            break
        tests.append(test)
    return tuple(tests)


def _typed(value: Any, cedar_type: Any) -> bool:
    """Whether Cedar will read `value` as the primitive of `cedar_type` (bool is not a Long)."""
    py = _PRIMITIVE.get(cedar_type) if isinstance(cedar_type, str) else None
    return py is not None and type(value) is py


def excluded(guard: Guard, args: Any, fields: Mapping[str, Any]) -> bool:
    """True when Cedar would certainly find this policy's condition false, without error.

    `args` is the request's (projected) `context.args`, or ABSENT; `fields` maps each argument of
    the action to (Cedar type, required) as engine.catalogue declares it."""
    for test in guard:
        if test[0] == "ctx":
            if args is ABSENT:
                return True
            continue
        if not isinstance(args, dict):
            return False  # `context.args...` would error: Cedar must see it
        attr = test[1]
        if test[0] == "has":
            if attr not in args:
                return True
            continue
        value = args.get(attr, ABSENT)
        declared = fields.get(attr)
        if value is ABSENT or declared is None or not _typed(value, declared[0]):
            return False  # absent: the access errors; untyped: leave it to Cedar
        literal = test[2]
        if type(literal) is not type(value) or literal != value:
            return True
    return False


def signature_names(guards: list[Guard]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The argument names a set of guards looks at: those compared by value, those only tested
    for presence. A request's values for them decide which guarded policies drop out."""
    eq = sorted({t[1] for g in guards for t in g if t[0] == "eq"})
    has = sorted({t[1] for g in guards for t in g if t[0] == "has"} - set(eq))
    return tuple(eq), tuple(has)


def signature(args: Any, eq: tuple[str, ...], has: tuple[str, ...]) -> tuple[Any, ...]:
    """What of a request's args the guards can see, as a hashable key. Values carry their type:
    `True` and `1` are one dict key in Python but two values in Cedar."""
    if args is ABSENT:
        return (ABSENT,)
    if not isinstance(args, dict):
        return (type(args).__name__,)
    out: list[Any] = []
    for name in eq:
        v = args.get(name, ABSENT)
        out.append((type(v).__name__, v) if isinstance(v, str | int) else (type(v).__name__,))
    out.extend(name in args for name in has)
    return tuple(out)


__all__ = ["ABSENT", "Guard", "excluded", "guard_of", "signature", "signature_names"]
