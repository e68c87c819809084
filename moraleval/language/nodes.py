"""The spec's syntax tree: frozen attrs nodes that keep their source span.

Spans are excluded from equality (``eq=False``) so tests can compare trees built by hand with parsed ones.
Expression nodes are shared by dataset ``derive``/``filter`` lines (evaluated per row) and ``metric``
formulas (evaluated over all items at once, see ``moraleval.measurement.core``).
"""

from __future__ import annotations

from typing import Any, Union

import attrs

from moraleval.errors.source import Span


ROW_ID = "row_id"  # built-in column: position of the row after filter/sample (counterfactual copies share it)
VARIANT = "variant"  # built-in column: index of a counterfactual copy (0 when no expand)


def _span() -> Any:
    return attrs.field(default=None, eq=False, kw_only=True, repr=False)


def _tuple() -> Any:
    return attrs.field(converter=tuple, factory=tuple)


# --------------------------------------------------------------------------- expressions

@attrs.frozen
class Literal:
    value: Any  # int | float | str | bool | None
    span: Span | None = _span()


@attrs.frozen
class Name:
    name: str
    span: Span | None = _span()


@attrs.frozen
class Attribute:
    obj: "Expr"
    name: str
    span: Span | None = _span()


@attrs.frozen
class Index:
    obj: "Expr"
    index: "Expr"
    span: Span | None = _span()


@attrs.frozen
class Unary:
    op: str  # "-" | "not"
    operand: "Expr"
    span: Span | None = _span()


@attrs.frozen
class Binary:
    op: str  # "+" "-" "*" "/" "%"
    left: "Expr"
    right: "Expr"
    span: Span | None = _span()


@attrs.frozen
class Compare:
    op: str  # "==" "!=" "<" "<=" ">" ">=" "in" "not in"
    left: "Expr"
    right: "Expr"
    span: Span | None = _span()


@attrs.frozen
class BoolOp:
    op: str  # "and" | "or"
    left: "Expr"
    right: "Expr"
    span: Span | None = _span()


@attrs.frozen
class IfElse:
    then: "Expr"
    cond: "Expr"
    otherwise: "Expr"
    span: Span | None = _span()


@attrs.frozen
class ListExpr:
    items: tuple["Expr", ...] = _tuple()
    span: Span | None = _span()


@attrs.frozen
class Comprehension:
    """``[elt for var in iterable if cond]`` (per-row only)."""

    elt: "Expr"
    var: str
    iterable: "Expr"
    cond: "Expr | None" = None
    span: Span | None = _span()


@attrs.frozen
class Call:
    """A function call.  Aggregates (mean, count, sum, pearson, ...) may carry ``where`` (a per-item filter)."""

    func: str
    args: tuple["Expr", ...] = _tuple()
    where: "Expr | None" = None
    span: Span | None = _span()


@attrs.frozen
class Formula:
    """A regression's model formula, ``response ~ rhs``: the only argument of a regression call
    (``mixed(L ~ z(age) + ref(race, "white") + (1 | scenario))``).  ``rhs`` is a ``+``-tree of terms."""

    response: "Expr"
    rhs: "Expr"
    span: Span | None = _span()


@attrs.frozen
class RandomGroup:
    """``(terms | group)`` inside a formula: random effects (an intercept ``1`` and slopes) per value of
    ``group``."""

    terms: "Expr"
    group: str
    span: Span | None = _span()


Expr = Union[Literal, Name, Attribute, Index, Unary, Binary, Compare, BoolOp, IfElse, ListExpr, Comprehension, Call,
             Formula, RandomGroup]


# --------------------------------------------------------------------------- statements

@attrs.frozen
class Version:
    number: int
    span: Span | None = _span()


@attrs.frozen
class Study:
    title: str
    span: Span | None = _span()


@attrs.frozen
class Import:
    path: str
    span: Span | None = _span()


@attrs.frozen
class Param:
    name: str
    value: Expr
    doc: str | None = None
    span: Span | None = _span()


@attrs.frozen
class Let:
    name: str
    value: Expr
    span: Span | None = _span()


@attrs.frozen
class Requires:
    """A library's contract: (kind, name) pairs - ("param", "per_cell"), ("task", "bbq_answer") - that the spec
    importing it must define."""

    items: tuple[tuple[str, str], ...] = _tuple()
    span: Span | None = _span()


@attrs.frozen
class DataRoot:
    path: str  # relative to the spec's directory, or "builtin:sample"
    span: Span | None = _span()


@attrs.frozen
class Template:
    name: str
    text: str
    text_span: Span | None = attrs.field(default=None, eq=False, kw_only=True, repr=False)
    span: Span | None = _span()


# dataset statements ---------------------------------------------------------

@attrs.frozen
class Origin:
    """Where ``moraleval data fetch`` gets the pinned files: a GitHub or Hugging Face dataset repository at a
    commit, or a base URL."""

    kind: str  # "github" | "huggingface" | "url"
    location: str  # "owner/name" or a base URL
    commit: str | None = None
    span: Span | None = _span()


@attrs.frozen
class FileDecl:
    path: str  # relative to the data root
    sha256: str | None  # None: declared `unpinned` (never read until pinned; `data fetch` prints the pin)
    upstream: str | None = None  # path in the origin repository
    span: Span | None = _span()


@attrs.frozen
class Read:
    format: str  # "jsonl" | "csv" | "tsv"
    path: str  # may hold {var} placeholders
    var: str | None = None
    iterable: Expr | None = None
    span: Span | None = _span()


@attrs.frozen
class Join:
    name: str
    format: str
    path: str
    keys: tuple[tuple[str, str], ...] = _tuple()  # (left column, right column)
    optional: bool = False  # "if present": a missing file leaves name.* as none
    span: Span | None = _span()


@attrs.frozen
class Derive:
    name: str
    value: Expr
    span: Span | None = _span()


@attrs.frozen
class Filter:
    cond: Expr
    reason: str | None = None
    span: Span | None = _span()


@attrs.frozen
class DropEntries:
    """``drop entries of COLUMN where COND reason "..."``: in each row, the entries of a record (or list) column
    for which COND holds are removed (COND sees the row, ``key`` and ``value``: the entry), and counted by reason,
    so defects inside a cell (a country's all-zero shares) are accounted for like dropped rows."""

    column: str
    cond: Expr
    reason: str | None = None
    span: Span | None = _span()


@attrs.frozen
class Sample:
    n: int
    per: tuple[str, ...] = _tuple()
    seed: int = 0
    n_expr: Expr | None = None  # when n comes from a param
    span: Span | None = _span()


@attrs.frozen
class Expand:
    """Counterfactual expansion: one copy of each row per value, ``var`` set to that value."""

    var: str
    values: Expr
    span: Span | None = _span()


@attrs.frozen
class FieldDecl:
    """One field of a ``fields`` line: its name and the types a row's value may have (``"text"``, ``"int"``,
    ``"number"``, ``"bool"``, ``"list"``, ``"record"``, ``"list of text"``, ...; ``"none"``: absent or null)."""

    name: str
    types: tuple[str, ...] = _tuple()
    span: Span | None = _span()


@attrs.frozen
class Fields:
    """``fields a: text, b: int or none``: what every row read must hold; a row that does not is a malformed
    file (an error naming the file, the line and the field)."""

    fields: tuple[FieldDecl, ...] = _tuple()
    span: Span | None = _span()


@attrs.frozen
class Expect:
    """``expect COND reason "..."``: a condition every row must meet (a row that fails it is an error naming its
    file and line, not a dropped row: that is ``filter``)."""

    cond: Expr
    reason: str | None = None
    span: Span | None = _span()


DatasetStmt = Union[Origin, FileDecl, Read, Join, Derive, Filter, DropEntries, Sample, Expand, Fields, Expect]


@attrs.frozen
class Dataset:
    name: str
    body: tuple[DatasetStmt, ...] = _tuple()
    span: Span | None = _span()


# task statements ---------------------------------------------------------------

@attrs.frozen
class GenerateSpec:
    name: str
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = _tuple()
    span: Span | None = _span()


@attrs.frozen
class Turn:
    role: str  # "system" | "user" | "assistant"
    content: Expr  # a Literal string (inline Jinja2 template) or a Name of a template
    generate: GenerateSpec | None = None
    span: Span | None = _span()


@attrs.frozen
class Choose:
    name: str
    options: Expr  # list of continuation strings (may depend on the row)
    values: Expr | None = None  # what each option means (default 0..n-1)
    method: str = "logprob"
    normalize: str = "softmax"  # "softmax" over the listed options | "none"
    # counterbalancing: row columns shown in the options' order, presented in every cyclic rotation
    rotate: tuple[str, ...] = _tuple()
    span: Span | None = _span()


@attrs.frozen
class Each:
    """``for VAR in VALUES [vs REF]``: one copy per value (a condition or a metric family); ``ref`` (metrics only):
    each copy minus the copy for the reference value."""

    var: str
    values: "Expr"
    ref: "Expr | None" = None
    span: Span | None = _span()
    ranked: bool = False  # `ranked`: each member's rank among the family, with its bootstrap interval
    # `vs REF as OTHER`: OTHER is bound to the other side's value (REF in a level's formula, the level in the
    # reference's), so both sides of a contrast can keep to the items they share
    other: str | None = None


@attrs.frozen
class Condition:
    name: str
    extends: str | None = None
    lets: tuple[Let, ...] = _tuple()
    turns: tuple[Turn, ...] = _tuple()
    choose: Choose | None = None
    span: Span | None = _span()
    each: Each | None = None  # `condition CP for country in countries`: one condition per value


@attrs.frozen
class Task:
    name: str
    dataset: str
    format: str | None = None  # "chat" | "text"
    lets: tuple[Let, ...] = _tuple()
    conditions: tuple[Condition, ...] = _tuple()
    choose: Choose | None = None
    span: Span | None = _span()


# statistics ---------------------------------------------------------------------

@attrs.frozen
class Metric:
    name: str
    params: tuple[str, ...] = _tuple()  # a parametrised metric is a formula used by others, not reported
    value: Expr = None
    task: str | None = None
    doc: str | None = None
    span: Span | None = _span()
    each: Each | None = None  # `for VAR in VALUES [vs REF]`: a family of estimates, one per value
    correction: str | None = None  # `correct NAME`: the family's multiple-comparison correction


@attrs.frozen
class ItemDef:
    """``item NAME[(params)] [on TASK] = expr``: a named per-item expression, inlined where a metric uses it."""

    name: str
    params: tuple[str, ...] = _tuple()
    value: Expr = None
    task: str | None = None
    span: Span | None = _span()


@attrs.frozen
class Bootstrap:
    resamples: int = 2000
    seed: int = 0
    unit: tuple[str, ...] = _tuple()  # empty = the dataset row (a counterfactual pair stays together)
    method: str = "percentile"  # "percentile" | "bca"
    level: float = 0.95
    task: str | None = None  # `bootstrap on TASK unit ...`: that task's resampling unit
    span: Span | None = _span()


@attrs.frozen
class Comparison:
    pairs: tuple[tuple[str, str], ...] = _tuple()  # (treatment, baseline)
    metrics: tuple[str, ...] = _tuple()
    test: str = "bootstrap"  # "bootstrap" | "mcnemar" | "paired_t" | "wilcoxon"
    correction: str = "holm"  # "holm" | "bh" | "bonferroni" | "none"
    span: Span | None = _span()
    models: bool = False  # `compare model b vs a ...`: the pairs name models, not conditions
    margin: float | str | None = None  # `test tost margin D`: the equivalence margin (a number or a parameter)
    # (treatment, baseline, metric) when a condition family meets a metric family of the same values, which pair
    # member by member (CP[Russia] on steering[Russia]); empty: every pair on every metric
    combos: tuple[tuple[str, str, str], ...] = ()


@attrs.frozen
class Report:
    by: tuple[str, ...] = _tuple()
    span: Span | None = _span()


@attrs.frozen
class Model:
    name: str
    backend: str
    settings: tuple[tuple[str, Expr], ...] = _tuple()
    default: bool = False
    span: Span | None = _span()
    about: tuple[tuple[str, Expr], ...] = _tuple()  # metadata for the report (params, rlhf_steps, quantize, ...)


@attrs.frozen
class ModelSet:
    """`models NAME = [a, b, c] axis params scale log`: models run together, ordered along an axis."""

    name: str
    members: tuple[str, ...] = _tuple()
    axis: str | None = None  # a key of the members' `about` block
    scale: str = "linear"  # "linear" | "log"
    default: bool = False
    span: Span | None = _span()


@attrs.frozen
class RunSettings:
    """How the plan is executed (executor, workers, batch size); command-line flags override these."""

    settings: tuple[tuple[str, Expr], ...] = _tuple()
    span: Span | None = _span()


Stmt = Union[Version, Study, Import, Param, Let, DataRoot, Template, Dataset, Task, Metric, ItemDef, Bootstrap,
             Comparison, Report, Model, ModelSet, RunSettings, Requires]


@attrs.frozen
class Spec:
    path: str
    body: tuple[Stmt, ...] = _tuple()
    span: Span | None = _span()

    def of(self, kind: type) -> list:
        return [s for s in self.body if isinstance(s, kind)]
