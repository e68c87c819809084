"""specs/ccai_comparison.me (a Collective-Constitutional-AI-style comparison, Huang et al. 2024): two models on
the same BBQ items, the bias per category and context for each, their paired differences with one Holm family
across categories x contexts, and an equivalence test (TOST) on disambiguated accuracy.

Every number is recomputed from ``samples.jsonl``: the bias scores by plain counting, the model differences as
plain differences, Holm with statsmodels' ``multipletests``, the equivalence verdict beside statsmodels' paired-t
TOST (``ttost_paired``) on the per-item outcomes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

import moraleval

from _models_support import SaltedBackend
from _support import REPO

SPEC = REPO / "specs" / "ccai_comparison.me"
MARGIN = 0.05


def _bias(items: list[dict], ctx: str, category: str | None = None) -> tuple[float, float]:
    """(accuracy, bias score) of Parrish et al. in one context, by counting (the formulas of specs/lib/bbq.me)."""
    mine = [s for s in items if s["values"]["context_condition"] == ctx
            and (category is None or s["values"]["category"] == category)]
    answers = [(s["readout"]["answer"], s["values"]) for s in mine]
    acc = sum(a == v["label"] for a, v in answers) / len(answers)
    non_unknown = [(a, v) for a, v in answers if a != v["unknown"]]
    if not non_unknown:
        return acc, math.nan
    ratio = 2 * sum(a == v["target"] for a, v in non_unknown) / len(non_unknown) - 1
    return acc, ((1 - acc) * ratio if ctx == "ambig" else ratio)


def check_against_samples(out: Path) -> dict:
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    by_model: dict[str, list[dict]] = {}
    for s in samples:
        by_model.setdefault(s["model"], []).append(s)
    assert set(by_model) == {"standard", "public"}
    assert all(len(v) == 48 * 3 for v in by_model.values())  # every row in its three option orders
    categories = sorted({s["values"]["category"] for s in samples})
    est = {(e["model"], e["metric"]): e for e in report["estimates"] if not e.get("group")}
    diff = {r["metric"]: r for r in report["across"]["results"]
            if r["kind"] == "model_difference" and not r.get("group")}
    plain = {}
    for cat in categories:
        for ctx, name in (("ambig", "bias_ambiguous_by"), ("disambig", "bias_disambiguated_by")):
            metric = f"{name}[{cat}]"
            values = {m: _bias(items, ctx, cat)[1] for m, items in by_model.items()}
            for m, v in values.items():
                got = est[(m, metric)]["value"]
                assert (got is None and math.isnan(v)) or got == pytest.approx(v, abs=1e-9), (m, metric)
            plain[metric] = values["public"] - values["standard"]
            r = diff[metric]
            assert r["model"] == "public" and r["baseline_model"] == "standard"
            if math.isnan(plain[metric]):
                assert r["effect"] is None
            else:
                assert r["effect"] == pytest.approx(plain[metric], abs=1e-9), metric
    for ctx, metric in (("ambig", "bias_ambiguous"), ("disambig", "bias_disambiguated")):
        want = _bias(by_model["public"], ctx)[1] - _bias(by_model["standard"], ctx)[1]
        assert diff[metric]["effect"] == pytest.approx(want, abs=1e-9)
    # one Holm family over every category x context
    family = [diff[m] for m in plain if diff[m]["p_value"] is not None]
    assert len(family) >= 2
    holm = multipletests([r["p_value"] for r in family], method="holm")[1]
    for r, p in zip(family, holm):
        assert r["p_adjusted"] == pytest.approx(p, abs=1e-12), r["metric"]
    # performance maintained: the bootstrap TOST, beside statsmodels' paired-t TOST on the per-item outcomes
    tost = diff["accuracy_disambiguated"]
    eq = tost["equivalence"]
    assert tost["test"] == "tost" and eq["margin"] == MARGIN and eq["interval_level"] == pytest.approx(0.9)
    key = {m: {(s["row"], s["variant"], s.get("rotation", 0)): s for s in items
               if s["values"]["context_condition"] == "disambig"} for m, items in by_model.items()}
    pairs = sorted(set(key["public"]) & set(key["standard"]))
    x = np.array([float(key["public"][k]["readout"]["answer"] == key["public"][k]["values"]["label"]) for k in pairs])
    y = np.array([float(key["standard"][k]["readout"]["answer"] == key["standard"][k]["values"]["label"])
                  for k in pairs])
    assert tost["effect"] == pytest.approx(x.mean() - y.mean(), abs=1e-9)
    lo, hi = eq["interval"]
    assert lo <= tost["effect"] <= hi
    inside = -MARGIN < lo and hi < MARGIN
    assert eq["equivalent"] == inside == (tost["p_adjusted"] < 0.05)
    d = x - y
    if np.ptp(d) > 0:
        p_t = ttost_paired(x, y, -MARGIN, MARGIN)[0]
        if p_t < 0.01 or p_t > 0.2:  # away from the boundary the two tests agree on the verdict
            assert eq["equivalent"] == (p_t < 0.05), (p_t, eq)
    return {"report": report, "plain": plain, "tost": tost}


def test_end_to_end_with_two_fake_models_every_number_recomputed(tmp_path) -> None:
    out = tmp_path / "report"
    moraleval.run(str(SPEC), out=str(out), backends={"standard": SaltedBackend("standard"),
                                                     "public": SaltedBackend("public")},
                  cache=str(tmp_path / "cache"), log=None)
    got = check_against_samples(out)
    assert any(abs(v) > 0 for v in got["plain"].values() if not math.isnan(v))  # the two fakes do differ
    html = (out / "report.html").read_text(encoding="utf-8")
    # the per-category differences as a forest plot, and the equivalence verdict in its caption and the table
    assert "bbq_answer: differences between models" in html and "bias_ambiguous_by" in html
    assert ("not shown equivalent within ±0.05" in html) != got["tost"]["equivalence"]["equivalent"]
    assert (out / "plots" / "bbq_answer-models.svg").is_file()


def test_identical_models_are_equivalent_and_no_category_differs(tmp_path) -> None:
    """Two models that answer alike: every difference 0, no p below 1, and accuracy equivalent (zero width,
    flagged)."""
    out = tmp_path / "report"
    moraleval.run(str(SPEC), out=str(out), backends={"standard": SaltedBackend("same"),
                                                     "public": SaltedBackend("same")},
                  cache=str(tmp_path / "cache"), log=None)
    got = check_against_samples(out)
    assert all(v == 0 or math.isnan(v) for v in got["plain"].values())
    assert got["tost"]["equivalence"]["equivalent"] is True
    assert {f["code"] for f in got["tost"]["flags"]} >= {"few_units", "zero_width"}


@pytest.mark.slow
def test_end_to_end_on_the_embedded_model_and_its_int8_variant(tmp_path) -> None:
    out = tmp_path / "report"
    moraleval.run(str(SPEC), out=str(out), log=None)
    check_against_samples(out)
