"""The report's figures: one compact figure per task (experiment), in the paper's style, as accessible SVG.

Per task, small multiples: one panel per metric, the conditions side by side in a colour-blind-safe palette
(Okabe & Ito), models on the x-axis when there are several (else the report groups, else one position), the
zero line, CI bars.  Panels that show the same kind of quantity (bias scores, proportions, correlations) share
one y-scale, and every y-axis says what it measures.  A ``pearson`` metric also gets a scatter per condition
(shared axes).  matplotlib's object API (no pyplot state), fixed hash salt, no date: the same report gives the
same bytes.
"""

from __future__ import annotations

import html
import io
import math
import re
from typing import Any, Mapping, Sequence

from moraleval.report.labels import expr_source
from moraleval.report.per_sample import NotEvaluable, evaluate, find_calls, sample_env

__all__ = ["PALETTE", "task_figures", "quantity", "why_not_drawn"]

PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
# text.parse_math off: every label comes from data, the spec or report.json, and a `$` there (a price tier "$$",
# "income $50k-$75k") is text, never mathtext (which dropped the dollars or failed the whole report)
_RC = {"svg.hashsalt": "moraleval", "svg.fonttype": "path", "font.size": 8, "axes.spines.top": False,
       "axes.spines.right": False, "axes.titlesize": 8.5, "axes.labelsize": 8, "legend.fontsize": 7.5,
       "text.parse_math": False}
MAX_PER_ROW = 4


def quantity(metric: Mapping[str, Any]) -> tuple[str, str]:
    """(family, axis label with its unit) of a metric, from its name and its formula's top-level call."""
    name = str(metric.get("name", "")).lower()
    expr = metric.get("expr") or {}
    top = expr.get("call") if isinstance(expr, Mapping) else None
    if top == "pearson" or name in ("rho", "r") or "corr" in name:
        return "correlation", "Pearson r (−1 to 1)"
    if "bias" in name:
        return "bias", "bias score (−1 to 1)"
    if "acc" in name:
        return "proportion", "accuracy (proportion of items)"
    if name.startswith(("p_", "prob", "pct", "share", "rate")):
        return "proportion", "probability (0 to 1)"
    if top == "mean" and isinstance((expr.get("args") or [{}])[0], Mapping) and "cmp" in (expr.get("args") or [{}])[0]:
        return "proportion", "proportion of items"
    return "value", str(metric.get("name", "value"))


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _limits(family: str, values: Sequence[float]) -> tuple[float, float]:
    if family == "proportion":
        return 0.0, 1.0
    vals = [v for v in values if v is not None] or [0.0]
    if family in ("bias", "correlation"):
        m = max(abs(v) for v in vals)
        m = min(1.0, max(0.1, math.ceil(m * 10 + 1e-9) / 10))
        return -m * 1.05, m * 1.05
    lo, hi = min(vals + [0.0]), max(vals + [0.0])
    pad = (hi - lo) * 0.08 or 0.1
    return lo - pad, hi + pad


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
    """Every figure: {task, file, caption, svg}.  A figure that cannot be drawn is left out and said in
    ``skipped`` ("task: why"), never the whole report."""
    figs = []
    for task in (report.get("tasks") or {}):
        for draw in (lambda: [_estimate_figure(report, task)], lambda: _scatter_figures(report, samples, task)):
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


def _estimate_figure(report: Mapping[str, Any], task: str) -> dict[str, Any] | None:
    import matplotlib
    from matplotlib.figure import Figure

    info = report["tasks"][task]
    conds = list(info.get("conditions", []))
    ests = [e for e in report.get("estimates", []) if e.get("task") == task]
    metrics = [m for m in report.get("metrics", []) if m.get("task") == task
               and any(e.get("metric") == m.get("name") and _num(e.get("value")) is not None for e in ests)]
    if not metrics:
        return None
    models = list(dict.fromkeys(e.get("model") for e in ests if e.get("model") is not None))
    groups = list(dict.fromkeys(_glabel(e.get("group")) for e in ests if e.get("group")))
    if len(models) > 1:
        xs, xkey, xlabel = models, (lambda e: e.get("model")), "model"
        ests = [e for e in ests if not e.get("group")]
    elif groups and len(groups) <= 10:
        xs, xkey, xlabel = groups, (lambda e: _glabel(e.get("group"))), "group"
        ests = [e for e in ests if e.get("group")]
    else:
        xs, xkey, xlabel = ["all items"], (lambda e: "all items"), ""
        ests = [e for e in ests if not e.get("group")]
    families: dict[str, list[float]] = {}
    for m in metrics:
        fam, _ = quantity(m)
        for e in ests:
            if e.get("metric") == m["name"]:
                families.setdefault(fam, []).extend(v for v in (_num(e.get("value")), _num(e.get("ci_low")),
                                                                 _num(e.get("ci_high"))) if v is not None)
    n = len(metrics)
    ncols = min(n, MAX_PER_ROW)
    nrows = math.ceil(n / ncols)
    width = min(9.6, max(3.0, ncols * (1.1 + 0.32 * len(conds) * len(xs))))
    desc_parts = []
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(width, 2.35 * nrows + 0.35), dpi=100, layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
        bar_w = 0.8 / max(len(conds), 1)
        for k, m in enumerate(metrics):
            ax = axes[k // ncols][k % ncols]
            fam, ylabel = quantity(m)
            for ci, cond in enumerate(conds):
                px, py, lo, hi = [], [], [], []
                for xi, x in enumerate(xs):
                    e = next((e for e in ests if e.get("metric") == m["name"] and e.get("condition") == cond
                              and xkey(e) == x), None)
                    v = _num(e.get("value")) if e else None
                    if v is None:
                        continue
                    px.append(xi - 0.4 + bar_w * (ci + 0.5))
                    py.append(v)
                    lo.append(v - (_num(e.get("ci_low")) if _num(e.get("ci_low")) is not None else v))
                    hi.append((_num(e.get("ci_high")) if _num(e.get("ci_high")) is not None else v) - v)
                    desc_parts.append(f"{m['name']} {x if xlabel else ''} {cond}: {v:.3f}".replace("  ", " "))
                ax.bar(px, py, width=bar_w * 0.88, color=PALETTE[ci % len(PALETTE)],
                       label=cond if k == 0 else None, yerr=[lo, hi], capsize=2.5,
                       error_kw={"elinewidth": 0.9, "ecolor": "#333333"})
                # a tick at each value, so that a value of 0 (a bar of no height) is still visible
                ax.scatter(px, py, marker="_", s=90, color=PALETTE[ci % len(PALETTE)], linewidths=1.6, zorder=3)
            ax.axhline(0.0, color="black", linewidth=0.7)
            ax.set_ylim(*_limits(fam, families.get(fam, [])))
            ax.set_xticks(range(len(xs)))
            ax.set_xticklabels(xs if xlabel else [""], rotation=30 if len(xs) > 3 else 0,
                               ha="right" if len(xs) > 3 else "center")
            if xlabel:
                ax.set_xlabel(xlabel)
            ax.set_title(m["name"])
            ax.set_ylabel(ylabel)
            ax.grid(axis="y", color="#dddddd", linewidth=0.5)
            ax.set_axisbelow(True)
        for k in range(n, nrows * ncols):
            axes[k // ncols][k % ncols].set_visible(False)
        fig.legend(loc="outside upper center", ncols=min(len(conds), 6), frameon=False, title=None)
        level = round(100 * (next((e.get("level") for e in ests if e.get("level")), 0.95)))
        title = f"{task}: estimates per condition with {level}% bootstrap CIs"
        svg = _svg(fig, title, "; ".join(desc_parts), f"fig-{_slug(task)}")
    caption = (f"{task}: {', '.join(m['name'] for m in metrics)} per condition"
               + (f" and {xlabel}" if xlabel else "") + f", bars = point estimates, whiskers = {level}% bootstrap "
               "CI, panels of the same quantity share one y-scale.")
    return {"task": task, "file": f"{_slug(task)}.svg", "caption": caption, "svg": svg, "title": title}


def _glabel(group: Mapping[str, Any] | None) -> str:
    return ", ".join(f"{v}" for _k, v in sorted((group or {}).items())) or "all items"


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
                    a.set_title(f"{cond}" + (f" (r = {r:+.2f})" if _num(r) is not None else ""))
                    a.set_xlabel(xl)
                    a.grid(color="#eeeeee", linewidth=0.5)
                    a.set_axisbelow(True)
                    desc.append(f"{cond}: {len(pts)} points" + (f", r = {r:.3f}" if _num(r) is not None else ""))
                axes[0].set_ylabel(yl)
                title = f"{task}: {m['name']} = {m.get('formula', '')}"
                svg = _svg(fig, title + f" ({note})", "; ".join(desc), f"fig-{_slug(task)}-{_slug(m['name'])}")
            out.append({"task": task, "file": f"{_slug(task)}-{_slug(m['name'])}-scatter.svg", "title": title,
                        "caption": f"{yl} against {xl} per condition ({note}), least-squares line; shared axes.",
                        "svg": svg})
    return out
