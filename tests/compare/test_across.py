"""Statistics across models against independent references: a hand-computed paired cluster bootstrap, McNemar
from statsmodels called directly, trend slopes from numpy.polyfit and statsmodels OLS."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import statsmodels.api as sm
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _models_support import backends, write_spec  # noqa: E402

import moraleval  # noqa: E402
from moraleval.compare import FEW_UNITS, measure_across, ols_slope  # noqa: E402
from moraleval.plan.types import BootstrapPlan  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_env_data")

B = 300


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("across")
    import os as _os

    old = _os.environ.pop("MORALEVAL_DATA", None)
    try:
        spec = write_spec(tmp, resamples=B, extra="compare model b vs a on accuracy_ambiguous test mcnemar correct "
                                                   "holm\ncompare model b vs a, c vs a on bias_ambiguous, "
                                                   "accuracy_ambiguous test bootstrap correct holm")
        res = moraleval.run(spec, out=tmp / "out", cache=tmp / "cache", backends=backends("a", "b", "c"), log=None)
    finally:
        if old is not None:
            _os.environ["MORALEVAL_DATA"] = old
    samples = [json.loads(line) for line in (tmp / "out" / "samples.jsonl").read_text().splitlines()]
    return res, samples


def _by_model(samples, model):
    return [s for s in samples if s["model"] == model]


def _units(rows):
    """Resampling units as measure numbers them: (question_index, category), in order of first appearance."""
    index = {}
    return np.array([index.setdefault((r["values"]["question_index"], r["values"]["category"]), len(index))
                     for r in rows]), len(index)


def _hand_accuracy(rows, units, n_units, counts, condition):
    """accuracy_ambiguous = mean(answer == label where context_condition == "ambig") under resample weights."""
    num = np.zeros(n_units)
    den = np.zeros(n_units)
    for r, u in zip(rows, units):
        if r["condition"] != condition or r["values"]["context_condition"] != "ambig":
            continue
        den[u] += 1
        num[u] += r["readout"]["answer"] == r["values"]["label"]
    return (counts @ num) / (counts @ den), num.sum() / den.sum()


def _result(res, **want):
    out = [r for r in res.across.results if all(getattr(r, k) == v for k, v in want.items())]
    assert len(out) == 1, (want, out)
    return out[0]


def test_model_difference_equals_hand_computed_paired_bootstrap(study) -> None:
    res, samples = study
    ra, rb = _by_model(samples, "a"), _by_model(samples, "b")
    units, n_units = _units(ra)
    assert np.array_equal(units, _units(rb)[0])
    # the draws of moraleval.measurement.stats.resample_counts, redone by hand: B × n_units uniform unit indices
    rng = np.random.default_rng(0)
    idx = rng.integers(0, n_units, size=(B, n_units), dtype=np.int32)
    counts = np.stack([np.bincount(row, minlength=n_units) for row in idx]).astype(float)
    for cond in ("Q", "Q_IF"):
        da, pa = _hand_accuracy(ra, units, n_units, counts, cond)
        db, pb = _hand_accuracy(rb, units, n_units, counts, cond)
        diff = db - da
        r = _result(res, kind="model_difference", metric="accuracy_ambiguous", condition=cond, group={},
                    model="b", baseline_model="a", test="bootstrap")
        assert r.effect == pytest.approx(pb - pa, abs=1e-12)
        assert r.treatment_value == pytest.approx(pb) and r.baseline_value == pytest.approx(pa)
        lo, hi = np.percentile(diff, [2.5, 97.5])
        assert (r.ci_low, r.ci_high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
        # the p-value is the sign-flip test over the units (valid with few units), recomputed exactly by hand
        assert r.p_method == "sign_flip_exact"
        assert r.p_value == pytest.approx(_hand_sign_flip_p(ra, rb, units, n_units, cond), abs=1e-12)
        assert r.n_units == n_units
        assert "few_units" in [f["code"] for f in r.flags] if n_units < FEW_UNITS else True


def _unit_sums(rows, units, n_units, condition):
    num, den = np.zeros(n_units), np.zeros(n_units)
    for r, u in zip(rows, units):
        if r["condition"] == condition and r["values"]["context_condition"] == "ambig":
            den[u] += 1
            num[u] += r["readout"]["answer"] == r["values"]["label"]
    return num, den


def _hand_sign_flip_p(ra, rb, units, n_units, condition) -> float:
    """Exact sign-flip p of accuracy(B) − accuracy(A): every subset of the units that differ between the models has
    its sums swapped between A and B (itertools, no numpy matrix tricks), |T| >= |T_obs| counted."""
    import itertools

    na, da = _unit_sums(ra, units, n_units, condition)
    nb, db = _unit_sums(rb, units, n_units, condition)
    moving = [u for u in range(n_units) if na[u] != nb[u] or da[u] != db[u]]
    assert len(moving) <= 16, "the hand reference enumerates every pattern"

    def stat(swapped) -> float:
        xa, ya, xb, yb = na.copy(), da.copy(), nb.copy(), db.copy()
        for u in swapped:
            xa[u], xb[u], ya[u], yb[u] = nb[u], na[u], db[u], da[u]
        return xb.sum() / yb.sum() - xa.sum() / ya.sum()

    obs = abs(stat(()))
    pats = [c for k in range(len(moving) + 1) for c in itertools.combinations(moving, k)]
    return sum(abs(stat(c)) >= obs - 1e-9 * max(obs, 1e-12) for c in pats) / len(pats)


def test_difference_in_differences_by_hand(study) -> None:
    res, samples = study
    ra, rb = _by_model(samples, "a"), _by_model(samples, "b")
    units, n_units = _units(ra)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, n_units, size=(B, n_units), dtype=np.int32)
    counts = np.stack([np.bincount(row, minlength=n_units) for row in idx]).astype(float)
    (a1, pa1), (a0, pa0) = (_hand_accuracy(ra, units, n_units, counts, c) for c in ("Q_IF", "Q"))
    (b1, pb1), (b0, pb0) = (_hand_accuracy(rb, units, n_units, counts, c) for c in ("Q_IF", "Q"))
    r = _result(res, kind="difference_in_differences", metric="accuracy_ambiguous", group={}, model="b",
                baseline_model="a", treatment="Q_IF", baseline="Q")
    assert r.effect == pytest.approx((pb1 - pb0) - (pa1 - pa0), abs=1e-12)
    lo, hi = np.percentile((b1 - b0) - (a1 - a0), [2.5, 97.5])
    assert (r.ci_low, r.ci_high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))


def test_mcnemar_between_models_matches_statsmodels(study) -> None:
    res, samples = study
    for cond in ("Q", "Q_IF"):
        pairs = {}
        for s in samples:
            if s["condition"] == cond and s["values"]["context_condition"] == "ambig" and s["model"] in "ab":
                pairs.setdefault((s["row"], s["variant"]), {})[s["model"]] = s["readout"]["answer"] == s["values"]["label"]
        a = np.array([v["a"] for v in pairs.values()])
        b = np.array([v["b"] for v in pairs.values()])
        table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
        r = _result(res, kind="model_difference", metric="accuracy_ambiguous", condition=cond, group={},
                    model="b", baseline_model="a", test="mcnemar")
        assert r.detail["table"] == table
        assert r.n == len(pairs)
        discordant = table[0][1] + table[1][0]
        if discordant == 0:
            assert r.p_value == 1.0
        else:
            assert r.detail["exact"] is (discordant < 25)
            ref = sm_mcnemar(np.array(table), exact=discordant < 25, correction=True)
            assert r.p_value == pytest.approx(float(ref.pvalue), rel=1e-12)


def test_holm_within_each_family(study) -> None:
    from statsmodels.stats.multitest import multipletests

    res, _ = study
    fam = [r for r in res.across.results if r.kind == "model_difference" and r.test == "bootstrap" and not r.group]
    ps = [r.p_value for r in fam]
    assert len(ps) == 8  # (b, c) × (bias_ambiguous, accuracy_ambiguous) × (Q, Q_IF)
    assert [r.p_adjusted for r in fam] == pytest.approx(list(multipletests(ps, method="holm")[1]))


def test_trend_over_log_axis_matches_polyfit_and_ols(study) -> None:
    res, _ = study
    names = ["a", "b", "c"]
    x = np.log10([1e8, 1e9, 1e10])
    for cond in ("Q", "Q_IF"):
        ys = []
        for m in names:
            e = next(e for e in res.runs[m].measurement.estimates
                     if e.metric == "bias_ambiguous" and e.condition == cond and not e.group)
            ys.append(e.value)
        r = _result(res, kind="trend", metric="bias_ambiguous", condition=cond, group={})
        assert r.effect == pytest.approx(np.polyfit(x, ys, 1)[0], abs=1e-12)
        ols = sm.OLS(np.array(ys), sm.add_constant(x)).fit()
        assert r.effect == pytest.approx(ols.params[1], abs=1e-12)
        assert [p[0] for p in r.points] == [1e8, 1e9, 1e10] and r.scale == "log" and r.axis == "params"


class _Run:
    def __init__(self, about, replicates):
        self.about, self.replicates = about, replicates


class _Plan:
    bootstrap = BootstrapPlan(resamples=400, seed=0, method="percentile")
    tasks = {"t": {"conditions": [{"name": "Q"}]}}
    metrics = [type("M", (), {"name": "m"})()]
    comparisons = ()


def test_trend_on_a_toy_study_with_known_slope() -> None:
    """Four 'models' whose metric is exactly 0.2 + 0.05·log10(params); replicates share unit noise (paired)."""
    rng = np.random.default_rng(5)
    params = [1e8, 1e9, 1e10, 1e11]
    noise = rng.normal(0, 0.02, size=(400, 1)) + rng.normal(0, 0.01, size=(400, 4))
    runs = {}
    for k, p in enumerate(params):
        y = 0.2 + 0.05 * math.log10(p)
        rep = {("t", "m", "Q", "{}"): {"point": y, "boot": y + noise[:, k], "units": "same", "n_units": 40, "n": 80,
                                       "prop": None}}
        runs[f"m{k}"] = _Run({"params": p}, rep)
    across = measure_across(_Plan(), runs, axis="params", scale="log")
    (r,) = across.of("trend")
    assert r.effect == pytest.approx(0.05, abs=1e-12)
    xs = np.log10(params)
    boots = np.column_stack([runs[f"m{k}"].replicates[("t", "m", "Q", "{}")]["boot"] for k in range(4)])
    ref = np.array([np.polyfit(xs, row, 1)[0] for row in boots])
    assert np.allclose(ols_slope(xs, boots), ref, atol=1e-12)
    lo, hi = np.percentile(ref, [2.5, 97.5])
    assert (r.ci_low, r.ci_high) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
    # replicates without per-unit sums (made by hand here): no randomisation test, and the flag says so
    assert r.ci_low < 0.05 < r.ci_high and [f["code"] for f in r.flags] == ["no_test"] and r.p_value is None
    # no declared model comparison: every model against the first
    diffs = across.of("model_difference")
    assert [(d.model, d.baseline_model) for d in diffs] == [("m1", "m0"), ("m2", "m0"), ("m3", "m0")]
    assert diffs[0].effect == pytest.approx(0.05)


def test_unpaired_replicates_give_no_interval() -> None:
    runs = {
        "a": _Run({}, {("t", "m", "Q", "{}"): {"point": 0.1, "boot": np.full(10, 0.1), "units": "u1", "n_units": 30,
                                               "n": 30, "prop": None}}),
        "b": _Run({}, {("t", "m", "Q", "{}"): {"point": 0.3, "boot": np.full(10, 0.3), "units": "u2", "n_units": 30,
                                               "n": 30, "prop": None}}),
    }
    across = measure_across(_Plan(), runs)
    (d,) = across.of("model_difference")
    assert d.effect == pytest.approx(0.2) and d.ci_low is None and d.p_value is None
    assert any("not paired" in w for w in d.warnings) and any("other items" in w for w in across.warnings)


# --------------------------------------------------------------------------- few units (issue #13's rules)

def _mean_program(get, notes):
    """mean(x): column 0 the per-unit sum of x, column 1 the per-unit item count."""
    return get(0) / get(1)


def _record(num: np.ndarray, den: np.ndarray, boot: np.ndarray | None = None) -> dict:
    point = float(num.sum() / den.sum())
    return {"point": point, "boot": np.full(50, point) if boot is None else boot, "units": "same",
            "n_units": int(num.size), "n": int(den.sum()), "prop": None,
            "sums": np.column_stack([num, den]).astype(float), "program": _mean_program}


def _two_models(rng, n_units: int, shift: float, cond: str = "Q") -> dict:
    den = np.full(n_units, 4.0)
    base = rng.uniform(0.3, 0.6, n_units) * den
    return {"a": {("t", "m", cond, "{}"): _record(base, den)},
            "b": {("t", "m", cond, "{}"): _record(base + shift * den + rng.normal(0, 0.02, n_units), den)}}


def test_model_difference_over_two_units_cannot_go_below_one_half() -> None:
    reps = _two_models(np.random.default_rng(1), 2, 0.3)
    runs = {m: _Run({}, r) for m, r in reps.items()}
    (d,) = measure_across(_Plan(), runs).of("model_difference")
    assert d.effect == pytest.approx(0.3, abs=0.05)
    assert d.p_method == "sign_flip_exact" and d.p_value >= 0.5
    (few,) = [f for f in d.flags if f["code"] == "few_units"]
    assert "sign-flip" in few["message"] and "0.5" in few["message"]


def test_model_difference_with_forty_units_and_a_clear_effect_is_significant() -> None:
    reps = _two_models(np.random.default_rng(2), 40, 0.1)
    runs = {m: _Run({}, r) for m, r in reps.items()}
    (d,) = measure_across(_Plan(), runs).of("model_difference")
    assert d.p_method == "sign_flip_monte_carlo"
    assert d.p_value == pytest.approx(1 / 401)  # no random pattern is as extreme: (1 + 0) / (B + 1), B = 400
    assert "few_units" not in [f["code"] for f in d.flags]


def test_difference_in_differences_sign_flip_matches_exact_enumeration() -> None:
    """(B_X − B_Y) − (A_X − A_Y) over 6 units: every one of the 2^6 swaps of a unit between the models (in both
    conditions at once) enumerated by hand."""
    import itertools

    rng = np.random.default_rng(3)
    n = 6
    den = rng.integers(2, 6, size=(4, n)).astype(float)  # ax, ay, bx, by
    num = np.floor(rng.uniform(0, 1, size=(4, n)) * (den + 1))
    num[2] = np.minimum(den[2], num[2] + 1)  # B gains from X
    keys = {"X": ("t", "m", "X", "{}"), "Y": ("t", "m", "Y", "{}")}
    reps = {"a": {keys["X"]: _record(num[0], den[0]), keys["Y"]: _record(num[1], den[1])},
            "b": {keys["X"]: _record(num[2], den[2]), keys["Y"]: _record(num[3], den[3])}}

    class Plan(_Plan):
        comparisons = (type("C", (), {"models": False, "metric": "m", "treatment": "X", "baseline": "Y"})(),)
        tasks = {"t": {"conditions": [{"name": "X"}, {"name": "Y"}]}}

    (r,) = measure_across(Plan(), {m: _Run({}, x) for m, x in reps.items()}).of("difference_in_differences")

    def stat(swapped) -> float:
        v = num.copy(), den.copy()
        for u in swapped:
            for arr in v:
                arr[[0, 2], u] = arr[[2, 0], u]
                arr[[1, 3], u] = arr[[3, 1], u]
        x, y = v
        m = [x[k].sum() / y[k].sum() for k in range(4)]
        return (m[2] - m[3]) - (m[0] - m[1])

    obs = abs(stat(()))
    assert r.effect == pytest.approx(stat(()), abs=1e-12)
    pats = [c for k in range(n + 1) for c in itertools.combinations(range(n), k)]
    ref = sum(abs(stat(c)) >= obs - 1e-9 * obs for c in pats) / len(pats)
    assert r.p_method == "sign_flip_exact" and r.p_value == pytest.approx(ref, abs=1e-12)


def test_trend_permutation_test_clear_and_null() -> None:
    rng = np.random.default_rng(4)
    params = [1e8, 1e9, 1e10, 1e11]
    n = 40
    den = np.full(n, 5.0)
    base = rng.uniform(0.2, 0.5, n) * den

    def runs_for(slope: float) -> dict:
        out = {}
        for k, p in enumerate(params):
            num = base + slope * k * den + rng.normal(0, 0.05, n)
            out[f"m{k}"] = _Run({"params": p}, {("t", "m", "Q", "{}"): _record(num, den)})
        return out

    (clear,) = measure_across(_Plan(), runs_for(0.05), axis="params", scale="log").of("trend")
    assert clear.p_method == "permutation_monte_carlo" and clear.p_value == pytest.approx(1 / 401)
    (null,) = measure_across(_Plan(), runs_for(0.0), axis="params", scale="log").of("trend")
    assert null.p_value > 0.01
    # two units: 4!^2 = 576 ways to deal the models' sums; the observed order and its reverse are always as extreme
    few = {m: _Run(r.about, {k: _record(v["sums"][:2, 0], v["sums"][:2, 1]) for k, v in r.replicates.items()})
           for m, r in runs_for(0.05).items()}
    (t2,) = measure_across(_Plan(), few, axis="params", scale="log").of("trend")
    assert t2.p_method == "permutation_exact" and t2.p_value >= 2 / 576
    (flag,) = [f for f in t2.flags if f["code"] == "few_units"]
    assert "permutation test" in flag["message"]


def test_trend_permutation_exact_matches_hand_enumeration() -> None:
    """3 models × 3 units: all (3!)^3 = 216 ways to deal each unit's sums to the models, refitted by numpy.polyfit."""
    import itertools

    rng = np.random.default_rng(6)
    params = [1e8, 1e9, 1e10]
    xs = np.log10(params)
    n = 3
    den = rng.integers(3, 7, size=(3, n)).astype(float)
    num = np.floor(rng.uniform(0, 1, size=(3, n)) * (den + 1))
    runs = {f"m{k}": _Run({"params": p}, {("t", "m", "Q", "{}"): _record(num[k], den[k])})
            for k, p in enumerate(params)}
    (r,) = measure_across(_Plan(), runs, axis="params", scale="log").of("trend")

    def slope(deal) -> float:  # deal[u] = which model's sums unit u gives to each slot
        ys = [sum(num[deal[u][m], u] for u in range(n)) / sum(den[deal[u][m], u] for u in range(n))
              for m in range(3)]
        return float(np.polyfit(xs, ys, 1)[0])

    ident = [(0, 1, 2)] * n
    obs = abs(slope(ident))
    assert r.effect == pytest.approx(slope(ident), abs=1e-12)
    deals = list(itertools.product(itertools.permutations(range(3)), repeat=n))
    ref = sum(abs(slope(d)) >= obs - 1e-9 * obs for d in deals) / len(deals)
    assert r.p_method == "permutation_exact" and r.p_value == pytest.approx(ref, abs=1e-12)


def test_an_equivalence_test_between_models_uses_the_joint_replicates() -> None:
    """`compare model b vs a on M test tost margin D`: the bootstrap TOST on the paired replicate differences."""
    import numpy as np

    from moraleval.compare.contrasts import difference

    rng = np.random.default_rng(0)
    base = rng.normal(0.7, 0.02, 2000)
    for shift, margin, equivalent in ((0.005, 0.05, True), (0.06, 0.05, False)):
        ra = {"point": 0.7, "boot": base, "units": "u", "n_units": 200, "n": 400}
        rb = {"point": 0.7 + shift, "boot": base + shift + rng.normal(0, 0.005, 2000), "units": "u",
              "n_units": 200, "n": 400}
        r = difference(("t", "acc", "Q", "{}"), "b", "a", rb, ra, "tost", "holm", 0.95, margin=margin)
        eq = r.equivalence
        d = rb["boot"] - ra["boot"]
        assert r.p_method == "tost_bootstrap" and eq["margin"] == margin
        assert eq["p_lower"] == (1 + int((d <= -margin).sum())) / 2001
        assert eq["p_upper"] == (1 + int((d >= margin).sum())) / 2001
        assert eq["equivalent"] is equivalent and r.to_json()["equivalence"] == eq


def test_a_contrast_carries_the_answer_flags_of_the_estimates_it_is_built_on() -> None:
    """A model that always picks the same answer makes its estimate a property of that answer, and so every
    difference built on it (an equivalence verdict included): the contrast carries the estimate's
    degenerate_answers / position_preference flags, named by model and condition; other flags stay the estimate's."""
    from moraleval.measurement.results import Estimate

    reps = _two_models(np.random.default_rng(6), 40, 0.1)

    def est(flags):
        return Estimate(metric="m", task="t", condition="Q", group={}, value=0.5, ci_low=0.4, ci_high=0.6, n=160,
                        n_units=40, method="percentile", resamples=400, unit="u", flags=flags)

    degenerate = {"code": "degenerate_answers", "message": "all 160 answers are '(c)'"}
    few = {"code": "few_units", "message": "an estimate's own flag"}
    runs = {"a": _Run({}, reps["a"]), "b": _Run({}, reps["b"])}
    runs["a"].measurement = type("M", (), {"estimates": (est((few,)),)})()
    runs["b"].measurement = type("M", (), {"estimates": (est((degenerate,)),)})()
    (d,) = measure_across(_Plan(), runs).of("model_difference")
    got = [f for f in d.flags if f["code"] in ("degenerate_answers", "position_preference")]
    assert got == [{"code": "degenerate_answers", "message": "model b, Q: all 160 answers are '(c)'"}]
    assert "an estimate's own flag" not in [f["message"] for f in d.flags]
    runs["b"].measurement = type("M", (), {"estimates": (est(()),)})()
    (clean,) = measure_across(_Plan(), runs).of("model_difference")
    assert not [f for f in clean.flags if f["code"] == "degenerate_answers"]
