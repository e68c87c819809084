"""Figures for the report, drawn with matplotlib's object API (no pyplot state) and returned as SVG text.

The SVG is deterministic for a given matplotlib version: no date in the metadata and a fixed hash salt for
element ids, so re-rendering a report gives the same bytes.
"""

from __future__ import annotations

import io
from typing import Any, Sequence

__all__ = ["estimate_bars", "scatter_by_condition"]

_RC = {"svg.hashsalt": "moraleval", "svg.fonttype": "path", "font.size": 9, "axes.spines.top": False,
       "axes.spines.right": False}


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    text = buf.getvalue()
    start = text.find("<svg")  # drop the XML prolog/doctype so the SVG can be inlined in HTML
    return text[start:] if start >= 0 else text


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def estimate_bars(title: str, conditions: Sequence[str], series: dict[str, dict[str, tuple[float | None, float | None,
                  float | None]]], *, ylabel: str = "") -> str:
    """Bars per condition (x) with CI error bars; one bar colour per series (e.g. group), like the paper's
    per-condition bias scores.  ``series[label][condition] = (value, ci_low, ci_high)``; None values are left out."""
    import matplotlib

    with matplotlib.rc_context(_RC):
        n_series = max(len(series), 1)
        fig = _figure(max(3.2, 0.9 * len(conditions) * max(1, n_series ** 0.5) + 1.5), 2.8)
        ax = fig.add_subplot(1, 1, 1)
        width = 0.8 / n_series
        for s, (label, values) in enumerate(series.items()):
            xs, ys, lo, hi = [], [], [], []
            for c, cond in enumerate(conditions):
                v, l, h = values.get(cond, (None, None, None))
                if v is None:
                    continue
                xs.append(c - 0.4 + width * (s + 0.5))
                ys.append(v)
                lo.append(v - l if l is not None else 0.0)
                hi.append(h - v if h is not None else 0.0)
            ax.bar(xs, ys, width=width * 0.9, label=label if len(series) > 1 else None,
                   yerr=[lo, hi], capsize=3, error_kw={"elinewidth": 1})
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_xticks(range(len(conditions)))
        ax.set_xticklabels(list(conditions))
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if len(series) > 1:
            ax.legend(fontsize=7, frameon=False)
        return _svg(fig)


def scatter_by_condition(title: str, xlabel: str, ylabel: str,
                         points: dict[str, list[tuple[float, float]]], *, note: str = "") -> str:
    """One panel per condition: scatter of (x, y) with the least-squares line, like the paper's Winogender
    p(female) vs BLS % female figure."""
    import matplotlib
    import numpy as np

    with matplotlib.rc_context(_RC):
        n = max(len(points), 1)
        fig = _figure(2.6 * n + 0.4, 2.8)
        for k, (cond, pts) in enumerate(points.items()):
            ax = fig.add_subplot(1, n, k + 1)
            if pts:
                x = np.array([p[0] for p in pts], float)
                y = np.array([p[1] for p in pts], float)
                ax.scatter(x, y, s=10, alpha=0.7)
                if len(pts) >= 2 and np.ptp(x) > 0:
                    slope, icept = np.polyfit(x, y, 1)
                    xx = np.array([x.min(), x.max()])
                    ax.plot(xx, slope * xx + icept, color="black", linewidth=0.8)
            ax.set_title(cond)
            ax.set_xlabel(xlabel)
            if k == 0:
                ax.set_ylabel(ylabel)
        fig.suptitle(title + (f" ({note})" if note else ""), fontsize=9)
        return _svg(fig)
