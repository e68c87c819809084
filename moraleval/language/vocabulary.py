"""The metric language's vocabulary, one table per kind of word: functions, significance tests, multiple-comparison
corrections, bootstrap interval methods.

Every word is declared once here and every engine looks it up by name: the checker (names, arities, levels), the
measure stage (numpy implementations, aggregate recipes), the report's figures (scalar implementations), the
sample browser (the names it recounts, embedded in the page) and ``docs/`` (the function list is generated from
``FUNCTIONS``).  Adding a function is one entry below, plus its JavaScript twin in ``report/static/browser.js`` if
``recount`` is true (a test holds the two lists equal).

Levels: a formula has *per-item* values (a column, a choice's probability, arithmetic on them) and *numbers*
(an aggregate over the items of a condition, and arithmetic on aggregates).  An *elementwise* function maps item
values to item values and numbers to numbers; a *choice* function reads one item's scores; an *aggregate* turns
item values into one number.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import attrs
import numpy as np

ELEMENTWISE = "elementwise"  # item -> item, number -> number
CHOICE = "choice"  # (choice name, option value) -> item
AGGREGATE = "aggregate"  # items -> number

#: ``note(condition, message)``: records ``message`` once when ``condition`` holds for any resample (the reason a
#: value is undefined, shown next to the estimate)
Note = Callable[[np.ndarray, str], None]


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        r = np.divide(a, b)
    return np.where(b == 0, np.nan, r)


@attrs.frozen
class Recipe:
    """How an aggregate is computed from per-unit sums, so that one matrix product resamples it.

    ``columns(included, *args)`` gets the per-item arguments as floats (0 where an item is left out) and the
    inclusion mask as 0/1 floats, and returns the per-item columns whose per-unit sums the bootstrap resamples;
    ``finish(totals, note)`` turns those sums (vectors: one entry per resample) into the aggregate's value.
    ``centred``: the arguments are first centred on their mean over every included item of the task, for the
    precision of sums of squares (any shift gives the same value in exact arithmetic).
    """

    columns: Callable[..., list[np.ndarray]]
    finish: Callable[[Sequence[np.ndarray], Note], np.ndarray]
    centred: bool = False


def _mean_finish(t: Sequence[np.ndarray], note: Note) -> np.ndarray:
    note(t[1] == 0, "no items to average")
    return _safe_div(t[0], t[1])


def _pearson_finish(t: Sequence[np.ndarray], note: Note) -> np.ndarray:
    k, sx, sy, sxx, syy, sxy = t
    with np.errstate(all="ignore"):
        vx = k * sxx - sx * sx
        vy = k * syy - sy * sy
        cov = k * sxy - sx * sy
        # constant x or y (up to rounding, relative to the raw second moment) -> undefined
        degenerate = (k < 2) | (vx <= 1e-10 * k * sxx) | (vy <= 1e-10 * k * syy)
        r = np.where(degenerate, np.nan, cov / np.sqrt(np.where(degenerate, 1.0, vx * vy)))
    note(k < 2, "fewer than 2 items")
    note((k >= 2) & degenerate, "zero variance, correlation undefined")
    return np.clip(r, -1.0, 1.0)


def _pearson_items(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Reference (one pass over the items' values) for the report and for tests."""
    n = len(xs)
    if n < 2:
        return math.nan
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return math.nan
    return max(-1.0, min(1.0, sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / math.sqrt(sxx * syy)))


def _minmax(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    def reduce(*xs: np.ndarray) -> np.ndarray:
        r = xs[0]
        for x in xs[1:]:
            r = fn(r, x)
        return r
    return reduce


@attrs.frozen
class Function:
    """One function of the metric language.

    ``args`` names each argument's kind for the docs and the checker: ``"number"`` (an item value or a number,
    by the function's level), ``"condition"`` (truth per item), ``"choice"`` (the name of a ``choose`` line),
    ``"value"`` (an option value).  ``numpy``: elementwise implementation over float arrays; ``scalar``: over
    Python floats (figures, per-sample values); ``recipe``: an aggregate's unit-sum recipe; ``items``: an
    aggregate's reference over a list of per-item argument tuples (the report, tests).  ``recount``: the sample
    browser recomputes it (``browser.js`` has a twin).
    """

    name: str
    kind: str
    arity: tuple[int, int]
    args: str
    doc: str
    numpy: Callable[..., np.ndarray] | None = None
    scalar: Callable[..., float] | None = None
    recipe: Recipe | None = None
    items: Callable[..., float] | None = None
    recount: bool = True

    @property
    def signature(self) -> str:
        return f"{self.name}({self.args})"

    @property
    def arity_text(self) -> str:
        lo, hi = self.arity
        return str(lo) if lo == hi else f"{lo}-{hi}"

    @property
    def level(self) -> str:
        """What it takes and gives, in words (docs and error messages)."""
        return {ELEMENTWISE: "item -> item, number -> number", CHOICE: "item -> item",
                AGGREGATE: "items -> number"}[self.kind]


def _declare(*fns: Function) -> dict[str, Function]:
    return {f.name: f for f in fns}


FUNCTIONS: dict[str, Function] = _declare(
    # --- aggregates: items of a condition (filtered by `where`) -> one number, resampled by unit sums
    Function("mean", AGGREGATE, (1, 1), "x", "mean of x over the items (booleans count as 0/1)",
             recipe=Recipe(lambda inc, x: [x, inc], _mean_finish),
             items=lambda rows: math.fsum(r[0] for r in rows) / len(rows) if rows else math.nan),
    Function("sum", AGGREGATE, (1, 1), "x", "sum of x over the items",
             recipe=Recipe(lambda inc, x: [x, inc], lambda t, note: t[0]),
             items=lambda rows: math.fsum(r[0] for r in rows)),
    Function("count", AGGREGATE, (0, 1), "condition", "number of items (where the condition holds)",
             recipe=Recipe(lambda inc, c=None: [inc * c if c is not None else inc], lambda t, note: t[0]),
             items=lambda rows: float(sum(1 for r in rows if not r or r[0]))),
    Function("pearson", AGGREGATE, (2, 2), "x, y", "Pearson correlation of x and y over the items",
             recipe=Recipe(lambda inc, x, y: [inc, x, y, x * x, y * y, x * y], _pearson_finish, centred=True),
             items=lambda rows: _pearson_items([r[0] for r in rows], [r[1] for r in rows])),
    # --- a choice's scores, per item
    Function("prob", CHOICE, (2, 2), "choice, value",
             "probability of the option(s) with this value, normalised over the listed options"),
    Function("logprob", CHOICE, (2, 2), "choice, value",
             "log-probability of the option(s) with this value (unnormalised under `normalize none`)"),
    # --- elementwise: per item inside an aggregate, on numbers outside
    Function("abs", ELEMENTWISE, (1, 1), "x", "absolute value", numpy=np.abs, scalar=abs),
    Function("sqrt", ELEMENTWISE, (1, 1), "x", "square root (undefined below 0)", numpy=np.sqrt, scalar=math.sqrt),
    Function("log", ELEMENTWISE, (1, 1), "x", "natural logarithm (undefined at 0 and below)", numpy=np.log,
             scalar=math.log),
    Function("exp", ELEMENTWISE, (1, 1), "x", "e to the power x", numpy=np.exp, scalar=math.exp),
    Function("min", ELEMENTWISE, (2, 9), "x, y, ...", "the smallest of its arguments", numpy=_minmax(np.minimum),
             scalar=lambda *xs: min(xs)),
    Function("max", ELEMENTWISE, (2, 9), "x, y, ...", "the largest of its arguments", numpy=_minmax(np.maximum),
             scalar=lambda *xs: max(xs)),
)


def functions_of(kind: str) -> dict[str, Function]:
    return {k: f for k, f in FUNCTIONS.items() if f.kind == kind}


@attrs.frozen
class Word:
    """A named option of a statement (a test, a correction, an interval method) with its one-line meaning."""

    name: str
    doc: str
    detail: Any = None  # e.g. the statsmodels name of a correction


def _words(*ws: Word) -> dict[str, Word]:
    return {w.name: w for w in ws}


#: ``compare ... test NAME``: how the p-value of a paired difference between conditions is computed
TESTS: dict[str, Word] = _words(
    Word("bootstrap", "sign-flip permutation test over the resampling units (any metric)"),
    Word("mcnemar", "McNemar's test on paired binary outcomes (a metric that is one proportion)"),
    Word("paired_t", "paired t-test on per-item values (a metric that is one mean)"),
    Word("wilcoxon", "Wilcoxon signed-rank test on per-item values (a metric that is one mean)"),
)

#: ``compare ... correct NAME``: the multiple-comparison correction across a compare line's family
CORRECTIONS: dict[str, Word] = _words(
    Word("holm", "Holm's step-down (controls the family-wise error rate)", "holm"),
    Word("bh", "Benjamini-Hochberg (controls the false discovery rate)", "fdr_bh"),
    Word("bonferroni", "Bonferroni (family-wise, conservative)", "bonferroni"),
    Word("none", "no correction", None),
)

#: ``bootstrap ... method NAME``: how the interval is read off the resampled values
BOOT_METHODS: dict[str, Word] = _words(
    Word("percentile", "the resampled values' quantiles"),
    Word("bca", "bias-corrected and accelerated (Efron): percentiles corrected by the jackknife"),
)


#: the whole-number run settings and their flags (`run { batch_size: N }`, `--batch-size N`): smallest and largest
#: value accepted, and a typical one for the fix hint.  Anything above the maximum is a typo (a batch of a million
#: prompts does not fit in any memory; a thousand Ray workers is a cluster no single driver should start).
RUN_COUNT_LIMITS: dict[str, tuple[int, int, int]] = {"batch_size": (1, 65_536, 8), "workers": (1, 4_096, 2)}

#: the bootstrap's resamples (`bootstrap resamples N`): fewer than 100 give no usable interval; more than 100,000
#: add nothing a report can show (the Monte Carlo error of a 95% percentile bound is already below 0.001 of its
#: spread) and cost memory in proportion (B x units per estimate, in the run and in `moraleval diff`).  A report
#: folder's report.json is held to the same range.
BOOTSTRAP_RESAMPLES: tuple[int, int] = (100, 100_000)


def browser_names() -> dict[str, list[int]]:
    """The functions the sample browser recounts, with their arities (embedded in report.html)."""
    return {k: list(f.arity) for k, f in sorted(FUNCTIONS.items()) if f.recount}


def function_table_markdown() -> str:
    """The function list of ``docs/spec-language.md`` (kept equal to this table by a test)."""
    lines = ["| function | level | arguments | meaning |", "|---|---|---|---|"]
    for kind in (AGGREGATE, CHOICE, ELEMENTWISE):
        for f in functions_of(kind).values():
            lines.append(f"| `{f.signature}` | {f.level} | {f.arity_text} | {f.doc} |")
    return "\n".join(lines)


__all__ = ["AGGREGATE", "BOOTSTRAP_RESAMPLES", "BOOT_METHODS", "CHOICE", "CORRECTIONS", "ELEMENTWISE", "FUNCTIONS",
           "Function", "Recipe", "RUN_COUNT_LIMITS", "TESTS", "Word", "browser_names", "function_table_markdown", "functions_of"]
