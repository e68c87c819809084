"""Value types of a metric formula's per-item parts: ``number``, ``bool``, ``text``, ``vector``, ``mapping``, ``any``
(``language.vocabulary.TYPES``), inferred from the dataset's values and the vocabulary's argument kinds, so that a
vector given where a number is needed (or the reverse) is an error at check time, not a surprise in the run."""

from __future__ import annotations

from typing import Any, Callable

from moraleval.checker.dataset_pipeline import DatasetResult
from moraleval.language import nodes as n
from moraleval.language.exprjson import to_source
from moraleval.language.vocabulary import AGGREGATE, CHOICE, ELEMENTWISE, FUNCTIONS, VECTOR

NUMBER, BOOL, TEXT, VECTOR_T, MAPPING, ANY, LIST, NONE = "number", "bool", "text", "vector", "mapping", "any", \
    "list", "none"
#: types that are one number per item (a yes/no counts as 0/1)
NUMERIC = (NUMBER, BOOL, ANY)


def value_type(v: Any) -> str:
    if v is None:
        return NONE
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, (int, float)):
        return NUMBER
    if isinstance(v, str):
        return TEXT
    if isinstance(v, dict):
        return MAPPING
    if isinstance(v, (list, tuple)):
        return VECTOR_T if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v) and v else LIST
    return ANY


def column_type(ds: DatasetResult, column: str, cache: dict[tuple[str, str], str]) -> str:
    """The type of a dataset column's values (``any`` when they are of several types or unknown)."""
    key = (ds.name, column)
    if key not in cache:
        kinds = {value_type(r.get(column)) for r in ds.rows} - {NONE}
        if kinds == {VECTOR_T, LIST}:
            kinds = {LIST}
        cache[key] = kinds.pop() if len(kinds) == 1 else ANY
    return cache[key]


class TypeCheck:
    """Infers a formula's per-item types; ``fail(message, node)`` reports a mismatch (and the check stops)."""

    def __init__(self, column: Callable[[str], str], choices: dict[str, str], fail: Callable[[str, Any, str], None]):
        self.column, self.choices, self.fail = column, choices, fail

    def __call__(self, e: n.Expr) -> str | None:
        """The type of ``e`` (None after a reported mismatch)."""
        if isinstance(e, n.Literal):
            return value_type(e.value)
        if isinstance(e, n.ListExpr):
            return VECTOR_T if all(isinstance(x, n.Literal) and value_type(x.value) == NUMBER for x in e.items) \
                else LIST
        if isinstance(e, n.Name):
            return self.choices.get(e.name) or self.column(e.name)
        if isinstance(e, n.Index):
            obj, key = self(e.obj), self(e.index)
            if obj is None or key is None:
                return None
            if obj in (VECTOR_T,):
                if key not in (NUMBER, ANY):
                    return self._bad(f"a vector is indexed by a position (a number), not by {key}", e.index)
                return NUMBER
            if obj in (MAPPING, LIST, ANY):
                return ANY
            return self._bad(f"`{to_source(e.obj)}` is {_a(obj)}, which cannot be indexed (a record column or a "
                             "vector can)", e)
        if isinstance(e, n.Unary):
            t = self(e.operand)
            if t is None:
                return None
            if e.op == "-" and t not in NUMERIC:
                return self._bad(f"unary minus needs a number, not {_a(t)}", e)
            return BOOL if e.op == "not" else NUMBER
        if isinstance(e, n.Binary):
            a, b = self(e.left), self(e.right)
            if a is None or b is None:
                return None
            for t, side in ((a, e.left), (b, e.right)):
                if t not in NUMERIC:
                    return self._bad(f"`{e.op}` needs numbers; `{to_source(side)}` is {_a(t)}", side)
            return NUMBER
        if isinstance(e, n.Compare):
            a, b = self(e.left), self(e.right)
            if a is None or b is None:
                return None
            if e.op in ("in", "not in"):
                if b not in (LIST, VECTOR_T, MAPPING, ANY, TEXT):
                    return self._bad(f"the right side of `{e.op}` must be a list, a list column or a record "
                                     f"column, not {_a(b)}", e.right)
                return BOOL
            for t, side in ((a, e.left), (b, e.right)):
                if t in (VECTOR_T, MAPPING, LIST):
                    return self._bad(f"`{e.op}` compares one value per item; `{to_source(side)}` is {_a(t)}", side)
            return BOOL
        if isinstance(e, n.BoolOp):
            return None if self(e.left) is None or self(e.right) is None else BOOL
        if isinstance(e, n.IfElse):
            c, t, o = self(e.cond), self(e.then), self(e.otherwise)
            if c is None or t is None or o is None:
                return None
            return t if t == o or o == NONE else (o if t == NONE else ANY)
        if isinstance(e, n.Call):
            return self._call(e)
        return ANY

    def _bad(self, message: str, node: Any) -> None:
        self.fail(message, node, code="E178")
        return None

    def _call(self, e: n.Call) -> str | None:
        f = FUNCTIONS.get(e.func)
        if f is None:
            return ANY
        if f.kind == CHOICE:
            rest = [self(a) for a in e.args[1:]]
            return None if None in rest else f.returns
        types = []
        for i, a in enumerate(e.args):
            kind = f.arg_type(i)
            if kind == "constant":
                if not (isinstance(a, n.Literal) and value_type(a.value) == NUMBER):
                    return self._bad(f"{e.func}(): `{f.args.split(', ')[min(i, len(f.args.split(', ')) - 1)]}` must "
                                     "be a number written in the formula", a)
                if e.func == "quantile" and not 0.0 <= float(a.value) <= 1.0:
                    return self._bad("quantile(x, q): q is a fraction between 0 and 1", a)
                if e.func in ("jsd", "kl", "entropy") and not (float(a.value) > 0 and float(a.value) != 1):
                    return self._bad(f"{e.func}(): a logarithm's base is positive and not 1", a)
                types.append(NUMBER)
                continue
            t = self(a)
            if t is None:
                return None
            types.append(t)
            if kind == "group" and t in (VECTOR_T, MAPPING, LIST):
                return self._bad(f"{e.func}(): the group (argument {i + 1}) is one value per item (a column such as "
                                 f"occupation); `{to_source(a)}` is {_a(t)}", a)
            if kind == "vector" and t not in (VECTOR_T, LIST, ANY):
                return self._bad(f"{e.func}() needs a vector (a choice's dist(...), a list column, a record's entry) "
                                 f"as its argument {i + 1}; `{to_source(a)}` is {_a(t)}", a)
            if kind == "number" and t in (VECTOR_T, MAPPING, LIST, TEXT) and not (
                    f.on_vector is not None and t in (VECTOR_T, LIST)):
                what = "a number per item" if f.kind == AGGREGATE else "numbers"
                hint = " (reduce a vector per item first: sum(v), len(v), v[0], jsd(p, q))" if t == VECTOR_T else ""
                return self._bad(f"{e.func}() needs {what}; `{to_source(a)}` is {_a(t)}{hint}", a)
        if e.where is not None and self(e.where) is None:
            return None
        if f.kind == AGGREGATE and f.on_vector is not None and types and types[0] in (VECTOR_T, LIST):
            return NUMBER  # sum(v): per item
        if f.kind in (ELEMENTWISE, VECTOR, AGGREGATE):
            return NUMBER
        return ANY


def per_item_vector_sum(f: TypeCheck, e: n.Call) -> bool:
    """``sum(v)`` of a vector: a per-item value, not an aggregate."""
    fn = FUNCTIONS.get(e.func)
    if fn is None or fn.on_vector is None or len(e.args) != 1 or e.where is not None:
        return False
    try:
        t = f(e.args[0])
    except RecursionError:  # pragma: no cover - the parser bounds the depth
        return False
    return t in (VECTOR_T, LIST)


def _a(t: str) -> str:
    return {NUMBER: "a number", BOOL: "a yes/no", TEXT: "text", VECTOR_T: "a vector", MAPPING: "a record",
            LIST: "a list", ANY: "a value", NONE: "none"}.get(t, t)
