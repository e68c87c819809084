"""What a reader sees in report.md and report.html (issue 23): the order of the sections, the whole study's findings
before the groups', warnings that name their group, paths against a named root, numbers with enough digits."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import attrs
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fakes import FakeBackend, make_plan, write_toy_inputs  # noqa: E402

from moraleval.execute.cache import ResponseCache  # noqa: E402
from moraleval.execute.runner import run_plan  # noqa: E402
from moraleval.measurement import measure  # noqa: E402
from moraleval.report import write_report  # noqa: E402
from moraleval.report.page import fmt_est, page_model, shown_path  # noqa: E402

MD_ORDER = ["## What was run", "## Headline findings", "## Figures", "## Estimates", "## Comparisons",
            "## Answer distribution", "## Warnings", "## Formulas", "## Provenance", "## Samples"]
HTML_ORDER = ['<section id="run">', '<section id="findings">', '<section id="figures">', '<section id="estimates">',
              '<section id="comparisons">', '<section id="answers">', '<section id="warnings">',
              '<section id="formulas">', '<section id="provenance">', '<section id="samples">']


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    """The toy plan reported by its `group` column (old / young): whole-study and per-group comparisons."""
    tmp = tmp_path_factory.mktemp("pages")
    plan = attrs.evolve(make_plan(12, **write_toy_inputs(tmp / "in")), report_by=("group",))
    model = tmp / "model.bin"
    model.write_bytes(b"weights")
    import hashlib

    backend = FakeBackend(files={str(model): hashlib.sha256(b"weights").hexdigest()})
    outcomes = run_plan(plan, backend, cache=ResponseCache(":memory:"), progress=False)
    out = write_report(plan, measure(plan, outcomes), outcomes, out_dir=tmp / "out", backend=backend,
                       run_stats=outcomes.stats)
    return out


def _positions(text: str, marks: list[str]) -> list[int]:
    pos = [text.find(m) for m in marks]
    assert all(p >= 0 for p in pos), [m for m, p in zip(marks, pos) if p < 0]
    return pos


def test_sections_in_order_with_provenance_after_the_numbers(grouped: Path) -> None:
    md = (grouped / "report.md").read_text(encoding="utf-8")
    html = (grouped / "report.html").read_text(encoding="utf-8")
    assert _positions(md, MD_ORDER) == sorted(_positions(md, MD_ORDER))
    assert _positions(html, HTML_ORDER) == sorted(_positions(html, HTML_ORDER))
    # what was run is one short block; the model files' table and the versions come after the comparisons
    run = md.split("## What was run", 1)[1].split("\n## ", 1)[0]
    assert run.count("\n| ") <= 8 and "sha256" in run and "model.bin" not in run and "numpy" not in run
    assert md.index("**Model files") > md.index("## Comparisons") and md.index("Versions:") > md.index("## Comparisons")
    run_html = html.split('<section id="run">', 1)[1].split("</section>", 1)[0]
    assert "<h3>Models</h3>" not in run_html and "Model files" not in run_html


def test_whole_study_findings_come_before_each_groups(grouped: Path) -> None:
    md = (grouped / "report.md").read_text(encoding="utf-8")
    findings = md.split("## Headline findings", 1)[1].split("\n## ", 1)[0]
    whole, by_group = findings.split("### Findings by group (report by group)", 1)
    whole_lines = [x for x in whole.splitlines() if x.startswith("- ")]
    group_lines = [x for x in by_group.splitlines() if x.startswith("- ")]
    assert len(whole_lines) == 2 and not any("group =" in x for x in whole_lines)
    assert len(group_lines) == 4 and all("(group = " in x for x in group_lines)
    html = (grouped / "report.html").read_text(encoding="utf-8")
    sec = html.split('<section id="findings">', 1)[1].split("</section>", 1)[0]
    assert sec.index("group = old") > sec.index('id="findings-groups"') > sec.index("No detectable change in acc from")


def test_warnings_name_their_group(grouped: Path) -> None:
    report = json.loads((grouped / "report.json").read_text(encoding="utf-8"))
    samples = [json.loads(x) for x in (grouped / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    page = page_model(report, samples)
    cmp_rows = [w for w in page["warnings"] if "cmp" in w]
    assert cmp_rows and all(w["where"].split(" / ")[-1] in ("all items", "group = old", "group = young")
                            for w in cmp_rows)
    # the same flag on one comparison for each group: rows that differ by their group, never identical rows
    wheres = [(w["where"], w["code"], w["message"]) for w in page["warnings"]]
    assert len(wheres) == len(set(wheres))
    md = (grouped / "report.md").read_text(encoding="utf-8")
    assert "| answer / acc / IF − Q / group = old | few_units |" in md


def test_paths_are_shown_against_a_named_root(tmp_path: Path) -> None:
    env = {"MORALEVAL_DATA": str(tmp_path / "shared"), "HOME": str(tmp_path / "home")}
    assert shown_path(str(tmp_path / "shared" / "bbq"), env) == "$MORALEVAL_DATA/bbq"
    assert shown_path(str(tmp_path / "shared"), env) == "$MORALEVAL_DATA"
    assert shown_path(str(tmp_path / "home" / "studies" / "data"), env) == "~/studies/data"
    from moraleval.data.roots import sample_data_dir

    assert shown_path(str(sample_data_dir()), env) == "builtin:sample"
    assert shown_path("/srv/data", env) == "/srv/data" and shown_path("relative/x", env) == "relative/x"
    env_home = dict(env, MORALEVAL_DATA_HOME=str(tmp_path / "home" / ".local" / "share" / "moraleval" / "data"))
    os.environ["MORALEVAL_DATA_HOME"] = env_home["MORALEVAL_DATA_HOME"]
    try:
        assert shown_path(env_home["MORALEVAL_DATA_HOME"] + "/law", env) == "law (in the user data directory)"
    finally:
        del os.environ["MORALEVAL_DATA_HOME"]


def test_the_page_never_shows_the_home_folder(grouped: Path, monkeypatch) -> None:
    report = json.loads((grouped / "report.json").read_text(encoding="utf-8"))
    manifest = json.loads((grouped / "manifest.json").read_text(encoding="utf-8"))
    home = str(Path(manifest["data_root"]).parent)
    monkeypatch.setenv("HOME", home)
    monkeypatch.delenv("MORALEVAL_DATA", raising=False)
    page = page_model(report, [], manifest)
    assert page["context"]["data_root"] == "~/" + Path(manifest["data_root"]).name


@pytest.mark.parametrize("value, low, high, text", [
    (-0.0004, -0.002, -0.00002, ("−0.00040", "[−0.00200, −0.00002]")),
    (0.333, 0.083, 0.667, ("0.333", "[0.083, 0.667]")),
    (0.0, 0.0, 0.0, ("0.000", "[0.000, 0.000]")),
    (12.3456, 9.8, 14.1, ("12.346", "[9.800, 14.100]")),
    (0.5, None, None, ("0.500", "[no interval]")),
])
def test_digits_enough_for_the_interval(value, low, high, text) -> None:
    assert fmt_est(value, low, high) == text
    assert not re.search(r"−0\.0+(?!\d*[1-9])\b", " ".join(fmt_est(value, low, high)))  # no signed zero


def test_small_effects_in_the_pages(tmp_path: Path) -> None:
    from fakes import FakeMeasurement
    from moraleval.measurement.results import ComparisonResult, Estimate

    plan = make_plan(8, **write_toy_inputs(tmp_path / "in"))
    outcomes = run_plan(plan, FakeBackend(), cache=ResponseCache(":memory:"), progress=False)
    ests = tuple(Estimate("acc", "answer", c, {}, v, v - 0.001, v + 0.0005, 8, 40, "bca", 1000, "q")
                 for c, v in (("Q", -0.0004), ("CoT", -0.0012)))
    cmps = (ComparisonResult("acc", "answer", "CoT", "Q", {}, -0.0008, -0.0019, -0.0001, "bootstrap", None, 0.0002,
                             0.0004, "holm", 8, n_units=40),)
    out = write_report(plan, FakeMeasurement(ests, cmps, {}), outcomes, out_dir=tmp_path / "out")
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "−0.0004 [−0.0014, 0.0001]" in md and "−0.0008 [−0.0019, −0.0001]" in md
    assert "(p < 0.001)" in md and "−0.000 " not in md and "−0.000]" not in md and "p = <" not in md


def test_fixed_labels_count_each_distinct_presentation_once_and_keep_value_types_apart() -> None:
    """An answer value gets its option text as a label only where it was always shown as that one text; rows that
    repeat a presentation are counted once (a 200,000-row folder has a handful), and 1, 1.0 and True stay apart."""
    from moraleval.report.answer_table import fixed_labels

    fixed = [{"task": "t", "condition": "Q", "choices": [" (a)", " (b)"], "choice_values": [0, 1]}] * 1000
    moving = [{"task": "t", "condition": "R", "choices": [" (a)", " (b)"], "choice_values": [0, 1]},
              {"task": "t", "condition": "R", "choices": [" (a)", " (b)"], "choice_values": [1, 0]}]
    typed = [{"task": "u", "condition": "Q", "choices": [" yes", " no"], "choice_values": [1, 0]},
             {"task": "u", "condition": "Q", "choices": [" yes", " no"], "choice_values": [True, False]}]
    records = [{"task": "v", "condition": "Q", "choices": [" x"], "choice_values": [[1, 2]]}] * 3
    got = fixed_labels(fixed + moving + typed + records)
    assert got[("t", "Q")] == {"0": "(a)", "1": "(b)"}
    assert ("t", "R") not in got  # the same texts meant other values
    assert ("u", "Q") not in got  # " yes" meant 1 and true: two values, one text
    assert got[("v", "Q")] == {"[1, 2]": "x"}
