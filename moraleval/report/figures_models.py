"""Figures across models (the paper's figure): a metric over the model axis, one line per condition with its CI
band, or a dot plot with error bars when the axis is not numeric.  SVG text, deterministic (as ``figures``'s)."""

from __future__ import annotations

import io
import math
from typing import Any, Sequence

__all__ = ["metric_vs_models"]

# deterministic SVG: a fixed hash salt, no date or creator, text as paths
# no mathtext: model names, conditions and metric names are text (a `$` in them is a dollar sign)
_RC = {"svg.hashsalt": "moraleval", "svg.fonttype": "path", "font.size": 9, "axes.spines.top": False,
       "axes.spines.right": False, "text.parse_math": False}


def _svg(fig: Any) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    text = buf.getvalue()
    start = text.find("<svg")  # drop the XML prolog/doctype so the SVG can be inlined in HTML
    return text[start:] if start >= 0 else text


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def metric_vs_models(title: str, models: Sequence[str], axis_values: Sequence[Any] | None,
                     series: dict[str, list[tuple[Any, ...]]], *,
                     log: bool = False, xlabel: str = "", ylabel: str = "") -> str:
    """``series[label][k] = (value, ci_low, ci_high[, flagged])`` for ``models[k]``.  A numeric ``axis_values``
    gives lines with CI bands over that axis (log scale if ``log``); None gives a dot plot over the model names.
    A flagged point (few units, degenerate answers, ...) is drawn hollow, as in every other figure."""
    import matplotlib

    numeric = axis_values is not None and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in axis_values)
    with matplotlib.rc_context(_RC):
        fig = _figure(max(3.4, 0.8 * len(models) + 2.0), 2.9)
        ax = fig.add_subplot(1, 1, 1)
        n = max(len(series), 1)
        any_flagged = False
        cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        for s, (label, values) in enumerate(series.items()):
            pts = [(k, v[0], v[1], v[2], bool(v[3]) if len(v) > 3 else False) for k, v in enumerate(values)
                   if v[0] is not None and math.isfinite(v[0])]
            if not pts:
                continue
            flagged = [p[4] for p in pts]
            color = cycle[s % len(cycle)]  # the default colour cycle, named: markers and lines share it
            if numeric:
                xs = [float(axis_values[k]) for k, *_ in pts]
                order = sorted(range(len(xs)), key=lambda i: xs[i])
                xs = [xs[i] for i in order]
                ys = [pts[i][1] for i in order]
                flagged = [flagged[i] for i in order]
                lo = [pts[i][2] if pts[i][2] is not None else pts[i][1] for i in order]
                hi = [pts[i][3] if pts[i][3] is not None else pts[i][1] for i in order]
                ax.plot(xs, ys, linewidth=1.2, label=label, color=color)
                ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
                _markers(ax, xs, ys, flagged, color, 13)
            else:
                off = (s - (n - 1) / 2) * (0.5 / n)
                xs = [k + off for k, *_ in pts]
                ys = [p[1] for p in pts]
                err = [[p[1] - p[2] if p[2] is not None else 0.0 for p in pts],
                       [p[3] - p[1] if p[3] is not None else 0.0 for p in pts]]
                ax.errorbar(xs, ys, yerr=err, fmt="none", capsize=3, elinewidth=1, label=label, color=color)
                _markers(ax, xs, ys, flagged, color, 18)
            any_flagged = any_flagged or any(flagged)
        if numeric:
            if log:
                ax.set_xscale("log")
            ax.set_xlabel(xlabel)
        else:
            ax.set_xticks(range(len(models)))
            ax.set_xticklabels(list(models), rotation=20 if len(models) > 4 else 0)
            ax.set_xlim(-0.6, len(models) - 0.4)
            ax.set_xlabel(xlabel or "model")
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        handles, labels = ax.get_legend_handles_labels()
        if any_flagged:
            from matplotlib.lines import Line2D

            handles.append(Line2D([], [], color="#555555", marker="o", markerfacecolor="white", linestyle="",
                                  markersize=4.5))
            labels.append("flagged (see the warnings)")
        if (len(series) > 1 or any_flagged) and handles:  # series with no finite value draw no artist
            ax.legend(handles, labels, fontsize=7, frameon=False)
        return _svg(fig)


def _markers(ax: Any, xs: Sequence[float], ys: Sequence[float], flagged: Sequence[bool], color: Any,
             size: float) -> None:
    """The points, a flagged one hollow (white face, coloured edge)."""
    for want, face in ((False, color), (True, "white")):
        idx = [i for i, f in enumerate(flagged) if f is want]
        if idx:
            ax.scatter([xs[i] for i in idx], [ys[i] for i in idx], s=size, color=face, edgecolors=color,
                       linewidths=1.1, zorder=3)
