"""Figures that fit the metric (issue 23): forest plots of differences with a zero line, scales per kind of
quantity, readable labels, bars only for proportions; generic over a family of estimates with intervals (report
groups, the members of a family of contrasts or coefficients)."""

from __future__ import annotations

import copy
import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fakes import FakeBackend, make_plan  # noqa: E402

from moraleval.execute.cache import ResponseCache  # noqa: E402
from moraleval.execute.runner import run_plan  # noqa: E402
from moraleval.measurement import measure  # noqa: E402
from moraleval.report import build_report, jsonable  # noqa: E402
from moraleval.report import forest  # noqa: E402
from moraleval.report.figures import PALETTE, comparison_panels, estimate_panels, quantity, task_figures  # noqa: E402

CATEGORIES = ["Age", "Disability_status", "Gender_identity", "Nationality", "Physical_appearance",
              "Race_ethnicity", "Race_x_SES (intersectional: race and socio-economic status)", "Religion",
              "Sexual_orientation"]


def _est(metric, cond, value, half, group=None, **extra):
    return {"task": "t", "metric": metric, "condition": cond, "group": group or {}, "value": value,
            "ci_low": value - half, "ci_high": value + half, "n": 100, "n_units": 50, "level": 0.95, "flags": [],
            **extra}


def _cmp(metric, effect, half, group=None):
    return {"task": "t", "metric": metric, "treatment": "Q_IF", "baseline": "Q", "group": group or {},
            "effect": effect, "ci_low": effect - half, "ci_high": effect + half, "flags": [], "level": 0.95}


def _report(metrics, estimates, comparisons=()):
    return {"tasks": {"t": {"conditions": ["Q", "Q_IF"]}}, "metrics": [dict(m, task="t") for m in metrics],
            "estimates": list(estimates), "comparisons": list(comparisons), "bootstrap": {"level": 0.95}}


def test_the_toy_runs_comparisons_are_a_forest_with_a_zero_line(tmp_path: Path) -> None:
    plan = make_plan(12)
    outcomes = run_plan(plan, FakeBackend(), cache=ResponseCache(":memory:"), progress=False)
    report = jsonable(build_report(plan, measure(plan, outcomes), outcomes))
    (panel,), _colors = comparison_panels(report, "answer")
    assert panel.style == "difference" and panel.zero and panel.rows == ("all items",)
    assert panel.series == ("IF − Q", "CoT − Q")
    lo, hi = forest.panel_limits([panel])[0]
    assert lo < 0 < hi  # the zero line is on the axis
    figs = {f["file"]: f for f in task_figures(report, [])}
    svg = figs["answer-comparisons.svg"]["svg"]
    assert svg.startswith("<svg") and 'role="img"' in svg and "IF − Q" in svg  # the description names each
    assert "zero line" in figs["answer-comparisons.svg"]["caption"]
    # the estimates: accuracy (a proportion) as bars from 0, the correlation as points around 0
    panels, _conds, _rows = estimate_panels(report, "answer")
    assert [(p.title, p.style) for p in panels] == [("acc", "bars"), ("rho", "points")]
    assert forest.panel_limits(panels)[0] == (0.0, 1.0)


def test_a_report_by_group_family_is_horizontal_with_readable_labels() -> None:
    ests = [_est(m, c, v + 0.01 * i, 0.08, {"category": g})
            for i, g in enumerate(CATEGORIES) for m, v in (("bias_ambiguous", 0.05), ("accuracy_ambiguous", 0.5))
            for c in ("Q", "Q_IF")]
    ests += [_est("bias_ambiguous", c, 0.04, 0.03) for c in ("Q", "Q_IF")]
    cmps = [_cmp("bias_ambiguous", -0.01 * i, 0.05, {"category": g}) for i, g in enumerate(CATEGORIES)]
    cmps.append(_cmp("bias_ambiguous", -0.02, 0.02))
    report = _report([{"name": "bias_ambiguous"}, {"name": "accuracy_ambiguous"}], ests, cmps)
    panels, _colors = comparison_panels(report, "t")
    (p,) = panels
    assert p.rows[0] == "all items" and list(p.rows[1:]) == CATEGORIES  # the whole study first
    assert forest.horizontal(panels)  # nine categories, some long: rows down the y-axis
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = forest.draw(panels, {"Q_IF − Q": "#E69F00"})
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [t.get_window_extent(renderer) for t in ax.get_yticklabels() if t.get_text()]
    assert len(boxes) == len(CATEGORIES) + 1
    for a, b in zip(boxes, boxes[1:]):
        assert not a.overlaps(b), "row labels overlap"
    assert any("\n" in t.get_text() for t in ax.get_yticklabels())  # the long name is wrapped
    # the zero line: a vertical line at 0
    assert any(abs(line.get_xdata()[0]) < 1e-12 and line.get_xdata()[0] == line.get_xdata()[1]
               for line in ax.get_lines())
    est_panels, _c, rows_are = estimate_panels(report, "t")
    assert rows_are == "group" and {p.style for p in est_panels} == {"points", "bars"}
    svg = {f["file"]: f for f in task_figures(report, [])}["t.svg"]
    assert "Race_x_SES" in svg["svg"] and "and group" in svg["caption"]


def test_scales_per_kind_of_quantity() -> None:
    metrics = [{"name": "similarity"}, {"name": "age_slope", "kind": "coefficient", "unit": "per decade"},
               {"name": "logit_gap", "expr": {"bin": "-", "l": {"lit": 1}, "r": {"lit": 0}}},
               {"name": "bias_ambiguous"}, {"name": "bias_disambiguated"}]
    ests = [_est("similarity", "Q", 0.612, 0.004), _est("similarity", "Q_IF", 0.601, 0.004),
            _est("age_slope", "Q", 0.3, 0.1), _est("age_slope", "Q_IF", 0.2, 0.1),
            _est("logit_gap", "Q", -0.0004, 0.0002), _est("logit_gap", "Q_IF", -0.0009, 0.0003),
            _est("bias_ambiguous", "Q", 0.05, 0.02), _est("bias_ambiguous", "Q_IF", 0.02, 0.02),
            _est("bias_disambiguated", "Q", 0.3, 0.1), _est("bias_disambiguated", "Q_IF", 0.2, 0.1)]
    panels, _c, _r = estimate_panels(_report(metrics, ests), "t")
    limits = dict(zip((p.title for p in panels), forest.panel_limits(panels)))
    styles = {p.title: p.style for p in panels}
    # a similarity near 0.6 on an axis that shows its 0.01 difference, not 0 to 0.8
    lo, hi = limits["similarity"]
    assert 0.58 < lo < 0.6 and 0.61 < hi < 0.63 and styles["similarity"] == "points"
    # the slope and the logit gap: differences, each on its own scale including 0
    assert styles["age_slope"] == styles["logit_gap"] == "difference"
    assert limits["age_slope"] != limits["logit_gap"]
    assert limits["logit_gap"][0] > -0.002 and limits["logit_gap"][1] >= 0
    assert "per decade" in next(p.axis for p in panels if p.title == "age_slope")
    # bias scores share one symmetric scale
    assert limits["bias_ambiguous"] == limits["bias_disambiguated"] == pytest.approx((-0.42, 0.42))
    assert quantity({"name": "p_female"})[0] == "proportion" and quantity({"name": "x_gap"})[0] == "difference"


def test_a_family_of_contrasts_plugs_in() -> None:
    """The shape of issue 21's families: members of one family (`family`, `member`), each tested against 0."""
    members = ["Black", "Asian", "Hispanic (of any race, as recorded by the 2020 census)"]
    metrics = [{"name": f"gap[{m}]", "family": "gap", "member": {"race": m}, "test": "sign_flip"} for m in members]
    ests = [_est(f"gap[{m}]", c, -0.02 * (i + 1), 0.015, family="gap", member={"race": m}, p_value=0.04)
            for i, m in enumerate(members) for c in ("Q", "Q_IF")]
    report = _report(metrics, ests)
    panels, _c, rows_are = estimate_panels(report, "t")
    (p,) = panels  # one panel for the family, not one per member
    assert p.title == "gap" and p.style == "difference" and p.zero and list(p.rows) == members
    assert rows_are == "member of the family"
    lo, hi = forest.panel_limits(panels)[0]
    assert lo < -0.06 and hi >= 0
    fig = {f["file"]: f for f in task_figures(report, [])}["t.svg"]
    assert re.search(r"gap Asian Q_IF: −0\.04\d* \[", fig["svg"])  # the description: member, condition, value


def test_figures_are_deterministic() -> None:
    report = _report([{"name": "bias_ambiguous"}], [_est("bias_ambiguous", c, 0.05, 0.02) for c in ("Q", "Q_IF")],
                     [_cmp("bias_ambiguous", -0.0004, 0.0003)])
    a = task_figures(report, [])
    b = task_figures(copy.deepcopy(report), [])
    assert [f["svg"] for f in a] == [f["svg"] for f in b]
    # a small effect keeps its digits in the description: never "−0.000"
    svg = {f["file"]: f for f in a}["t-comparisons.svg"]["svg"]
    assert "−0.00040 [−0.00070, −0.00010]" in svg and "−0.000 " not in svg


def test_a_ranked_family_is_drawn_in_the_order_of_its_ranks() -> None:
    """GlobalOpinionQA's similarity per country: the countries from the most similar down (the first condition's
    ranks), not alphabetically."""
    values = {"Brazil": 0.5, "China": 0.7, "Japan": 0.6}
    ranks = {"China": 1, "Japan": 2, "Brazil": 3}
    metrics = [{"name": f"sim[{c}]", "family": "sim", "member": {"country": c}} for c in values]
    ests = [_est(f"sim[{c}]", cond, v, 0.05, family="sim", member={"country": c},
                 rank={"rank": ranks[c] if cond == "Q" else 4 - ranks[c], "of": 3})
            for c, v in values.items() for cond in ("Q", "Q_IF")]
    (p,), _c, _r = estimate_panels(_report(metrics, ests), "t")
    assert list(p.rows) == ["China", "Japan", "Brazil"] and p.title == "sim, ranked (Q)"


def test_the_differences_between_models_are_one_forest_with_families_as_rows_and_the_margin_drawn() -> None:
    from moraleval.report.figures import model_difference_figure, model_difference_panels

    cats = ["Age", "Religion"]
    metrics = [{"name": f"bias_amb[{c}]", "family": "bias_amb", "member": {"c": c}} for c in cats]
    metrics += [{"name": "accuracy_disambiguated"}, {"name": "bias_ambiguous"}]

    def res(metric, effect, **extra):
        return {"kind": "model_difference", "task": "t", "metric": metric, "condition": "Q", "group": {},
                "model": "public", "baseline_model": "standard", "effect": effect, "ci_low": effect - 0.1,
                "ci_high": effect + 0.1, "flags": [], "level": 0.95, "p_value": 0.5, "p_adjusted": 0.9, **extra}
    results = [res("bias_amb[Age]", -0.05), res("bias_amb[Religion]", 0.02), res("bias_ambiguous", -0.01),
               res("accuracy_disambiguated", 0.004, p_adjusted=0.01,
                   equivalence={"margin": 0.05, "alpha": 0.05, "interval": [-0.01, 0.02], "interval_level": 0.9,
                                "equivalent": True})]
    report = {**_report(metrics, []), "across": {"results": results}}
    panels, colors = model_difference_panels(report, "t")
    by = {p.title: p for p in panels}
    assert list(by) == ["bias_amb", "whole study", "equivalence: 90% interval within ±0.05?"]
    assert list(by["bias_amb"].rows) == cats and by["bias_amb"].style == "difference"
    assert by["bias_amb"].axis == "Δ bias score between models" and colors == {"public − standard": PALETTE[0]}
    eq = by["equivalence: 90% interval within ±0.05?"]
    assert eq.margin == 0.05 and eq.points[("accuracy_disambiguated", "public − standard")][1:3] == (-0.01, 0.02)
    assert forest.panel_limits([eq])[0][0] <= -0.05 and forest.panel_limits([eq])[0][1] >= 0.05
    fig = model_difference_figure(report, "t")
    assert fig["file"] == "t-models.svg" and fig["svg"].startswith("<svg")
    assert "Equivalence: accuracy_disambiguated, public − standard: equivalent within ±0.05" in fig["caption"]


def test_a_short_panel_beside_a_long_one_keeps_the_row_pitch() -> None:
    """GlobalOpinionQA's 17 countries beside 3 steered countries: both panels space their rows alike (the short
    one's rows at the top), rather than stretching 3 rows over the height of 17."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    countries = [f"Country {i}" for i in range(17)]
    long_p = forest.Panel(title="similarity", axis="similarity", rows=countries, series=["default"],
                          points={(c, "default"): (0.5 + 0.01 * i, 0.45 + 0.01 * i, 0.6 + 0.01 * i, False)
                                  for i, c in enumerate(countries)})
    short_p = forest.Panel(title="steering", axis="difference", rows=countries[:3], series=["default"],
                           points={(c, "default"): (-0.1, -0.2, 0.0, False) for c in countries[:3]}, zero=True)
    assert forest.horizontal([long_p, short_p])
    fig = forest.draw([long_p, short_p], {"default": "#0072B2"})
    FigureCanvasAgg(fig).draw()
    pitches = []
    for ax in fig.axes[:2]:
        ys = [ax.transData.transform((0, y))[1] for y in ax.get_yticks()]
        pitches.append(abs(ys[1] - ys[0]))
        # the first row at the top of the panel in both
        assert abs(ax.transData.transform((0, len(ax.get_yticks()) - 1))[1]
                   - fig.axes[0].transData.transform((0, 16))[1]) < 1.0
    assert pitches[0] == pytest.approx(pitches[1], rel=0.02)


def test_a_regressions_intercept_is_a_panel_of_its_own() -> None:
    """discrim-eval's mixed model: an intercept of 1.3 on the axis of terms of a few hundredths flattened them all
    to zero; the intercept (a baseline, not tested) is drawn beside them on its own scale."""
    terms = {"Intercept": 1.3, "race=Black": 0.05, "gender=female": -0.02}
    metrics = [{"name": f"d[{t}]", "family": "d", "member": {"term": t}, "test": "wald"} for t in terms]
    ests = [_est(f"d[{t}]", c, v, 0.02, family="d", member={"term": t}, p_value=None if t == "Intercept" else 0.03)
            for t, v in terms.items() for c in ("Q", "Q_IF")]
    panels, _c, _r = estimate_panels(_report(metrics, ests), "t")
    assert [(p.title, list(p.rows)) for p in panels] == [("d", ["race=Black", "gender=female"]),
                                                         ("d: intercept", ["Intercept"])]
    lo, hi = forest.panel_limits(panels)[0]
    assert hi < 0.5  # the terms' own scale


def test_a_family_compared_member_by_member_is_one_panel_with_the_members_as_rows() -> None:
    """The model-written evaluations' `m[nlp_survey]`, `m[philpapers2020]`, ... compared between two conditions:
    one panel with a row per member (they were three narrow panels with overlapping titles and no row label)."""
    members = ["nlp_survey", "philpapers2020", "political_typology_quiz"]
    report = _report([{"name": f"m[{x}]"} for x in members] + [{"name": "m_all"}], [],
                     [_cmp(f"m[{x}]", -0.1 * i, 0.2) for i, x in enumerate(members)] + [_cmp("m_all", -0.1, 0.1)])
    panels, _colors = comparison_panels(report, "t")
    assert [(p.title, list(p.rows)) for p in panels] == [("m", members), ("m_all", ["all items"])]


def test_a_row_with_one_series_is_drawn_on_its_tick() -> None:
    """GlobalOpinionQA's steering contrasts (CP[Russia] − default on Russia's row only): each point on its row's
    tick, not in a slot of its own beside the other series' empty slots."""
    from matplotlib.figure import Figure

    panel = forest.Panel("steering", "Δ", ["Russia", "China"], ["CP[Russia] − default", "CP[China] − default"],
                         {("Russia", "CP[Russia] − default"): (-0.01, -0.02, 0.0, False),
                          ("China", "CP[China] − default"): (0.002, -0.01, 0.01, False)},
                         "difference", "", None, True)
    fig = forest.draw([panel], {})
    ax = fig.axes[0]
    positions = sorted(round(float(x), 6) for coll in ax.collections for x, _y in coll.get_offsets())
    assert set(positions) <= {0.0, 1.0}, positions
    assert isinstance(fig, Figure)


@pytest.mark.parametrize("axis_values", [None, [135, 360, 1700]])
def test_a_flagged_point_across_models_is_hollow_and_the_legend_says_so(axis_values) -> None:
    """The figures over the models draw a flagged number (few units, degenerate answers, ...) hollow, like every
    other figure: a white-faced marker with a coloured edge, and a legend entry saying what hollow means."""
    from moraleval.report.figures_models import metric_vs_models

    models = ["small", "medium", "large"]
    clean = {"Q": [(0.1, 0.0, 0.2, False), (0.2, 0.1, 0.3, False), (0.3, 0.2, 0.4, False)]}
    some = {"Q": [(0.1, 0.0, 0.2, False), (0.2, 0.2, 0.2, True), (0.3, 0.2, 0.4, False)]}
    white_face = re.compile(r"fill:\s*#ffffff", re.I)
    plain = metric_vs_models("t: m", models, axis_values, clean)
    flagged = metric_vs_models("t: m", models, axis_values, some)
    # matplotlib draws text as paths: the legend entry's marker is the extra white-faced circle
    assert len(white_face.findall(flagged)) >= len(white_face.findall(plain)) + 2
    assert plain == metric_vs_models("t: m", models, axis_values,
                                     {"Q": [p[:3] for p in clean["Q"]]})  # three-field points: none flagged
