"""Families: one spec line, several estimates or conditions.

* ``metric NAME for VAR in LIST [vs REF] = formula``: one metric per value (``NAME[value]``), the formula with
  ``VAR`` bound to the value; with ``vs REF``, each value's formula minus the reference value's, tested;
* a regression metric, ``metric NAME = mixed(response ~ terms)``: one metric per coefficient (``NAME[term]``);
* ``condition NAME for VAR in LIST extends ... { ... }``: one condition per value (``NAME[value]``), with ``VAR`` a
  ``let`` its templates see.

``LIST`` is an expression over parameters and constants, where ``levels(column)`` stands for the distinct values
of a dataset column (sorted), so ``for r in levels(race) vs "white"`` runs over every race but white.
"""

from __future__ import annotations

from typing import Any

import attrs

from moraleval.checker.context import CheckContext
from moraleval.checker.dataset_pipeline import DatasetResult
from moraleval.errors.source import Source
from moraleval.language import nodes as n
from moraleval.language.formulas import FormulaError, coefficient_labels, decompose, level_label, sort_levels
from moraleval.language.rowexpr import EvalError, evaluate
from moraleval.util.text import did_you_mean

__all__ = ["expand_conditions", "loop_values", "member_name", "regression_members"]


def member_name(family: str, value: Any) -> str:
    """A family member's name: ``similarity[Belgium]``, ``discrimination[race=Black]``, ``CP[Russia]``."""
    return f"{family}[{level_label(value)}]"


def _with_levels(e: n.Expr, ds: DatasetResult, fail: Any) -> n.Expr:
    """``levels(column)`` replaced by the column's sorted distinct values."""
    if isinstance(e, n.Call) and e.func == "levels":
        if len(e.args) != 1 or not isinstance(e.args[0], n.Name):
            fail("levels() takes a column name: levels(race)", e)
            return n.Literal([], span=e.span)
        col = e.args[0].name
        if ds.columns and col not in ds.columns:
            fail(f"levels({col}): no column '{col}' in dataset '{ds.name}'", e.args[0],
                 did_you_mean(col, ds.columns))
            return n.Literal([], span=e.span)
        # check only, with the dataset's files absent: the levels of the stand-in rows (same format), so that the
        # rest of the spec is still checked; such a dataset is never planned
        rows = ds.rows if ds.rows or ds.stand_in_rows is None else ds.stand_in_rows
        return n.Literal(sort_levels(_elements(r.get(col) for r in rows)), span=e.span)
    if not attrs.has(type(e)):
        return e
    changes = {}
    for a in attrs.fields(type(e)):
        if a.name == "span":
            continue
        v = getattr(e, a.name)
        if isinstance(v, tuple):
            new = tuple(_with_levels(x, ds, fail) if attrs.has(type(x)) else x for x in v)
            if new != v:
                changes[a.name] = new
        elif attrs.has(type(v)):
            new = _with_levels(v, ds, fail)
            if new is not v:
                changes[a.name] = new
    return attrs.evolve(e, **changes) if changes else e


def _elements(cells: Any) -> list[Any]:
    """A column's values; of a column of lists, their elements, and of a column of records, their keys (the
    countries of GlobalOpinionQA's `selections`): the levels a family over its contents runs over."""
    cells = list(cells)
    if any(isinstance(c, (list, dict)) for c in cells) and all(isinstance(c, (list, dict)) or c is None
                                                                for c in cells):
        return [x for c in cells if c is not None for x in c]
    return cells


def loop_values(ctx: CheckContext, each: n.Each, ds: DatasetResult, src: Source, what: str
                ) -> tuple[list[Any], Any] | None:
    """The values a ``for`` line runs over (and its ``vs`` reference, or None); None after a reported error."""
    problems: list[bool] = []

    def fail(message: str, node: Any, hint: str | None = None) -> None:
        problems.append(True)
        ctx.error(f"{what}: {message}", node, hint, src, code="E176")
    try:
        values = evaluate(_with_levels(each.values, ds, fail), ctx.consts)
        ref = evaluate(_with_levels(each.ref, ds, fail), ctx.consts) if each.ref is not None else None
    except EvalError as exc:
        fail(f"the values of `for {each.var} in ...` cannot be computed: {exc}", exc.node or each.values,
             "write a list, a parameter or levels(column)")
        return None
    if problems:
        return None
    if not isinstance(values, list) or not values:
        fail(f"`for {each.var} in ...` needs a non-empty list of values", each.values)
        return None
    seen: set[str] = set()
    for v in values:
        if not isinstance(v, (str, int, float, bool)):
            fail(f"`for {each.var} in ...`: {v!r} is not a plain value (a string, number or true/false)",
                 each.values)
            return None
        if level_label(v) in seen:
            fail(f"`for {each.var} in ...` lists {level_label(v)!r} twice", each.values)
            return None
        seen.add(level_label(v))
    if each.ref is not None and not isinstance(ref, (str, int, float, bool)):
        fail(f"the reference `vs {ref!r}` is not a plain value", each.ref)
        return None
    return values, ref


def expand_conditions(ctx: CheckContext, t: n.Task, ds: DatasetResult, src: Source) -> n.Task:
    """The task with each condition family (``condition CP for country in countries``) replaced by its members,
    each with the loop variable as a ``let``; ``ctx.condition_families[task][CP]`` lists the members."""
    families: dict[str, list[tuple[Any, str]]] = {}
    out: list[n.Condition] = []
    for c in t.conditions:
        if c.each is None:
            out.append(c)
            continue
        got = loop_values(ctx, c.each, ds, src, f"condition '{c.name}'")
        if got is None:
            continue
        values, _ref = got
        if c.each.ref is not None:  # the grammar has no `vs` here; a defensive check for hand-built trees
            ctx.error(f"condition '{c.name}': a condition family has no reference level", c, source=src, code="E176")
        members = []
        for v in values:
            name = member_name(c.name, v)
            members.append((v, name))
            out.append(attrs.evolve(c, name=name, each=None,
                                    lets=(n.Let(c.each.var, n.Literal(v, span=c.each.span), span=c.each.span),
                                          *c.lets)))
        families[c.name] = members
    for c in out:
        if c.extends in families:
            ctx.error(f"condition '{c.name}' extends '{c.extends}', a family of conditions", c,
                      f"extend one of its members ({', '.join(m for _v, m in families[c.extends][:3])}, ...) or "
                      "the condition it extends", src, code="E176")
    ctx.condition_families[t.name] = {k: [m for _v, m in v] for k, v in families.items()}
    return attrs.evolve(t, conditions=tuple(out)) if families else t


def regression_members(formula: Any, call: n.Call, bound: dict[str, n.Expr], stack: list[str]
                       ) -> list[tuple[str, n.Expr]] | None:
    """The coefficients of a regression metric, each as ``REG(...)["label"]`` with the response and filter
    inlined; None after a reported error (``formula``: the metric's ``MetricFormula``)."""
    ds = formula.ds
    try:
        spec = decompose(call)
    except FormulaError as exc:
        formula.fail(str(exc), exc.node, exc.hint, code="E177")
        return None
    levels: dict[str, list[Any]] = {}
    for t in (*spec.terms, *spec.random):
        if ds.columns and t.column not in ds.columns:
            formula.fail(f"{call.func}(): no column '{t.column}' in dataset '{ds.name}' (a term of a model is a "
                         "dataset column)", t.node, did_you_mean(t.column, ds.columns)
                         or "derive the value in the dataset block", code="E177")
            return None
        values = [r.get(t.column) for r in ds.rows]
        texts = sorted({v for v in values if isinstance(v, str)})
        if t.kind != "categorical" and texts:
            ref = texts[0]
            formula.fail(f"{call.func}(): column '{t.column}' holds text ({', '.join(texts[:4])}"
                         f"{', ...' if len(texts) > 4 else ''}), so it enters the model by levels", t.node,
                         f"write ref({t.column}, \"{ref}\") with the reference level you mean", code="E177")
            return None
        if t.kind == "categorical":
            lv = sort_levels(values)
            if ds.rows and t.ref not in lv:
                formula.fail(f"{call.func}(): the reference level {level_label(t.ref)!r} is not a value of "
                             f"'{t.column}'", t.node, "levels: " + ", ".join(level_label(v) for v in lv[:12]),
                             code="E177")
                return None
            levels[t.column] = lv
    if spec.group is not None and ds.columns and spec.group not in ds.columns:
        formula.fail(f"mixed(): no group column '{spec.group}' in dataset '{ds.name}'", call,
                     did_you_mean(spec.group, ds.columns), code="E177")
        return None
    response = formula.inline(spec.response, bound, stack)
    where = formula.inline(spec.where, bound, stack) if spec.where is not None else None
    if response is None or (spec.where is not None and where is None):
        return None
    for part, what in ((response, "response"), (where, "filter")):
        if part is not None and formula.level(part, inside_aggregate=True) is None:
            return None
    f = call.args[0]
    inlined = n.Call(call.func, (n.Formula(response, f.rhs, span=f.span),), where, span=call.span)
    labels = coefficient_labels(spec, levels)
    return [(label, n.Index(inlined, n.Literal(label, span=call.span), span=call.span)) for label in labels]
