"""The metric language's vocabulary, one table per kind of word: functions, significance tests, multiple-comparison
corrections, bootstrap interval methods.

Every word is declared once here and every engine looks it up by name: the checker (names, arities, levels), the
measure stage (numpy implementations, aggregate recipes), the report's figures (scalar implementations), the
sample browser (the names it recounts, embedded in the page) and ``docs/`` (the function list is generated from
``FUNCTIONS``).  Adding a function is one entry below, plus its JavaScript twin in ``report/static/browser.js`` if
``recount`` is true (a test holds the two lists equal).

Levels: a formula has *per-item* values (a column, a choice's probability, arithmetic on them) and *numbers*
(an aggregate over the items of a condition, and arithmetic on aggregates).  An *elementwise* function maps item
values to item values and numbers to numbers; a *choice* function reads one item's scores; a *vector* function
maps per-item vectors (a choice's distribution, a list column) to a number per item; an *aggregate* turns item
values into one number (by unit sums, ``recipe``, or, for an order statistic, from the items' resampling weights,
``weighted``); a *regression* turns the items into a family of coefficients; a *term* shapes a regression's
variable (``z``, ``ref``); a *list* function gives the values a ``for`` line runs over (``levels``).

Value types (what the checker infers for each per-item part of a formula): ``number``, ``bool``, ``text``,
``vector`` (a list of numbers per item, of any length), ``mapping`` (a record per item, e.g. a country's answer
shares by country name), ``any`` (not known before the run).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import attrs
import numpy as np

ELEMENTWISE = "elementwise"  # item -> item, number -> number
CHOICE = "choice"  # (choice name, option value) -> item
VECTOR = "vector"  # per-item vectors -> item
AGGREGATE = "aggregate"  # items -> number
REGRESSION = "regression"  # items -> a family of coefficients, one estimate each
TERM = "term"  # a regression term: how a column enters the model
LIST = "list"  # the values of a `for` line, known when the spec is checked

#: the value types the checker infers per item
TYPES = ("number", "bool", "text", "vector", "mapping", "any")
#: the base of the logarithms of the information measures (jsd, kl, entropy) when no base is given: bits, so a
#: Jensen-Shannon distance lies in [0, 1] (scipy's default, e, bounds it by sqrt(ln 2) = 0.833)
DEFAULT_LOG_BASE = 2.0

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


def weighted_group_pearson(x: np.ndarray, y: np.ndarray, g: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Pearson correlation over groups of the groups' means of x and of y, for each row of the item weights ``w``
    (``R × n``; ``g`` holds each item's group as 0, 1, …).  In a resample a group's means are over its items as
    drawn (weighted), and the group counts as often as its items were drawn on average (``Σ w / n``): with the
    group inside the resampling unit (Winogenerated's occupation), the group's means are its own and it counts as
    often as its unit was drawn, a cluster bootstrap of the correlation over groups.  Undefined (NaN) with fewer
    than 2 groups drawn or a constant mean."""
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    groups = int(g.max()) + 1 if g.size else 0
    if groups < 2:
        return np.full(w.shape[0], np.nan)
    member = np.zeros((g.size, groups))
    member[np.arange(g.size), g.astype(np.intp)] = 1.0
    size = member.sum(axis=0)
    drawn = w @ member  # R × groups: the weight of each group's items
    with np.errstate(all="ignore"):
        mx = ((w * x) @ member) / drawn
        my = ((w * y) @ member) / drawn
        om = drawn / size
        present = drawn > 0
        mx, my, om = np.where(present, mx, 0.0), np.where(present, my, 0.0), np.where(present, om, 0.0)
        total = om.sum(axis=1)
        cx = mx - (om * mx).sum(axis=1, keepdims=True) / total[:, None]
        cy = my - (om * my).sum(axis=1, keepdims=True) / total[:, None]
        vx, vy = (om * cx * cx).sum(axis=1), (om * cy * cy).sum(axis=1)
        cov = (om * cx * cy).sum(axis=1)
        scale_x = (om * mx * mx).sum(axis=1) + 1e-300
        scale_y = (om * my * my).sum(axis=1) + 1e-300
        degenerate = (present.sum(axis=1) < 2) | (vx <= 1e-12 * scale_x) | (vy <= 1e-12 * scale_y)
        r = np.where(degenerate, np.nan, cov / np.sqrt(np.where(degenerate, 1.0, vx * vy)))
    return np.clip(r, -1.0, 1.0)


def _group_pearson_items(rows: Sequence[tuple]) -> float:
    """Reference over the items' (x, y, group) values: the means per group, then their Pearson correlation."""
    sums: dict[Any, list[float]] = {}
    for x, y, g in rows:
        s = sums.setdefault(g, [0.0, 0.0, 0])
        s[0] += x
        s[1] += y
        s[2] += 1
    return _pearson_items([s[0] / s[2] for s in sums.values()], [s[1] / s[2] for s in sums.values()])


def _minmax(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[..., np.ndarray]:
    def reduce(*xs: np.ndarray) -> np.ndarray:
        r = xs[0]
        for x in xs[1:]:
            r = fn(r, x)
        return r
    return reduce


# --------------------------------------------------------------------------- order statistics (weighted path)

def weighted_quantile(x: np.ndarray, w: np.ndarray, q: float) -> np.ndarray:
    """The ``q``-quantile of the items ``x`` repeated ``w`` times (numpy's default, linear interpolation between
    order statistics: ``np.quantile`` of the repeated sample), for each row of the weights ``w`` (``R × n``
    counts).  ``x`` must be sorted.  NaN where a row has no weight."""
    x = np.asarray(x, dtype=np.float64)
    w = np.atleast_2d(np.asarray(w, dtype=np.float64))
    if x.size == 0:
        return np.full(w.shape[0], np.nan)
    cum = np.cumsum(w, axis=1)
    total = cum[:, -1]
    h = np.maximum(total - 1.0, 0.0) * float(q)  # 0-based position in the repeated sample
    lo = np.floor(h)
    hi = np.minimum(lo + 1.0, np.maximum(total - 1.0, 0.0))
    # the order statistic at position k is the first item whose cumulative weight exceeds k
    i_lo = np.minimum((cum <= lo[:, None]).sum(axis=1), x.size - 1)
    i_hi = np.minimum((cum <= hi[:, None]).sum(axis=1), x.size - 1)
    out = x[i_lo] + (h - lo) * (x[i_hi] - x[i_lo])
    return np.where(total > 0, out, np.nan)


def _quantile_items(rows: Sequence[tuple], q: float) -> float:
    xs = [r[0] for r in rows]
    return float(np.quantile(np.array(xs, dtype=np.float64), q)) if xs else math.nan


def _var_finish(t: Sequence[np.ndarray], note: Note) -> np.ndarray:
    k, sx, sxx = t
    note(k < 2, "fewer than 2 items")
    with np.errstate(all="ignore"):
        v = (sxx - sx * sx / k) / (k - 1)
    return np.where(k >= 2, np.maximum(v, 0.0), np.nan)


def _var_items(rows: Sequence[tuple]) -> float:
    xs = [r[0] for r in rows]
    return float(np.var(xs, ddof=1)) if len(xs) >= 2 else math.nan


# --------------------------------------------------------------------------- vectors (per item)

#: ``why``: (items where the value is undefined, the reason) pairs a vector function reports
Why = list[tuple[np.ndarray, str]]


def _normalised(v: np.ndarray, lens: np.ndarray, why: Why, what: str) -> np.ndarray:
    """Each row divided by its sum (as scipy's jensenshannon does); rows with a negative entry, no finite sum or
    a sum of 0 are not distributions (NaN, with the reason)."""
    with np.errstate(all="ignore"):
        inside = np.arange(v.shape[1])[None, :] < lens[:, None]
        gap = np.any(np.isnan(v) & inside, axis=1)
        why.append((gap, f"{what} has a missing entry (nan)"))
        s = np.nansum(v, axis=1)
        bad = (np.nanmin(np.where(np.isnan(v), 0.0, v), axis=1, initial=0.0) < 0) | ~np.isfinite(s) | (s <= 0)
        why.append((bad & (lens > 0) & ~gap, f"{what} is not a distribution (a negative share, or shares summing "
                                             "to 0)"))
        bad = bad | gap | (lens == 0)
        return np.where(bad[:, None], np.nan, v / np.where(bad, 1.0, s)[:, None])


def _same_length(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], why: Why
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    (va, la), (vb, lb) = a, b
    width = max(va.shape[1], vb.shape[1])
    va = np.pad(va, ((0, 0), (0, width - va.shape[1])), constant_values=np.nan)
    vb = np.pad(vb, ((0, 0), (0, width - vb.shape[1])), constant_values=np.nan)
    differ = la != lb
    why.append((differ, "the two vectors have different lengths (e.g. the model's options and the country's "
                        "answer shares)"))
    return va, vb, differ


def _xlogy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """x · log(x / y) with 0 · log(0 / y) = 0 (scipy.special.rel_entr)."""
    with np.errstate(all="ignore"):
        r = x * np.log(x / y)
    return np.where(x == 0, 0.0, r)


def _pair(p, q, why: Why) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two vector arguments normalised to distributions, and the items where that fails (different lengths, or
    either one not a distribution)."""
    va, vb, differ = _same_length(p, q, why)
    pa, pb = _normalised(va, p[1], why, "the first vector"), _normalised(vb, q[1], why, "the second vector")
    return pa, pb, differ | np.isnan(pa[:, 0]) | np.isnan(pb[:, 0])


def _log_base(base: float | None) -> float:
    return math.log(DEFAULT_LOG_BASE if base is None else base)


def _vec_jsd(p, q, base=None, *, why: Why) -> np.ndarray:
    pa, pb, bad = _pair(p, q, why)
    m = (pa + pb) / 2.0
    js = np.nansum(_xlogy(pa, m) + _xlogy(pb, m), axis=1) / 2.0 / _log_base(base)
    return np.where(bad, np.nan, np.sqrt(np.maximum(js, 0.0)))


def _vec_kl(p, q, base=None, *, why: Why) -> np.ndarray:
    pa, pb, bad = _pair(p, q, why)
    inf = np.any((pb == 0) & (pa > 0), axis=1)
    why.append((inf & ~bad, "the second distribution is 0 where the first is not (KL divergence infinite)"))
    kl = np.nansum(np.where(pb > 0, _xlogy(pa, pb), 0.0), axis=1) / _log_base(base)
    return np.where(bad | inf, np.nan, kl)


def _vec_tv(p, q, *, why: Why) -> np.ndarray:
    pa, pb, bad = _pair(p, q, why)
    return np.where(bad, np.nan, np.nansum(np.abs(pa - pb), axis=1) / 2.0)


def _vec_entropy(p, base=None, *, why: Why) -> np.ndarray:
    pa = _normalised(p[0], p[1], why, "the vector")
    with np.errstate(all="ignore"):
        h = -np.nansum(np.where(pa > 0, pa * np.log(pa), 0.0), axis=1)
    return np.where(np.isnan(pa[:, 0]), np.nan, h / _log_base(base))


def _vec_len(p, *, why: Why) -> np.ndarray:
    return p[1].astype(np.float64)


def _vec_sum(p, *, why: Why) -> np.ndarray:
    v, lens = p
    inside = np.arange(v.shape[1])[None, :] < lens[:, None]
    gap = np.any(np.isnan(v) & inside, axis=1)  # a missing entry within the vector's length
    why.append((gap, "the vector has a missing entry (nan)"))
    return np.where(gap, np.nan, np.nansum(v, axis=1))


def _scalar_vec(fn: Callable[..., np.ndarray]) -> Callable[..., float]:
    """The scalar (one item) twin of a vector function: lists of numbers in, a float out (the report, tests)."""
    def one(*args: Any) -> float:
        packed = []
        for a in args:
            if isinstance(a, (list, tuple)):
                arr = np.array([list(map(float, a))], dtype=np.float64).reshape(1, len(a))
                packed.append((arr, np.array([len(a)])))
            else:
                packed.append(float(a))
        why: Why = []
        return float(fn(*packed, why=why)[0])
    return one


@attrs.frozen
class Function:
    """One function of the metric language.

    ``args`` names the arguments for the docs; ``types`` gives each argument's kind for the checker and the
    measure stage: ``"number"`` (an item value or a number, by the function's level), ``"condition"`` (truth per
    item), ``"choice"`` (the name of a ``choose`` line), ``"value"`` (an option value), ``"vector"`` (a vector
    per item), ``"constant"`` (a literal number: a quantile's q, a logarithm's base), ``"formula"`` (a regression's
    ``response ~ terms``), ``"column"`` (a column name); default: ``"number"`` for every argument
    (``"condition"`` where ``args`` says so).  ``returns``: the value type it gives (``TYPES``).
    ``numpy``: elementwise implementation over float arrays; ``scalar``: over Python floats (figures, per-sample
    values); ``vector``: a vector function's implementation (``(data, lengths)`` pairs for vectors, floats for
    constants, ``why=`` a list that receives (undefined items, reason) pairs); ``on_vector``: given a vector, the
    function works per item on its elements (``sum(v)``); ``recipe``: an aggregate's unit-sum recipe;
    ``weighted``: an order statistic's implementation from resampling weights (``weighted(sorted values,
    weights R × n, *constants)``; it is resampled through the items' weights, not unit sums); ``items``: an
    aggregate's reference over a list of per-item argument tuples (the report, tests).  ``grouped``: a statistic
    of per-group means (``grouped(x, y, group codes, weights R × n)``, resampled through the items' weights; its
    ``"group"`` argument is any per-item value, each distinct value one group).  ``note``: what the report
    says under a formula that uses it.  ``recount``: the sample browser recomputes it (``browser.js`` has a
    twin).
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
    types: tuple[str, ...] = ()
    returns: str = "number"
    vector: Callable[..., np.ndarray] | None = None
    on_vector: Callable[..., np.ndarray] | None = None
    weighted: Callable[..., np.ndarray] | None = None
    grouped: Callable[..., np.ndarray] | None = None
    note: str = ""

    def arg_type(self, i: int) -> str:
        """The kind of argument ``i`` (the last declared kind repeats, for ``min(x, y, ...)``)."""
        kinds = self.types or tuple("condition" if a == "condition" else "number" for a in self.args.split(", "))
        return kinds[min(i, len(kinds) - 1)] if kinds else "number"

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
        return {ELEMENTWISE: "item -> item, number -> number", CHOICE: "item -> item", VECTOR: "item -> item",
                AGGREGATE: "items -> number", REGRESSION: "items -> coefficients", TERM: "in a formula",
                LIST: "for lines"}[self.kind]


def _declare(*fns: Function) -> dict[str, Function]:
    return {f.name: f for f in fns}


FUNCTIONS: dict[str, Function] = _declare(
    # --- aggregates: items of a condition (filtered by `where`) -> one number, resampled by unit sums
    Function("mean", AGGREGATE, (1, 1), "x", "mean of x over the items (booleans count as 0/1)",
             recipe=Recipe(lambda inc, x: [x, inc], _mean_finish),
             items=lambda rows: math.fsum(r[0] for r in rows) / len(rows) if rows else math.nan),
    Function("sum", AGGREGATE, (1, 1), "x", "sum of x over the items; of a vector, the sum of its elements, per item",
             recipe=Recipe(lambda inc, x: [x, inc], lambda t, note: t[0]),
             items=lambda rows: math.fsum(r[0] for r in rows), on_vector=_vec_sum),
    Function("count", AGGREGATE, (0, 1), "condition", "number of items (where the condition holds)",
             recipe=Recipe(lambda inc, c=None: [inc * c if c is not None else inc], lambda t, note: t[0]),
             items=lambda rows: float(sum(1 for r in rows if not r or r[0]))),
    Function("pearson", AGGREGATE, (2, 2), "x, y", "Pearson correlation of x and y over the items",
             recipe=Recipe(lambda inc, x, y: [inc, x, y, x * x, y * y, x * y], _pearson_finish, centred=True),
             items=lambda rows: _pearson_items([r[0] for r in rows], [r[1] for r in rows])),
    Function("var", AGGREGATE, (1, 1), "x", "sample variance of x over the items (n − 1 in the denominator)",
             recipe=Recipe(lambda inc, x: [inc, x, x * x], _var_finish, centred=True), items=_var_items),
    Function("std", AGGREGATE, (1, 1), "x", "sample standard deviation of x over the items (n − 1)",
             recipe=Recipe(lambda inc, x: [inc, x, x * x], lambda t, note: np.sqrt(_var_finish(t, note)),
                           centred=True),
             items=lambda rows: math.sqrt(_var_items(rows)) if len(rows) >= 2 else math.nan),
    Function("group_pearson", AGGREGATE, (3, 3), "x, y, group",
             "Pearson correlation, over the values of `group`, of the means of x and of y within each group "
             "(Winogenerated's ρ: an occupation's mean p(female) over its sentences against its BLS share); "
             "resampled through the items' weights", types=("number", "number", "group"),
             grouped=weighted_group_pearson, items=_group_pearson_items, recount=False),
    Function("median", AGGREGATE, (1, 1), "x", "median of x over the items (resampled through the items' weights)",
             weighted=lambda x, w: weighted_quantile(x, w, 0.5), items=lambda rows: _quantile_items(rows, 0.5)),
    Function("quantile", AGGREGATE, (2, 2), "x, q",
             "the q-quantile of x over the items, 0 <= q <= 1, linear interpolation as numpy's `quantile` "
             "(resampled through the items' weights)", types=("number", "constant"),
             weighted=weighted_quantile, items=_quantile_items),
    # --- a choice's scores, per item
    Function("prob", CHOICE, (2, 2), "choice, value",
             "probability of the option(s) with this value, normalised over the listed options"),
    Function("logprob", CHOICE, (2, 2), "choice, value",
             "log-probability of the option(s) with this value (unnormalised under `normalize none`)"),
    Function("dist", CHOICE, (1, 1), "choice",
             "the choice's probabilities over its listed options, in the order the options are written (a vector "
             "per item; its length may differ from row to row)", types=("choice",), returns="vector"),
    # --- vectors: per-item lists of numbers (a choice's dist(...), a list column, a mapping's entry)
    Function("jsd", VECTOR, (2, 3), "p, q, base",
             "Jensen-Shannon distance √JSD between two distributions (each normalised to sum 1), logarithms to "
             "`base` (default 2: bits, so 0 <= jsd <= 1), as `scipy.spatial.distance.jensenshannon(p, q, base)`",
             types=("vector", "vector", "constant"), vector=_vec_jsd, scalar=_scalar_vec(_vec_jsd),
             note="jsd: the Jensen-Shannon distance √JSD, logarithms to base 2 unless a base is given (so it lies "
                  "in [0, 1]); items whose two vectors differ in length are left out, with the reason"),
    Function("kl", VECTOR, (2, 3), "p, q, base",
             "Kullback-Leibler divergence KL(p ‖ q) (each normalised to sum 1), logarithms to `base` (default 2); "
             "undefined where q is 0 and p is not", types=("vector", "vector", "constant"), vector=_vec_kl,
             scalar=_scalar_vec(_vec_kl),
             note="kl: logarithms to base 2 unless a base is given; infinite (undefined) where q is 0 and p is not"),
    Function("tv", VECTOR, (2, 2), "p, q", "total variation distance ½ Σ |p − q| (each normalised to sum 1)",
             types=("vector", "vector"), vector=_vec_tv, scalar=_scalar_vec(_vec_tv)),
    Function("entropy", VECTOR, (1, 2), "p, base",
             "Shannon entropy −Σ p log p of a distribution (normalised to sum 1), logarithms to `base` (default 2)",
             types=("vector", "constant"), vector=_vec_entropy, scalar=_scalar_vec(_vec_entropy),
             note="entropy: logarithms to base 2 unless a base is given"),
    Function("len", VECTOR, (1, 1), "v", "number of elements of a vector", types=("vector",), vector=_vec_len,
             scalar=_scalar_vec(_vec_len)),
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
    # --- regressions: one estimate per coefficient (moraleval.measurement.regression fits them)
    Function("ols", REGRESSION, (1, 1), "response ~ terms",
             "ordinary least squares; interval: cluster bootstrap over the resampling unit (exact refits through "
             "unit sums), with the fit's Wald interval beside it", types=("formula",), returns="coefficients",
             recount=False),
    Function("logit", REGRESSION, (1, 1), "response ~ terms",
             "logistic regression of a yes/no response; interval: cluster bootstrap (each resample refitted), with "
             "the fit's Wald interval beside it", types=("formula",), returns="coefficients", recount=False),
    Function("mixed", REGRESSION, (1, 1), "response ~ terms + (terms | group)",
             "linear mixed model (REML, statsmodels MixedLM) with a random intercept and optional random slopes per "
             "group; interval: cluster bootstrap of the GLS estimator at the fitted variance components (exact on "
             "a balanced design), with the fit's Wald interval beside it", types=("formula",),
             returns="coefficients", recount=False),
    Function("z", TERM, (1, 1), "x", "in a formula: x standardised, (x − mean) / sd with the sample sd (R's "
             "`scale`), over the items the model is fitted on", types=("column",), recount=False),
    Function("ref", TERM, (2, 2), "column, level",
             "in a formula: a categorical term, one coefficient per level against the reference level (treatment "
             "coding)", types=("column", "constant"), recount=False),
    # --- lists for `for` lines
    Function("levels", LIST, (1, 1), "column",
             "the distinct values of a dataset column, sorted (a `for` line runs over them); of a column of lists "
             "their distinct elements, of a column of records their distinct keys", types=("column",),
             returns="list", recount=False),
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
#: (``detail``: "margin" for a test that needs ``margin D``)
TESTS: dict[str, Word] = _words(
    Word("bootstrap", "sign-flip permutation test over the resampling units (any metric)"),
    Word("mcnemar", "McNemar's test on paired binary outcomes (a metric that is one proportion)"),
    Word("paired_t", "paired t-test on per-item values (a metric that is one mean)"),
    Word("wilcoxon", "Wilcoxon signed-rank test on per-item values (a metric that is one mean)"),
    Word("tost", "equivalence: two one-sided tests that the paired difference lies within ± margin (any metric; "
                 "bootstrap over the resampling units)", "margin"),
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
    for kind in (AGGREGATE, CHOICE, VECTOR, ELEMENTWISE, REGRESSION, TERM, LIST):
        for f in functions_of(kind).values():
            sig, doc = f.signature.replace("|", "\\|"), f.doc.replace("|", "\\|")  # a table cell's own pipes
            lines.append(f"| `{sig}` | {f.level} | {f.arity_text} | {doc} |")
    return "\n".join(lines)


__all__ = ["AGGREGATE", "BOOTSTRAP_RESAMPLES", "BOOT_METHODS", "CHOICE", "CORRECTIONS", "DEFAULT_LOG_BASE", "ELEMENTWISE",
           "FUNCTIONS", "Function", "LIST", "REGRESSION", "Recipe", "RUN_COUNT_LIMITS", "TERM", "TESTS", "TYPES", "VECTOR",
           "Why", "Word", "browser_names", "function_table_markdown", "functions_of", "weighted_group_pearson",
           "weighted_quantile"]
