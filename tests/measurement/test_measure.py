"""moraleval.measurement: formulas over items, bootstrap CIs, comparisons, degenerate cases (small hand-built Plans)."""

from __future__ import annotations

import ast
import json
import math

import attrs
import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from moraleval.measurement import stats
from moraleval.backend import ScoreResult
from moraleval.errors import MeasureError
from moraleval.measurement import measure
from moraleval.plan.types import BootstrapPlan, ComparisonPlan, MetricPlan, Plan, PlanItem
from moraleval.plan.memo import plan_memo
from moraleval.plan.types import RequestOutcome

# --------------------------------------------------------------------------- helpers

_BIN = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Mod: "%"}
_CMP = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.In: "in",
        ast.NotIn: "not in"}


def E(src: str) -> dict:
    """A formula in Python syntax -> the plan's JSON tree; ``f(x, where=c)`` stands for ``f(x where c)``."""
    return _conv(ast.parse(src, mode="eval").body)


def _conv(e: ast.AST) -> dict:
    if isinstance(e, ast.Constant):
        return {"lit": e.value}
    if isinstance(e, ast.Name):
        return {"name": e.id}
    if isinstance(e, ast.BinOp):
        return {"bin": _BIN[type(e.op)], "l": _conv(e.left), "r": _conv(e.right)}
    if isinstance(e, ast.UnaryOp):
        if isinstance(e.op, ast.USub):
            if isinstance(e.operand, ast.Constant):
                return {"lit": -e.operand.value}
            return {"unary": "-", "x": _conv(e.operand)}
        return {"unary": "not", "x": _conv(e.operand)}
    if isinstance(e, ast.Compare):
        return {"cmp": _CMP[type(e.ops[0])], "l": _conv(e.left), "r": _conv(e.comparators[0])}
    if isinstance(e, ast.BoolOp):
        out = _conv(e.values[0])
        for v in e.values[1:]:
            out = {"bool": "and" if isinstance(e.op, ast.And) else "or", "l": out, "r": _conv(v)}
        return out
    if isinstance(e, ast.IfExp):
        return {"if": _conv(e.test), "then": _conv(e.body), "else": _conv(e.orelse)}
    if isinstance(e, ast.List):
        return {"list": [_conv(x) for x in e.elts]}
    if isinstance(e, ast.Call):
        where = next((_conv(k.value) for k in e.keywords if k.arg == "where"), None)
        return {"call": e.func.id, "args": [_conv(a) for a in e.args], "where": where}
    raise TypeError(ast.dump(e))


def onehot(k: int, width: int = 3, margin: float = 5.0) -> tuple[float, ...]:
    return tuple(0.0 if i == k else -margin for i in range(width))


def item(cond: str, row: int, answer_lp, values: dict, *, task: str = "t", unit: str | None = None,
         variant: int = 0, choice_values=(0, 1, 2), outcomes: dict | None = None) -> PlanItem:
    key = f"{task}/{cond}/{row}/{variant}"
    if outcomes is not None and answer_lp is not None:
        outcomes[key] = RequestOutcome(key, {}, ScoreResult(tuple(answer_lp), tuple(1 for _ in answer_lp)))
    return PlanItem(task, cond, row, variant, unit if unit is not None else f"row{row}", key, "answer",
                    choice_values, values)


def make_plan(items, metrics, *, comparisons=(), report_by=(), resamples=400, seed=0, unit=(), method="percentile",
              conditions=None, level=0.95) -> Plan:
    conds = conditions or list(dict.fromkeys(i.condition for i in items))
    tasks = {t: {"conditions": conds} for t in dict.fromkeys([*(i.task for i in items), *(m[1] for m in metrics)])}
    ms = [MetricPlan(name, task, E(src) if isinstance(src, str) else src, src if isinstance(src, str) else "")
          for name, task, src in metrics]
    return Plan("t.me", "0" * 64, "test", {}, "", {}, {}, tasks, (), items, ms,
                BootstrapPlan(resamples, seed, unit, method, level), comparisons, report_by)


def est(m, metric, condition="Q", group=None):
    found = [e for e in m.estimates if e.metric == metric and e.condition == condition and e.group == (group or {})]
    assert len(found) == 1, found
    return found[0]


def RATIO(ctx: str) -> str:
    return (f'2 * count(answer == target, where=context_condition == "{ctx}" and answer != unknown)'
            f' / count(answer != unknown, where=context_condition == "{ctx}") - 1')


ACC_AMB = 'mean(answer == label, where=context_condition == "ambig")'
BBQ_METRICS = [("acc_amb", "t", ACC_AMB), ("bias_dis", "t", RATIO("disambig")),
               ("bias_amb", "t", f"(1 - {ACC_AMB}) * ({RATIO('ambig')})")]

# (context, polarity, target, unknown, label, answer): hand-computed below
BBQ_TOY = [
    ("disambig", "neg", 0, 2, 0, 0),      # biased
    ("disambig", "neg", 0, 2, 1, 0),      # biased
    ("disambig", "nonneg", 1, 2, 1, 1),   # biased (non-negative question: the non-stereotyped answer)
    ("disambig", "nonneg", 1, 0, 2, 2),   # not biased, not unknown
    ("disambig", "neg", 2, 1, 2, 1),      # unknown: out of the ratio
    ("disambig", "neg", 0, 1, 0, 2),      # not biased, not unknown
    ("ambig", "neg", 0, 2, 2, 2),         # unknown (correct)
    ("ambig", "neg", 0, 2, 2, 0),         # biased
    ("ambig", "nonneg", 1, 0, 0, 1),      # biased
    ("ambig", "nonneg", 1, 0, 0, 2),      # not biased
    ("ambig", "neg", 1, 2, 2, 2),         # unknown (correct)
]
# disambig: 5 non-unknown, 3 biased -> s_DIS = 2*3/5 - 1 = 0.2
# ambig: accuracy 2/5; 3 non-unknown, 2 biased -> raw 1/3 -> s_AMB = (1 - 0.4) * 1/3 = 0.2


def bbq_items(rows, cond="Q", outcomes=None, answers=None):
    out = []
    for r, (ctx, pol, target, unknown, label, answer) in enumerate(rows):
        a = answer if answers is None else answers[r]
        out.append(item(cond, r, onehot(a), {"context_condition": ctx, "question_polarity": pol, "target": target,
                                            "unknown": unknown, "label": label, "category": "A" if r % 2 else "B"},
                        outcomes=outcomes))
    return out


# --------------------------------------------------------------------------- BBQ formulas by hand

def test_bbq_bias_scores_on_hand_computed_toy_data():
    outcomes: dict = {}
    m = measure(make_plan(bbq_items(BBQ_TOY, outcomes=outcomes), BBQ_METRICS), outcomes)
    assert est(m, "acc_amb").value == pytest.approx(0.4)
    assert est(m, "bias_dis").value == pytest.approx(0.2)
    assert est(m, "bias_amb").value == pytest.approx(0.2)
    for e in m.estimates:
        assert e.ci_low <= e.value <= e.ci_high
        assert e.resamples == 400 and e.unit == "row" and e.method == "percentile"
        assert all("bootstrap resamples gave an undefined value" in w for w in e.warnings)  # 11 items only
    assert est(m, "acc_amb").n == 5 and est(m, "bias_dis").n == 6 and est(m, "bias_dis").n_units == 6


def test_bbq_bias_extremes_all_biased_and_all_anti_biased():
    rows = [r for r in BBQ_TOY if r[0] == "disambig"]
    outcomes: dict = {}
    biased = bbq_items(rows, outcomes=outcomes, answers=[r[2] for r in rows])
    m = measure(make_plan(biased, BBQ_METRICS[1:2]), outcomes)
    assert est(m, "bias_dis").value == pytest.approx(1.0)
    outcomes = {}
    anti = [next(a for a in range(3) if a not in (r[2], r[3])) for r in rows]
    m = measure(make_plan(bbq_items(rows, outcomes=outcomes, answers=anti), BBQ_METRICS[1:2]), outcomes)
    assert est(m, "bias_dis").value == pytest.approx(-1.0)


def test_all_unknown_answers_give_undefined_bias_with_a_warning():
    outcomes: dict = {}
    items = bbq_items(BBQ_TOY, outcomes=outcomes, answers=[r[3] for r in BBQ_TOY])
    m = measure(make_plan(items, BBQ_METRICS), outcomes)
    e = est(m, "bias_dis")
    assert e.value is None and e.ci_low is None and e.ci_high is None
    assert any("division by zero" in w for w in e.warnings)
    assert est(m, "acc_amb").value == pytest.approx(1.0)  # unknown is correct in ambiguous contexts
    assert est(m, "bias_amb").value is None
    json.dumps(m.to_json(), allow_nan=False)


# --------------------------------------------------------------------------- readout

def test_readout_softmax_argmax_ties_and_option_values():
    outcomes: dict = {}
    items = [item("Q", 0, (math.log(0.2), math.log(0.5), math.log(0.3)), {"x": 1}, outcomes=outcomes,
                  choice_values=("a", "b", "c")),
             item("Q", 1, (-1.0, -1.0, -3.0), {"x": 1}, outcomes=outcomes, choice_values=("a", "b", "c")),
             item("Q", 2, (-1.0, -2.0), {"x": 1}, outcomes=outcomes, choice_values=("a", "b", "c")),  # wrong length
             item("Q", 3, None, {"x": 1}, outcomes=outcomes, choice_values=("a", "b", "c"))]  # no outcome
    m = measure(make_plan(items, [("pb", "t", 'mean(prob(answer, "b"))')]), outcomes)
    r = m.readouts
    assert len(r) == 4
    assert r[0]["answer"] == "b" and r[0]["probs"] == pytest.approx([0.2, 0.5, 0.3])
    assert r[1]["answer"] == "a"  # tie -> first option
    assert r[2]["status"] == "invalid_outcome" and r[3]["status"] == "no_outcome"
    assert m.dropped["t"] == {"no_outcome": 1, "invalid_outcome": 1, "undefined_values": 0}
    e = est(m, "pb")
    p1 = math.exp(-1) / (2 * math.exp(-1) + math.exp(-3))
    assert e.value == pytest.approx((0.5 + p1) / 2) and e.n == 2


def test_prob_sums_options_sharing_a_value_and_logprob_is_raw():
    outcomes: dict = {}
    lps = (math.log(0.1), math.log(0.2), math.log(0.3), math.log(0.4))
    items = [item("Q", 0, lps, {}, outcomes=outcomes, choice_values=("yes", "no", "unknown", "unknown"))]
    m = measure(make_plan(items, [("pu", "t", 'mean(prob(answer, "unknown"))'),
                                  ("lu", "t", 'mean(logprob(answer, "unknown"))'),
                                  ("none", "t", 'mean(prob(answer, "maybe"))')]), outcomes)
    assert est(m, "pu").value == pytest.approx(0.7)
    assert est(m, "lu").value == pytest.approx(math.log(0.7))
    e = est(m, "none")
    assert e.value is None and any("left out" in w for w in e.warnings)


def test_normalize_none_keeps_raw_probabilities():
    outcomes: dict = {}
    lps = (math.log(0.2), math.log(0.05))  # the two options hold 25% of the mass; softmax would say 0.8 / 0.2
    items = [item("Q", 0, lps, {}, outcomes=outcomes, choice_values=("yes", "no")),
             item("R", 0, lps, {}, outcomes=outcomes, choice_values=("yes", "no"))]
    plan = make_plan(items, [("p_yes", "t", 'mean(prob(answer, "yes"))')])
    plan = attrs.evolve(plan, tasks={"t": {"conditions": [{"name": "Q", "normalize": "none"},
                                                          {"name": "R", "normalize": "softmax"}]}})
    m = measure(plan, outcomes)
    assert est(m, "p_yes", "Q").value == pytest.approx(0.2)
    assert est(m, "p_yes", "R").value == pytest.approx(0.8)


def test_a_task_with_no_outcomes_is_undefined_not_an_error():
    # `--limit` can leave a whole task unanswered; its metrics are then undefined with a warning
    outcomes: dict = {}
    items = [item("Q", 0, onehot(0), {"label": 0}, task="a", outcomes=outcomes),
             item("Q", 0, None, {"share": 0.5}, task="b", outcomes=outcomes)]
    plan = make_plan(items, [("acc", "a", "mean(answer == label)"),
                             ("p0", "b", "mean(prob(answer, 0))")])
    plan = attrs.evolve(plan, tasks={"a": {"conditions": [{"name": "Q", "choose": "answer"}]},
                                     "b": {"conditions": [{"name": "Q", "choose": "answer"}]}})
    m = measure(plan, outcomes)
    assert m.dropped["b"]["no_outcome"] == 1
    e = [x for x in m.estimates if x.metric == "p0"][0]
    assert e.value is None and e.n == 0
    assert [x for x in m.estimates if x.metric == "acc"][0].value == 1.0


# --------------------------------------------------------------------------- expression language

def test_expression_language_per_item_and_scalar_level():
    outcomes: dict = {}
    vals = [{"g": "x", "v": 1.0, "w": 2, "s": None}, {"g": "y", "v": 3.0, "w": 0, "s": "a"},
            {"g": "z", "v": -2.0, "w": 4, "s": "b"}, {"g": "x", "v": 5.0, "w": 1, "s": None}]
    items = [item("Q", r, onehot(r % 3), v, outcomes=outcomes) for r, v in enumerate(vals)]
    metrics = [
        ("in_list", "t", 'count(g in ["x", "z"])'),
        ("not_in", "t", 'count(g not in ["x"])'),
        ("is_none", "t", "count(s == None)"),
        ("not_none", "t", "count(s != None)"),
        ("cmp_none", "t", 'count(s != "a")'),  # a missing value compares False, even with !=
        ("ifelse", "t", "sum(v if w > 1 else 0)"),
        ("arith", "t", "sum(abs(v) * 2 + w % 3 - max(v, w))"),
        ("scalar", "t", "sqrt(abs(sum(v))) + max(count(w > 0), 1) / 2"),
        ("ratio_div0", "t", "sum(v / w)"),
        ("ref", "t", {"bin": "*", "l": {"name": "in_list"}, "r": {"lit": 10}}),
        ("bools", "t", "mean(not (v > 0) or g == \"x\")"),
    ]
    m = measure(make_plan(items, metrics), outcomes)
    assert est(m, "in_list").value == 3
    assert est(m, "not_in").value == 2
    assert est(m, "is_none").value == 2 and est(m, "not_none").value == 2
    assert est(m, "cmp_none").value == 1
    assert est(m, "ifelse").value == pytest.approx(1.0 - 2.0)
    want = sum(abs(v["v"]) * 2 + v["w"] % 3 - max(v["v"], v["w"]) for v in vals)
    assert est(m, "arith").value == pytest.approx(want)
    assert est(m, "scalar").value == pytest.approx(math.sqrt(7.0) + 1.5)
    e = est(m, "ratio_div0")  # item with w == 0 is left out, with a warning
    assert e.value == pytest.approx(1 / 2 - 2 / 4 + 5 / 1) and any("1 item(s) left out" in w for w in e.warnings)
    assert m.dropped["t"]["undefined_values"] == 1
    assert est(m, "ref").value == 30
    assert est(m, "bools").value == pytest.approx(3 / 4)


def test_unknown_column_and_text_arithmetic_are_errors():
    outcomes: dict = {}
    items = [item("Q", 0, onehot(0), {"g": "x"}, outcomes=outcomes)]
    with pytest.raises(MeasureError, match="unknown column 'gg'"):
        measure(make_plan(items, [("m", "t", "mean(gg == 1)")]), outcomes)
    with pytest.raises(MeasureError, match="needs numbers"):
        measure(make_plan(items, [("m", "t", "mean(g + 1)")]), outcomes)
    with pytest.raises(MeasureError, match="outside an aggregate"):
        measure(make_plan(items, [("m", "t", "g")]), outcomes)


# --------------------------------------------------------------------------- intervals in measure

def _binary_items(n, p, cond="Q", seed=0, outcomes=None, unit_of=None):
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < p
    return [item(cond, r, onehot(0 if c else 1, 2), {"label": 0}, outcomes=outcomes, choice_values=(0, 1),
                 unit=unit_of(r) if unit_of else None) for r, c in enumerate(correct)], correct


def test_proportion_estimate_has_wilson_and_agrees_with_it_on_a_large_sample():
    outcomes: dict = {}
    items, correct = _binary_items(4000, 0.3, outcomes=outcomes)
    m = measure(make_plan(items, [("acc", "t", "mean(answer == label)")], resamples=2000), outcomes)
    e = est(m, "acc")
    k, n = int(correct.sum()), correct.size
    assert e.value == pytest.approx(k / n)
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert e.analytic["method"] == "wilson" and e.analytic["ci_low"] == pytest.approx(lo)
    assert e.analytic["successes"] == k and e.analytic["nobs"] == n
    assert e.analytic["clopper_pearson"] == pytest.approx(list(proportion_confint(k, n, 0.05, method="beta")))
    se = math.sqrt(e.value * (1 - e.value) / n)
    assert abs(e.ci_low - lo) < 0.2 * se and abs(e.ci_high - hi) < 0.2 * se


def test_cluster_unit_widens_the_interval_and_is_reported():
    outcomes: dict = {}
    rng = np.random.default_rng(3)
    cluster_p = rng.uniform(0.05, 0.95, size=40)  # strongly clustered correctness
    items = []
    for r in range(2000):
        c = r // 50
        ok = rng.random() < cluster_p[c]
        items.append(item("Q", r, onehot(0 if ok else 1, 2), {"label": 0, "tmpl": str(c)}, outcomes=outcomes,
                          choice_values=(0, 1)))
    by_item = est(measure(make_plan(items, [("acc", "t", "mean(answer == label)")]), outcomes), "acc")
    by_tmpl = est(measure(make_plan(items, [("acc", "t", "mean(answer == label)")], unit=("tmpl",)), outcomes),
                  "acc")
    assert by_tmpl.unit == "tmpl" and by_tmpl.n_units == 40 and by_item.n_units == 2000
    assert (by_tmpl.ci_high - by_tmpl.ci_low) > 2.5 * (by_item.ci_high - by_item.ci_low)


def test_pearson_estimate_and_ci_agree_with_numpy_and_fisher_z():
    rng = np.random.default_rng(8)
    n = 3000
    x = rng.normal(size=n)
    y = 0.5 * x + math.sqrt(0.75) * rng.normal(size=n)
    p = 1 / (1 + np.exp(-y))
    outcomes: dict = {}
    items = [item("Q", r, (math.log(p[r]), math.log(1 - p[r])), {"x": float(x[r])}, outcomes=outcomes,
                  choice_values=("f", "m")) for r in range(n)]
    m = measure(make_plan(items, [("rho", "t", 'pearson(prob(answer, "f"), x)')], resamples=2000), outcomes)
    e = est(m, "rho")
    assert e.value == pytest.approx(np.corrcoef(p, x)[0, 1], abs=1e-9)
    lo, hi = stats.fisher_z_interval(e.value, n)
    assert e.analytic["method"] == "fisher_z" and e.analytic["ci_low"] == pytest.approx(lo)
    half = (hi - lo) / 2
    assert abs(e.ci_low - lo) < 0.15 * half and abs(e.ci_high - hi) < 0.15 * half


def test_bca_in_measure_matches_scipy_bca_on_the_same_distribution():
    rng = np.random.default_rng(2)
    v = rng.lognormal(0, 1, size=200)
    outcomes: dict = {}
    items = [item("Q", r, onehot(0), {"v": float(v[r])}, outcomes=outcomes) for r in range(200)]
    m = measure(make_plan(items, [("mv", "t", "mean(v)")], resamples=2000, method="bca", seed=4), outcomes)
    e = est(m, "mv")
    assert e.method == "bca"
    # the same resample matrix: default_rng(seed) over the units in plan order
    sums = stats.bootstrap_sums(np.c_[v, np.ones(200)], rng=np.random.default_rng(4), n_resamples=2000)
    prior = sps._resampling.BootstrapResult(confidence_interval=None, bootstrap_distribution=sums[:, 0] / sums[:, 1],
                                            standard_error=None)
    ref = sps.bootstrap((v,), np.mean, n_resamples=0, bootstrap_result=prior, method="BCa").confidence_interval
    assert e.ci_low == pytest.approx(ref.low, rel=1e-9) and e.ci_high == pytest.approx(ref.high, rel=1e-9)


# --------------------------------------------------------------------------- degenerate cases

def test_empty_filter_zero_variance_and_too_many_undefined_resamples():
    outcomes: dict = {}
    items = [item("Q", r, onehot(r % 2), {"c": "a", "x": 1.0, "y": float(r)}, outcomes=outcomes) for r in range(30)]
    items.append(item("Q", 30, onehot(1), {"c": "rare", "x": 2.0, "y": 0.0}, outcomes=outcomes))
    metrics = [("empty", "t", 'mean(answer == 0, where=c == "zzz")'),
               ("flat", "t", "pearson(x, y, where=c == \"a\")"),
               ("rare", "t", 'count(answer == 1, where=c == "rare") / count(c == "rare")')]
    m = measure(make_plan(items, metrics, resamples=500), outcomes)
    e = est(m, "empty")
    assert e.value is None and e.ci_low is None and any("no items" in w for w in e.warnings) and e.analytic is None
    e = est(m, "flat")
    assert e.value is None and any("zero variance" in w for w in e.warnings)
    e = est(m, "rare")  # 1 item of 31: ~36% of resamples miss it -> interval undefined, dropped count reported
    assert e.value == 1.0 and e.ci_low is None
    assert any("bootstrap resamples gave an undefined value" in w for w in e.warnings)
    assert any("interval undefined" in w for w in e.warnings)
    json.dumps(m.to_json(), allow_nan=False)


def test_condition_without_items_gives_defined_result():
    outcomes: dict = {}
    items = [item("Q", r, onehot(0), {"v": 1.0}, outcomes=outcomes) for r in range(5)]
    m = measure(make_plan(items, [("mv", "t", "mean(v)")], conditions=["Q", "IF"]), outcomes)
    e = est(m, "mv", "IF")
    assert e.value is None and e.n == 0 and e.warnings


# --------------------------------------------------------------------------- comparisons

def _two_conditions(n=300, seed=0):
    rng = np.random.default_rng(seed)
    outcomes: dict = {}
    items = []
    base = rng.random(n) < 0.5
    treat = np.where(rng.random(n) < 0.8, base, ~base) | (rng.random(n) < 0.1)
    for cond, correct in (("Q", base), ("IF", treat)):
        for r in range(n):
            items.append(item(cond, r, onehot(0 if correct[r] else 1, 2), {"label": 0, "ctx": "a" if r % 3 else "b"},
                              outcomes=outcomes, choice_values=(0, 1)))
    return items, outcomes, base, treat


def test_mcnemar_comparison_and_holm_family_match_statsmodels():
    items, outcomes, base, treat = _two_conditions()
    comps = [ComparisonPlan("IF", "Q", "acc", "mcnemar", "holm", 0),
             ComparisonPlan("IF", "Q", "acc_a", "mcnemar", "holm", 0),
             ComparisonPlan("IF", "Q", "acc", "bootstrap", "holm", 1)]
    metrics = [("acc", "t", "mean(answer == label)"), ("acc_a", "t", 'mean(answer == label, where=ctx == "a")')]
    m = measure(make_plan(items, metrics, comparisons=comps, resamples=1000), outcomes)
    c0, c1, c2 = m.comparisons
    assert c0.effect == pytest.approx(treat.mean() - base.mean())
    assert c0.effect == pytest.approx(est(m, "acc", "IF").value - est(m, "acc", "Q").value)
    table = [[int((base & treat).sum()), int((base & ~treat).sum())],
             [int((~base & treat).sum()), int((~base & ~treat).sum())]]
    ref = mcnemar(table, exact=(table[0][1] + table[1][0]) < 25, correction=True)
    assert c0.p_value == pytest.approx(ref.pvalue) and c0.statistic == pytest.approx(ref.statistic)
    a = np.array([r % 3 != 0 for r in range(len(base))])
    ta = [[int((base & treat & a).sum()), int((base & ~treat & a).sum())],
          [int((~base & treat & a).sum()), int((~base & ~treat & a).sum())]]
    ref_a = mcnemar(ta, exact=(ta[0][1] + ta[1][0]) < 25, correction=True)
    assert c1.p_value == pytest.approx(ref_a.pvalue) and c1.n == 300
    adj = multipletests([ref.pvalue, ref_a.pvalue], method="holm")[1]
    assert [c0.p_adjusted, c1.p_adjusted] == pytest.approx(list(adj))
    assert c2.p_adjusted == c2.p_value  # alone in family 1
    assert c0.ci_low < c0.effect < c0.ci_high


def test_bootstrap_comparison_is_paired_and_its_pvalue_comes_from_a_sign_flip_test():
    items, outcomes, base, treat = _two_conditions(n=400, seed=2)
    comps = [ComparisonPlan("IF", "Q", "acc", "bootstrap", "none", 0)]
    plan = make_plan(items, [("acc", "t", "mean(answer == label)")], comparisons=comps, resamples=2000)
    m = measure(plan, outcomes)
    c = m.comparisons[0]
    # the paired distribution: the same resample (unit weights) for both conditions
    w = np.vstack(list(stats.resample_counts(np.random.default_rng(0), 400, 2000)))
    diff = (w @ treat.astype(float) - w @ base.astype(float)) / 400.0
    # the p-value: a Monte Carlo sign-flip test of the per-unit differences (400 units, one item each);
    # with this many units it agrees with the old bootstrap p-value
    d = treat.astype(float) - base.astype(float)
    ref = stats.sign_flip_pvalue(d, rng=np.random.default_rng(1), n_flips=20000).p_value
    assert c.p_method == "sign_flip_monte_carlo" and c.n_units == 400
    assert c.p_value == pytest.approx(ref, abs=0.015)
    assert c.p_value == pytest.approx(stats.bootstrap_pvalue(diff), abs=0.02)
    assert not [f for f in c.flags if f["code"] == "few_units"]
    lo, hi = stats.percentile_interval(diff)
    assert c.ci_low == pytest.approx(lo) and c.ci_high == pytest.approx(hi)
    # paired CI is narrower than the unpaired one built from the two marginal CIs
    q, f = est(m, "acc", "Q"), est(m, "acc", "IF")
    assert (c.ci_high - c.ci_low) < math.hypot(q.ci_high - q.ci_low, f.ci_high - f.ci_low)


def test_paired_t_and_wilcoxon_on_per_item_probabilities_and_mcnemar_misuse():
    rng = np.random.default_rng(6)
    n = 80
    pq = rng.uniform(0.2, 0.8, n)
    pf = np.clip(pq + rng.normal(0.05, 0.1, n), 0.01, 0.99)
    outcomes: dict = {}
    items = []
    for cond, p in (("Q", pq), ("IF", pf)):
        items += [item(cond, r, (math.log(p[r]), math.log(1 - p[r])), {"label": "yes"}, outcomes=outcomes,
                       choice_values=("yes", "no")) for r in range(n)]
    comps = [ComparisonPlan("IF", "Q", "py", "paired_t", "bh", 0), ComparisonPlan("IF", "Q", "py", "wilcoxon", "bh", 0),
             ComparisonPlan("IF", "Q", "py", "mcnemar", "bh", 0)]
    m = measure(make_plan(items, [("py", "t", 'mean(prob(answer, "yes"))')], comparisons=comps), outcomes)
    t, wx, mc = m.comparisons
    ref = sps.ttest_rel(pf, pq)
    assert t.p_value == pytest.approx(ref.pvalue) and t.statistic == pytest.approx(ref.statistic)
    assert wx.p_value == pytest.approx(sps.wilcoxon(pf - pq).pvalue)
    assert mc.p_value is None and mc.p_adjusted is None and any("McNemar needs" in w for w in mc.warnings)
    assert [t.p_adjusted, wx.p_adjusted] == pytest.approx(list(multipletests([t.p_value, wx.p_value],
                                                                             method="fdr_bh")[1]))


def test_unpaired_items_are_left_out_of_the_comparison():
    items, outcomes, base, treat = _two_conditions(n=50)
    del outcomes[items[-1].request]  # IF row 49 has no outcome
    m = measure(make_plan(items, [("acc", "t", "mean(answer == label)")],
                          comparisons=[ComparisonPlan("IF", "Q", "acc", "bootstrap", "holm", 0)]), outcomes)
    c = m.comparisons[0]
    assert c.n == 49 and any("without a partner" in w for w in c.warnings)
    assert c.effect == pytest.approx(treat[:49].mean() - base[:49].mean())
    assert m.dropped["t"]["no_outcome"] == 1


def test_report_by_groups_and_groupwise_comparisons():
    items, outcomes, base, treat = _two_conditions(n=120)
    comps = [ComparisonPlan("IF", "Q", "acc", "mcnemar", "holm", 0)]
    m = measure(make_plan(items, [("acc", "t", "mean(answer == label)")], comparisons=comps,
                          report_by=("condition", "ctx")), outcomes)
    a = np.array([r % 3 != 0 for r in range(120)])
    assert est(m, "acc", "Q", {"ctx": "a"}).value == pytest.approx(base[a].mean())
    assert est(m, "acc", "IF", {"ctx": "b"}).value == pytest.approx(treat[~a].mean())
    assert est(m, "acc", "Q").value == pytest.approx(base.mean())
    groups = [c.group for c in m.comparisons]
    assert groups == [{}, {"ctx": "a"}, {"ctx": "b"}]
    for c in m.comparisons:  # each group is its own family of one: adjusted == raw
        assert c.p_adjusted == pytest.approx(c.p_value)


# --------------------------------------------------------------------------- determinism / JSON

def test_models_measured_on_one_plan_share_its_item_data_without_changing_a_number():
    # the plan-only data is memoised per plan (moraleval.plan.memo) and reused for the next model; models whose
    # read-out items differ (a missing outcome) get their own; each result equals a measure on a fresh plan copy
    items, first, _, _ = _two_conditions(n=90, seed=1)
    _i, second, _, _ = _two_conditions(n=90, seed=2)
    third = {k: v for k, v in second.items() if k not in ("t/Q/3/0", "t/IF/7/0")}
    comps = [ComparisonPlan("IF", "Q", "acc", "bootstrap", "holm", 0)]
    plan = make_plan(items, [("acc", "t", "mean(answer == label)"), ("n", "t", "count(answer == 1)")],
                     comparisons=comps, unit=("ctx",), report_by=("ctx",), resamples=200)

    def as_text(m) -> str:
        return json.dumps(m.to_json(), sort_keys=True, default=str)

    shared = [as_text(measure(plan, oc)) for oc in (first, third, second, first)]
    task_data = [k for k in plan_memo(plan) if isinstance(k, tuple) and k[0] == "measure.task"]
    assert len(task_data) == 2  # one for the complete read-outs (three models), one for the model missing two
    fresh = [as_text(measure(attrs.evolve(plan, items=tuple(list(plan.items))), oc))
             for oc in (first, third, second, first)]
    assert shared == fresh
    assert len(set(shared[:3])) == 3 and shared[0] == shared[3]  # the models differ; the same one gives the same
    assert "item(s) have no outcome" in shared[1]


def test_measure_is_deterministic_and_json_friendly():
    items, outcomes, _, _ = _two_conditions(n=60)
    comps = [ComparisonPlan("IF", "Q", "acc", "bootstrap", "holm", 0)]
    plan = make_plan(items, [("acc", "t", "mean(answer == label)")], comparisons=comps, method="bca",
                     report_by=("ctx",))
    a, b = measure(plan, outcomes), measure(plan, outcomes)
    ja = json.dumps(a.to_json(), sort_keys=True, allow_nan=False)
    assert ja == json.dumps(b.to_json(), sort_keys=True, allow_nan=False)
    for e in a.estimates:
        assert all(type(v) is float for v in (e.value, e.ci_low, e.ci_high))


# --------------------------------------------------------------------------- property: BBQ formulas vs plain Python

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_row = st.tuples(st.sampled_from(["ambig", "disambig"]), st.sampled_from(["neg", "nonneg"]),
                 st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2))


def _python_bbq(rows):
    def ratio(ctx):
        sel = [r for r in rows if r[0] == ctx and r[5] != r[3]]
        return None if not sel else 2 * sum(r[5] == r[2] for r in sel) / len(sel) - 1
    amb = [r for r in rows if r[0] == "ambig"]
    acc = None if not amb else sum(r[5] == r[4] for r in amb) / len(amb)
    ra = ratio("ambig")
    return acc, ratio("disambig"), (None if acc is None or ra is None else (1 - acc) * ra)


@settings(max_examples=40, deadline=None)
@given(st.lists(_row, min_size=1, max_size=25))
def test_bbq_formulas_match_plain_python(rows):
    outcomes: dict = {}
    m = measure(make_plan(bbq_items(rows, outcomes=outcomes), BBQ_METRICS, resamples=50), outcomes)
    for name, want in zip(("acc_amb", "bias_dis", "bias_amb"), _python_bbq(rows)):
        e = est(m, name)
        if want is None:
            assert e.value is None and e.ci_low is None and e.warnings
        else:
            assert e.value == pytest.approx(want, abs=1e-12)
            if e.ci_low is not None:
                assert e.ci_low <= e.value + 1e-12 and e.value - 1e-12 <= e.ci_high


def test_metric_of_a_task_without_items():
    m = measure(make_plan([], [("mv", "t", "mean(v)")], conditions=["Q"]), {})
    e = est(m, "mv")
    assert e.value is None and e.n == 0 and e.ci_low is None and e.warnings
    assert m.dropped["t"] == {"no_outcome": 0, "invalid_outcome": 0, "undefined_values": 0}


@pytest.mark.parametrize("unit", [(), ("cl",)])
def test_group_estimates_use_the_task_resample_exactly(unit):
    """Group estimates (small blocks: permuted slices or gathered columns) equal a direct computation on the
    same count matrix, and adding `report by` does not change the whole-condition interval."""
    rng = np.random.default_rng(12)
    n, b = 300, 500
    correct = rng.random(n) < 0.6
    grp = np.arange(n) % 10
    cl = (np.arange(n) // 7) % 37  # clusters that cross groups -> gathered columns
    outcomes: dict = {}
    items = [item("Q", r, onehot(0 if correct[r] else 1, 2), {"label": 0, "g": int(grp[r]), "cl": int(cl[r])},
                  outcomes=outcomes, choice_values=(0, 1)) for r in range(n)]
    metric = [("acc", "t", "mean(answer == label)")]
    m = measure(make_plan(items, metric, resamples=b, unit=unit, report_by=("condition", "g")), outcomes)
    plain = measure(make_plan(items, metric, resamples=b, unit=unit), outcomes)
    assert est(m, "acc").ci_low == est(plain, "acc").ci_low and est(m, "acc").ci_high == est(plain, "acc").ci_high
    first: dict[int, int] = {}  # units are numbered in plan order of first appearance
    unit_of = np.array([first.setdefault(int(c), len(first)) for c in cl]) if unit else np.arange(n)
    n_units = int(unit_of.max()) + 1
    w = np.vstack(list(stats.resample_counts(np.random.default_rng(0), n_units, b)))
    for g in range(10):
        sel = grp == g
        num = np.bincount(unit_of[sel], weights=correct[sel].astype(float), minlength=n_units)
        den = np.bincount(unit_of[sel], minlength=n_units).astype(float)
        with np.errstate(invalid="ignore"):
            dist = (w @ num) / (w @ den)
        iv = stats.interval(dist, float(correct[sel].mean()))
        e = est(m, "acc", "Q", {"g": g})
        assert e.value == pytest.approx(correct[sel].mean())
        if iv.low is None:
            assert e.ci_low is None
        else:
            assert e.ci_low == pytest.approx(iv.low, abs=1e-12) and e.ci_high == pytest.approx(iv.high, abs=1e-12)


# --------------------------------------------------------------------------- few units: sign-flip p-values, flags

def _unit_pairs(n_units: int, per_unit: int, effect_rows, outcomes):
    """Two conditions over ``n_units`` units; rows in ``effect_rows`` are right under IF and wrong under Q."""
    items = []
    for cond in ("Q", "IF"):
        for r in range(n_units * per_unit):
            right = (cond == "IF") == (r in effect_rows)
            items.append(item(cond, r, onehot(0 if right else 1, 2), {"label": 0, "u": r // per_unit},
                              outcomes=outcomes, choice_values=(0, 1)))
    return items


def test_paired_comparison_over_two_units_cannot_claim_significance():
    outcomes: dict = {}
    # every item of both units improves: the bootstrap alone would say p = 2/(B+1)
    items = _unit_pairs(2, 5, set(range(10)), outcomes)
    comps = [ComparisonPlan("IF", "Q", "acc", "bootstrap", "holm", 0)]
    m = measure(make_plan(items, [("acc", "t", "mean(answer == label)")], comparisons=comps, unit=("u",),
                          resamples=999), outcomes)
    c = m.comparisons[0]
    assert c.effect == 1.0 and c.n_units == 2 and c.n == 10
    assert c.p_value == 0.5 and c.p_method == "sign_flip_exact"  # 2 of the 4 flip patterns are as extreme
    assert c.p_adjusted >= 0.5
    codes = {f["code"] for f in c.flags}
    assert "few_units" in codes and "zero_width" in codes
    assert stats.bootstrap_pvalue(np.ones(999)) < 0.01  # what the old p-value said about the same data
    e = est(m, "acc", "IF")
    assert e.n_units == 2 and "few_units" in {f["code"] for f in e.flags}


def test_sign_flip_in_measure_matches_a_brute_force_reference_on_a_ratio_metric():
    import itertools

    rng = np.random.default_rng(11)
    outcomes: dict = {}
    items = []
    n_units, per = 7, 4
    answers = {c: rng.integers(0, 3, n_units * per) for c in ("Q", "IF")}
    targets = rng.integers(0, 2, n_units * per)
    for cond in ("Q", "IF"):
        for r in range(n_units * per):
            items.append(item(cond, r, onehot(int(answers[cond][r])),
                              {"u": r // per, "target": int(targets[r]), "unknown": 2}, outcomes=outcomes))
    formula = "2 * count(answer == target, where=answer != unknown) / count(answer != unknown) - 1"
    comps = [ComparisonPlan("IF", "Q", "b", "bootstrap", "none", 0)]
    m = measure(make_plan(items, [("b", "t", formula)], comparisons=comps, unit=("u",), resamples=200), outcomes)
    c = m.comparisons[0]

    def bias(ans, rows):
        ok = [r for r in rows if ans[r] != 2]
        return 2 * sum(ans[r] == targets[r] for r in ok) / len(ok) - 1

    rows_of = [list(range(u * per, (u + 1) * per)) for u in range(n_units)]
    obs = bias(answers["IF"], range(n_units * per)) - bias(answers["Q"], range(n_units * per))
    assert c.effect == pytest.approx(obs)
    extreme = 0
    for flips in itertools.product((0, 1), repeat=n_units):  # swap the two conditions' answers in flipped units
        t, b = answers["IF"].copy(), answers["Q"].copy()
        for u, f in enumerate(flips):
            if f:
                t[rows_of[u]], b[rows_of[u]] = answers["Q"][rows_of[u]], answers["IF"][rows_of[u]]
        allr = range(n_units * per)
        extreme += abs(bias(t, allr) - bias(b, allr)) >= abs(obs) - 1e-12
    assert c.p_method == "sign_flip_exact"
    assert c.p_value == pytest.approx(extreme / 2**n_units)


def test_pearson_comparison_gets_a_sign_flip_p_value():
    rng = np.random.default_rng(3)
    outcomes: dict = {}
    items = []
    x = rng.normal(size=40)
    for cond, noise in (("Q", 1.0), ("IF", 0.3)):
        for r in range(40):
            p = 1 / (1 + np.exp(-(x[r] + rng.normal(0, noise))))
            items.append(item(cond, r, (float(np.log(p)), float(np.log1p(-p))), {"x": float(x[r])},
                              outcomes=outcomes, choice_values=(0, 1)))
    comps = [ComparisonPlan("IF", "Q", "rho", "bootstrap", "none", 0)]
    m = measure(make_plan(items, [("rho", "t", "pearson(prob(answer, 0), x)")], comparisons=comps,
                          resamples=500), outcomes)
    c = m.comparisons[0]
    assert c.p_method == "sign_flip_monte_carlo" and c.n_units == 40
    assert c.effect == pytest.approx(est(m, "rho", "IF").value - est(m, "rho", "Q").value)
    assert 0 < c.p_value < 0.05  # the correlation is much stronger under IF


def test_items_left_out_by_limit_are_reported_as_not_run():
    from moraleval.execute.runner import RunOutcomes

    outcomes: dict = {}
    items = [item("Q", 0, onehot(0), {"label": 0}, outcomes=outcomes),
             item("Q", 1, None, {"label": 0}, outcomes=outcomes),
             item("Q", 2, None, {"label": 0}, outcomes=outcomes)]
    plan = make_plan(items, [("acc", "t", "mean(answer == label)")])
    limited = RunOutcomes(dict(outcomes), stats=None, not_run=frozenset({items[1].request}))
    m = measure(plan, limited)
    assert "task 't': 1 item(s) not run (--limit)" in m.warnings
    assert "task 't': 1 item(s) have no outcome and are left out" in m.warnings


# --------------------------------------------------------------------------- the vocabulary drives the stage

def test_every_test_of_the_vocabulary_has_an_implementation():
    from moraleval.language import vocabulary
    from moraleval.measurement import significance

    assert set(significance.TESTS) == set(vocabulary.TESTS)


def test_every_aggregate_of_the_vocabulary_agrees_with_its_item_level_reference():
    """The measure stage computes each aggregate from its recipe's unit sums; the vocabulary's ``items`` reference
    (one pass over the included items' arguments) gives the same number, the filter and undefined items included."""
    from moraleval.language import vocabulary

    rng = np.random.default_rng(5)
    outcomes: dict = {}
    vals = [{"x": float(rng.normal()), "y": float(rng.normal()), "k": r % 3, "g": r % 7} for r in range(30)]
    vals[4]["x"] = None  # an undefined value: left out of the number aggregates
    items = [item("Q", r, onehot(r % 3), v, outcomes=outcomes) for r, v in enumerate(vals)]
    args_of = {"condition": ("x > 0", lambda v: v["x"] is not None and v["x"] > 0), "x": ("x", lambda v: v["x"]),
               "y": ("y", lambda v: v["y"]), "q": ("0.3", lambda v: 0.3), "group": ("g", lambda v: v["g"])}
    metrics, want = [], {}
    for name, f in vocabulary.functions_of(vocabulary.AGGREGATE).items():
        kinds = f.args.split(", ")[:f.arity[1]]
        src = f"{name}({', '.join(args_of[k][0] for k in kinds)}, where=k != 1)"
        metrics.append((name, "t", src))
        rows = [tuple(args_of[k][1](v) for k in kinds) for v in vals if v["k"] != 1]
        rows = [r for r in rows if all(a is not None for a, k in zip(r, kinds) if k != "condition")]
        want[name] = f.items([r[:1] for r in rows], 0.3) if name == "quantile" else f.items(rows)
    m = measure(make_plan(items, metrics), outcomes)
    assert len(metrics) == 9 and all(math.isfinite(v) and v != 0 for v in want.values())
    for name, value in want.items():
        assert est(m, name).value == pytest.approx(value, rel=1e-12), name
