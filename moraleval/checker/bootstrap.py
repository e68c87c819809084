"""The bootstrap pass: the spec's one interval setting (resamples, seed, method, level) and each task's
resampling unit (``bootstrap on TASK unit ...``)."""

from __future__ import annotations

from moraleval.checker.context import CheckContext
from moraleval.checker.tasks import check_columns
from moraleval.language import nodes as n
from moraleval.language.vocabulary import BOOT_METHODS, BOOTSTRAP_RESAMPLES
from moraleval.util.text import did_you_mean


def check_bootstrap(ctx: CheckContext) -> None:
    boots = ctx.statements(n.Bootstrap)
    spec_wide = [b for b in boots if b.task is None]
    ctx.bootstrap = spec_wide[0] if spec_wide else n.Bootstrap()
    for extra in spec_wide[1:]:
        ctx.error("bootstrap is set twice", extra, "keep one bootstrap line", ctx.source_of(extra), code="E180")
    _check_settings(ctx, ctx.bootstrap)
    ctx.task_units = _task_units(ctx, boots, ctx.bootstrap)


def _check_settings(ctx: CheckContext, b: n.Bootstrap) -> None:
    src = ctx.source_of(b)
    if b.method not in BOOT_METHODS:
        ctx.error(f"unknown bootstrap method '{b.method}'", b, "use: method " + " | ".join(BOOT_METHODS), src,
                  code="E180")
    low, high = BOOTSTRAP_RESAMPLES
    if b.resamples < low:
        ctx.error(f"{b.resamples} resamples are too few for an interval", b, "use 1000 or more (default 2000)",
                  src, code="E181")
    elif b.resamples > high:
        ctx.error(f"{b.resamples:,} resamples are more than an interval can use (at most {high:,})", b,
                  "use 2000 (the default) to 10000; more only costs time and memory", src, code="E181")
    if not 0 < b.level < 1:
        ctx.error(f"level must be between 0 and 1, got {b.level}", b, "e.g. level 0.95", src, code="E182")
    covered = {x.task for x in ctx.statements(n.Bootstrap) if x.task}
    check_columns(ctx, b.unit, {k: v for k, v in ctx.tasks.items() if k not in covered}, b, "bootstrap unit")


def _task_units(ctx: CheckContext, boots: list[n.Bootstrap], default: n.Bootstrap) -> dict[str, tuple[str, ...]]:
    """task -> its resampling unit columns: its own ``bootstrap on`` line's, else the spec-wide line's."""
    tasks = ctx.tasks
    units = {}
    specific = {}
    for b in boots:
        if b.task is None:
            continue
        src = ctx.source_of(b)
        if b.task not in tasks:
            ctx.error(f"bootstrap on unknown task '{b.task}'", b, did_you_mean(b.task, tasks), src, code="E183")
            continue
        if b.task in specific:
            ctx.error(f"bootstrap on '{b.task}' is set twice", b, source=src, code="E180")
        defaults = n.Bootstrap()
        if (b.resamples, b.seed, b.method, b.level) != (defaults.resamples, defaults.seed, defaults.method,
                                                        defaults.level):
            ctx.error("'bootstrap on TASK' sets only the unit; resamples, seed, method and level are "
                      "set once for the whole spec", b, "move them to a line 'bootstrap ...' without 'on'",
                      src, code="E180")
        specific[b.task] = b
        check_columns(ctx, b.unit, {b.task: tasks[b.task]}, b, "bootstrap unit")
    for name in tasks:
        if name in specific:
            units[name] = tuple(specific[name].unit)
        else:
            units[name] = tuple(default.unit)
    return units
