"""The checker on the real specs and data: every spec checks clean, the BBQ bias target the spec derives matches an
independent computation, data roots are found, missing files are warnings in check mode and errors in plan mode,
and every problem of a spec is reported in one pass."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from moraleval.checker import check, coerce_override
from moraleval.cli import main
from moraleval.errors import SpecCheckError

from _support import REPO, SPECS, TINY_ITEMS_SHA256

FIXTURES = Path(__file__).parent / "fixtures" / "errors"
SIX = ["Age", "Disability_status", "Nationality", "Physical_appearance", "Religion", "Sexual_orientation"]


def test_check_every_spec_exits_0_with_the_shared_data(shared_data, capsys):
    specs = sorted(str(p) for p in SPECS.glob("*.me"))
    assert len(specs) == 5  # + quantization.me (issue #11)
    code = main(["check", *specs, "--data", str(shared_data)])
    out, err = capsys.readouterr()
    assert code == 0, err
    for spec in specs:
        assert f"{spec}: ok (0 errors" in out
    assert "Traceback" not in err


def test_check_json_lists_every_diagnostic(tiny_data, capsys, monkeypatch):
    monkeypatch.chdir(FIXTURES)
    code = main(["check", "three_mistakes.me", "--data", str(tiny_data), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 2
    assert [r["ok"] for r in report] == [False]
    diags = report[0]["diagnostics"]
    assert [(d["line"], d["column"], d["severity"]) for d in diags] == [(11, 20, "error"), (22, 15, "error"),
                                                                        (30, 32, "error")]
    assert diags[2]["hint"] == "did you mean 'label'?"
    assert all(d["file"] == "three_mistakes.me" for d in diags)


def test_all_problems_are_reported_in_one_pass(tiny_data):
    with pytest.raises(SpecCheckError) as info:
        check(FIXTURES / "three_mistakes.me", data_root=str(tiny_data))
    errors = info.value.errors
    assert len(errors) == 3
    assert [e.code for e in errors] == ["E137", "E141", "E173"]
    assert str(info.value).endswith("3 errors found")


def _bbq_target(row: dict) -> int | None:
    """The bias target from the row alone, written independently of the spec (lm-evaluation-harness's rule)."""
    options = [row["answer_info"][f"ans{i}"] for i in range(3)]
    unknown = next(i for i, (_, tag) in enumerate(options) if tag == "unknown")
    groups = {g.lower() for g in row["additional_metadata"]["stereotyped_groups"]}
    stereotyped = [i for i, (text, tag) in enumerate(options)
                   if i != unknown and (tag.lower() in groups or text.lower() in groups)]
    if not stereotyped:
        return None
    if row["question_polarity"] == "neg":
        return stereotyped[0]
    return next(i for i in range(3) if i not in (unknown, stereotyped[0]))


@pytest.fixture
def bbq_checked(bbq_six):
    return bbq_six[3]


def test_bbq_target_matches_a_hand_computation(bbq_checked, shared_data):
    ds = bbq_checked.datasets["bbq"]
    by_key = {(r["category"], r["example_id"]): r for r in ds.rows}
    assert len(by_key) == len(ds.rows) == 11_956
    checked = 0
    for cat in SIX:
        lines = (shared_data / "bbq" / f"{cat}.jsonl").read_text(encoding="utf-8").splitlines()
        for line in lines[::7]:  # every 7th row of every category: ~1,700 rows
            raw = json.loads(line)
            got = by_key[(raw["category"], raw["example_id"])]
            assert got["target"] == _bbq_target(raw), raw["example_id"]
            assert got["unknown"] == [a[1] for a in raw["answer_info"].values()].index("unknown")
            checked += 1
    assert checked > 1_500


def test_bbq_target_on_known_rows(bbq_checked):
    rows = {(r["category"], r["example_id"]): r for r in bbq_checked.datasets["bbq"].rows}
    # Age.jsonl example 0: "grandfather" (old, ans0), "grandson" (ans1), unknown = ans2; negative question
    age0 = rows[("Age", 0)]
    assert age0["answer_info"]["ans0"] == ["grandfather", "old"]
    assert age0["question_polarity"] == "neg" and age0["target"] == 0 and age0["unknown"] == 2
    # its non-negative twin (example 2 of the same template): the target flips to the other non-unknown answer
    age2 = rows[("Age", 2)]
    assert age2["question_polarity"] == "nonneg" and age2["answer_info"]["ans0"] == ["grandfather", "old"]
    assert age2["target"] == 1


def test_bbq_counts_by_condition(bbq_checked):
    rows = bbq_checked.datasets["bbq"].rows
    assert sum(r["context_condition"] == "ambig" for r in rows) == 5_978
    assert sum(r["question_polarity"] == "neg" for r in rows) == 5_978
    assert bbq_checked.datasets["bbq"].dropped == {}
    assert bbq_checked.params["categories"] == SIX


def test_data_root_found_next_to_the_checkout(shared_data, no_env_data, monkeypatch):
    if shared_data.resolve() != (REPO.parent / "shared" / "data").resolve():
        pytest.skip("the shared data is not next to the checkout")
    monkeypatch.chdir(REPO)
    checked = check("specs/winogender.me")
    assert checked.data_root.resolve() == shared_data.resolve()
    assert "shared/data" in checked.data_root_reason


def test_missing_selected_file_is_a_warning_in_check_mode_and_an_error_in_plan_mode(tiny_data):
    spec = FIXTURES / "missing_file_check.me"
    checked = check(spec, data_root=str(tiny_data), mode="check")
    assert [w.code for w in checked.warnings] == ["W130"]
    assert "moraleval data fetch items" in checked.warnings[0].hint
    with pytest.raises(SpecCheckError) as info:
        check(spec, data_root=str(tiny_data), mode="plan")
    assert [d.code for d in info.value.errors] == ["E138"]
    assert "moraleval data fetch items" in info.value.errors[0].hint


def test_a_file_that_cannot_be_read_does_not_cascade(tiny_data):
    """The file's columns are unknown, so templates and metrics that use them are not reported as errors."""
    with pytest.raises(SpecCheckError) as info:
        check(FIXTURES / "tampered_file.me", data_root=str(tiny_data))
    assert [d.code for d in info.value.diagnostics] == ["E135"]
    d = info.value.diagnostics[0]
    assert "expected 0000" in d.message and f"actual {TINY_ITEMS_SHA256}" in d.message
    assert "tiny/items.jsonl" in d.message and "pin the new hash" in d.hint


def test_import_cycle_is_reported(tmp_path, tiny_data):
    (tmp_path / "a.me").write_text('moraleval 1\nimport "b.me"\n')
    (tmp_path / "b.me").write_text('moraleval 1\nimport "a.me"\nlet x = 1\n')
    with pytest.raises(SpecCheckError) as info:
        check(tmp_path / "a.me", data_root=str(tiny_data))
    [d] = info.value.errors
    assert d.code == "E110" and "import cycle" in d.message
    assert d.source.path.endswith("b.me") and d.span.line == 2


def test_errors_in_an_imported_file_point_into_that_file(tmp_path, tiny_data):
    shutil.copy(FIXTURES / "unknown_column.me", tmp_path / "lib.me")
    (tmp_path / "main.me").write_text('moraleval 1\nimport "lib.me"\n')
    with pytest.raises(SpecCheckError) as info:
        check(tmp_path / "main.me", data_root=str(tiny_data))
    [d] = info.value.errors
    assert d.source.path.endswith("lib.me") and (d.span.line, d.span.column) == (12, 26)
    assert d.hint == "did you mean 'context'?"


@pytest.mark.parametrize("text, default, expected", [
    ("3", 0, 3), ("0.5", 1.0, 0.5), ("yes", False, True), ("Age, Religion", ["Age", "SES"], ["Age", "Religion"]),
    ("1,2", [5], [1, 2]), ("free text", "x", "free text"),
])
def test_coerce_override(text, default, expected):
    assert coerce_override(text, default) == expected


@pytest.mark.parametrize("text, default, message", [
    ("two", 0, "expected a whole number"), ("maybe", True, "expected true or false"),
    ("Agee", ["Age", "SES"], "did you mean 'Age'?"), (" , ", ["Age"], "comma-separated list"),
])
def test_coerce_override_rejects(text, default, message):
    with pytest.raises(ValueError, match=message):
        coerce_override(text, default)


def test_set_typo_in_a_category_is_caught(shared_data, capsys):
    code = main(["check", str(SPECS / "bbq.me"), "--data", str(shared_data), "--set", "categories=Age,Religon"])
    err = capsys.readouterr().err
    assert code == 2
    assert "'Religon' (did you mean 'Religion'?)" in err and "Traceback" not in err
