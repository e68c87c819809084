"""The readers of the shipped seed-study specs (discrim-eval, the model-written evaluations, Winogenerated): the
``fields``/``expect``/``derive`` lines of their datasets, run on the shipped synthetic samples (files in the exact
upstream formats, every quirk present) and on malformed copies of them, which must fail with an error naming the
file, the line and the field."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from _support import SPECS
from moraleval.checker import check
from moraleval.cli import main

pytestmark = pytest.mark.usefixtures("no_env_data")

SAMPLE = Path(__file__).resolve().parents[2] / "moraleval" / "data" / "sample"
DISCRIM = "synthetic/discrim-eval/explicit.jsonl"
MWE = "synthetic/model-written-evals"
PERSONA = f"{MWE}/persona/agreeableness.jsonl"
PHIL = f"{MWE}/sycophancy/sycophancy_on_philpapers2020.jsonl"
NLP = f"{MWE}/sycophancy/sycophancy_on_nlp_survey.jsonl"
AI_RISK = f"{MWE}/advanced-ai-risk/human_generated_evals/survival-instinct.jsonl"
WINOGENERATED = f"{MWE}/winogenerated/winogenerated_examples.jsonl"


@pytest.fixture(scope="module")
def discrim():
    return check(SPECS / "discrim_eval.me", data_root="builtin:sample").datasets["discrim_eval"]


@pytest.fixture(scope="module")
def mwe():
    return check(SPECS / "model_written.me", data_root="builtin:sample").datasets


@pytest.fixture(scope="module")
def winogenerated():
    return check(SPECS / "winogenerated.me", data_root="builtin:sample").datasets["winogenerated"]


def raw_rows(rel: str) -> list[dict]:
    return [json.loads(line) for line in (SAMPLE / rel).read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------------------------ quirks, read right

def test_discrim_eval_keeps_race_as_written_and_both_fill_types(discrim):
    assert len(discrim.rows) == 810
    assert {r["race"] for r in discrim.rows} == {"white", "Black", "Asian", "Hispanic", "Native American"}
    assert {r["fill_type"] for r in discrim.rows} == {"explicit", "implicit"}
    assert {r["age_band"] for r in discrim.rows if r["age"] == 60} == {"60"}
    assert {r["age_band"] for r in discrim.rows if r["age"] < 60} == {"20-50"}
    assert {r["age_band"] for r in discrim.rows if r["age"] > 60} == {"70-100"}
    first = raw_rows(DISCRIM)[0]
    assert discrim.rows[0]["filled_template"] == first["filled_template"]  # the prompt text untouched


def test_discrim_eval_ages_param_filters_with_a_reason():
    checked = check(SPECS / "discrim_eval.me", data_root="builtin:sample", overrides={"ages": "20,60,100"})
    ds = checked.datasets["discrim_eval"]
    assert len(ds.rows) == 810 // 3 and {r["age"] for r in ds.rows} == {20, 60, 100}


def test_persona_answers_keep_their_leading_space(mwe):
    persona = mwe["persona"].rows
    assert len(persona) == 18 and {r["behavior"] for r in persona} == {
        "agreeableness", "desire-for-acquiring-power", "subscribes-to-virtue-ethics"}
    assert {r["answer_matching_behavior"] for r in persona} == {" Yes", " No"}


def test_sycophancy_answers_as_a_string_or_a_list_and_the_question_rebuilt_byte_for_byte(mwe):
    syc = mwe["sycophancy"].rows
    assert len(syc) == 13
    phil = [r for r in syc if r["behavior"] == "philpapers2020"]
    assert phil and all(isinstance(r["answer_not_matching_behavior"], list) for r in phil)
    assert all(isinstance(r["answer_not_matching_behavior"], str) for r in syc if r["behavior"] != "philpapers2020")
    for r in syc:
        assert r["answer_matching_behavior"] in r["option_answers"]
        assert r["option_answers"][0] == " (A)"  # the leading space of the answers
        rebuilt = r["stem"] + "".join(f"\n ({letter}) {text}" for letter, text in
                                      zip(r["option_letters"], r["option_texts"])) + r["tail"]
        assert rebuilt == r["question"]
        assert r["stem_without_biography"] in r["stem"] and not r["stem_without_biography"].startswith("Hello")
        assert r["prefill"] == ("I believe the better option is" if r["behavior"] == "political_typology_quiz"
                                else "I believe the best answer is")
    assert {len(r["option_texts"]) for r in phil} >= {3}
    pol = [r for r in syc if r["behavior"] == "political_typology_quiz"]
    assert {r["user_affiliation"] for r in pol} == {"liberal", "conservative"}
    assert all(r["user_affiliation"] is None for r in syc if r["behavior"] != "political_typology_quiz")


def test_advanced_ai_risk_drops_lay_outs_it_cannot_cut_and_counts_them(mwe):
    ds = mwe["advanced_ai_risk"]
    raw = sum(len(raw_rows(f"{MWE}/advanced-ai-risk/{s}/{b}.jsonl"))
              for s in ("human_generated_evals", "lm_generated_evals")
              for b in ("corrigible-neutral-HHH", "survival-instinct"))
    assert raw == 12
    kept = ds.rows
    dropped = raw - len(kept)
    # the option written "(A)No" (no space after the letter) cannot be cut losslessly: dropped, with the reason
    assert dropped >= 1 and len(kept) >= 9
    assert {r["source"] for r in kept} == {"human_generated_evals", "lm_generated_evals"}
    assert any(len(r["option_texts"]) == 3 for r in kept)
    assert any(r["tail"] == "\n\nAnswer:" for r in kept)


def test_winogenerated_pronoun_options_and_bls_share(winogenerated):
    rows = winogenerated.rows
    raw = raw_rows(WINOGENERATED)
    assert len(rows) == len(raw) == 60
    for r, src in zip(rows, raw):
        assert r["options"] == [" " + p for p in src["pronoun_options"]]
        assert r["pct_female"] == src["BLS_percent_women_2019"]
        assert r["pct_male"] == pytest.approx(100 - src["BLS_percent_women_2019"])
        assert r["prefix"] == src["sentence_with_blank"].split("_")[0].strip()
        assert r["blanked"] == src["sentence_with_blank"]


# ------------------------------------------------------------------------------------- malformed: file, line, field

def _malformed(tmp_path: Path, rel: str, line: int, edit) -> Path:
    """A copy of specs/ whose pin of ``rel`` is the hash of a copy of the sample file with 1-based ``line``
    edited by ``edit(row) -> row or raw text``; the data root holding that copy."""
    specs = tmp_path / "specs"
    shutil.copytree(SPECS, specs)
    lines = (SAMPLE / rel).read_text(encoding="utf-8").splitlines()
    new = edit(json.loads(lines[line - 1]))
    lines[line - 1] = new if isinstance(new, str) else json.dumps(new)
    data = ("\n".join(lines) + "\n").encode("utf-8")
    root = tmp_path / "data"
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(data)
    old = hashlib.sha256((SAMPLE / rel).read_bytes()).hexdigest()
    for me in specs.rglob("*.me"):
        text = me.read_text(encoding="utf-8")
        if old in text:
            me.write_text(text.replace(old, hashlib.sha256(data).hexdigest()), encoding="utf-8")
    return root


def _drop(field):
    def edit(row):
        del row[field]
        return row
    return edit


def _set(field, value):
    def edit(row):
        row[field] = value
        return row
    return edit


CASES = [
    # (spec, file, line, edit, code, the words the message must hold)
    ("discrim_eval.me", DISCRIM, 7, _drop("race"), "E128", ["field 'race' is missing"]),
    ("discrim_eval.me", DISCRIM, 10, _set("race", "black"), "E129", ['race = "black"', "five races"]),
    ("discrim_eval.me", DISCRIM, 3, _set("age", "60"), "E128", ["field 'age'", "number"]),
    ("discrim_eval.me", DISCRIM, 4, _drop("fill_type"), "E128", ["field 'fill_type' is missing"]),
    ("discrim_eval.me", DISCRIM, 5, _set("decision_question_id", None), "E128", ["field 'decision_question_id'"]),
    ("model_written.me", PERSONA, 2, _set("answer_matching_behavior", "Yes"), "E129",
     ['answer_matching_behavior = "Yes"']),
    ("model_written.me", PERSONA, 3, _drop("answer_not_matching_behavior"), "E128",
     ["field 'answer_not_matching_behavior' is missing"]),
    ("model_written.me", PHIL, 2, _set("answer_not_matching_behavior", [" (A)", 3]), "E128",
     ["field 'answer_not_matching_behavior'", "list"]),
    ("model_written.me", NLP, 1, _set("answer_matching_behavior", 1), "E128", ["field 'answer_matching_behavior'"]),
    ("model_written.me", AI_RISK, 2, _drop("question"), "E128", ["field 'question' is missing"]),
    ("winogenerated.me", WINOGENERATED, 4, _set("pronoun_options", "he/she/they"), "E128",
     ["field 'pronoun_options'", "list of text"]),
    ("winogenerated.me", WINOGENERATED, 5, _set("pronoun_options", ["she", "he", "they"]), "E129",
     ["male, female and neutral"]),
    ("winogenerated.me", WINOGENERATED, 6, _set("BLS_percent_women_2019", "55.1"), "E128",
     ["field 'BLS_percent_women_2019'", "number"]),
    ("winogenerated.me", WINOGENERATED, 7, _set("BLS_percent_women_2019", 155.0), "E129", ["a percentage"]),
    ("winogenerated.me", WINOGENERATED, 8, lambda row: '{"index": 7, "occupation": ', "E136", ["not valid JSON"]),
]


@pytest.mark.parametrize("spec, rel, line, edit, code, words", CASES,
                         ids=[f"{c[1].rsplit('/', 1)[1]}:{c[2]}:{c[4]}" for c in CASES])
def test_a_malformed_row_is_an_error_naming_the_file_the_line_and_the_field(tmp_path, capsys, spec, rel, line,
                                                                             edit, code, words):
    root = _malformed(tmp_path, rel, line, edit)
    status = main(["check", str(tmp_path / "specs" / spec), "--data", str(root)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert f"error[{code}]" in err and "Traceback" not in err
    assert f"{rel}:{line}" in err, err
    for w in words:
        assert w in err, err


def test_many_malformed_rows_are_one_error_that_counts_them(tmp_path, capsys):
    specs = tmp_path / "specs"
    shutil.copytree(SPECS, specs)
    data = "".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "gender"}) + "\n"
                   for line in (SAMPLE / DISCRIM).read_text(encoding="utf-8").splitlines()).encode()
    (tmp_path / "data" / DISCRIM).parent.mkdir(parents=True)
    (tmp_path / "data" / DISCRIM).write_bytes(data)
    spec = specs / "discrim_eval.me"
    old = hashlib.sha256((SAMPLE / DISCRIM).read_bytes()).hexdigest()
    spec.write_text(spec.read_text().replace(old, hashlib.sha256(data).hexdigest()))
    assert main(["check", str(spec), "--data", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert err.count("error[E128]") == 1
    assert f"{DISCRIM}:1: field 'gender' is missing" in err and "(and 404 more row(s): lines 2, 3, 4, 5, 6" in err


@pytest.mark.parametrize("spec", ["discrim_eval.me", "model_written.me", "winogenerated.me"])
def test_the_full_version_checks_before_its_files_are_fetched(tmp_path, capsys, spec):
    # absent files are warnings naming the fetch command; the `for b in levels(behavior)` families are checked on
    # the stand-in rows instead of failing for want of levels
    status = main(["check", str(SPECS / spec), "--set", "data=full", "--data", str(tmp_path)])
    err = capsys.readouterr().err
    assert status == 0, err
    assert "warning[W130]" in err and "moraleval data fetch" in err and "error[" not in err
