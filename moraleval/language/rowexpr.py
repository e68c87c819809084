"""Per-row evaluation of spec expressions (dataset ``derive``/``filter``/``choose`` lines, parameters).

A small interpreter over ``nodes`` expressions; values are plain Python (str, int, float, bool, None, list,
dict).  Every function a spec may call is listed in ``ROW_FUNCTIONS``, with how it is written and what it gives
(the checker uses it for names, the docs' list is generated from it), so the whole vocabulary is in one place.
"""

from __future__ import annotations

import ast
import math
import re
from typing import Any, Callable, Mapping, NamedTuple

from moraleval.language import nodes as n


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


#: the longest text ``parse_literal`` reads (a GlobalOpinionQA `selections` cell is about 10 kB)
LITERAL_MAX_CHARS = 5_000_000
_DEFAULTDICT = re.compile(r"^\s*defaultdict\(\s*<class '[A-Za-z_][\w.]*'>\s*,\s*(.*)\)\s*$", re.S)
_LITERAL_NAMES = {"nan": math.nan, "inf": math.inf, "None": None, "True": True, "False": False}


def _literal_value(node: ast.AST, depth: int = 0) -> Any:
    """A literal's value from its syntax tree: numbers, strings, lists, tuples (as lists), dicts, True/False/None,
    nan and inf; anything else (a call, a name, an operator) is refused, so no code is ever run."""
    if depth > 50:
        raise ValueError("nested too deep")
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)) or \
            isinstance(node, ast.Constant) and node.value is None:
        return node.value
    if isinstance(node, ast.Name) and node.id in _LITERAL_NAMES:
        return _LITERAL_NAMES[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _literal_value(node.operand, depth + 1)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError("a sign before something that is not a number")
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_literal_value(x, depth + 1) for x in node.elts]
    if isinstance(node, ast.Dict):
        out = {}
        for k, v in zip(node.keys, node.values):
            if k is None:
                raise ValueError("'**' in a literal")
            key = _literal_value(k, depth + 1)
            if not isinstance(key, (str, int, float, bool)) and key is not None:
                raise ValueError("a dict key that is not a plain value")
            out[key if isinstance(key, str) else str(key)] = _literal_value(v, depth + 1)
        return out
    raise ValueError(f"{type(node).__name__} is not part of a literal")


#: what ``parse_literal(text, kind)`` may insist on, and the Python types that satisfy each
LITERAL_KINDS: dict[str, tuple[type, ...]] = {"list": (list,), "record": (dict,), "number": (int, float),
                                              "text": (str,)}


def _kind_of(value: Any) -> str:
    for kind, types in LITERAL_KINDS.items():
        if isinstance(value, types) and not isinstance(value, bool):
            return kind
    return "none" if value is None else type(value).__name__


def parse_literal(text: Any, kind: str | None = None) -> Any:
    """A value written as a Python literal (``"[0.1, 0.9]"``, ``"{'Belgium': [0.2, 0.8]}"``, also the repr of a
    ``defaultdict(<class 'list'>, {...})``, as GlobalOpinionQA's CSV cells are), read without evaluating anything;
    ``nan`` and ``inf`` are numbers, dict keys become text.  A value that is not text is returned as it is.

    ``kind`` ("list", "record", "number", "text") is what the cell must hold: a cell of another shape is an error
    rather than a value that a later line misreads (``len`` of a text is its number of characters)."""
    if kind is not None and kind not in LITERAL_KINDS:
        raise ValueError(f"the kind must be one of {', '.join(LITERAL_KINDS)}, not {kind!r}")
    value = _parse_literal(text)
    if kind is not None and _kind_of(value) != kind:
        raise ValueError(f"expected a {kind}, the cell holds a {_kind_of(value)}")
    return value


def _parse_literal(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    if len(text) > LITERAL_MAX_CHARS:
        raise ValueError(f"the text is longer than {LITERAL_MAX_CHARS:,} characters")
    m = _DEFAULTDICT.match(text)
    body = m.group(1) if m else text
    try:
        tree = ast.parse(body.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        raise ValueError(f"not a literal: {getattr(exc, 'msg', exc)}") from None
    return _literal_value(tree.body)


def _values(d: Any) -> list[Any]:
    if not isinstance(d, Mapping):
        raise TypeError(f"values() needs a record, got {type(d).__name__}")
    return list(d.values())


def _record(keys: Any, values: Any) -> dict[str, Any]:
    """A record from parallel lists; a repeated key is refused, since keeping either value would hide the other."""
    if not isinstance(keys, list) or not isinstance(values, list):
        raise TypeError("record() needs two lists: the keys and the values")
    if len(keys) != len(values):
        raise ValueError(f"{len(keys)} keys but {len(values)} values")
    out: dict[str, Any] = {}
    for k, v in zip(keys, values):
        if not isinstance(k, (str, int, float)) or isinstance(k, bool):
            raise TypeError(f"a key must be text or a number, not {_show(k)}")
        key = k if isinstance(k, str) else str(k)
        if key in out:
            raise ValueError(f"the key {key!r} is given twice")
        out[key] = v
    return out


def _sum(items: Any) -> Any:
    if not isinstance(items, (list, tuple)):
        raise TypeError(f"sum() needs a list, got {type(items).__name__}")
    if any(x is None for x in items):
        return None
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in items):
        raise TypeError("sum() needs numbers")
    return sum(items)


# name -> (function, min args, max args, doc)
class RowFunction(NamedTuple):
    """A function of the row language: its implementation, how many arguments it takes, how it is written and
    what it gives (``docs/spec-language.md``'s list is generated from these, see ``row_function_table_markdown``)."""

    fn: Callable[..., Any]
    min_args: int
    max_args: int
    signature: str
    doc: str


def _f(fn: Callable[..., Any], lo: int, hi: int, signature: str, doc: str) -> RowFunction:
    return RowFunction(fn, lo, hi, signature, doc)


#: every function a dataset line, ``choose``, ``param`` or ``let`` may call, in the order the docs list them
ROW_FUNCTIONS: dict[str, RowFunction] = {
    "first": _f(_first, 1, 2, "first(list, default=none)", "the first element, or `default` if the list is empty"),
    "index": _f(_index, 2, 2, "index(list, value)", "the position of `value` in `list`, `none` if absent"),
    "other": _f(_other, 2, 9, "other(list, x, …)", "the first element that is none of `x, …` (up to 8 exclusions)"),
    "range": _f(_range, 1, 2, "range(a, b)", "the integers `a … b-1`; `range(n)` is `0 … n-1`"),
    "len": _f(len, 1, 1, "len(x)", "the length of a list or string"),
    "lower": _f(_lower, 1, 1, "lower(s)", "lower case (element-wise on a list)"),
    "upper": _f(lambda s: s.upper(), 1, 1, "upper(s)", "upper case"),
    "capitalize": _f(lambda s: s[:1].upper() + s[1:], 1, 1, "capitalize(s)",
                     "first letter upper case, the rest unchanged"),
    "strip": _f(lambda s: s.strip(), 1, 1, "strip(s)", "without surrounding whitespace"),
    "replace": _f(lambda s, a, b: s.replace(a, b), 3, 3, "replace(s, old, new)", "every `old` replaced by `new`"),
    "split": _f(lambda s, sep: s.split(sep), 2, 2, "split(s, sep)", "the list of parts"),
    "before": _f(_before, 2, 2, "before(s, sep)", "the text before the first `sep` (all of `s` if absent)"),
    "after": _f(_after, 2, 2, "after(s, sep)", "the text after the first `sep` (empty if absent)"),
    "contains": _f(lambda s, x: x in s, 2, 2, "contains(s, x)",
                   "`x` occurs in `s` (a substring, or an element of a list)"),
    "join": _f(lambda items, sep: sep.join(str(i) for i in items), 2, 2, "join(list, sep)",
               "the elements as text, joined by `sep`"),
    "str": _f(str, 1, 1, "str(x)", "as text"),
    "int": _f(lambda x: int(float(x)) if isinstance(x, str) else int(x), 1, 1, "int(x)",
              "as a whole number (`int(\"3.0\")` is 3)"),
    "float": _f(float, 1, 1, "float(x)", "as a number"),
    "round": _f(_round, 1, 2, "round(x, digits=0)", "rounded to `digits` decimals"),
    "abs": _f(abs, 1, 1, "abs(x)", "absolute value"),
    "min": _f(min, 1, 9, "min(a, b, …)", "the least argument (or element of one list)"),
    "max": _f(max, 1, 9, "max(a, b, …)", "the greatest argument (or element of one list)"),
    "any": _f(any, 1, 1, "any(list)", "some element is true"),
    "all": _f(all, 1, 1, "all(list)", "every element is true"),
    "has": _f(lambda x: x is not None, 1, 1, "has(x)", "`x` is not `none` (e.g. the record of an optional join)"),
    "coalesce": _f(lambda *xs: _first([x for x in xs if x is not None]), 1, 9, "coalesce(a, b, …)",
                   "the first argument that is not `none`"),
    "parse_literal": _f(parse_literal, 1, 2, "parse_literal(s, kind=none)",
                        "a list or record written as a Python literal in text (a CSV cell such as `\"[0.2, 0.8]\"` "
                        "or `\"defaultdict(<class 'list'>, {'Belgium': [0.2, 0.8]})\"`), read without running "
                        "anything; with `kind` (`\"list\"`, `\"record\"`, `\"number\"`, `\"text\"`), a cell of "
                        "another shape is an error"),
    "keys": _f(lambda d: list(d) if isinstance(d, Mapping) else [], 1, 1, "keys(record)",
               "its keys, in order"),
    "values": _f(_values, 1, 1, "values(record)", "its values, in the order of its keys"),
    "record": _f(_record, 2, 2, "record(keys, values)",
                 "a record from a list of keys and a list of values of the same length; a key given twice is an "
                 "error (it would silently lose a value)"),
    "sum": _f(_sum, 1, 1, "sum(list)", "the sum of a list of numbers (`none` if an element is missing)"),
}


def row_function_table_markdown() -> str:
    """The list of row functions in ``docs/spec-language.md`` (kept equal to ``ROW_FUNCTIONS`` by a test)."""
    lines = ["| function | arguments | meaning |", "|---|---|---|"]
    for f in ROW_FUNCTIONS.values():
        args = str(f.min_args) if f.min_args == f.max_args else f"{f.min_args}-{f.max_args}"
        lines.append(f"| `{f.signature}` | {args} | {f.doc} |")
    return "\n".join(lines)


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
    return compile_expr(expr)(env)


Compiled = Callable[[Mapping[str, Any]], Any]


def compile_expr(expr: n.Expr, cells: dict[str, list] | None = None) -> Compiled:
    """Turn an expression into a Python closure once, so a dataset line costs one call per row, not a tree walk.

    ``cells`` maps comprehension variables to one-element lists the comprehension fills in, so a loop
    variable is a list read, not a lookup through the row.
    """
    t = type(expr)

    def c(e: n.Expr) -> Compiled:
        return compile_expr(e, cells)

    if t is n.Literal:
        value = expr.value
        return lambda env: value
    if t is n.Name and cells and expr.name in cells:
        cell = cells[expr.name]
        return lambda env: cell[0]
    if t is n.Name:
        name = expr.name

        def name_(env):
            try:
                return env[name]
            except KeyError:
                raise EvalError(f"unknown name '{name}'", expr) from None
        return name_
    if t is n.Attribute:
        obj_f, key = c(expr.obj), expr.name

        def attribute(env):
            obj = obj_f(env)
            if obj is None:
                return None
            if type(obj) is dict or isinstance(obj, Mapping):
                try:
                    return obj[key]
                except KeyError:
                    raise EvalError(f"no key '{key}' (keys: {', '.join(map(str, obj))})", expr) from None
            raise EvalError(f"'.{key}' needs a record, got {type(obj).__name__}", expr)
        return attribute
    if t is n.Index:
        obj_f, key_f = c(expr.obj), c(expr.index)

        def index(env):
            obj, key = obj_f(env), key_f(env)
            try:
                return obj[key]
            except (KeyError, IndexError, TypeError) as exc:
                raise EvalError(f"cannot index {_show(obj)} with {key!r}: {type(exc).__name__}", expr) from None
        return index
    if t is n.Compare:
        left_f, right_f, op = c(expr.left), c(expr.right), _COMPARE[expr.op]

        def compare(env):
            a, b = left_f(env), right_f(env)
            try:
                return op(a, b)
            except TypeError:
                raise EvalError(f"cannot compare {_show(a)} {expr.op} {_show(b)}", expr) from None
        return compare
    if t is n.BoolOp:
        left_f, right_f = c(expr.left), c(expr.right)
        if expr.op == "and":
            return lambda env: (right_f(env) if (a := left_f(env)) else a)
        return lambda env: (a if (a := left_f(env)) else right_f(env))
    if t is n.Unary:
        operand_f = c(expr.operand)
        if expr.op == "not":
            return lambda env: not operand_f(env)

        def negate(env):
            v = operand_f(env)
            try:
                return -v
            except TypeError:
                raise EvalError(f"cannot negate {_show(v)}", expr) from None
        return negate
    if t is n.Binary:
        left_f, right_f, op = c(expr.left), c(expr.right), _BINARY[expr.op]

        def binary(env):
            a, b = left_f(env), right_f(env)
            if a is None or b is None:
                return None
            try:
                return op(a, b)
            except ZeroDivisionError:
                raise EvalError("division by zero", expr) from None
            except (TypeError, OverflowError):
                raise EvalError(f"cannot compute {_show(a)} {expr.op} {_show(b)}", expr) from None
        return binary
    if t is n.IfElse:
        then_f, cond_f, else_f = c(expr.then), c(expr.cond), c(expr.otherwise)
        return lambda env: then_f(env) if cond_f(env) else else_f(env)
    if t is n.ListExpr:
        item_fs = [c(x) for x in expr.items]
        return lambda env: [f(env) for f in item_fs]
    if t is n.Comprehension:
        cell: list = [None]
        inner = {**(cells or {}), expr.var: cell}
        iter_f = c(expr.iterable)
        elt_f = compile_expr(expr.elt, inner)
        cond_f = compile_expr(expr.cond, inner) if expr.cond is not None else None

        def comprehension(env):
            iterable = iter_f(env)
            if type(iterable) is list:
                pass
            elif isinstance(iterable, Mapping):
                iterable = list(iterable)
            elif not isinstance(iterable, (list, tuple, str)):
                raise EvalError(f"'for {expr.var} in ...' needs a list, got {_show(iterable)}", expr.iterable)
            out = []
            for value in iterable:
                cell[0] = value
                if cond_f is None or cond_f(env):
                    out.append(elt_f(env))
            return out
        return comprehension
    if t is n.Call:
        spec = ROW_FUNCTIONS.get(expr.func)
        arg_fs = [c(a) for a in expr.args]
        if spec is None:
            def unknown(env):
                raise EvalError(f"unknown function '{expr.func}'", expr)
            return unknown
        fn = spec.fn

        def call(env):
            args = [f(env) for f in arg_fs]
            try:
                return fn(*args)
            except (TypeError, ValueError, AttributeError, ArithmeticError, LookupError) as exc:
                raise EvalError(f"{expr.func}({', '.join(_show(a) for a in args)}) failed: {exc}", expr) from None
        return call

    def cannot(env):
        raise EvalError(f"cannot evaluate {t.__name__}", expr)
    return cannot


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))
