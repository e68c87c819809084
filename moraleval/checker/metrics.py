"""The metrics pass: each metric's formula inlined (other metrics, parametrised formulas, per-item definitions,
constants) down to item columns, choices and literals, its names and functions checked against the metric
language's vocabulary (``moraleval.language.vocabulary``), its level (a metric is one number per condition) and
its value types (``types``); a family (``for ... in ...``, a regression) becomes one metric per member
(``families``)."""

from __future__ import annotations

import difflib
from typing import Any, Iterable

import attrs

from moraleval.checker.context import CheckContext
from moraleval.checker.dataset_pipeline import DatasetResult
from moraleval.checker.families import loop_values, member_name, regression_members
from moraleval.checker.resolved import ResolvedItem, ResolvedMetric
from moraleval.checker.types import TypeCheck, column_type, per_item_vector_sum, value_type
from moraleval.errors.source import Source
from moraleval.language import nodes as n
from moraleval.language.exprjson import to_source
from moraleval.language.formulas import level_label
from moraleval.language.nodes import ROW_ID, VARIANT
from moraleval.language.vocabulary import AGGREGATE, CHOICE, CORRECTIONS, FUNCTIONS, LIST, REGRESSION, TERM
from moraleval.util.text import did_you_mean

#: the levels of a formula's parts: a literal, a value per item, one number for the condition
CONST, ITEM, SCALAR = "const", "item", "scalar"


def resolve_metrics(ctx: CheckContext) -> None:
    stmts = ctx.statements(n.Metric)
    by_name = {m.name: m for m in stmts}
    items = {i.name: i for i in ctx.statements(n.ItemDef)}
    for name in set(items) & set(by_name):
        ctx.error(f"'{name}' is both an item definition and a metric", items[name],
                  "rename one of them: formulas name both", ctx.source_of(items[name]), code="E175")
    types_cache: dict[tuple[str, str], str] = {}
    tasks = ctx.tasks
    for m in stmts:
        src = ctx.source_of(m)
        if m.params:
            continue  # a formula used by other metrics; checked where it is used
        task = m.task
        if task is None:
            if len(tasks) == 1:
                task = next(iter(tasks))
            elif not tasks:
                continue
            else:
                ctx.error(f"metric '{m.name}': which task? the spec has several", m,
                          f"write: metric {m.name} on TASK = ... (tasks: {', '.join(tasks)})", src, code="E170")
                continue
        if task not in tasks:
            ctx.error(f"metric '{m.name}' is on unknown task '{task}'", m, did_you_mean(task, tasks), src,
                      code="E171")
            continue
        rt = tasks[task]
        ds = ctx.datasets[rt.dataset]
        chooses = {c.choose.name for c in rt.conditions}
        chooses |= {ch.name for ch in [rt.node.choose, *(c.choose for c in rt.node.conditions)] if ch}
        formula = MetricFormula(ctx, m, src, ds, chooses, by_name, items)
        formula.task = task
        formula.types = TypeCheck(lambda c, ds=ds: column_type(ds, c, types_cache) if ds.columns else "any",
                                  _choice_types(rt), formula.fail)
        if m.correction is not None and m.correction not in CORRECTIONS:
            ctx.error(f"unknown correction '{m.correction}'", m, "corrections: " + ", ".join(CORRECTIONS), src,
                      code="E185")
            continue
        members = _members(ctx, formula, m, ds, src)
        if members is None:
            continue
        for name, expr, extra in members:
            if formula.types(expr) is None:
                break
            ctx.metrics.append(ResolvedMetric(name, task, expr, to_source(m.value), m,
                                              items=dict(formula.items_used) or None, **extra))
        else:
            for item_name, (item_expr, item_formula) in formula.item_exprs.items():
                ctx.item_values.setdefault((task, item_name), ResolvedItem(item_name, task, item_expr, item_formula))
        if m.each is not None or extra.get("family"):
            ctx.metric_families[m.name] = [name for name, _e, _x in members]


def _choice_types(rt: Any) -> dict[str, str]:
    """The type of each choice's answer: the type of its option values (``any`` where they differ)."""
    out: dict[str, str] = {}
    for c in rt.conditions:
        values = c.choose.values
        kinds = {value_type(x.value) for x in values.items} if isinstance(values, n.ListExpr) and all(
            isinstance(x, n.Literal) for x in values.items) else ({"number"} if values is None else {"any"})
        prev = out.get(c.choose.name)
        kind = kinds.pop() if len(kinds) == 1 else "any"
        out[c.choose.name] = kind if prev in (None, kind) else "any"
    return out


def _members(ctx: CheckContext, formula: "MetricFormula", m: n.Metric, ds: DatasetResult, src: Source
             ) -> list[tuple[str, n.Expr, dict[str, Any]]] | None:
    """(name, inlined formula, family fields) of each metric a metric statement yields; None after an error."""
    value = m.value
    regression = isinstance(value, n.Call) and value.func in FUNCTIONS and FUNCTIONS[value.func].kind == REGRESSION
    if m.correction is not None and not (regression or (m.each is not None and m.each.ref is not None)):
        ctx.error(f"metric '{m.name}': `correct` applies to a tested family (`for ... vs REF`, or a regression)",
                  m, "drop it, or compare the values with `vs REF`", src, code="E176")
        return None
    if regression:
        if m.each is not None:
            ctx.error(f"metric '{m.name}': a regression is already a family (one estimate per coefficient); it "
                      "cannot also run `for` a list", m, "write one regression metric per value", src, code="E176")
            return None
        got = regression_members(formula, value, {}, [m.name])
        if got is None or not formula.ok:
            return None
        return [(member_name(m.name, label), e, {"family": m.name, "member": {"term": label}, "test": "wald",
                                                   "correction": m.correction or "holm"}) for label, e in got]
    if m.each is None:
        expr = formula.inline(value, {}, [m.name])
        if expr is None or not _one_number(formula, m, expr, src):
            return None
        return [(m.name, expr, {})]
    got = loop_values(ctx, m.each, ds, src, f"metric '{m.name}'")
    if got is None:
        return None
    values, ref = got
    var, other = m.each.var, m.each.other
    if other is not None and (m.each.ref is None or other == var):
        ctx.error(f"metric '{m.name}': `as {other}` names the other side of a contrast, so it needs `vs REF` and a "
                  f"name other than `{var}`", m.each, "write: for c in countries vs \"United States\" as other",
                  src, code="E176")
        return None
    out = []
    ref_expr = None

    def lit(x: Any) -> n.Expr:
        return n.Literal(x, span=m.each.span)
    if m.each.ref is not None and other is None:
        ref_expr = formula.inline(value, {var: lit(ref)}, [m.name])
        if ref_expr is None or not _one_number(formula, m, ref_expr, src):
            return None
    for v in values:
        if m.each.ref is not None and level_label(v) == level_label(ref):
            continue
        if other is not None:  # each side sees the other's value: the reference's formula differs per member
            ref_expr = formula.inline(value, {var: lit(ref), other: lit(v)}, [m.name])
            if ref_expr is None or not _one_number(formula, m, ref_expr, src):
                return None
        bound = {var: lit(v), **({other: lit(ref)} if other is not None else {})}
        expr = formula.inline(value, bound, [m.name])
        if expr is None or not _one_number(formula, m, expr, src):
            return None
        extra: dict[str, Any] = {"family": m.name, "member": {var: v}}
        if m.each.ranked:
            extra["ranked"] = True
        if ref_expr is not None:
            extra.update(test="sign_flip", correction=m.correction or "holm", parts=(expr, ref_expr))
            expr = n.Binary("-", expr, ref_expr, span=m.value.span)
        out.append((member_name(m.name, v), expr, extra))
    if not out:
        ctx.error(f"metric '{m.name}': `for {var} in ...` leaves no value besides the reference", m.each,
                  source=src, code="E176")
        return None
    return out


def _one_number(formula: "MetricFormula", m: n.Metric, expr: n.Expr, src: Source) -> bool:
    level = formula.level(expr)
    if level == ITEM:
        formula.ctx.error(f"metric '{m.name}' is a value per item, not one number", m.value,
                          "aggregate it: mean(...), count(...), sum(...) or pearson(..., ...)", src, code="E172")
        return False
    return level is not None


class MetricFormula:
    """One metric's formula on its task's dataset: inlines metric references and parametrised formulas, checks
    names and levels (item vs one number).  Every problem fails the metric and is reported as affecting it."""

    def __init__(self, ctx: CheckContext, metric: n.Metric, src: Source, ds: DatasetResult, chooses: set[str],
                 metrics: dict[str, n.Metric], items: dict[str, n.ItemDef] | None = None) -> None:
        self.ctx, self.m, self.src, self.ds = ctx, metric, src, ds
        self.chooses, self.consts, self.metrics = chooses, ctx.consts, metrics
        self.items = items or {}
        self.items_used: dict[str, str] = {}  # item definitions the formula uses, as written
        self.item_exprs: dict[str, tuple[n.Expr, str]] = {}  # the parameterless ones inlined, with their text
        self.ok = True
        self.formula: n.Metric | n.ItemDef | None = None  # whose text is being inlined (for the file name)
        self.types: TypeCheck | None = None
        self.task: str | None = None  # the metric's task (an item `on` another task is refused)

    def fail(self, message: str, node: Any, hint: str | None = None, code: str = "E173") -> None:  # noqa: D401
        self.ok = False
        src = self.ctx.sources.get(id(self.formula), self.src) if self.formula is not None else self.src
        self.ctx.error(message, node, hint, src, code=code, place=("metric", self.m.name))

    # ------------------------------------------------------------------ inlining
    def inline(self, e: n.Expr, bound: dict[str, n.Expr], stack: list[str]) -> n.Expr | None:
        """``e`` with every metric, formula argument and constant replaced by what it stands for; None when a
        problem was found (reported)."""
        result = self._inline(e, bound, stack)
        return result if self.ok else None

    def _inline(self, e: n.Expr, bound: dict[str, n.Expr], stack: list[str]) -> n.Expr:
        if isinstance(e, n.Name):
            return self._inline_name(e, bound, stack)
        if isinstance(e, n.Call):
            return self._inline_call(e, bound, stack)
        if isinstance(e, n.Comprehension):
            self.fail("comprehensions are for dataset lines; a metric works on whole columns", e,
                      "derive the value in the dataset block, then use it here")
            return e
        if isinstance(e, n.Attribute):
            self.fail("a metric reads columns by name (a record's entry by index: m[\"key\"])", e,
                      "derive a column in the dataset block (derive x = a.b) and use x, or write a[\"b\"]")
            return e
        if isinstance(e, n.Index) and isinstance(e.obj, n.Call) and e.obj.func in FUNCTIONS \
                and FUNCTIONS[e.obj.func].kind == REGRESSION:
            got = regression_members(self, e.obj, bound, stack)
            if got is None:
                return e
            labels = [label for label, _x in got]
            if not (isinstance(e.index, n.Literal) and e.index.value in labels):
                self.fail(f"{e.obj.func}(...)[...] picks one coefficient by its label", e.index,
                          "coefficients: " + ", ".join(labels), code="E177")
                return e
            return n.Index(got[0][1].obj, e.index, span=e.span)
        if isinstance(e, (n.Formula, n.RandomGroup)):
            self.fail("a model formula (response ~ terms) is the argument of a regression: "
                      "ols(...), logit(...) or mixed(...)", e, code="E177")
            return e
        if isinstance(e, n.Literal):
            return e
        # structural recursion over the other node types
        fields = {}
        for a in attrs.fields(type(e)):
            if a.name == "span":
                continue
            value = getattr(e, a.name)
            if isinstance(value, tuple):
                value = tuple(self._inline(x, bound, stack) if _is_expr(x) else x for x in value)
            elif _is_expr(value):
                value = self._inline(value, bound, stack)
            fields[a.name] = value
        return type(e)(**fields, span=e.span)

    def _inline_name(self, e: n.Name, bound: dict[str, n.Expr], stack: list[str]) -> n.Expr:
        if e.name in bound:
            return bound[e.name]
        if e.name in self.items and e.name not in self.metrics:
            item = self.items[e.name]
            if e.name in self.ds.columns or e.name in self.chooses:
                what = "a choice" if e.name in self.chooses else f"a column of dataset '{self.ds.name}'"
                self.fail(f"item '{e.name}' has the name of {what}: a formula could not tell them apart", e,
                          "rename the item", code="E175")
                return e
            if item.params:
                self.fail(f"item '{e.name}' needs arguments: {e.name}({', '.join(item.params)})", e, code="E175")
                return e
            return self._item(item, {}, stack, e)
        if e.name in self.ds.columns or e.name in self.chooses:
            return e
        if e.name in self.metrics:
            other = self.metrics[e.name]
            if other.params:
                self.fail(f"metric '{e.name}' needs arguments: {e.name}({', '.join(other.params)})", e)
                return e
            return self._ref(other, {}, stack, e)
        if e.name in self.consts:
            return n.Literal(self.consts[e.name], span=e.span)
        known = [*self.ds.columns, *self.chooses, *self.metrics, *self.consts, *self.items]
        if not self.ds.columns:
            return e  # columns unknown (data absent, already reported)
        self.fail(f"unknown name '{e.name}' {{places}} (dataset '{self.ds.name}')", e, _nearest_hint(
            e.name, known, f"columns of dataset '{self.ds.name}'", self.ds.columns, self.chooses))
        return e

    def _inline_call(self, e: n.Call, bound: dict[str, n.Expr], stack: list[str]) -> n.Expr:
        if e.func in self.items and self.items[e.func].params and e.func not in self.metrics:
            target = self.items[e.func]
            if len(e.args) != len(target.params):
                self.fail(f"item '{e.func}' takes {len(target.params)} argument(s), got {len(e.args)}", e,
                          code="E175")
                return e
            if e.where is not None:
                self.fail("'where' belongs inside an aggregate, not in an item's call", e.where)
            args = {p: self._inline(a, bound, stack) for p, a in zip(target.params, e.args)}
            return self._item(target, args, stack, e)
        if e.func in self.metrics and self.metrics[e.func].params:
            target = self.metrics[e.func]
            if len(e.args) != len(target.params):
                self.fail(f"metric '{e.func}' takes {len(target.params)} argument(s), got {len(e.args)}", e)
                return e
            if e.where is not None:
                self.fail("'where' belongs inside an aggregate, not in a metric call", e.where)
            args = {p: self._inline(a, bound, stack) for p, a in zip(target.params, e.args)}
            return self._ref(target, args, stack, e)
        fn = FUNCTIONS.get(e.func)
        if fn is None or fn.kind in (TERM, LIST):
            if fn is not None:
                where = "in a regression's formula" if fn.kind == TERM else "in a `for` line's values"
                self.fail(f"{e.func}() is used {where} only", e, code="E177" if fn.kind == TERM else "E176")
                return e
            self.fail(f"unknown function '{e.func}' {{places}}", e,
                      did_you_mean(e.func, list(FUNCTIONS) + [k for k, v in self.metrics.items() if v.params]
                                   + [k for k, v in self.items.items() if v.params])
                      or "functions: " + ", ".join(sorted(FUNCTIONS)))
            return e
        if fn.kind == REGRESSION:
            return self._regression(e, bound, stack)
        lo, hi = fn.arity
        if not lo <= len(e.args) <= hi:
            self.fail(f"{e.func}() takes {fn.arity_text} argument(s), got {len(e.args)}", e)
        if e.where is not None and fn.kind != AGGREGATE:
            self.fail(f"'where' filters the items of an aggregate; {e.func}() is not one", e.where,
                      "write e.g. mean(x where condition)")
        if fn.kind == CHOICE and e.args:
            first = e.args[0]
            if isinstance(first, n.Name) and first.name in bound:  # a choice's name passed as a parameter
                first = bound[first.name]
                e = n.Call(e.func, (first, *e.args[1:]), e.where, span=e.span)
            if not (isinstance(first, n.Name) and first.name in self.chooses):
                self.fail(f"{e.func}() takes the name of a choice first "
                          f"({', '.join(sorted(self.chooses)) or 'none declared'})", first)
        args = tuple(self._inline(a, bound, stack) if not (fn.kind == CHOICE and i == 0) else a
                     for i, a in enumerate(e.args))
        where = self._inline(e.where, bound, stack) if e.where is not None else None
        return n.Call(e.func, args, where, span=e.span)

    def _item(self, target: n.ItemDef, args: dict[str, n.Expr], stack: list[str], at: n.Expr) -> n.Expr:
        """A per-item definition inlined (its parameters bound); it must stay a value per item."""
        if target.name in stack:
            self.fail(f"definitions refer to each other in a cycle: {' -> '.join(stack + [target.name])}", at,
                      code="E174")
            return at
        if target.task is not None and self.task is not None and target.task != self.task:
            self.fail(f"item '{target.name}' is defined on task '{target.task}', not on '{self.task}'", at,
                      f"define it without `on`, or on task '{self.task}'", code="E175")
            return at
        head = f"{target.name}({', '.join(target.params)})" if target.params else target.name
        self.items_used.setdefault(head, to_source(target.value))
        outer, self.formula = self.formula, target
        try:
            out = self._inline(target.value, args, stack + [target.name])
            if self.ok and _holds_aggregate(out, self.types):
                self.fail(f"item '{target.name}' is a value per item: it cannot hold an aggregate", target.value,
                          "make it a metric (metric NAME = ...) if it is one number per condition", code="E175")
            elif self.ok and not target.params:
                self.item_exprs.setdefault(target.name, (out, to_source(target.value)))
            return out
        finally:
            self.formula = outer

    def _regression(self, e: n.Call, bound: dict[str, n.Expr], stack: list[str]) -> n.Expr:
        """A regression used inside a formula must pick one coefficient (``mixed(...)["z(age)"]``): it is the
        ``Index`` around it that makes it a number; here its response and filter are inlined."""
        got = regression_members(self, e, bound, stack)
        if got is None:
            return e
        return got[0][1].obj

    def _ref(self, target: n.Metric, args: dict[str, n.Expr], stack: list[str], at: n.Expr) -> n.Expr:
        if target.name in stack:
            self.fail(f"metrics refer to each other in a cycle: {' -> '.join(stack + [target.name])}", at,
                      code="E174")
            return at
        outer, self.formula = self.formula, target
        try:
            return self._inline(target.value, args, stack + [target.name])
        finally:
            self.formula = outer

    # ------------------------------------------------------------------ levels
    def level(self, e: n.Expr, inside_aggregate: bool = False) -> str | None:
        """CONST, ITEM or SCALAR of an inlined formula (every function in it is known); reports mixing (an item
        value next to a number) once, and gives None then."""
        if isinstance(e, n.Literal):
            return CONST
        if isinstance(e, n.Name):
            return ITEM
        if isinstance(e, n.Index) and isinstance(e.obj, n.Call) and FUNCTIONS.get(e.obj.func) is not None \
                and FUNCTIONS[e.obj.func].kind == REGRESSION:
            if inside_aggregate:
                self.fail(f"{e.obj.func}() inside an aggregate", e, "a coefficient is one number per condition")
                return None
            return SCALAR
        if isinstance(e, n.Call):
            kind = FUNCTIONS[e.func].kind
            if kind == REGRESSION:
                self.fail(f"{e.func}() gives one estimate per coefficient; inside a formula pick one: "
                          f"{e.func}(...)[\"<coefficient>\"]", e, code="E177")
                return None
            if kind == AGGREGATE and self.types is not None and per_item_vector_sum(self.types, e):
                return ITEM  # sum(v) of a vector: its elements, per item
            if kind == AGGREGATE:
                if inside_aggregate:
                    self.fail(f"{e.func}() inside another aggregate", e, "aggregates work on item values")
                    return None
                for a in list(e.args) + ([e.where] if e.where is not None else []):
                    if self.level(a, True) == SCALAR:
                        self.fail(f"{e.func}() needs item values, got a number", a)
                        return None
                return SCALAR
            # elementwise (item -> item, number -> number) or a choice's score (per item)
            levels = [self.level(a, inside_aggregate) for a in e.args]
            if None in levels:
                return None
            if ITEM in levels:
                return ITEM
            if SCALAR in levels and kind == CHOICE:
                self.fail(f"{e.func}() is per item", e)
                return None
            return SCALAR if SCALAR in levels else CONST
        if isinstance(e, n.ListExpr):
            return CONST
        children = [getattr(e, a.name) for a in attrs.fields(type(e)) if a.name != "span"]
        levels = [self.level(c, inside_aggregate) for c in children if _is_expr(c)]
        if None in levels:
            return None
        if ITEM in levels and SCALAR in levels:
            self.fail("this mixes item values with a whole-condition number", e,
                      "put the item part inside an aggregate: mean(...), count(...)")
            return None
        if ITEM in levels:
            return ITEM
        return SCALAR if SCALAR in levels else CONST


def _holds_aggregate(e: Any, types: TypeCheck | None) -> bool:
    """Whether an expression holds an aggregate or a regression (``sum(v)`` of a vector is per item)."""
    if isinstance(e, n.Call) and e.func in FUNCTIONS and FUNCTIONS[e.func].kind in (AGGREGATE, REGRESSION):
        if not (types is not None and per_item_vector_sum(types, e)):
            return True
    if attrs.has(type(e)):
        for a in attrs.fields(type(e)):
            v = getattr(e, a.name)
            if a.name == "span":
                continue
            if (attrs.has(type(v)) and _holds_aggregate(v, types)) or \
                    (isinstance(v, tuple) and any(_holds_aggregate(x, types) for x in v)):
                return True
    return False


def _nearest_hint(name: str, known: Iterable[str], what: str, columns: Iterable[str],
                  chooses: Iterable[str]) -> str:
    """did-you-mean from every known name, then the columns nearest in spelling (never a bare list of 50)."""
    guess = did_you_mean(name, known)
    if guess:
        return guess
    cols = [c for c in columns if c not in (ROW_ID, VARIANT)]
    near = difflib.get_close_matches(name, cols, n=8, cutoff=0.0)
    listed = ", ".join(near) + (f" (and {len(cols) - len(near)} more)" if len(cols) > len(near) else "")
    text = f"{what}, nearest first: {listed}" if cols else f"{what}: none known"
    if chooses:
        text += "; choices: " + ", ".join(sorted(chooses))
    return text


def _is_expr(x: Any) -> bool:
    return isinstance(x, (n.Literal, n.Name, n.Attribute, n.Index, n.Unary, n.Binary, n.Compare, n.BoolOp,
                          n.IfElse, n.ListExpr, n.Comprehension, n.Call))
