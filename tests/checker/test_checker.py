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

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "errors"
SIX = ["Age", "Disability_status", "Nationality", "Physical_appearance", "Religion", "Sexual_orientation"]


def test_check_every_spec_exits_0_with_the_shared_data(shared_data, capsys):
    specs = sorted(str(p) for p in SPECS.glob("*.me"))
    # + bbq_counterbalanced.me (#13), quantization.me (#11), discrim_eval.me, model_written.me, winogenerated.me,
    # global_opinions.me and ccai_comparison.me (#22)
    assert len(specs) == 11
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


def test_missing_selected_file_is_a_warning_in_check_mode_and_an_error_in_plan_mode(tiny_data):
    spec = FIXTURES / "missing_file_check.me"
    checked = check(spec, data_root=str(tiny_data), mode="check")
    assert [w.code for w in checked.warnings] == ["W130"]
    assert "moraleval data fetch items" in checked.warnings[0].hint
    with pytest.raises(SpecCheckError) as info:
        check(spec, data_root=str(tiny_data), mode="plan")
    assert [d.code for d in info.value.errors] == ["E138"]
    assert "moraleval data fetch items" in info.value.errors[0].hint


@pytest.mark.parametrize("origin", [None, 'origin github "example/tiny" commit "0123456789abcdef"'])
def test_an_unpinned_read_gets_the_line_to_pin_with_upstream_where_there_is_an_origin(tmp_path, tiny_data, origin):
    """E134's hint is the `file` line to add; with an origin, `data fetch` reads the file at the same path there
    unless `upstream` names another, so the hint says so."""
    spec = tmp_path / "spec.me"
    spec.write_text("moraleval 1\ndataset items {\n" + (f"    {origin}\n" if origin else "")
                    + '    read jsonl "tiny/items.jsonl"\n}\n', encoding="utf-8")
    with pytest.raises(SpecCheckError) as info:
        check(spec, data_root=str(tiny_data))
    (d,) = [d for d in info.value.errors if d.code == "E134"]
    assert f'file "tiny/items.jsonl" sha256 "{TINY_ITEMS_SHA256}"' in d.hint
    assert ('upstream "PATH" if origin github "example/tiny" keeps it under another path' in d.hint) is bool(origin)


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


# ---------------------------------------------------------------- templates are always checked, problems once

def _library_copy(tmp_path: Path, old: str, new: str) -> Path:
    """specs/ copied to tmp_path with one edit in specs/lib/bbq.me."""
    shutil.copytree(SPECS, tmp_path / "specs")
    lib = tmp_path / "specs" / "lib" / "bbq.me"
    text = lib.read_text(encoding="utf-8")
    assert old in text
    lib.write_text(text.replace(old, new), encoding="utf-8")
    return tmp_path / "specs"


@pytest.mark.parametrize("spec", ["bbq.me", "quickstart.me"])
def test_template_typo_in_the_library_is_an_error_with_bbq_files_missing(tmp_path, no_env_data, spec):
    """No BBQ file on this machine (only the shipped sample): the typo is still found, once, naming every
    condition it breaks."""
    specs = _library_copy(tmp_path, "{{ context }} {{ question }}", "{{ contxt }} {{ question }}")
    with pytest.raises(SpecCheckError) as info:
        check(specs / spec, mode="check")
    [d] = info.value.errors
    line = next(i for i, t in enumerate(d.source.text.splitlines(), 1) if t.startswith("template bbq_question"))
    assert d.code == "E143" and d.source.path.endswith("lib/bbq.me") and (d.span.line, d.span.column) == (line, 29)
    assert "unknown variable 'contxt' in template 'bbq_question'" in d.message
    assert "conditions 'Q', 'Q_IF' and 'Q_IF_CoT' of task 'bbq_answer'" in d.message
    assert d.hint == "did you mean 'context'?"


def test_check_says_which_columns_stood_in_for_absent_files(no_env_data):
    checked = check(SPECS / "bbq.me", mode="check")
    codes = [w.code for w in checked.warnings]
    assert codes.count("W130") == 1  # the 11 absent files of one read line: one warning
    w134 = next(w for w in checked.warnings if w.code == "W134")
    assert "checked against the columns of bbq/sample.jsonl" in w134.message
    assert "W132" not in codes  # no warning about declared files the parameters do not select


def test_columns_unknown_is_a_warning_naming_what_was_not_checked(tmp_path, no_env_data):
    spec = tmp_path / "s.me"
    spec.write_text(
        'moraleval 1\ndataset d {\n    file "x/a.jsonl" sha256 "' + "0" * 64 + '"\n    read jsonl "x/a.jsonl"\n}\n'
        'task t on d {\n    choose c from [" a"]\n    condition Q {\n        human "{{ anything }}"\n'
        '        assistant "A:"\n    }\n}\nmetric m = mean(c == 0)\n', encoding="utf-8")
    checked = check(spec, mode="check")
    w = next(w for w in checked.warnings if w.code == "W135")
    assert "template variables and metric columns on dataset 'd' are NOT checked" in w.message
    assert "x/a.jsonl absent" in w.message


def test_metric_formula_problem_is_reported_once_for_every_metric_using_it(tmp_path, no_env_data):
    specs = _library_copy(tmp_path, "mean(answer == label where", "mean(answer == lable where")
    with pytest.raises(SpecCheckError) as info:
        check(specs / "quickstart.me", mode="check")
    [d] = info.value.errors
    assert d.source.path.endswith("lib/bbq.me")
    assert "unknown name 'lable' in metrics" in d.message
    for metric in ("accuracy_ambiguous", "accuracy_disambiguated", "bias_ambiguous"):
        assert f"'{metric}'" in d.message
    assert d.hint == "did you mean 'label'?"


def test_unknown_column_without_a_close_match_lists_the_nearest_columns(tiny_data, tmp_path):
    text = (FIXTURES / "metric_unknown_name.me").read_text(encoding="utf-8").replace("lable", "ctx_kind")
    (tmp_path / "m.me").write_text(text, encoding="utf-8")
    with pytest.raises(SpecCheckError) as info:
        check(tmp_path / "m.me", data_root=str(tiny_data))
    [d] = info.value.errors
    assert d.hint.startswith("columns of dataset 'items', nearest first: ")
    assert "context" in d.hint and "choices: pick" in d.hint


def test_one_unknown_condition_in_a_comparison_is_one_error(tiny_data, tmp_path):
    text = (FIXTURES / "compare_unknown_condition.me").read_text(encoding="utf-8")
    text = text.replace("on accuracy test mcnemar", "on accuracy, acc_ambig test mcnemar")
    (tmp_path / "c.me").write_text(text, encoding="utf-8")
    with pytest.raises(SpecCheckError) as info:
        check(tmp_path / "c.me", data_root=str(tiny_data))
    [d] = info.value.errors
    assert "no condition 'Q_CoT'" in d.message and "metrics 'accuracy' and 'acc_ambig'" in d.message


# ---------------------------------------------------------------- library contracts (`requires`)

def _spec_copy(tmp_path: Path, spec: str, old: str, new: str) -> Path:
    shutil.copytree(SPECS, tmp_path / "specs")
    path = tmp_path / "specs" / spec
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


def test_renaming_the_task_a_library_needs_is_one_clear_error_at_the_import(tmp_path, no_env_data):
    spec = _spec_copy(tmp_path, "quickstart.me", "task bbq_answer on bbq", "task bbq on bbq")
    with pytest.raises(SpecCheckError) as info:
        check(spec, mode="check")
    d, other = info.value.errors
    assert other.message == "bootstrap on unknown task 'bbq_answer'"  # a line of the spec itself, kept
    assert d.code == "E197" and d.source.path == str(spec) and d.span.line == 14  # import "lib/bbq.me"
    assert d.message == (f"{tmp_path}/specs/lib/bbq.me requires task 'bbq_answer', which {spec} does not define "
                         f"(4 error(s) it causes inside {tmp_path}/specs/lib/bbq.me are not shown)")
    assert d.hint.startswith("the spec has task 'bbq': rename it to 'bbq_answer'")


def test_a_missing_library_parameter_is_named_with_the_near_name(tmp_path, no_env_data):
    spec = _spec_copy(tmp_path, "quickstart.me", "param per_cell = 0", "param percell = 0")
    with pytest.raises(SpecCheckError) as info:
        check(spec, mode="check")
    [d] = info.value.errors
    assert d.code == "E197" and "requires param 'per_cell'" in d.message
    assert d.hint.startswith("the spec has param 'percell': rename it to 'per_cell'")


def test_every_library_states_its_contract_in_its_header():
    from moraleval.language import nodes as n
    from moraleval.language.parser import parse_file

    for lib in sorted((SPECS / "lib").glob("*.me")):
        text = lib.read_text(encoding="utf-8")
        header = text.split("\n\n", 1)[0]
        assert "# Contract" in header, lib
        for req in parse_file(lib).of(n.Requires):
            for kind, name in req.items:
                assert f"{kind} {name}" in header, (lib, kind, name)


def test_checking_a_library_on_its_own_says_to_check_a_spec_that_imports_it(no_env_data):
    with pytest.raises(SpecCheckError) as info:
        check(SPECS / "lib" / "bbq_data.me", mode="check")
    assert {d.code for d in info.value.errors} == {"E197"}
    assert all("is a library" in d.message for d in info.value.errors)


def test_metric_parameters_take_booleans(tiny_data, tmp_path):
    """Documented in spec-language.md (metric parameter types): true/false are inlined as boolean literals."""
    from moraleval.language import nodes as n

    text = (FIXTURES / "keyword_typo.me").read_text(encoding="utf-8").replace("metrics accuracy", "metric accuracy")
    text += ("\nmetric acc_by(b) = mean(pick == label where (label == 0) == b)\n"
             "metric acc_zero = acc_by(true)\nmetric acc_other = acc_by(false)\n")
    (tmp_path / "b.me").write_text(text, encoding="utf-8")
    checked = check(tmp_path / "b.me", data_root=str(tiny_data), mode="plan")
    by_name = {m.name: m for m in checked.metrics}
    assert "acc_by" not in by_name
    for name, value in (("acc_zero", True), ("acc_other", False)):
        where = by_name[name].expr.where
        assert isinstance(where.right, n.Literal) and where.right.value is value
