"""Per-row evaluation of spec expressions (dataset ``derive``/``filter``/``choose`` lines, parameters).

A small interpreter over ``nodes`` expressions; values are plain Python (str, int, float, bool, None, list,
dict).  Every function a spec may call is listed in ``ROW_FUNCTIONS`` (the checker uses it for names and
arity), so an auditor can see the whole vocabulary in one place.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

from moraleval import nodes as n


class EvalError(Exception):
    """An expression failed on a value (wrong type, missing key, ...); carries the failing node."""

    def __init__(self, message: str, node: Any) -> None:
        super().__init__(message)
        self.node = node


def _first(items: Any, default: Any = None) -> Any:
    for x in items or ():
        return x
    return default


def _index(items: Any, value: Any) -> Any:
    try:
        return list(items).index(value)
    except ValueError:
        return None


def _other(items: Any, *excluded: Any) -> Any:
    """The first element of ``items`` that is none of ``excluded``."""
    for x in items:
        if x not in excluded:
            return x
    return None


def _range(a: int, b: int | None = None) -> list[int]:
    return list(range(a)) if b is None else list(range(a, b))


def _lower(x: Any) -> Any:
    if isinstance(x, list):
        return [_lower(v) for v in x]
    return x.lower() if isinstance(x, str) else x


def _before(s: str, sep: str) -> str:
    return s.split(sep, 1)[0]


def _after(s: str, sep: str) -> str:
    parts = s.split(sep, 1)
    return parts[1] if len(parts) == 2 else ""


def _round(x: float, digits: int = 0) -> float:
    return round(x, digits)


# name -> (function, min args, max args, doc)
ROW_FUNCTIONS: dict[str, tuple[Callable[..., Any], int, int, str]] = {
    "first": (_first, 1, 2, "first(list, default=none): the first element, or default if the list is empty"),
    "index": (_index, 2, 2, "index(list, value): position of value in list, none if absent"),
    "other": (_other, 2, 9, "other(list, x, ...): the first element that is none of x, ..."),
    "range": (_range, 1, 2, "range(a, b): the integers a..b-1 (or 0..a-1)"),
    "len": (len, 1, 1, "len(x): length of a list or string"),
    "lower": (_lower, 1, 1, "lower(s): lower case (element-wise on lists)"),
    "upper": (lambda s: s.upper(), 1, 1, "upper(s)"),
    "capitalize": (lambda s: s[:1].upper() + s[1:], 1, 1, "capitalize(s): first letter upper case"),
    "strip": (lambda s: s.strip(), 1, 1, "strip(s): without surrounding whitespace"),
    "replace": (lambda s, a, b: s.replace(a, b), 3, 3, "replace(s, old, new)"),
    "split": (lambda s, sep: s.split(sep), 2, 2, "split(s, sep): list of parts"),
    "before": (_before, 2, 2, "before(s, sep): text before the first sep (all of s if absent)"),
    "after": (_after, 2, 2, "after(s, sep): text after the first sep (empty if absent)"),
    "contains": (lambda s, x: x in s, 2, 2, "contains(s, x): x occurs in s"),
    "join": (lambda items, sep: sep.join(str(i) for i in items), 2, 2, "join(list, sep)"),
    "str": (str, 1, 1, "str(x)"),
    "int": (lambda x: int(float(x)) if isinstance(x, str) else int(x), 1, 1, "int(x)"),
    "float": (float, 1, 1, "float(x)"),
    "round": (_round, 1, 2, "round(x, digits=0)"),
    "abs": (abs, 1, 1, "abs(x)"),
    "min": (min, 1, 9, "min(a, b, ...)"),
    "max": (max, 1, 9, "max(a, b, ...)"),
    "any": (any, 1, 1, "any(list)"),
    "all": (all, 1, 1, "all(list)"),
    "has": (lambda x: x is not None, 1, 1, "has(x): x is not none (e.g. a column of an optional join)"),
    "coalesce": (lambda *xs: _first([x for x in xs if x is not None]), 1, 9,
                 "coalesce(a, b, ...): the first value that is not none"),
}

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "%": lambda a, b: a % b,
}

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b,
}


def evaluate(expr: n.Expr, env: Mapping[str, Any]) -> Any:
    """Evaluate ``expr`` with names looked up in ``env`` (row columns, then constants)."""
    t = type(expr)
    if t is n.Literal:
        return expr.value
    if t is n.Name:
        try:
            return env[expr.name]
        except KeyError:
            raise EvalError(f"unknown name '{expr.name}'", expr) from None
    if t is n.Attribute:
        obj = evaluate(expr.obj, env)
        if obj is None:
            return None
        if isinstance(obj, Mapping):
            if expr.name in obj:
                return obj[expr.name]
            raise EvalError(f"no key '{expr.name}' (keys: {', '.join(map(str, obj))})", expr)
        raise EvalError(f"'.{expr.name}' needs a record, got {type(obj).__name__}", expr)
    if t is n.Index:
        obj = evaluate(expr.obj, env)
        key = evaluate(expr.index, env)
        try:
            return obj[key]
        except (KeyError, IndexError, TypeError) as exc:
            raise EvalError(f"cannot index {_show(obj)} with {key!r}: {type(exc).__name__}", expr) from None
    if t is n.Compare:
        a = evaluate(expr.left, env)
        b = evaluate(expr.right, env)
        try:
            return _COMPARE[expr.op](a, b)
        except TypeError:
            raise EvalError(f"cannot compare {_show(a)} {expr.op} {_show(b)}", expr) from None
    if t is n.BoolOp:
        a = evaluate(expr.left, env)
        if expr.op == "and":
            return evaluate(expr.right, env) if a else a
        return a if a else evaluate(expr.right, env)
    if t is n.Unary:
        v = evaluate(expr.operand, env)
        if expr.op == "not":
            return not v
        try:
            return -v
        except TypeError:
            raise EvalError(f"cannot negate {_show(v)}", expr) from None
    if t is n.Binary:
        a = evaluate(expr.left, env)
        b = evaluate(expr.right, env)
        if a is None or b is None:
            return None
        try:
            return _BINARY[expr.op](a, b)
        except ZeroDivisionError:
            raise EvalError("division by zero", expr) from None
        except TypeError:
            raise EvalError(f"cannot compute {_show(a)} {expr.op} {_show(b)}", expr) from None
    if t is n.IfElse:
        return evaluate(expr.then, env) if evaluate(expr.cond, env) else evaluate(expr.otherwise, env)
    if t is n.ListExpr:
        return [evaluate(x, env) for x in expr.items]
    if t is n.Comprehension:
        out = []
        iterable = evaluate(expr.iterable, env)
        if isinstance(iterable, Mapping):
            iterable = list(iterable)
        local = _Scope(env)
        for value in iterable:
            local.set(expr.var, value)
            if expr.cond is None or evaluate(expr.cond, local):
                out.append(evaluate(expr.elt, local))
        return out
    if t is n.Call:
        spec = ROW_FUNCTIONS.get(expr.func)
        if spec is None:
            raise EvalError(f"unknown function '{expr.func}'", expr)
        args = [evaluate(a, env) for a in expr.args]
        try:
            return spec[0](*args)
        except (TypeError, ValueError, AttributeError) as exc:
            raise EvalError(f"{expr.func}({', '.join(_show(a) for a in args)}) failed: {exc}", expr) from None
    raise EvalError(f"cannot evaluate {t.__name__}", expr)


class _Scope(Mapping):
    """``env`` plus one loop variable (comprehensions)."""

    def __init__(self, parent: Mapping[str, Any]) -> None:
        self.parent = parent
        self.name: str | None = None
        self.value: Any = None

    def set(self, name: str, value: Any) -> None:
        self.name, self.value = name, value

    def __getitem__(self, key: str) -> Any:
        if key == self.name:
            return self.value
        return self.parent[key]

    def __iter__(self):
        yield from self.parent
        if self.name is not None:
            yield self.name

    def __len__(self) -> int:
        return len(self.parent) + 1


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))
