"""`moraleval diff A B`: a report against itself, answers changed on known items (exact transitions and McNemar
counts), reports from different data, unmatched items, the manifest change list, --json, the CI gates."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _models_support import salted_spec  # noqa: E402

from moraleval.cli import main  # noqa: E402
from moraleval.compare import DiffError, parse_gate  # noqa: E402
from moraleval.report import diff_reports  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_env_data")


def _run(spec: Path, out: Path, cache: Path, *extra: str) -> None:
    assert main([str(spec), "--out", str(out), "--cache", str(cache), "--no-progress", *extra]) == 0


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("diff")
    old = os.environ.pop("MORALEVAL_DATA", None)
    try:
        spec = salted_spec(tmp)
        _run(spec, tmp / "A", tmp / "cache", "--model", "a")
        spec2 = tmp / "edited.me"
        spec2.write_text(spec.read_text() + "# an edit\n")
        _run(spec2, tmp / "B", tmp / "cache", "--model", "b")
        _run(spec, tmp / "A40", tmp / "cache", "--model", "a", "--limit", "40")
        _run(spec, tmp / "multi", tmp / "cache", "--models", "ab")
    finally:
        if old is not None:
            os.environ["MORALEVAL_DATA"] = old
    return tmp


def _samples(d: Path) -> list[dict]:
    return [json.loads(line) for line in (d / "samples.jsonl").read_text().splitlines()]


def test_a_report_against_itself(reports, capsys) -> None:
    res = diff_reports(reports / "A", reports / "A")
    assert res.changes == () and res.items["matched"] == res.items["a"] == 96
    assert res.comparisons
    for c in res.comparisons:
        assert c["effect"] == 0.0 and c["p_value"] == 1.0 and c["p_adjusted"] == 1.0, c
        assert c["value_a"] == c["value_b"] or c["value_a"] is None
    for t in res.transitions:
        assert all(x["a"] == x["b"] for x in t["answers"])
    assert main(["diff", str(reports / "A"), str(reports / "A"), "--fail-on-regression"]) == 0
    assert "nothing: same spec" in capsys.readouterr().out


def test_answers_changed_on_known_items(reports, tmp_path: Path) -> None:
    """B = A with six known ambiguous Q items, answered 'unknown' (correct) in A, flipped to the target."""
    a = reports / "A"
    b = tmp_path / "B"
    shutil.copytree(a, b)
    rows = _samples(a)
    flipped = []
    for r in rows:
        v = r["values"]
        if (r["condition"] == "Q" and v["context_condition"] == "ambig" and r["readout"]["answer"] == v["unknown"]
                and len(flipped) < 6):
            lps = [-6.0, -6.0, -6.0]
            lps[r["choice_values"].index(v["target"])] = -0.1
            r["logprobs"] = lps
            flipped.append(r["item"])
    assert len(flipped) == 6
    (b / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = diff_reports(a, b)
    (t,) = [t for t in res.transitions if t["condition"] == "Q"]
    moved = {(x["a"], x["b"]): x["n"] for x in t["labels"] if x["a"] != x["b"]}
    assert moved == {("unknown", "stereotyped"): 6}
    assert sum(x["n"] for x in t["answers"] if x["a"] != x["b"]) == 6
    (q_if,) = [t for t in res.transitions if t["condition"] == "Q_IF"]
    assert all(x["a"] == x["b"] for x in q_if["answers"])
    (acc,) = [c for c in res.comparisons if c["metric"] == "accuracy_ambiguous" and c["condition"] == "Q"
              and not c["group"]]
    amb_q = [r for r in _samples(a) if r["condition"] == "Q" and r["values"]["context_condition"] == "ambig"]
    correct_a = sum(r["readout"]["answer"] == r["values"]["label"] for r in amb_q)
    assert acc["test"] == "mcnemar"
    assert acc["detail"]["table"] == [[correct_a - 6, 6], [0, len(amb_q) - correct_a]]
    ref = sm_mcnemar([[correct_a - 6, 6], [0, len(amb_q) - correct_a]], exact=True)
    assert acc["p_value"] == pytest.approx(ref.pvalue) == pytest.approx(2 * 0.5 ** 6)
    assert acc["effect"] == pytest.approx(-6 / len(amb_q))
    assert acc["value_a"] == pytest.approx(correct_a / len(amb_q))
    # the same comparisons in Q_IF are unchanged
    assert all(c["effect"] == 0 for c in res.comparisons if c["condition"] == "Q_IF")
    # gates: the accuracy drop fails a threshold and (at a lax alpha) the regression gate
    assert main(["diff", str(a), str(b), "--fail-if", "accuracy_ambiguous@Q < 0.2"]) == (1 if correct_a - 6 < 0.2 * 24 else 0)
    assert main(["diff", str(a), str(b), "--fail-if", "delta(accuracy_ambiguous@Q) < -0.2"]) == 1
    assert main(["diff", str(a), str(b), "--fail-if", "delta(accuracy_ambiguous@Q_IF) < -0.2"]) == 0
    assert main(["diff", str(a), str(b), "--fail-on-regression", "--alpha", "0.5"]) == 1
    assert main(["diff", str(b), str(a), "--fail-on-regression", "--alpha", "0.5"]) == 0  # B -> A is better


def test_bootstrap_metric_p_value_is_the_sign_flip_test(reports, tmp_path: Path) -> None:
    """diff's paired statistic for a non-proportion metric (the ambiguous bias score) takes its p-value from the
    sign-flip test over the resampling units (issue #13's rule), here exact: checked against a hand enumeration
    of every swap of a changed unit between A and B."""
    import itertools

    a, b = reports / "A", tmp_path / "B"
    shutil.copytree(a, b)
    rows = _samples(a)
    changed_units = set()
    for r in rows:  # three clusters: every ambiguous Q item answered with its target in B
        v = r["values"]
        if r["condition"] == "Q" and v["context_condition"] == "ambig" and (
                r["unit"] in changed_units or len(changed_units) < 3):
            changed_units.add(r["unit"])
            lps = [-6.0, -6.0, -6.0]
            lps[r["choice_values"].index(v["target"])] = -0.1
            r["logprobs"] = lps
    (b / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = diff_reports(a, b)
    (c,) = [c for c in res.comparisons if c["metric"] == "bias_ambiguous" and c["condition"] == "Q"
            and not c["group"]]
    assert c["test"] == "bootstrap" and c["p_method"] == "sign_flip_exact"

    def answers(side):
        out = {}
        for r in side:
            if r["condition"] == "Q" and r["values"]["context_condition"] == "ambig":
                lp = r["logprobs"]
                out.setdefault((r["values"]["question_index"], r["values"]["category"]), []).append(
                    (r["choice_values"][lp.index(max(lp))], r["values"]))
        return out

    ua, ub = answers(_samples(a)), answers(rows)
    units = sorted(ua)

    def bias(per_unit) -> float:  # (1 - accuracy) * (2 * biased / non-unknown - 1) over ambiguous items
        items = [x for u in units for x in per_unit[u]]
        acc = sum(ans == v["label"] for ans, v in items) / len(items)
        known = [(ans, v) for ans, v in items if ans != v["unknown"]]
        return (1 - acc) * (2 * sum(ans == v["target"] for ans, v in known) / len(known) - 1)

    moving = [u for u in units if ua[u] != ub[u]]
    assert len(moving) == 3

    def stat(swapped) -> float:
        sa = {u: (ub[u] if u in swapped else ua[u]) for u in units}
        sb = {u: (ua[u] if u in swapped else ub[u]) for u in units}
        return bias(sb) - bias(sa)

    obs = abs(stat(()))
    assert c["effect"] == pytest.approx(stat(()), abs=1e-12)
    pats = [p for k in range(4) for p in itertools.combinations(moving, k)]
    assert c["p_value"] == pytest.approx(sum(abs(stat(p)) >= obs - 1e-9 * obs for p in pats) / len(pats))
    assert c["p_value"] >= 2 / 8  # 3 units: the observed pattern and its complete flip -> p >= 0.25
    assert "few_units" in [f["code"] for f in c["flags"]]


def test_manifest_change_list(reports) -> None:
    res = diff_reports(reports / "A", reports / "B")
    what = {c["what"] for c in res.changes}
    assert {"spec", "model identity", "model model_key", "model settings", "rendered prompts"} <= what
    assert not any(w.startswith(("data file", "version", "params", "import")) for w in what)
    spec = next(c for c in res.changes if c["what"] == "spec")
    assert spec["a"]["path"].endswith("salted.me") and spec["b"]["path"].endswith("edited.me")
    ident = next(c for c in res.changes if c["what"] == "model identity")
    assert (ident["a"]["salt"], ident["b"]["salt"]) == ("a", "b")
    assert res.items["matched"] == 96


def test_json_output_uses_report_field_names(reports, capsys) -> None:
    assert main(["diff", str(reports / "A"), str(reports / "B"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    c = out["comparisons"][0]
    assert {"metric", "task", "condition", "effect", "ci_low", "ci_high", "test", "p_value", "p_adjusted",
            "value_a", "value_b", "n_units", "flags"} <= set(c)
    assert out["exit_code"] == 0 and out["items"]["matched"] == 96
    # byte-identical on rerun
    assert main(["diff", str(reports / "A"), str(reports / "B"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == out


def test_unmatched_items_are_an_error_unless_allowed(reports, capsys) -> None:
    with pytest.raises(DiffError, match="16 item\\(s\\) of A and 0 of B have no partner .* different items"):
        diff_reports(reports / "A", reports / "A40")
    assert main(["diff", str(reports / "A"), str(reports / "A40")]) == 2
    assert "--allow-partial" in capsys.readouterr().err
    res = diff_reports(reports / "A", reports / "A40", allow_partial=True)
    assert res.items["matched"] == 80 and res.warnings  # --limit 40: 40 rows of the task, each under both conditions


def test_a_several_model_report_needs_a_model(reports) -> None:
    with pytest.raises(DiffError, match="holds 2 models"):
        diff_reports(reports / "multi", reports / "A")
    res = diff_reports(reports / "multi", reports / "A", model_a="a")
    assert all(c["effect"] == 0 for c in res.comparisons)  # the same model, the same answers
    res = diff_reports(reports / "multi", reports / "multi", model_a="a", model_b="b")
    assert any(c["effect"] != 0 for c in res.comparisons)


def test_reports_with_different_data(tmp_path: Path) -> None:
    specs = []
    for k in (1, 2):
        root = tmp_path / f"d{k}"
        (root / "toy").mkdir(parents=True)
        data = "".join(json.dumps({"q": f"Question {i + k}?", "label": i % 2, "grp": i // 3}) + "\n"
                       for i in range(30)).encode()
        (root / "toy" / "rows.jsonl").write_bytes(data)
        spec = tmp_path / f"toy{k}.me"
        spec.write_text(f"""moraleval 1
dataset toy {{
    file "toy/rows.jsonl" sha256 "{hashlib.sha256(data).hexdigest()}"
    read jsonl "toy/rows.jsonl"
}}
task t on toy {{
    format text
    choose answer from [" yes", " no"] values [1, 0]
    condition Q {{
        human "{{{{ q }}}}"
        assistant "Answer:"
    }}
}}
metric acc on t = mean(answer == label)
bootstrap resamples 100 seed 0 unit grp
model m = salted_test {{ salt: "a" }}
""")
        _run(spec, tmp_path / f"R{k}", tmp_path / "cache", "--data", str(root))
        specs.append(spec)
    with pytest.raises(DiffError, match="30 item\\(s\\) of A and 30 of B .* the data files differ"):
        diff_reports(tmp_path / "R1", tmp_path / "R2")
    with pytest.raises(DiffError):
        diff_reports(tmp_path / "R1", tmp_path / "R2", allow_partial=True)  # nothing matched at all


def test_gate_syntax() -> None:
    g = parse_gate("bias_ambiguous@Q_IF >= 0.05")
    assert (g.metric, g.condition, g.op, g.threshold, g.on) == ("bias_ambiguous", "Q_IF", ">=", 0.05, "value")
    assert parse_gate("delta(acc) < -1e-2").on == "delta"
    assert parse_gate("abs(bias) > .1").threshold == 0.1
    with pytest.raises(Exception, match="expected METRIC"):
        parse_gate("bias >> 1")
