"""Statistics across models: differences between models, differences in differences, trends over a model axis.

Every model is measured by ``moraleval.measurement`` with the plan's bootstrap seed, so (when the models answered the
same items) the ``b``-th resample draws the same units for every model and condition.  Each estimate's replicate
``b`` therefore pairs with every other estimate's replicate ``b``, and any contrast between models is computed
replicate by replicate (a joint, paired cluster bootstrap) - no new resampling, and each model's own estimates
are exactly those of a single-model run.

* model difference ``B − A`` (per metric × task × condition × group): percentile interval of the paired replicate
  differences; p from the sign-flip test over the resampling units (``test bootstrap``: each unit's per-unit
  sums swapped between the two models, the whole formula re-evaluated; exact up to
  ``stats.SIGNFLIP_EXACT_MAX_UNITS`` units, so it stays valid with few units, as for the single-model compares)
  or McNemar on the per-item outcomes of a proportion metric (exact below ``stats.MCNEMAR_EXACT_BELOW``
  discordant pairs);
* difference in differences ``(B_X − B_Y) − (A_X − A_Y)`` for each condition pair ``X vs Y`` the spec compares,
  p from the sign-flip test that swaps each unit between the models in both conditions at once;
* trend: the least-squares slope of the metric (or of a condition effect) over the axis (log10 of it for
  ``scale log``), its interval from the slopes of the replicates, p from a permutation test of the models within
  each unit (``stats.permutation_test``, the sign-flip test for more than two arms);
* Holm / BH / Bonferroni within each family (one ``compare model`` line; the trends form one family).

Every contrast carries the flags of ``flags.comparison_flags`` (few_units, no_test, zero_width, undefined), the
answer flags (degenerate_answers, position_preference) of the estimates it is built on, named by model, and
``p_method``.  The statistics are ``contrasts``' pure functions over the replicates ``measure(..., keep=...)``
exposes; the report writes ``Across.to_json()``.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping, Sequence

import attrs

from moraleval.compare.contrasts import AcrossResult, difference, difference_in_differences, trend
from moraleval.measurement import finite_or_none
from moraleval.measurement import flags as fl
from moraleval.measurement import stats
from moraleval.util import numbers

__all__ = ["Across", "measure_across", "summary_lines"]


@attrs.frozen(eq=False)
class Across:
    """Everything across the models of one run."""

    models: tuple[str, ...] = attrs.field(converter=tuple)
    about: dict[str, dict[str, Any]]
    axis: str | None
    scale: str | None
    numeric_axis: bool
    results: tuple[AcrossResult, ...] = attrs.field(converter=tuple)
    warnings: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    def of(self, kind: str) -> list[AcrossResult]:
        return [r for r in self.results if r.kind == kind]

    def to_json(self) -> dict[str, Any]:
        return {"models": list(self.models), "about": self.about, "axis": self.axis, "scale": self.scale,
                "numeric_axis": self.numeric_axis, "results": [r.to_json() for r in self.results],
                "warnings": list(self.warnings)}


def _gkey(group: Mapping[str, Any]) -> str:
    return json.dumps(dict(group), sort_keys=True, default=str)


def _numeric(values: Sequence[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)) for v in values)


def measure_across(plan: Any, runs: Mapping[str, Any], *, axis: str | None = None, scale: str | None = None
                   ) -> Across:
    """The contrasts across the complete models ``runs`` (name -> pipeline.ModelRun, in run order)."""
    names = list(runs)
    reps = {m: runs[m].replicates or {} for m in names}
    about = {m: dict(runs[m].about or {}) for m in names}
    level = plan.bootstrap.level
    seed, flips = plan.bootstrap.seed, plan.bootstrap.resamples
    warnings: list[str] = []
    if plan.bootstrap.method != "percentile":
        warnings.append(f"contrasts across models use percentile intervals (the spec asks for "
                        f"{plan.bootstrap.method} within a model)")
    cond_order = {t: [c if isinstance(c, str) else c.get("name") for c in info.get("conditions", [])]
                  for t, info in plan.tasks.items()}
    metric_order = [m.name for m in plan.metrics]
    cond_pairs: dict[str, list[tuple[str, str]]] = {}
    for c in plan.comparisons:
        if not getattr(c, "models", False):
            pairs = cond_pairs.setdefault(c.metric, [])
            if (c.treatment, c.baseline) not in pairs:
                pairs.append((c.treatment, c.baseline))

    # the model comparisons: declared (`compare model b vs a`), else every model vs the first one
    declared = [c for c in plan.comparisons if getattr(c, "models", False)]
    if not declared and len(names) > 1:
        families = {-1: [(b, names[0], m, "bootstrap", "holm", None) for b in names[1:] for m in metric_order]}
    else:
        families = {}
        for c in declared:
            families.setdefault(c.family, []).append((c.treatment, c.baseline, c.metric, c.test, c.correction,
                                                      getattr(c, "margin", None)))

    def keys_of(model: str, metric: str) -> list[tuple]:
        ks = [k for k in reps[model] if k[1] == metric]
        return sorted(ks, key=lambda k: (k[0], _rank(cond_order.get(k[0], []), k[2]), k[3] != "{}", k[3]))

    rows: list[tuple[str, AcrossResult]] = []  # (family id, result before adjustment)
    did_seen: set[tuple] = set()  # a DiD does not depend on the test: once per models × metric × conditions
    skipped: dict[tuple[str, str], list[str]] = {}  # declared model pairs with a model not in this run
    for fam, members in families.items():
        for b, a, metric, test, correction, margin in members:
            if b not in reps or a not in reps:
                ms = skipped.setdefault((b, a), [])
                if metric not in ms:
                    ms.append(metric)
                continue
            for key in keys_of(b, metric):
                if key not in reps[a]:
                    continue
                rows.append((f"model:{fam}", difference(key, b, a, reps[b][key], reps[a][key], test, correction,
                                                        level, seed=seed, n_flips=flips, margin=margin)))
            for x, y in cond_pairs.get(metric, []):
                for key in keys_of(b, metric):
                    task, _m, cond, g = key
                    if cond != x:
                        continue
                    ky = (task, metric, y, g)
                    if (b, a, key, y) in did_seen or not all(k in reps[m] for m in (a, b) for k in (key, ky)):
                        continue
                    did_seen.add((b, a, key, y))
                    rows.append((f"did:{fam}", difference_in_differences(key, ky, b, a, reps, correction, level,
                                                                         seed=seed, n_flips=flips)))
    if skipped:
        missing = sorted({m for pair in skipped for m in pair if m not in reps})
        warnings.append(f"{len(skipped)} declared model comparison(s) ("
                        + ", ".join(f"{b} vs {a}" for b, a in skipped)
                        + f") skipped: model(s) {', '.join(missing)} not in this run")
    axis_values = [about[m].get(axis) for m in names] if axis else []
    numeric = bool(axis) and len(names) > 1 and _numeric(axis_values)
    if numeric:
        xs = [math.log10(float(v)) if scale == "log" else float(v) for v in axis_values]
        if len(set(xs)) < 2:
            warnings.append(f"axis '{axis}': every model has the same value; no trend")
        else:
            first = names[0]
            picks: dict = {}  # the trend tests' one-hot matrices, shared (see permutation_trend_test)
            for metric in metric_order:
                for key in keys_of(first, metric):
                    if key[3] != "{}" or not all(key in reps[m] for m in names):
                        continue
                    rows.append(("trend", trend(key, None, names, xs, axis_values, reps, axis, scale, level,
                                                seed=seed, n_flips=flips, picks=picks)))
                for x, y in cond_pairs.get(metric, []):
                    for key in keys_of(first, metric):
                        task, _m, cond, g = key
                        ky = (task, metric, y, g)
                        if cond != x or g != "{}" or not all(k in reps[m] for m in names for k in (key, ky)):
                            continue
                        rows.append(("trend", trend(key, ky, names, xs, axis_values, reps, axis, scale, level,
                                                    seed=seed, n_flips=flips, picks=picks)))
            if len(names) == 2:
                warnings.append("a trend over two models is their difference divided by the axis distance")

    # corrections within each family and group
    results = [r for _fam, r in rows]
    fam_of: dict[str, list[int]] = {}
    for i, (fam, r) in enumerate(rows):
        fam_of.setdefault(f"{fam}|{r.kind}|{_gkey(r.group)}", []).append(i)
    for members in fam_of.values():
        method = results[members[0]].correction
        adj = stats.adjust_pvalues([results[i].p_value for i in members], method)
        for i, p in zip(members, adj):
            results[i] = attrs.evolve(results[i], p_adjusted=finite_or_none(p))
    results = _with_answer_flags(results, runs, names)
    sigs = {m: {v["units"] for v in reps[m].values()} for m in names}
    for m in names[1:]:
        if sigs[m] != sigs[names[0]]:
            warnings.append(f"model '{m}' was measured on other items than '{names[0]}' (some items have no "
                            "outcome): contrasts between them are not paired and have no interval")
    return Across(names, about, axis, scale, numeric, results, warnings)


#: the flags a model's estimate passes on to every contrast built on it: a contrast of degenerate answers (or of a
#: preference for one place) is no more a measurement than the estimates are
_ANSWER_FLAGS = ("degenerate_answers", "position_preference")


def _with_answer_flags(results: list[AcrossResult], runs: Mapping[str, Any], names: Sequence[str]
                       ) -> list[AcrossResult]:
    """Each contrast with the answer flags of the estimates it is built on (each model × condition it reads),
    named by model, as a comparison between conditions carries those of both conditions."""
    flags_of: dict[tuple, list[dict[str, str]]] = {}
    for m in names:
        for e in getattr(getattr(runs[m], "measurement", None), "estimates", ()) or ():
            got = [f for f in e.flags if f.get("code") in _ANSWER_FLAGS]
            if got:
                flags_of[(m, e.task, e.metric, e.condition, _gkey(e.group))] = got
    if not flags_of:
        return results
    out = []
    for r in results:
        models = [r.model, r.baseline_model] if r.model else list(names)
        conds = [r.condition] if r.condition else [r.treatment, r.baseline]
        have = {(f.get("code"), f.get("message")) for f in r.flags}
        extra = []
        for m in models:
            for c in conds:
                for f in flags_of.get((m, r.task, r.metric, c, _gkey(r.group)), ()):
                    g = {"code": f["code"], "message": f"model {m}, {c}: {f.get('message', '')}"}
                    if (g["code"], g["message"]) not in have:
                        have.add((g["code"], g["message"]))
                        extra.append(g)
        out.append(attrs.evolve(r, flags=(*r.flags, *extra)) if extra else r)
    return out


def _rank(seq: Sequence[str], v: str) -> tuple[int, str]:
    return (seq.index(v), v) if v in seq else (len(seq), v)


def summary_lines(across: Across) -> list[str]:
    """Terminal lines: the ungrouped model differences, differences in differences and trends."""
    out: list[str] = []
    for r in across.results:
        if r.group:
            continue
        p = "" if r.p_adjusted is None else f" {numbers.p_phrase(r.p_adjusted, 'p_adj')}"
        p += f" ({fl.p_method_label(r.p_method)})" if r.p_method and p else ""
        value, interval = numbers.fmt_estimate(r.effect, r.ci_low, r.ci_high, signed=True, minus="-")
        ci = "" if r.ci_low is None or r.ci_high is None else f" {interval}"
        v = "undefined" if r.effect is None else value
        if r.kind == "model_difference":
            what = f"{r.model} - {r.baseline_model} in {r.condition}"
        elif r.kind == "difference_in_differences":
            what = f"({r.treatment} - {r.baseline}) in {r.model} - in {r.baseline_model}"
        elif r.kind == "trend":
            what = f"slope over {'log10 ' if r.scale == 'log' else ''}{r.axis} in {r.condition}"
        else:
            what = f"slope of {r.treatment} - {r.baseline} over {'log10 ' if r.scale == 'log' else ''}{r.axis}"
        flag = " (few units)" if any(f.get("code") == "few_units" for f in r.flags) else ""
        out.append(f"{r.task}: {r.metric}: {what}: {v}{ci}{p}{flag}")
    if out:
        out.insert(0, "across models:")
    out += [f"warning: {w}" for w in across.warnings]
    return out
