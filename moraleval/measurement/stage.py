"""The measure stage: model outcomes + the plan's metric formulas -> estimates with bootstrap CIs, comparisons.

``measure(plan, outcomes)`` reads each item's answer out of its scores (softmax over the listed options, argmax),
evaluates every metric formula over the items of each task × condition (× report group) and attaches a bootstrap
interval to every estimate.  Per task one resample matrix (``moraleval.measurement.stats``) serves all conditions,
groups and comparisons, so differences between conditions are paired resample by resample.

How a formula is evaluated (see ``docs/statistics.md``), phase by phase:

* read-out (``readout``): each task's read-out items as arrays;
* per-item sub-expressions (inside an aggregate) are numpy column operations over all items of the task at once
  (``columns``: a value is a ``Col``, data plus a validity mask for missing / undefined values);
* every aggregate becomes a few weighted sums per resampling unit, by its vocabulary recipe (``aggregates``);
  the formula above the aggregates is compiled to a program over their totals (``compile``);
* these columns are resampled together, one matrix product per block of resamples (``resample``);
* the programs run on vectors of totals (1 for the point estimate, B for the bootstrap, one per unit for the
  jackknife), undefined values (0/0, no items) becoming NaN and then warnings (``estimates``, ``comparisons``).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from moraleval.errors import MeasureError
from moraleval.language import exprjson
from moraleval.language import vocabulary as vocab
from moraleval.measurement.answers import answer_classes, answer_distribution, degenerate_by_condition
from moraleval.measurement.comparisons import comparison_jobs, comparisons
from moraleval.measurement.compile import compile_metrics
from moraleval.measurement.estimates import estimate, estimate_jobs, replicates, unit_label
from moraleval.measurement.families import family_tests, reads_answer
from moraleval.measurement.readout import TaskData, read_tasks, report_groups
from moraleval.measurement.results import Measurement
from moraleval.plan.memo import memoised
from moraleval.plan.types import Plan, RequestOutcome


def measure(plan: Plan, outcomes: Mapping[str, RequestOutcome], *,
            keep: dict[tuple, dict[str, Any]] | None = None) -> Measurement:
    """Evaluate every metric of ``plan`` on the outcomes: estimates with bootstrap CIs, then the comparisons.

    ``keep`` (a dict) receives each estimate's bootstrap replicates, for contrasts across models
    (``moraleval.compare``): the same seed draws the same units for every model, so they pair up."""
    boot = plan.bootstrap
    if boot.method not in vocab.BOOT_METHODS:
        raise MeasureError(f"unknown bootstrap method '{boot.method}' (expected {' or '.join(vocab.BOOT_METHODS)})")
    if boot.resamples < 1:
        raise MeasureError("bootstrap needs at least 1 resample")
    read = read_tasks(plan, outcomes)
    tasks, warnings = read.tasks, read.warnings
    compilers, tops = compile_metrics(plan)

    # ---- phase 1: register every context's columns
    groups_of = {name: report_groups(t, plan.report_by, warnings) if name in compilers else []
                 for name, t in tasks.items()}
    est_jobs = estimate_jobs(plan, tasks, compilers, tops, groups_of)
    cmp_jobs = comparison_jobs(plan, tasks, compilers, tops, groups_of)

    # ---- phase 2: one resample matrix per task
    for t in tasks.values():
        if t.store.loc:
            t.store.run(np.random.default_rng(boot.seed), boot.resamples)

    # ---- phase 3: evaluate
    classes = memoised(plan, "measure.answer_classes", lambda: answer_classes(plan, plan.items))
    distribution = answer_distribution(plan, plan.items, read.ok, read.pos, classes)
    degenerate = degenerate_by_condition(distribution)
    estimates = []
    answers_read: dict[str, bool] = {}  # degenerate answers matter only to a metric that reads the answer
    for job in est_jobs:
        mp = job.metric
        if mp.name not in answers_read:
            answers_read[mp.name] = reads_answer(mp.expr, set(tasks[mp.task].choice_names))
        degen = degenerate.get((job.task, job.condition), ()) if answers_read[mp.name] else ()
        estimates.append(estimate(job, boot, unit_label(plan, job.task), degen))
        if not job.group:
            read.dropped[job.task]["undefined_values"] += job.comp.ctx.undefined
    estimates = family_tests(est_jobs, estimates, compilers, boot)
    reading = {(mp.task, mp.name) for mp in plan.metrics if answers_read.get(mp.name)}
    results = comparisons(cmp_jobs, boot, degenerate, reading)
    if keep is not None:
        keep.update(replicates(est_jobs, compilers))
    readouts = read.readouts.with_item_values(item_values(plan, tasks)) if plan.item_values else read.readouts
    return Measurement(estimates, results, read.dropped, readouts, warnings, distribution)


def item_values(plan: Plan, tasks: Mapping[str, TaskData]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Each per-item definition the metrics use, evaluated on its task's read-out items with the metrics' own
    semantics (and column cache): (name, position of each plan item in the values or -1, the values)."""
    out = []
    for iv in plan.item_values:
        t = tasks.get(iv.task)
        if t is None or not t.size:
            continue
        col = t.eval(exprjson.from_json(iv.expr), iv.name)
        where = np.full(len(plan.items), -1, dtype=np.intp)
        where[t.plan_idx] = np.arange(t.size)
        values = col.objects().copy()
        values[~col.valid] = None
        out.append((iv.name, where, values))
    return out
