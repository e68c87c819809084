"""Families of estimates: the tests of a family's members and their correction.

A family is the set of estimates one spec line yields: ``metric NAME for VAR in LIST vs REF`` (each level minus
the reference level) or a regression (one estimate per coefficient).  Each member tests "its value is 0":

* a contrast against the reference level, by the sign-flip test over the resampling units (``significance``):
  the member's formula at its level and at the reference level are the two sides, and swapping a unit swaps its
  items of the two levels, so the test is valid with few units and for any formula of unit sums;
* a regression coefficient, by the fit's Wald test (the intercept is not tested).

The p-values are corrected within the family, separately for each condition (and report group, and model).

A ``ranked`` family also ranks its members (1 = the largest value) on the point estimates and on every bootstrap
resample (the members' replicates share the resamples, so a resample ranks them jointly); a member's rank interval
is the percentile interval of its resampled ranks, and ``top`` the share of resamples in which it ranks first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any, Mapping

import attrs
import numpy as np

from moraleval.language import exprjson
from moraleval.language.formulas import INTERCEPT
from moraleval.language.vocabulary import CHOICE, FUNCTIONS
from moraleval.measurement import stats
from moraleval.measurement.compile import Compiler
from moraleval.measurement.results import Estimate, finite_or_none
from moraleval.measurement.significance import sign_flip
from moraleval.plan.types import BootstrapPlan

__all__ = ["family_tests", "ranks", "reads_answer"]


def _member_p(job: Any, est: Estimate, compilers: Mapping[str, Compiler], boot: BootstrapPlan
              ) -> tuple[float | None, str, list[str]]:
    """(p, p_method, warnings) of one member."""
    mp = job.metric
    if est.value is None:
        return None, "", []
    if mp.test == "wald":
        fit = job.comp.ctx.extra.get("regression")
        label = (mp.member or {}).get("term")
        if fit is None or label is None or label == INTERCEPT:
            return None, "", []
        w = fit.wald(label)
        p = w.get("p_value") if w else None
        return p, ("wald" if p is not None else ""), ([] if p is not None else ["no Wald p-value from the fit"])
    if mp.test == "sign_flip" and mp.parts:
        a, b = (exprjson.from_json(x) for x in mp.parts)
        compiler = compilers[job.task]
        ta, tb = compiler.inline(a, mp.name), compiler.inline(b, mp.name)
        ctx = job.comp.ctx
        ident = json.dumps([mp.task, mp.name, job.condition, job.group], sort_keys=True, default=str)
        seed = [boot.seed, int.from_bytes(hashlib.blake2b(ident.encode("utf-8"), digest_size=8).digest(), "little")]
        res = sign_flip(compiler, ta, ctx.t, ctx.mask, ctx.mask, mp.name, boot.resamples, seed, top_b=tb)
        if res is None:
            return None, "", ["no sign-flip test for this contrast (its two sides do not pair up): no p-value"]
        return finite_or_none(res.p_value), (res.method if res.p_value is not None else ""), list(res.warnings)
    return None, "", []


def family_tests(jobs: Sequence[Any], estimates: list[Estimate], compilers: Mapping[str, Compiler],
                 boot: BootstrapPlan) -> list[Estimate]:
    """The estimates with their members' p-values and the family's corrected p-values filled in."""
    out = list(estimates)
    families: dict[str, list[int]] = {}
    for i, (job, est) in enumerate(zip(jobs, estimates)):
        mp = job.metric
        if not mp.family or not mp.test:
            continue
        p, method, warns = _member_p(job, est, compilers, boot)
        out[i] = attrs.evolve(est, p_value=p, p_method=method or None, correction=mp.correction or "holm",
                              warnings=tuple(est.warnings) + tuple(warns))
        key = json.dumps([mp.task, mp.family, job.condition, job.group, est.model], sort_keys=True, default=str)
        families.setdefault(key, []).append(i)
    for members in families.values():
        method = out[members[0]].correction or "holm"
        adj = stats.adjust_pvalues([out[i].p_value for i in members], method)
        for i, a in zip(members, adj):
            out[i] = attrs.evolve(out[i], p_adjusted=finite_or_none(a))
    ranked: dict[str, list[int]] = {}
    for i, (job, est) in enumerate(zip(jobs, out)):
        if job.metric.family and job.metric.ranked:
            key = json.dumps([job.task, job.metric.family, job.condition, job.group, est.model], sort_keys=True,
                             default=str)
            ranked.setdefault(key, []).append(i)
    for members in ranked.values():
        for i, rank in zip(members, ranks([jobs[k] for k in members], [out[k] for k in members], boot.level)):
            out[i] = attrs.evolve(out[i], rank=rank)
    return out


def _ranks_of(values: np.ndarray) -> np.ndarray:
    """Rank of each column per row (1 = the largest; ties share the better rank); NaN where undefined."""
    v = np.where(np.isnan(values), -np.inf, values)
    r = 1.0 + (v[:, None, :] > v[:, :, None]).sum(axis=2)
    return np.where(np.isnan(values), np.nan, r)


def ranks(jobs: Sequence[Any], ests: Sequence[Estimate], level: float) -> list[dict[str, Any] | None]:
    """Each member's rank among the family (on the point estimates) and its interval over the resamples."""
    points = np.array([[np.nan if e.value is None else e.value for e in ests]])
    boots = [job.comp.evaluate()[1] for job in jobs]
    if not boots or any(b.size != boots[0].size for b in boots):
        return [None] * len(ests)
    point_rank = _ranks_of(points)[0]
    rb = _ranks_of(np.column_stack(boots)) if boots[0].size else np.zeros((0, len(ests)))
    out: list[dict[str, Any] | None] = []
    lo_q, hi_q = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    n_boot = rb.shape[0] if rb.size else 0
    for k, e in enumerate(ests):
        if e.value is None:
            out.append(None)
            continue
        col = rb[:, k][np.isfinite(rb[:, k])] if rb.size else np.zeros(0)
        # the estimate's own rule: a member undefined in too many resamples has no interval, nor has its rank (its
        # ranks would come from the resamples where it happens to be defined: a member with one item would look
        # surely first or last)
        undefined = n_boot - col.size
        if col.size and undefined <= stats.MAX_UNDEFINED_FRACTION * n_boot:
            lo, hi = np.percentile(col, [lo_q, hi_q], method="inverted_cdf")
            rank = {"ci_low": int(lo), "ci_high": int(hi)}
        else:
            rank = {"ci_low": None, "ci_high": None,
                    "reason": f"undefined in {undefined} of {n_boot} resamples" if n_boot else "no resamples"}
        out.append({"rank": int(point_rank[k]), "of": int(np.isfinite(point_rank).sum()), **rank,
                    # the share of all resamples in which it ranks first (one where it is undefined: not first)
                    "top": float((col == 1).sum() / n_boot) if n_boot else None})
    return out


def reads_answer(e: Any, choices: set[str]) -> bool:
    """Whether a (JSON) formula reads a choice's chosen answer (its argmax), not only its probabilities: only
    such a metric is judged by the answer distribution (``degenerate_answers``)."""
    if isinstance(e, Mapping):
        if "name" in e and len(e) == 1:
            return e["name"] in choices
        if "call" in e:
            args = list(e.get("args") or [])
            f = FUNCTIONS.get(e["call"])
            if f is not None and f.kind == CHOICE:
                args = args[1:]  # the choice's name is not its answer
            return any(reads_answer(a, choices) for a in args) or \
                (e.get("where") is not None and reads_answer(e["where"], choices))
        return any(reads_answer(v, choices) for v in e.values())
    if isinstance(e, list):
        return any(reads_answer(v, choices) for v in e)
    return False

