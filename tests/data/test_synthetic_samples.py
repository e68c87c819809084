"""The synthetic samples of discrim-eval, the model-written evaluations and Winogenerated
(``moraleval/data/sample/synthetic/``): written by ``scripts/make_synthetic_samples.py`` byte for byte, and in the
exact upstream formats, every quirk a reader must survive present (these files are the readers' fixtures)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "moraleval" / "data" / "sample"
SYN = SAMPLE / "synthetic"
MWE = SYN / "model-written-evals"


def _script():
    path = REPO / "scripts" / "make_synthetic_samples.py"
    spec = importlib.util.spec_from_file_location("make_synthetic_samples", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_the_script_writes_the_shipped_files_byte_for_byte_and_sha256sums_covers_them():
    built = _script().build()
    sums = dict(reversed(line.split("  ", 1)) for line in (SAMPLE / "SHA256SUMS").read_text().splitlines())
    assert len(built) == 13
    for rel, data in built.items():
        assert (SAMPLE / rel).read_bytes() == data, rel
        assert sums[rel] == hashlib.sha256(data).hexdigest(), rel
    shipped = {p.relative_to(SAMPLE).as_posix() for p in SYN.rglob("*") if p.is_file()}
    assert shipped == set(built)


def test_the_check_mode_finds_a_changed_file(tmp_path, capsys):
    script = _script()
    assert script.main(["--out", str(tmp_path)]) == 0
    assert script.main(["--out", str(tmp_path), "--check"]) == 0
    victim = tmp_path / "synthetic" / "discrim-eval" / "explicit.jsonl"
    victim.write_bytes(victim.read_bytes().replace(b'"Black"', b'"black"', 1))
    assert script.main(["--out", str(tmp_path), "--check"]) == 1
    assert "differs: synthetic/discrim-eval/explicit.jsonl" in capsys.readouterr().out


@pytest.mark.parametrize("fill", ["explicit", "implicit"])
def test_discrim_eval_format(fill):
    data = rows(SYN / "discrim-eval" / f"{fill}.jsonl")
    assert all(list(r) == ["filled_template", "decision_question_id", "age", "gender", "race", "fill_type"]
               for r in data)
    # race capitalised except "white"; fill_type names the file; age written as a float
    assert {r["race"] for r in data} == {"white", "Black", "Asian", "Hispanic", "Native American"}
    assert {r["fill_type"] for r in data} == {fill}
    assert all(isinstance(r["age"], float) for r in data)
    assert {r["gender"] for r in data} == {"male", "female", "non-binary"}
    # the full grid per scenario: 9 ages x 3 genders x 5 races
    per = {}
    for r in data:
        per.setdefault(r["decision_question_id"], set()).add((r["age"], r["gender"], r["race"]))
    assert len(per) == 3 and all(len(cells) == 135 for cells in per.values())
    if fill == "explicit":
        assert all(f"{int(r['age'])}-year-old" in r["filled_template"] for r in data)
    else:  # the name conveys race and gender: the demographics are not written out
        assert not any(r["race"] == "Native American" and "Native American" in r["filled_template"] for r in data)


def test_persona_answers_have_their_leading_space():
    for path in sorted((MWE / "persona").glob("*.jsonl")):
        for r in rows(path):
            assert list(r) == ["question", "statement", "label_confidence", "answer_matching_behavior",
                               "answer_not_matching_behavior"]
            assert {r["answer_matching_behavior"], r["answer_not_matching_behavior"]} == {" Yes", " No"}
            assert r["question"].startswith("Is the following statement something you would say?\n\"")


def test_sycophancy_answers_are_a_string_or_a_list_in_philpapers2020():
    kinds = {}
    for path in sorted((MWE / "sycophancy").glob("*.jsonl")):
        for r in rows(path):
            assert r["question"].startswith("Hello, my name is") and r["question"].endswith("\n\nAnswer:")
            assert r["answer_matching_behavior"].startswith(" (")
            kinds.setdefault(path.stem, set()).add(type(r["answer_not_matching_behavior"]).__name__)
            if "political" in path.stem:
                assert r["user_affiliation"] in ("liberal", "conservative")
            else:
                assert "user_affiliation" not in r
    assert kinds == {"sycophancy_on_nlp_survey": {"str"}, "sycophancy_on_philpapers2020": {"list"},
                     "sycophancy_on_political_typology_quiz": {"str"}}
    phil = rows(MWE / "sycophancy" / "sycophancy_on_philpapers2020.jsonl")
    assert any(len(r["answer_not_matching_behavior"]) >= 2 for r in phil)
    assert all(a.startswith(" (") for r in phil for a in r["answer_not_matching_behavior"])


def test_advanced_ai_risk_has_the_layout_variations():
    qs = [r["question"] for p in sorted((MWE / "advanced-ai-risk").rglob("*.jsonl")) for r in rows(p)]
    assert all("Choices:" in q for q in qs)
    assert any("\n (A)No" in q or "(A)No" in q for q in qs)  # an option written without its space
    assert any(q.startswith("Question:") for q in qs)
    assert any(q.endswith("\n\nAnswer:") for q in qs)  # an Answer: tail
    assert any("\n (C)" in q for q in qs)  # a third option
    # ASCII JSON with \u escapes, as upstream writes these files
    raw = b"".join(p.read_bytes() for p in sorted((MWE / "advanced-ai-risk").rglob("*.jsonl")))
    assert raw.isascii()


def test_winogenerated_format():
    data = rows(MWE / "winogenerated" / "winogenerated_examples.jsonl")
    assert all(list(r) == ["index", "occupation", "other_person", "pronoun_options", "sentence_with_blank",
                           "BLS_percent_women_2019", "BLS_original_occupation"] for r in data)
    assert [r["index"] for r in data] == list(range(len(data)))
    assert {tuple(r["pronoun_options"]) for r in data} <= {("he", "she", "they"), ("his", "her", "their"),
                                                          ("him", "her", "them")}
    assert all(r["sentence_with_blank"].count("_") == 1 for r in data)
    assert all(isinstance(r["BLS_percent_women_2019"], (int, float)) and 0 <= r["BLS_percent_women_2019"] <= 100
               for r in data)
    per = {}
    for r in data:
        per.setdefault(r["occupation"], set()).add(r["BLS_percent_women_2019"])
    assert len(per) == 20 and all(len(v) == 1 for v in per.values())  # one share per occupation
    # the upstream typos a reader must not choke on
    assert any(r["other_person"] == "clien" for r in data)
    assert any(r["sentence_with_blank"].endswith("..") for r in data)
