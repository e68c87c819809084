"""The comparisons pass: ``compare`` lines between the conditions of a metric's task, their test and
correction known (``moraleval.language.vocabulary``), the test suited to the metric's form, an equivalence test's
margin.  A family named in a compare line stands for its members: a metric family (``similarity``: every
``similarity[...]``) and a condition family (``CP vs Q``: every ``CP[...]`` against ``Q``; two families of the
same values: member by member; a condition family on a metric family of the same values: member by member too,
``CP[Russia]`` on ``steering[Russia]``)."""

from __future__ import annotations

from typing import Any, Callable

import attrs

from moraleval.checker.context import CheckContext
from moraleval.language import nodes as n
from moraleval.language.vocabulary import CORRECTIONS, TESTS
from moraleval.util.text import did_you_mean


def expand_metrics(ctx: CheckContext, names: tuple[str, ...]) -> tuple[str, ...]:
    """Metric names with each family name replaced by its members."""
    out: list[str] = []
    for name in names:
        for m in ctx.metric_families.get(name, [name]):
            if m not in out:
                out.append(m)
    return tuple(out)


def _condition_families(ctx: CheckContext) -> dict[str, list[str]]:
    fams: dict[str, list[str]] = {}
    for per_task in ctx.condition_families.values():
        for fam, members in per_task.items():
            fams.setdefault(fam, members)
    return fams


def _labels(family: str, members: list[str]) -> list[str]:
    """The members' value labels: ``[Russia]`` of ``CP[Russia]``."""
    return [m[len(family):] for m in members]


def _combos(ctx: CheckContext, cmp: n.Comparison) -> tuple[tuple[str, str, str], ...]:
    """(treatment, baseline, metric) triples when a condition family of the line meets a metric family of the same
    values: those pair member by member (``compare CP vs default on steering``: CP[Russia] on steering[Russia]),
    every other pair × metric as usual.  Empty when no such meeting happens (every pair on every metric)."""
    conds = _condition_families(ctx)
    out: list[tuple[str, str, str]] = []
    matched = False
    for name in cmp.metrics:
        members = ctx.metric_families.get(name)
        for a, b in cmp.pairs:
            fam = a if a in conds else (b if b in conds else None)
            if members and fam is not None and not (a in conds and b in conds) and \
                    sorted(_labels(name, members)) == sorted(_labels(fam, conds[fam])):
                matched = True
                for m in members:
                    c = fam + m[len(name):]
                    out.append((c, b, m) if fam == a else (a, c, m))
                continue
            for ea, eb in _expand_pairs(ctx, ((a, b),)):
                for m in (members or [name]):
                    out.append((ea, eb, m))
    return tuple(dict.fromkeys(out)) if matched else ()


def _expand_pairs(ctx: CheckContext, pairs: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """Condition pairs with condition families replaced by their members (in any task that has them)."""
    fams = _condition_families(ctx)
    out: list[tuple[str, str]] = []
    for a, b in pairs:
        ma, mb = fams.get(a), fams.get(b)
        if ma and mb:
            suffix = {m[len(a):]: m for m in ma}
            got = [(suffix[m[len(b):]], m) for m in mb if m[len(b):] in suffix]
            out += got or [(a, b)]
        elif ma:
            out += [(m, b) for m in ma]
        elif mb:
            out += [(a, m) for m in mb]
        else:
            out.append((a, b))
    return tuple(dict.fromkeys(out))


def margin_of(ctx: CheckContext, cmp: n.Comparison, error: Callable[..., None]) -> float | None:
    """An equivalence test's margin as a number (a parameter's value where it names one); errors for a missing,
    non-positive or unneeded margin."""
    if cmp.test != "tost":
        if cmp.margin is not None:
            error(f"`margin` belongs to an equivalence test (test tost), not to test {cmp.test}", cmp,
                  "write: test tost margin D", code="E179")
        return None
    if cmp.margin is None:
        error("an equivalence test needs its margin: the largest difference that still counts as equivalent",
              cmp, "write e.g.: test tost margin 0.02 (in the metric's units)", code="E179")
        return None
    value: Any = cmp.margin
    if isinstance(value, str):
        if value not in ctx.consts:
            error(f"margin '{value}' is not a parameter or constant", cmp, did_you_mean(value, ctx.consts),
                  code="E179")
            return None
        value = ctx.consts[value]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        error(f"the equivalence margin must be a positive number, not {value!r}", cmp, code="E179")
        return None
    return float(value)


def check_comparisons(ctx: CheckContext) -> None:
    written = [c for c in ctx.statements(n.Comparison) if not c.models]  # `compare model`: models pass
    by_name = {m.name: m for m in ctx.metrics}
    declared = {s.name for s in ctx.statements(n.Metric) if not s.params}
    ctx.comparisons = []
    for cmp in written:
        src = ctx.source_of(cmp)

        def error(msg: str, node: Any, hint: str | None = None, code: str = "E179", src=src) -> None:
            ctx.error(msg, node, hint, src, code=code)
        margin = margin_of(ctx, cmp, error)
        expanded = attrs.evolve(cmp, metrics=expand_metrics(ctx, cmp.metrics),
                                pairs=_expand_pairs(ctx, cmp.pairs), margin=margin, combos=_combos(ctx, cmp))
        ctx.sources[id(expanded)] = src
        ctx.comparisons.append(expanded)
        if cmp.test not in TESTS:
            ctx.error(f"unknown test '{cmp.test}'", cmp, "tests: " + ", ".join(TESTS), src, code="E184")
        if cmp.correction not in CORRECTIONS:
            ctx.error(f"unknown correction '{cmp.correction}'", cmp, "corrections: " + ", ".join(CORRECTIONS),
                      src, code="E185")
        for name in expanded.metrics:
            m = by_name.get(name)
            if m is None and name in declared:
                continue  # declared, but has its own error (reported there)
            if m is None:
                ctx.error(f"compare: unknown metric '{name}'", cmp, did_you_mean(name, by_name), src,
                          code="E186")
                continue
            conds = {c.name for c in ctx.tasks[m.task].node.conditions}  # as written (a broken one is reported)
            conds |= set(ctx.condition_families.get(m.task, {}))
            pairs = [(a, b) for a, b, mm in expanded.combos if mm == name] if expanded.combos else expanded.pairs
            for a, b in pairs:
                for c in (a, b):
                    if c not in conds:
                        ctx.error(f"compare: task '{m.task}' has no condition '{c}'", cmp,
                                  did_you_mean(c, conds) or "conditions: " + ", ".join(sorted(conds)), src,
                                  code="E187", place=("metric", name))
                if a == b:
                    ctx.error(f"compare: '{a} vs {b}' compares a condition with itself", cmp, source=src,
                              code="E195")
            if cmp.test in ("paired_t", "wilcoxon") and not _is_item_mean(m.expr):
                ctx.error(f"compare: {cmp.test} compares per-item values, so it needs a metric of the form "
                          f"mean(x ...) or sum(x ...); '{name}' is not", cmp,
                          "use test bootstrap for ratios, correlations and differences", src, code="E189")
            if cmp.test == "mcnemar" and not _is_proportion(m.expr):
                ctx.error(f"compare: McNemar needs a proportion metric (mean of a yes/no per item); "
                          f"'{name}' is not", cmp, "use test bootstrap for ratios and differences", src,
                          code="E189")


def _is_item_mean(e: n.Expr) -> bool:
    return isinstance(e, n.Call) and e.func in ("mean", "sum") and len(e.args) == 1


def _is_proportion(e: n.Expr) -> bool:
    if not (isinstance(e, n.Call) and e.func == "mean" and len(e.args) == 1):
        return False
    a = e.args[0]
    return isinstance(a, (n.Compare, n.BoolOp)) or (isinstance(a, n.Unary) and a.op == "not")
