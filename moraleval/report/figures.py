"""The report's figures, as accessible SVG: per task, the estimates of each metric and the comparisons between
conditions, drawn by ``forest`` so that small effects show.

Per task: one figure of the estimates (a panel per metric, the conditions side by side in a colour-blind-safe
palette (Okabe & Ito), rows = models when there are several, else the report groups (whole study first), else
one; bars only for proportions, point and interval otherwise, scales shared only by panels of one kind of
quantity); one forest plot of the comparisons (treatment − baseline per metric, per group, with the zero line);
a ``pearson`` metric also gets a scatter per condition (shared axes).  A metric that is itself a difference,
contrast or coefficient (report.json's ``kind``, a top-level subtraction, or a name such as ``*_gap``) is drawn
as a forest with the zero line, its rows the members of its family (an estimate's ``term`` or ``level``, else its
group).  matplotlib's object API (no pyplot state), fixed hash salt, no date: the same report gives the same bytes.
"""

from __future__ import annotations

import html
import io
import math
import re
from typing import Any, Mapping, Sequence

from moraleval.report import forest
from moraleval.report.labels import expr_source
from moraleval.report.per_sample import NotEvaluable, evaluate, find_calls, sample_env
from moraleval.util import numbers

__all__ = ["DIFFERENCE_KINDS", "PALETTE", "TESTED_FAMILIES", "comparison_panels", "estimate_panels",
           "is_flagged", "model_difference_figure", "model_difference_panels", "quantity", "task_figures", "why_not_drawn"]

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
# text.parse_math off: every label comes from data, the spec or report.json, and a `$` there (a price tier "$$",
# "income $50k-$75k") is text, never mathtext (which dropped the dollars or failed the whole report)
_RC = {"svg.hashsalt": "moraleval", "svg.fonttype": "path", "font.size": 8, "axes.spines.top": False,
       "axes.spines.right": False, "axes.titlesize": 8.5, "axes.labelsize": 8, "legend.fontsize": 7.5,
       "text.parse_math": False}
MAX_PER_ROW = 4


#: report.json ``metrics[].kind`` values drawn as a forest of differences (contrasts, coefficients, slopes, …)
DIFFERENCE_KINDS = frozenset({"difference", "differences", "contrast", "contrasts", "coefficient", "coefficients",
                              "effect", "effects", "slope", "slopes", "regression", "trend"})
#: report.json ``metrics[].test`` values of a family whose members are tested against 0 (a contrast against a
#: reference level, a regression coefficient): drawn as differences
TESTED_FAMILIES = frozenset({"sign_flip", "wald"})
_DIFFERENCE_NAMES = ("gap", "diff", "delta", "slope", "coef", "effect", "contrast", "logit_")


def quantity(metric: Mapping[str, Any]) -> tuple[str, str]:
    """(family, axis label with its unit) of a metric: from report.json's ``kind``/``unit`` where the metric has
    them, else from its name and its formula's top-level call.  Families: proportion, bias, correlation,
    difference, value."""
    name = str(metric.get("name", "")).lower()
    expr = metric.get("expr") or {}
    top = expr.get("call") if isinstance(expr, Mapping) else None
    kind = str(metric.get("kind") or "").lower()
    unit = metric.get("unit")
    with_unit = f"{metric.get('name', 'value')}" + (f" ({unit})" if unit else "")
    if kind in DIFFERENCE_KINDS:
        return "difference", with_unit
    if top == "pearson" or name in ("rho", "r") or "corr" in name:
        return "correlation", "Pearson r (−1 to 1)"
    if "bias" in name:
        return "bias", "bias score (−1 to 1)"
    if isinstance(expr, Mapping) and expr.get("bin") == "-" or any(k in name for k in _DIFFERENCE_NAMES):
        return "difference", f"{with_unit}, difference"
    if "acc" in name:
        return "proportion", "accuracy (proportion of items)"
    if name.startswith(("p_", "prob", "pct", "share", "rate")):
        return "proportion", "probability (0 to 1)"
    if top == "mean" and isinstance((expr.get("args") or [{}])[0], Mapping) and "cmp" in (expr.get("args") or [{}])[0]:
        return "proportion", "proportion of items"
    return "value", with_unit


#: how each family is drawn: (style, shared-scale key, fixed limits, zero line)
_FAMILY_STYLE = {"proportion": ("bars", "proportion", (0.0, 1.0), False),
                 "bias": ("points", "bias", (-1.0, 1.0), True),
                 "correlation": ("points", "correlation", (-1.0, 1.0), True),
                 "difference": ("difference", "", None, True),
                 "value": ("points", "", None, False)}


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


_FLAG_CODES = frozenset({"few_units", "zero_width", "degenerate_answers", "position_preference", "undefined"})


def is_flagged(e: Mapping[str, Any]) -> bool:
    """Whether a number carries a flag that makes every figure draw it hollow (few units, degenerate answers, ...)."""
    return any(isinstance(f, Mapping) and f.get("code") in _FLAG_CODES for f in e.get("flags") or ())


def _svg(fig: Any, title: str, desc: str, ident: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    text = buf.getvalue()
    text = text[text.find("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, count=1, flags=re.S)  # RDF boilerplate
    head_end = text.find(">") + 1
    head = text[:head_end]
    head = re.sub(r'\swidth="([\d.]+)pt"', lambda m: f' width="{float(m.group(1)) * 4 / 3:.0f}"', head, count=1)
    head = re.sub(r'\sheight="([\d.]+)pt"', lambda m: f' height="{float(m.group(1)) * 4 / 3:.0f}"', head, count=1)
    head = head[:-1] + f' role="img" aria-labelledby="{ident}-t {ident}-d" style="max-width:100%;height:auto">'
    return (head + f'<title id="{ident}-t">{html.escape(title)}</title><desc id="{ident}-d">{html.escape(desc)}'
            f'</desc>' + text[head_end:])


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in str(text))


def task_figures(report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]],
                 skipped: list[str] | None = None) -> list[dict[str, Any]]:
    """Every figure: {task, file, caption, svg, title}.  A figure that cannot be drawn is left out and said in
    ``skipped`` ("task: why"), never the whole report."""
    figs = []
    for task in (report.get("tasks") or {}):
        for draw in (lambda: [_estimate_figure(report, task), _comparison_figure(report, task)],
                     lambda: _scatter_figures(report, samples, task)):
            try:
                figs.extend(f for f in draw() if f is not None)
            except Exception as exc:  # noqa: BLE001 - a figure is an illustration; the numbers are in the tables
                if skipped is not None:
                    skipped.append(f"{task}: {why_not_drawn(exc)}")
    return figs


def why_not_drawn(exc: BaseException) -> str:
    """An exception as one short line (matplotlib's parser errors span several)."""
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}" + (f": {first[:200]}" if first else "")


def _glabel(group: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{v}" for _k, v in sorted((group or {}).items())) or "all items"


def _member(e: Mapping[str, Any]) -> str:
    """The row of an estimate: the member of its family it stands for (``member``, e.g. {"country": "Belgium"} or
    {"term": "race=Black"}), within its report group; else its group ("all items" for the whole study)."""
    member = e.get("member")
    if isinstance(member, Mapping) and member:
        label = ", ".join(str(v) for _k, v in sorted(member.items()))
        return f"{_glabel(e.get('group'))} · {label}" if e.get("group") else label
    return _glabel(e.get("group"))


def _panel_key(e: Mapping[str, Any]) -> str:
    """Which panel an estimate is drawn in: its family's (every member in one panel), else its metric's."""
    return str(e.get("family") or e.get("metric"))


def _colors(conditions: Sequence[str]) -> dict[str, str]:
    return {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(conditions)}


def _level(report: Mapping[str, Any], ests: Sequence[Mapping[str, Any]]) -> int:
    return round(100 * (next((e.get("level") for e in ests if e.get("level")), None)
                        or (report.get("bootstrap") or {}).get("level") or 0.95))


def estimate_panels(report: Mapping[str, Any], task: str) -> tuple[list[forest.Panel], list[str], str]:
    """One panel per metric (or family of metrics) of the task with a value: (panels, conditions, what the rows
    are)."""
    info = report["tasks"][task]
    conds = list(info.get("conditions", []))
    ests = [e for e in report.get("estimates", []) if e.get("task") == task and _num(e.get("value")) is not None]
    for e in ests:
        if e.get("condition") not in conds:
            conds.append(e.get("condition"))
    models = list(dict.fromkeys(e.get("model") for e in ests if e.get("model")))
    metrics = {m.get("name"): m for m in report.get("metrics", []) if m.get("task") == task}
    order = list(dict.fromkeys([*(str(m.get("family") or m.get("name")) for m in metrics.values()),
                                *(_panel_key(e) for e in ests)]))
    panels = []
    rows_are = ""
    for key in order:
        mine = [e for e in ests if _panel_key(e) == key]
        if not mine:
            continue
        first = metrics.get(mine[0].get("metric")) or {"name": key}
        family, axis = quantity({**first, "name": key} if mine[0].get("family") else first)
        tested = first.get("test") in TESTED_FAMILIES or any(e.get("p_value") is not None for e in mine)
        if tested:  # a contrast or a coefficient: H0 "the value is 0"
            family, axis = "difference", axis if family == "difference" else f"{axis}, difference"
        style, scale, fixed, zero = _FAMILY_STYLE[family]
        if len(models) > 1:  # several models: one row per model (the groups are in the tables)
            keyed = [(str(e.get("model")) + (f" · {_member(e)}" if e.get("member") else ""), e)
                     for e in mine if not e.get("group")]
            rows_are = "model"
        else:
            keyed = [(_member(e), e) for e in mine]
            if any(e.get("member") for e in mine):
                rows_are = rows_are or "member of the family"
            rows_are = rows_are or ("group" if any(e.get("group") for e in mine) else "")
        rows = list(dict.fromkeys(r for r, _e in sorted(keyed, key=lambda kv: (kv[0] != "all items",))))
        title = key
        ranked_in = next((c for c in conds if any(e.get("condition") == c and isinstance(e.get("rank"), Mapping)
                                                  for _r, e in keyed)), None)
        if ranked_in is not None:  # a ranked family: its members in the order of their rank (1 at the top)
            rank_of = {r: e["rank"].get("rank") for r, e in keyed
                       if e.get("condition") == ranked_in and isinstance(e.get("rank"), Mapping)}
            rows.sort(key=lambda r: (r != "all items", rank_of.get(r) is None, rank_of.get(r) or 0))
            title = f"{key}, ranked ({ranked_in})"
        points = {(r, e.get("condition")): (_num(e.get("value")), _num(e.get("ci_low")), _num(e.get("ci_high")),
                                            is_flagged(e)) for r, e in keyed}
        # a regression's intercept (a baseline level, not tested) gets a panel of its own: on the coefficients'
        # axis it would set the scale and flatten the effects (discrim-eval: 1.3 beside terms of a few hundredths)
        apart = ([r for r in rows if r.rsplit(" · ", 1)[-1].lower().strip("()") == "intercept"]
                 if tested and len(rows) > 1 else [])
        for part_title, part_rows in ((title, [r for r in rows if r not in apart]), (f"{key}: intercept", apart)):
            if not part_rows:
                continue
            part = {k: v for k, v in points.items() if k[0] in part_rows}
            panels.append(forest.Panel(part_title, axis, part_rows, [c for c in conds if any(k[1] == c for k in part)],
                                       part, style, scale, fixed, zero))
    return panels, conds, rows_are


def _desc(panels: Sequence[forest.Panel]) -> str:
    parts = []
    for p in panels:
        for (row, series), (v, lo, hi, flagged) in p.points.items():
            value, ci = numbers.fmt_estimate(v, lo, hi)
            where = f" {row}" if row != "all items" else ""
            parts.append(f"{p.title}{where} {series}: {value} {ci}" + (" (flagged)" if flagged else ""))
    return "; ".join(parts)


def _draw(task: str, suffix: str, panels: list[forest.Panel], colors: Mapping[str, str], title: str,
          caption: str) -> dict[str, Any]:
    import matplotlib

    with matplotlib.rc_context(_RC):
        fig = forest.draw(panels, colors, max_per_row=MAX_PER_ROW)
        svg = _svg(fig, title, _desc(panels), f"fig-{_slug(task)}{suffix}")
    return {"task": task, "file": f"{_slug(task)}{suffix}.svg", "caption": caption, "svg": svg, "title": title}


def _estimate_figure(report: Mapping[str, Any], task: str) -> dict[str, Any] | None:
    panels, conds, rows_are = estimate_panels(report, task)
    if not panels:
        return None
    ests = [e for e in report.get("estimates", []) if e.get("task") == task]
    level = _level(report, ests)
    title = f"{task}: estimates per condition with {level}% bootstrap CIs"
    styles = {p.style for p in panels}
    how = ["point = estimate, whisker = {level}% bootstrap CI".format(level=level)]
    if "bars" in styles:
        how.append("bars (from 0) only for proportions")
    if "difference" in styles:
        how.append("differences with their zero line")
    shared = sorted({p.scale for p in panels if p.scale and sum(q.scale == p.scale for q in panels) > 1})
    how.append("each panel has its own scale" + (f", except that panels of one kind ({', '.join(shared)}) share one"
                                                   if shared else ""))
    if any(f for p in panels for (*_v, f) in p.points.values()):
        how.append("hollow = flagged (see the warnings)")
    caption = (f"{task}: {', '.join(p.title for p in panels)} per condition"
               + (f" and {rows_are}" if rows_are else "") + "; " + "; ".join(how) + ".")
    return _draw(task, "", panels, _colors(conds), title, caption)


def comparison_panels(report: Mapping[str, Any], task: str) -> tuple[list[forest.Panel], dict[str, str]]:
    """The task's comparisons as forest panels: per metric a panel, per group (or model) a row, each comparison
    (treatment − baseline) in the colour of its treatment; and the colours."""
    cmps = [c for c in report.get("comparisons", []) if c.get("task") == task and _num(c.get("effect")) is not None]
    conds = list((report["tasks"][task] or {}).get("conditions", []))
    models = list(dict.fromkeys(c.get("model") for c in cmps if c.get("model")))
    # a family's members (`m[nlp_survey]`, `m[philpapers2020]`, compared member by member) are rows of one panel
    by_metric: dict[str, list[tuple[str | None, Mapping[str, Any]]]] = {}
    for c in cmps:
        name = str(c.get("metric"))
        member = re.fullmatch(r"(.+)\[(.+)\]", name)
        key, label = (member.group(1), member.group(2)) if member else (name, None)
        by_metric.setdefault(key, []).append((label, c))
    metrics = {m.get("name"): m for m in report.get("metrics", []) if m.get("task") == task}
    colors = _colors(conds)
    panels = []
    for name, cs in by_metric.items():
        _family, axis = quantity(metrics.get(cs[0][1].get("metric")) or {"name": name})
        keyed = []
        for label, c in cs:
            row = _member(c)
            if label is not None:
                row = label if row == "all items" else f"{row} · {label}"
            if len(models) > 1:
                row = f"{c.get('model')}" + (f" · {row}" if c.get("group") or label is not None else "")
            keyed.append((row, f"{c.get('treatment')} − {c.get('baseline')}", c))
        series = list(dict.fromkeys(s for _r, s, _c in keyed))
        for _r, s, c in keyed:
            colors.setdefault(s, colors.get(c.get("treatment"), PALETTE[len(colors) % len(PALETTE)]))
        rows = list(dict.fromkeys(r for r, _s, _c in sorted(keyed, key=lambda k: (k[0] != "all items",))))
        points = {(r, s): (_num(c.get("effect")), _num(c.get("ci_low")), _num(c.get("ci_high")), is_flagged(c))
                  for r, s, c in keyed}
        # a difference of a score from −1 to 1 runs from −2 to 2: the difference's axis names no range
        axis_label = "Δ " + re.sub(r" \((?:−1|0) to 1\)$", "", axis if not axis.startswith(str(cs[0][1].get("metric")))
                                   else str(name))
        panels.append(forest.Panel(name, axis_label, rows, series, points, "difference", "", None, True))
    return panels, colors


def _comparison_figure(report: Mapping[str, Any], task: str) -> dict[str, Any] | None:
    """A forest plot of the task's comparisons, with the zero line."""
    panels, colors = comparison_panels(report, task)
    if not panels:
        return None
    cmps = [c for c in report.get("comparisons", []) if c.get("task") == task]
    level = _level(report, cmps)
    title = f"{task}: differences between conditions (treatment − baseline) with {level}% bootstrap CIs"
    caption = (f"{task}: the comparisons, treatment − baseline, paired over the same resamples: point = difference, "
               f"whisker = {level}% CI, the zero line = no difference"
               + ("; rows = report groups, whole study first" if any(c.get("group") for c in cmps) else "")
               + "; each panel has its own scale"
               + ("; hollow = flagged (see the warnings)" if any(is_flagged(c) for c in cmps) else "") + ".")
    return _draw(task, "-comparisons", panels, colors, title, caption)


def model_difference_panels(report: Mapping[str, Any], task: str) -> tuple[list[forest.Panel], dict[str, str]]:
    """The differences between models (report.json ``across``, kind ``model_difference``, whole study) as forest
    panels: a family of metrics is one panel with its members as rows (a CCAI-style study's BBQ categories), the
    other compared metrics one panel; an equivalence test is a panel of its own, its (1 − 2α) interval drawn
    against the margin ±D.  Series: the model pairs (and conditions)."""
    results = [r for r in (report.get("across") or {}).get("results", []) if r.get("kind") == "model_difference"
               and r.get("task") == task and not r.get("group") and _num(r.get("effect")) is not None]
    metrics = {m.get("name"): m for m in report.get("metrics", []) if m.get("task") == task}
    conds = list(dict.fromkeys(r.get("condition") for r in results))
    keyed: dict[tuple[str, float | None], list[tuple[str, str, Mapping[str, Any], tuple]]] = {}
    for r in results:
        series = f"{r.get('model')} − {r.get('baseline_model')}" + (f" in {r.get('condition')}" if len(conds) > 1
                                                                     else "")
        m = metrics.get(r.get("metric")) or {}
        eq = r.get("equivalence")
        lo, hi = _num(r.get("ci_low")), _num(r.get("ci_high"))
        if isinstance(eq, Mapping) and _num(eq.get("margin")) is not None:
            interval = eq.get("interval") or [None, None]
            level = round(100 * float(eq.get("interval_level") or 0.9))
            key = (f"equivalence: {level}% interval within ±{_num(eq.get('margin')):g}?", _num(eq.get("margin")))
            row, lo, hi = str(r.get("metric")), _num(interval[0]), _num(interval[1])
        elif m.get("family"):
            key, row = (str(m["family"]), None), ", ".join(str(v) for v in (m.get("member") or {}).values())
        else:
            key, row = ("whole study", None), str(r.get("metric"))
        keyed.setdefault(key, []).append((row, series, r, (_num(r.get("effect")), lo, hi, is_flagged(r))))
    colors: dict[str, str] = {}
    panels = []
    for (title, margin), items in keyed.items():
        series = list(dict.fromkeys(s for _r, s, _x, _p in items))
        for s in series:
            colors.setdefault(s, PALETTE[len(colors) % len(PALETTE)])
        rows = list(dict.fromkeys(r for r, _s, _x, _p in items))
        points = {(r, s): pt for r, s, _x, pt in items}
        # the quantity of the panel's metrics (one kind: its name; several: only "between models")
        kinds = {re.sub(r" \((?:−1|0) to 1\)$", "", quantity({**(metrics.get(x.get("metric")) or {}),
                                                              "name": (metrics.get(x.get("metric")) or {}).get(
                                                                  "family") or x.get("metric")})[1])
                 for _r, _s, x, _p in items}
        axis = f"Δ {kinds.pop()} between models" if len(kinds) == 1 else "Δ between models"
        panels.append(forest.Panel(title, axis, rows, series, points, "difference", "", None, True, margin))
    return panels, colors


def model_difference_figure(report: Mapping[str, Any], task: str) -> dict[str, Any] | None:
    """A forest plot of the differences between models of one task (see :func:`model_difference_panels`), its
    caption naming every equivalence verdict."""
    panels, colors = model_difference_panels(report, task)
    if not panels:
        return None
    results = [r for r in (report.get("across") or {}).get("results", []) if r.get("kind") == "model_difference"
               and r.get("task") == task and not r.get("group")]
    level = _level(report, results)
    verdicts = []
    for r in results:
        eq = r.get("equivalence")
        if isinstance(eq, Mapping):
            ok = r.get("p_adjusted") is not None and r["p_adjusted"] < (eq.get("alpha") or 0.05)
            iv = eq.get("interval") or [None, None]
            value, ci = numbers.fmt_estimate(r.get("effect"), iv[0], iv[1], signed=True)
            verdicts.append(f"{r.get('metric')}, {r.get('model')} − {r.get('baseline_model')}: "
                            f"{'equivalent' if ok else 'not shown equivalent'} within ±{eq.get('margin')} "
                            f"({value}, {round(100 * float(eq.get('interval_level') or 0.9))}% interval {ci})")
    title = f"{task}: differences between models with {level}% bootstrap CIs"
    caption = (f"{task}: the differences between models, paired over the same resamples (point = difference, "
               f"whisker = {level}% CI, the zero line = no difference; a family's members as rows)"
               + ("; equivalence: the interval against the dashed margin lines" if verdicts else "")
               + ("; hollow = flagged (see the warnings)" if any(is_flagged(r) for r in results) else "") + "."
               + (" Equivalence: " + "; ".join(verdicts) + "." if verdicts else ""))
    return _draw(task, "-models", panels, colors, title, caption)


def _unit_of(label: str) -> str:
    low = label.lower()
    if "pct" in low or "percent" in low:
        return f"{label} (%)"
    if low.startswith("prob("):
        return f"{label} (probability)"
    if low.startswith("logprob("):
        return f"{label} (log-probability)"
    return label


def _scatter_figures(report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]], task: str) -> list[dict]:
    import matplotlib
    import numpy as np
    from matplotlib.figure import Figure

    out = []
    conds = list(report["tasks"][task].get("conditions", []))
    for m in report.get("metrics", []):
        if m.get("task") != task:
            continue
        for call in find_calls(m.get("expr"), "pearson"):
            args = call.get("args") or []
            if len(args) != 2:
                continue
            y_expr, x_expr = args
            where = call.get("where")
            by_cond: dict[str, dict[str, list[tuple[float, float]]]] = {c: {} for c in conds}
            ok = True
            for s in samples:
                if s.get("task") != task:
                    continue
                env = sample_env(s)
                try:
                    if where is not None and not evaluate(where, env):
                        continue
                    y, x = float(evaluate(y_expr, env)), float(evaluate(x_expr, env))
                except (NotEvaluable, TypeError, ValueError):
                    ok = False
                    break
                key = str(s.get("unit")) + ("|" + str(s["model"]) if s.get("model") else "")
                by_cond.setdefault(s["condition"], {}).setdefault(key, []).append((x, y))
            if not ok or not any(by_cond.values()):
                continue
            per_unit = any(len(v) > 1 for units in by_cond.values() for v in units.values())
            points = {c: [(sum(p[0] for p in v) / len(v), sum(p[1] for p in v) / len(v)) for v in units.values()]
                      for c, units in by_cond.items() if units}
            unit = next((e.get("unit") for e in report.get("estimates", []) if e.get("task") == task), "unit")
            note = f"one point per {unit} (mean of its items)" if per_unit else "one point per item"
            xl, yl = _unit_of(expr_source(x_expr)), _unit_of(expr_source(y_expr))
            with matplotlib.rc_context(_RC):
                k = len(points)
                fig = Figure(figsize=(min(9.6, 2.3 * k + 0.5), 2.4), dpi=100, layout="constrained")
                axes = fig.subplots(1, k, squeeze=False, sharex=True, sharey=True)[0]
                desc = []
                for a, (ci, (cond, pts)) in zip(axes, enumerate(points.items())):
                    x = np.array([p[0] for p in pts], float)
                    y = np.array([p[1] for p in pts], float)
                    color = PALETTE[conds.index(cond) % len(PALETTE)] if cond in conds else PALETTE[ci]
                    a.scatter(x, y, s=9, alpha=0.75, color=color, linewidths=0)
                    if len(pts) >= 2 and np.ptp(x) > 0:
                        slope, icept = np.polyfit(x, y, 1)
                        xx = np.array([x.min(), x.max()])
                        a.plot(xx, slope * xx + icept, color="black", linewidth=0.8)
                    r = next((e.get("value") for e in report.get("estimates", []) if e.get("task") == task and
                              e.get("metric") == m["name"] and e.get("condition") == cond and not e.get("group")),
                             None)
                    # the metric's own value, named: with one point per unit drawn, it is still the r over the
                    # items (a Winogenerated sentence-level r of 0.53 once read as the occupations' 0.85)
                    a.set_title(f"{cond}" + (f"\n{m['name']} = {r:+.2f}" if _num(r) is not None else ""),
                                fontsize=7.5)
                    a.set_xlabel(xl)
                    a.grid(color="#eeeeee", linewidth=0.5)
                    a.set_axisbelow(True)
                    desc.append(f"{cond}: {len(pts)} points" + (f", r = {r:.3f}" if _num(r) is not None else ""))
                axes[0].set_ylabel(yl)
                title = f"{task}: {m['name']} = {m.get('formula', '')}"
                svg = _svg(fig, title + f" ({note})", "; ".join(desc), f"fig-{_slug(task)}-{_slug(m['name'])}")
            out.append({"task": task, "file": f"{_slug(task)}-{_slug(m['name'])}-scatter.svg", "title": title,
                        "caption": f"{yl} against {xl} per condition ({note}), least-squares line; shared axes."
                                   + (f" The value in each title is {m['name']} as computed over the items, not the "
                                      f"correlation of the {unit} means drawn." if per_unit else ""),
                        "svg": svg})
    return out
