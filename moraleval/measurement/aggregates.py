"""Aggregates (``mean``, ``sum``, ``count``, ``pearson``, ``var``, ``std``, ``median``, ``quantile``): the items of a
context -> one number.

An aggregate with a ``language.vocabulary`` recipe is computed by unit sums: its per-item columns
(``Recipe.columns``) are summed per resampling unit and registered in the task's store, so that one matrix
product resamples them all; ``Recipe.finish`` turns the resampled totals into the aggregate's value.  An order
statistic (``median``, ``quantile``: ``Function.weighted``) is not a function of unit sums: its items are
registered with their units instead, and each resample's value is computed from the items' weights (how often
their unit was drawn), from the same count matrix.  The per-item columns depend only on the formula text and the
task, so they are computed once and shared by every context (condition, report group, paired subset) the formula
is evaluated on.
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np

from moraleval.language import exprjson
from moraleval.language import nodes as n
from moraleval.language import vocabulary as vocab
from moraleval.measurement.columns import check_arity, metric_error, missing_numbers, truth
from moraleval.measurement.resample import Context, Get, Program, note_once

#: the argument kind (``Function.args``) that is a truth per item, not a number
CONDITION = "condition"
#: the argument kind that says which group an item is in (any per-item value)
GROUP = "group"


@attrs.frozen(eq=False)
class ItemColumns:
    """An aggregate's per-item side over all items of a task: the items it includes (``used``), those its filter
    keeps (or whose filter is undefined) but whose value is undefined or missing (``bad``, with ``reasons``), and
    the recipe's per-item columns (for an order statistic: the values, in ``columns[0]``, and its constants)."""

    src: str
    recipe: vocab.Recipe | None
    used: np.ndarray
    bad: np.ndarray
    columns: list[np.ndarray]
    reasons: tuple[tuple[np.ndarray, str], ...] = ()
    weighted: Any = None  # Function.weighted of an order statistic
    constants: tuple[float, ...] = ()
    grouped: Any = None  # Function.grouped of a statistic of group means; its group codes are the last column


def item_columns(e: n.Call, t: Any, metric: str, cache: dict[tuple[int, str], ItemColumns]) -> ItemColumns:
    """The per-item columns of aggregate ``e`` over all items of task ``t`` (a ``readout.TaskData``), computed
    once per formula text (``cache``)."""
    src = exprjson.to_source(e)
    key = (id(t), src)
    cached = cache.get(key)
    if cached is not None:
        return cached
    f = vocab.FUNCTIONS[e.func]
    check_arity(f, e, metric)
    ev = t.eval
    reasons: list[tuple[np.ndarray, str]] = []
    if e.where is not None:
        wc = ev(e.where, metric)
        where, w_undef = truth(wc), wc.undefined()
        if w_undef.any():
            reasons += [(m & w_undef, msg) for m, msg in wc.why]
            reasons.append((w_undef, f"the filter `{exprjson.to_source(e.where)}` is undefined (an undefined value "
                                     "met a comparison or `if`)"))
    else:
        where, w_undef = np.ones(t.size, bool), np.zeros(t.size, bool)
    valid = np.ones(t.size, bool)  # every number argument present
    args: list[np.ndarray] = []
    constants: list[float] = []
    for i, a in enumerate(e.args):
        kind = f.arg_type(i)
        if kind == "constant":
            if not (isinstance(a, n.Literal) and isinstance(a.value, (int, float)) and not isinstance(a.value, bool)):
                raise metric_error(metric, f"{e.func}(): argument {i + 1} must be a number written in the formula", e)
            constants.append(float(a.value))
            continue
        x = ev(a, metric)
        if kind == GROUP:  # any per-item value: each distinct one is a group (codes 0, 1, ... by first appearance)
            if x.kind == "vec":
                raise metric_error(metric, f"{e.func}(): the group must be one value per item, not a vector", e)
            objs = x.objects() if x.kind != "null" else np.full(t.size, None, dtype=object)
            present = np.fromiter((v is not None for v in objs), bool, t.size) & x.valid
            codes: dict[str, int] = {}
            args.append(np.fromiter((codes.setdefault(repr(v), len(codes)) if ok else -1
                                     for v, ok in zip(objs.tolist(), present.tolist())), np.float64, t.size))
            if (~present).any():
                valid = valid & present
                reasons.append((~present, "its group is missing"))
            continue
        if kind == CONDITION:
            u = x.undefined()
            if u.any():  # an undefined condition is not silently false: the item is left out, with the reason
                valid = valid & ~u
                reasons += [(m & u, msg) for m, msg in x.why]
            args.append(truth(x).astype(np.float64))
            continue
        if x.kind == "vec":
            raise metric_error(metric, f"{e.func}() needs a number per item, got a vector (reduce it per item "
                                       "first: sum(v), len(v), v[0], jsd(p, q), ...)", e)
        if not x.numeric:
            if x.kind != "null":
                raise metric_error(metric, f"{e.func}() needs numbers or booleans, got text", e)
            x = missing_numbers(t.size)
        valid = valid & x.valid
        reasons += list(x.why)
        args.append(x.floats())
    incl = where & valid
    bad = (where & ~valid) | w_undef
    reasons = [(m & bad, msg) for m, msg in reasons if np.any(m & bad)]
    args = [np.where(incl, x, 0.0) for x in args]
    if f.weighted is not None:
        out = cache[key] = ItemColumns(src, None, incl, bad, args, tuple(reasons), f.weighted, tuple(constants))
        return out
    if f.grouped is not None:
        out = cache[key] = ItemColumns(src, None, incl, bad, args, tuple(reasons), grouped=f.grouped)
        return out
    if f.recipe.centred:
        # centred on the task's mean (every context the same centre, so that the sign-flip test can swap a
        # unit's sums between two conditions)
        args = [np.where(incl, x - (float(x[incl].mean()) if incl.any() else 0.0), 0.0) for x in args]
    out = cache[key] = ItemColumns(src, f.recipe, incl, bad, f.recipe.columns(incl.astype(np.float64), *args),
                                   tuple(reasons))
    return out


def aggregate(e: n.Call, ctx: Context, gids: list[int], cache: dict[tuple[int, str], ItemColumns]) -> Program:
    """Register aggregate ``e``'s per-unit sum columns for ``ctx`` (their ids appended to ``gids``); the program
    that finishes it from their totals.  Items left out for an undefined value are counted and noted."""
    cols = item_columns(e, ctx.t, ctx.metric, cache)
    idx = ctx.idx
    ctx.used_local |= cols.used[idx]
    bad = cols.bad[idx]
    k = int(np.count_nonzero(bad))
    if k:
        ctx.undefined += k
        explained = np.zeros(idx.size, bool)
        for mask, msg in cols.reasons:
            m = mask[idx] & bad
            if m.any():
                ctx.notes.append(f"{int(m.sum())} item(s) left out of {cols.src}: {msg}")
                ctx.undefined_notes.append(ctx.notes[-1])
                explained |= m
        rest = int(np.count_nonzero(bad & ~explained))
        if rest:
            ctx.notes.append(f"{rest} item(s) left out of {cols.src}: value undefined (missing value or "
                             "arithmetic on none)")
            ctx.undefined_notes.append(ctx.notes[-1])
    if cols.weighted is not None:
        return _order_statistic(cols, ctx, gids)
    if cols.grouped is not None:
        return _group_statistic(cols, ctx, gids)
    ids = [ctx.column(c) for c in cols.columns]
    gids += ids
    finish, src = cols.recipe.finish, cols.src

    def finished(get: Get, notes: list[str] | None) -> np.ndarray:
        # the vocabulary's messages say what is undefined; the formula's text says where
        return finish([get(g) for g in ids], lambda cond, msg: note_once(notes, cond, f"{src}: {msg}"))
    return finished


def _order_statistic(cols: ItemColumns, ctx: Context, gids: list[int]) -> Program:
    """An order statistic (median, quantile) over the context's included items: registered with their units, each
    resample's value computed from the items' weights."""
    local = cols.used[ctx.idx]
    x = cols.columns[0][ctx.idx][local]
    order = np.argsort(x, kind="stable")
    xs = x[order]
    units = ctx.units[local][order]
    fn, consts, src = cols.weighted, cols.constants, cols.src

    def values(w: np.ndarray) -> np.ndarray:
        return fn(xs, w, *consts)[:, None]
    gid = ctx.weighted(units, values, 1)[0]
    gids.append(gid)

    def finished(get: Get, notes: list[str] | None) -> np.ndarray:
        v = get(gid)
        note_once(notes, np.isnan(v), f"{src}: no items")
        return v
    return finished


def _group_statistic(cols: ItemColumns, ctx: Context, gids: list[int]) -> Program:
    """A statistic of group means (``group_pearson``) over the context's included items: registered with their
    units, each resample's value computed from the items' weights (the groups' means as drawn)."""
    local = cols.used[ctx.idx]
    *values, codes = [c[ctx.idx][local] for c in cols.columns]
    _, dense = np.unique(codes.astype(np.intp), return_inverse=True)  # the context's groups as 0, 1, ...
    units = ctx.units[local]
    fn, src = cols.grouped, cols.src

    def resampled(w: np.ndarray) -> np.ndarray:
        return fn(*values, dense, w)[:, None]
    gid = ctx.weighted(units, resampled, 1)[0]
    gids.append(gid)

    def finished(get: Get, notes: list[str] | None) -> np.ndarray:
        v = get(gid)
        note_once(notes, np.isnan(v), f"{src}: fewer than 2 groups, or a constant group mean")
        return v
    return finished
