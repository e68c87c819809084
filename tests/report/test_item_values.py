"""Per-item definitions beside each answer: every ``item NAME = ...`` a task's metrics use is evaluated item by item
(the measure stage's own semantics), written into samples.jsonl as ``readout.items``, and a boolean one flags its
items: `moraleval view` and the sample browser filter on it (discrim-eval's 0.99 rule, issue 22)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _support import run_cli  # noqa: E402
from report_support import ITEM_SPEC, item_values_report, quickstart_report  # noqa: E402

from moraleval.report.render import browser_data  # noqa: E402
from moraleval.report.view import SampleIndex  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return item_values_report(tmp_path_factory.mktemp("items"))


def _samples(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "samples.jsonl").read_text(encoding="utf-8").splitlines()]


def test_the_plan_lists_the_parameterless_definitions_the_metrics_use(tmp_path) -> None:
    from moraleval.pipeline import load_plan

    spec = tmp_path / "items.me"
    spec.write_text(ITEM_SPEC.format(lib=REPO / "specs" / "lib"), encoding="utf-8")
    with contextlib.redirect_stderr(io.StringIO()):
        _checked, plan = load_plan(str(spec), str(REPO / "moraleval" / "data" / "sample"), [])
    got = {d["name"]: d for d in plan.to_json()["item_values"]}
    # `unused` is used by no metric, `scaled(k)` has a parameter: neither has one value per item
    assert set(got) == {"p_first", "unsure"}
    assert got["unsure"]["formula"] == "p_first < 0.5" and got["unsure"]["task"] == "bbq_answer"


def test_each_answer_carries_its_definitions_values(run) -> None:
    samples = _samples(run)
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert samples
    for s in samples:
        items = s["readout"]["items"]
        assert set(items) == {"p_first", "unsure"}
        assert items["p_first"] == pytest.approx(s["readout"]["probs"][0], abs=1e-12)
        assert items["unsure"] is (s["readout"]["probs"][0] < 0.5)
    for e in report["estimates"]:
        if e["metric"] == "unsure_items":
            flagged = sum(s["readout"]["items"]["unsure"] for s in samples if s["condition"] == e["condition"])
            assert e["value"] == flagged
    assert 0 < sum(s["readout"]["items"]["unsure"] for s in samples) < len(samples)


def test_view_and_the_page_data_filter_on_a_boolean_definition(run) -> None:
    samples = _samples(run)
    want = [k for k, s in enumerate(samples) if s["readout"]["items"]["unsure"]]
    idx = SampleIndex(run / "samples.jsonl")
    try:
        assert idx.filter({"flag": "unsure"}, {}) == want
        assert idx.filter({"flag": "p_first"}, {}) == []  # a number is not a flag
        assert idx.filter({"flag": "unsure", "condition": "Q"}, {}) == [
            k for k in want if samples[k]["condition"] == "Q"]
    finally:
        idx.close()
    report = json.loads((run / "report.json").read_text(encoding="utf-8"))
    assert browser_data(report, samples, embed=False)["item_flags"] == {"bbq_answer": ["unsure"]}


def test_a_spec_without_definitions_writes_what_it_always_wrote(tmp_path) -> None:
    run = quickstart_report(tmp_path / "qs")
    assert all("items" not in s["readout"] for s in _samples(run))
    assert "item_flags" in browser_data(json.loads((run / "report.json").read_text()), _samples(run), embed=False)


def test_moraleval_plan_says_which_values_go_into_the_samples(tmp_path) -> None:
    spec = tmp_path / "items.me"
    spec.write_text(ITEM_SPEC.format(lib=REPO / "specs" / "lib"), encoding="utf-8")
    code, out, err = run_cli(["plan", str(spec), "--data", str(REPO / "moraleval" / "data" / "sample")])
    assert code == 0, err
    assert ("per-item values in samples.jsonl: p_first = prob(answer, 0) [bbq_answer], "
            "unsure = p_first < 0.5 [bbq_answer]") in out
