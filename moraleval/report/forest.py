"""Figures of a family of estimates with intervals, drawn so that small effects show.

A *family* is any set of numbers that share one kind of quantity and each carry an interval: a metric's estimates
per condition (and per report group, level or term), the comparisons between conditions (treatment − baseline), a
family of contrasts (each level of a column against a reference), regression coefficients.  Each becomes one
:class:`Panel`: its ``rows`` (the categories: groups, levels, terms, models, or "all items"), its ``series`` side
by side in each row (conditions, or comparisons), and one (value, low, high, flagged) per (row, series).

How a panel is drawn follows what the number is (``style``):

* ``bars``: a proportion, where the distance from 0 is the point: bars from 0 on a 0–1 scale;
* ``points``: a level (a bias score, a correlation, a similarity, a mean): point and interval, on a scale that
  fits the values (a bias score or a correlation on a symmetric scale around 0, with the zero line);
* ``difference``: a difference, contrast or coefficient: a forest plot, point and interval with the zero line
  that the interval is read against.

Scales are shared only by panels of one kind of quantity (``scale``: bias scores with bias scores, proportions
with proportions); every other panel has its own, so 0.01 differences of a similarity near 0.6 stay visible and an
age slope per decade does not share an axis with a logit gap.  Few, short row labels are laid along the x-axis
(wrapped); many or long ones make the panel horizontal, rows down the y-axis, where no label can overlap another.
A flagged number (few units, degenerate answers, …) is drawn hollow.

``draw`` returns a matplotlib Figure (object API, no pyplot state); ``moraleval.report.figures`` draws it inside
its rc settings and writes the SVG.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any, Mapping, Sequence

import attrs

__all__ = ["Panel", "draw", "horizontal", "panel_limits", "wrap"]

#: row labels longer than this, or more rows than ``MAX_VERTICAL_ROWS``, make a figure horizontal
MAX_VERTICAL_LABEL = 14
MAX_VERTICAL_ROWS = 4
#: a horizontal figure's row labels are wrapped at this many characters
WRAP_HORIZONTAL = 26
STYLES = ("bars", "points", "difference")


@attrs.frozen
class Panel:
    """One quantity's family of estimates: ``points[(row, series)] = (value, low, high, flagged)``."""

    title: str
    axis: str  # what the axis measures, with its unit
    rows: tuple[str, ...] = attrs.field(converter=tuple)
    series: tuple[str, ...] = attrs.field(converter=tuple)
    points: Mapping[tuple[str, str], tuple[float, float | None, float | None, bool]]
    style: str = attrs.field(default="points", validator=attrs.validators.in_(STYLES))
    scale: str = ""  # panels with the same non-empty key share their limits; "" = a scale of its own
    fixed: tuple[float, float] | None = None  # limits the quantity has by definition (0–1, −1–1), if any
    zero: bool = False  # draw the zero line (differences always)
    margin: float | None = None  # an equivalence margin D: dashed lines at -D and +D, which the interval is read against


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _extent(panel: Panel) -> list[float]:
    vals = []
    for v, lo, hi, _f in panel.points.values():
        vals += [x for x in (_finite(v), _finite(lo), _finite(hi)) if x is not None]
    return vals


def panel_limits(panels: Sequence[Panel]) -> list[tuple[float, float]]:
    """The value-axis limits of each panel: its kind's fixed range (widened to fit), or the range of its values
    and intervals (shared with the panels of the same ``scale``), padded; a difference's range includes 0."""
    by_scale: dict[str, list[float]] = {}
    for p in panels:
        if p.scale:
            by_scale.setdefault(p.scale, []).extend(_extent(p))
    out = []
    for p in panels:
        vals = by_scale[p.scale] if p.scale else _extent(p)
        if p.style == "bars":
            lo, hi = p.fixed or (0.0, 1.0)
            out.append((min(lo, *vals) if vals else lo, max(hi, *vals) if vals else hi))
            continue
        if p.fixed is not None and p.zero:  # a symmetric quantity (bias, correlation): around 0, as far as needed
            m = max([abs(v) for v in vals] or [0.0])
            m = min(max(p.fixed[1], abs(p.fixed[0])), max(0.1, math.ceil(m * 10 - 1e-9) / 10))
            out.append((-m * 1.05, m * 1.05))
            continue
        if p.zero or p.style == "difference":
            vals = vals + [0.0]
        if p.margin is not None:
            vals = vals + [-p.margin, p.margin]
        if not vals:
            out.append((-1.0, 1.0))
            continue
        lo, hi = min(vals), max(vals)
        pad = (hi - lo) * 0.08 or (abs(hi) * 0.05 or 0.1)
        out.append((lo - pad, hi + pad))
    return out


def wrap(label: str, width: int) -> str:
    """A label on lines of at most ``width`` characters (a long group name must not run into its neighbour)."""
    return "\n".join(textwrap.wrap(str(label), width=width, break_long_words=True)) or str(label)


def horizontal(panels: Sequence[Panel]) -> bool:
    """Rows down the y-axis (many or long labels) rather than along the x-axis."""
    rows = {r for p in panels for r in p.rows}
    return (max((len(p.rows) for p in panels), default=0) > MAX_VERTICAL_ROWS
            or any(len(str(r)) > MAX_VERTICAL_LABEL for r in rows))


def draw(panels: Sequence[Panel], colors: Mapping[str, str], *, max_per_row: int = 4) -> Any:
    """A Figure with one subplot per panel (a grid of at most ``max_per_row`` columns) and one legend of the
    series; the caller saves it (inside its rc settings)."""
    from matplotlib.figure import Figure

    panels = list(panels)
    horiz = horizontal(panels)
    n = len(panels)
    ncols = min(n, 2 if horiz else max_per_row) or 1
    nrows = math.ceil(n / ncols)
    n_series = max((len(p.series) for p in panels), default=1) or 1
    n_rows = max((len(p.rows) for p in panels), default=1) or 1
    grid: dict[str, Any] = {}
    if horiz:
        label_w = min(WRAP_HORIZONTAL, max((len(str(r)) for p in panels for r in p.rows), default=8))
        # rows are evenly spaced: each as tall as the most wrapped label needs, and as its series need; a line of
        # panels is as tall as its longest panel (three steered countries beside seventeen countries would
        # otherwise be stretched to the height of the seventeen)
        lines = max((wrap(r, WRAP_HORIZONTAL).count("\n") + 1 for p in panels for r in p.rows), default=1)
        per_row = max(0.13 * n_series + 0.12, 0.16 * lines + 0.04)
        heights = [max(1.6, 0.42 + max(len(p.rows) for p in panels[i * ncols:(i + 1) * ncols]) * per_row)
                   for i in range(nrows)]
        height = sum(heights) + 0.45
        grid = {"height_ratios": heights}
        width = min(9.6, ncols * (2.6 + 0.055 * label_w) + 0.3)
    else:
        height = 2.35 * nrows + 0.45
        width = min(9.6, max(3.0, ncols * (1.15 + 0.34 * n_series * n_rows)))
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw=grid or None)
    limits = panel_limits(panels)
    for k, (p, lim) in enumerate(zip(panels, limits)):
        ax = axes[k // ncols][k % ncols]
        line = panels[(k // ncols) * ncols:(k // ncols + 1) * ncols]
        _panel(ax, p, lim, colors, horiz, slots=max(len(q.rows) for q in line))
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    series = list(dict.fromkeys(s for p in panels for s in p.series))
    if series and (len(series) > 1 or any(p.rows != ("all items",) for p in panels)):
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], color=colors.get(s, "#333333"), marker="o", linestyle="", markersize=5,
                          label=s) for s in series]
        if any(f for p in panels for (*_v, f) in p.points.values()):
            handles.append(Line2D([], [], color="#555555", marker="o", markerfacecolor="white", linestyle="",
                                  markersize=5, label="flagged (see the warnings)"))
        fig.legend(handles=handles, loc="outside upper center", ncols=min(len(handles), 4), frameon=False)
    return fig


def _panel(ax: Any, p: Panel, lim: tuple[float, float], colors: Mapping[str, str], horiz: bool, *,
           slots: int = 0) -> None:
    """One panel; ``slots``: the rows of the longest panel of its line, so that a shorter panel beside it keeps
    the same row pitch (its rows at the top, room below) instead of being stretched."""
    rows = list(p.rows)
    # a row holding one series only (a family compared member by member: each member's own contrast) is drawn on
    # its tick, not in a slot of its own beside the empty slots of the other series
    one_per_row = all(sum((r, s) in p.points for s in p.series) <= 1 for r in rows)
    n_s = 1 if one_per_row else max(len(p.series), 1)
    step = 0.8 / n_s
    for si, s in enumerate(p.series):
        color = colors.get(s, "#333333")
        pos, val, lo_err, hi_err, hollow = [], [], [], [], []
        for ri, r in enumerate(rows):
            got = p.points.get((r, s))
            v = _finite(got[0]) if got else None
            if v is None:
                continue
            lo, hi = _finite(got[1]), _finite(got[2])
            # rows top to bottom when horizontal (the first row, e.g. "all items", at the top)
            base = (len(rows) - 1 - ri) if horiz else ri
            offset = 0 if one_per_row else (n_s - 1 - si) if horiz else si
            pos.append(base - 0.4 + step * (offset + 0.5))
            val.append(v)
            lo_err.append(v - lo if lo is not None else 0.0)
            hi_err.append(hi - v if hi is not None else 0.0)
            hollow.append(bool(got[3]))
        if not pos:
            continue
        err = [lo_err, hi_err]
        if p.style == "bars":
            kw = {"color": color, "alpha": 0.85}
            if horiz:
                ax.barh(pos, val, height=step * 0.82, xerr=err, capsize=2, error_kw={"elinewidth": 0.8,
                                                                                    "ecolor": "#333333"}, **kw)
            else:
                ax.bar(pos, val, width=step * 0.82, yerr=err, capsize=2, error_kw={"elinewidth": 0.8,
                                                                                  "ecolor": "#333333"}, **kw)
        else:
            ax.errorbar(val if horiz else pos, pos if horiz else val,
                        **({"xerr": err} if horiz else {"yerr": err}), fmt="none", ecolor=color, elinewidth=1.3,
                        capsize=2.5)
        full = [i for i, h in enumerate(hollow) if not h]
        empty = [i for i, h in enumerate(hollow) if h]
        for idx, face in ((full, color), (empty, "white")):
            if not idx:
                continue
            xs = [val[i] for i in idx] if horiz else [pos[i] for i in idx]
            ys = [pos[i] for i in idx] if horiz else [val[i] for i in idx]
            ax.scatter(xs, ys, s=22 if p.style != "bars" else 12, color=face, edgecolors=color, linewidths=1.1,
                       zorder=3)
    if len(rows) > 1 and rows[0] == "all items":  # the whole study, set apart from its groups
        (ax.axhline if horiz else ax.axvline)(len(rows) - 1.5 if horiz else 0.5, color="#999999", linewidth=0.6,
                                               linestyle=":")
    if p.zero or p.style == "difference" or lim[0] < 0 < lim[1]:
        (ax.axvline if horiz else ax.axhline)(0.0, color="black", linewidth=0.8, zorder=1)
    if p.margin is not None:  # the equivalence margin: equivalent when the interval lies between the lines
        for m in (-p.margin, p.margin):
            (ax.axvline if horiz else ax.axhline)(m, color="#777777", linewidth=0.9, linestyle="--", zorder=1)
    from matplotlib.ticker import MaxNLocator

    # few value ticks: a narrow panel's labels (−0.0005, 0.0000, …) must not run into each other
    (ax.xaxis if horiz else ax.yaxis).set_major_locator(MaxNLocator(nbins=4 if horiz else 6))
    if horiz:
        ax.set_xlim(*lim)
        if rows == ["all items"]:
            ax.set_yticks([])
        else:
            ax.set_yticks(range(len(rows)))
            ax.set_yticklabels([wrap(r, WRAP_HORIZONTAL) for r in reversed(rows)])
        ax.set_ylim(-0.6 - max(0, slots - len(rows)), len(rows) - 0.4)
        ax.set_xlabel(p.axis)
        ax.grid(axis="x", color="#dddddd", linewidth=0.5)
    else:
        ax.set_ylim(*lim)
        if rows == ["all items"]:  # the whole study alone: no category to name
            ax.set_xticks([])
        else:
            ax.set_xticks(range(len(rows)))
            ax.set_xticklabels([wrap(r, MAX_VERTICAL_LABEL) for r in rows])
        ax.set_xlim(-0.6, len(rows) - 0.4)
        ax.set_ylabel(p.axis)
        ax.grid(axis="y", color="#dddddd", linewidth=0.5)
    ax.set_axisbelow(True)
    ax.set_title(wrap(p.title, 40))
