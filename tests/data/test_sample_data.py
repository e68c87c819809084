"""The sample data shipped in ``moraleval/data/sample`` is intact, balanced, and exactly what
``scripts/make_sample_data.py`` makes from the upstream files.

Where the upstream copies (``../shared/data``) are present, the whole folder is regenerated and compared byte for
byte, and every BBQ row is checked against the upstream lines.  Where they are absent (a checkout without
``shared/``), the same tests check the files against ``SHA256SUMS`` and against hashes pinned independently of it.
"""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

from moraleval.data import fetch as datafetch
from moraleval.data.fetch import sample_data_root

REPO = Path(__file__).resolve().parents[2]
SAMPLE = Path(datafetch.__file__).resolve().parent / "sample"
UPSTREAM = REPO.parent / "shared" / "data"
HAVE_UPSTREAM = (UPSTREAM / "bbq" / "Age.jsonl").is_file()

# Pinned here, independently of SHA256SUMS: change only together with the specs that pin the same values.
SAMPLE_JSONL_SHA256 = "c9de9aa01f1c0668e51e2b1a73d1a8038c3d915240a0375f321c2928d6629f48"
EXPECTED_FILES = {
    "ATTRIBUTION.md",
    "SHA256SUMS",
    "bbq/LICENSE",
    "bbq/sample.jsonl",
    "winogender/LICENSE",
    "winogender/occupations-stats.tsv",
    "winogender/templates.tsv",
    # GlobalOpinionQA: synthetic rows in its format (scripts/make_goqa_sample.py), no upstream content
    "goqa/sample.csv",
    "goqa/sample_translated.csv",
}
BBQ_FIELDS = [
    "example_id", "question_index", "question_polarity", "context_condition", "category", "answer_info",
    "additional_metadata", "context", "question", "ans0", "ans1", "ans2", "label",
]


def _load_script():
    path = REPO / "scripts" / "make_sample_data.py"
    spec = importlib.util.spec_from_file_location("make_sample_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _load_script()
# The synthetic samples (scripts/make_synthetic_samples.py, included by make_sample_data.py): their own tests are
# tests/data/test_synthetic_samples.py.
SYNTHETIC_FILES = set(script.synthetic_files()[0])
EXPECTED_FILES = EXPECTED_FILES | SYNTHETIC_FILES


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shipped_files() -> set[str]:
    return {p.relative_to(SAMPLE).as_posix() for p in SAMPLE.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def sums() -> dict[str, str]:
    out = {}
    for line in (SAMPLE / "SHA256SUMS").read_text("ascii").splitlines():
        digest, rel = line.split("  ", 1)
        out[rel] = digest
    return out


def sample_lines() -> list[bytes]:
    data = (SAMPLE / "bbq" / "sample.jsonl").read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


# --------------------------------------------------------------------------------------------------------------


def test_sample_root_is_inside_the_package():
    assert sample_data_root() == SAMPLE
    assert SAMPLE.is_dir()


def test_exactly_the_expected_files_are_shipped():
    assert shipped_files() == EXPECTED_FILES


def test_sha256sums_match_the_files():
    listed = sums()
    assert set(listed) == EXPECTED_FILES - {"SHA256SUMS"}
    for rel, digest in listed.items():
        assert sha((SAMPLE / rel).read_bytes()) == digest, rel


def test_pinned_hashes():
    """Independent of SHA256SUMS: the sample pin, and the whole copies equal the upstream files' pins."""
    assert sha((SAMPLE / "bbq" / "sample.jsonl").read_bytes()) == SAMPLE_JSONL_SHA256
    for dst, src in script.COPIED.items():
        assert sha((SAMPLE / dst).read_bytes()) == script.INPUT_SHA256[src], dst


def test_bbq_sample_is_balanced():
    rows = [json.loads(line) for line in sample_lines()]
    assert len(rows) == 48
    assert all(list(r) == BBQ_FIELDS for r in rows)
    by_cat = collections.defaultdict(list)
    for r in rows:
        by_cat[r["category"]].append(r)
    assert list(by_cat) == list(script.BBQ_CATEGORIES)  # category blocks, in file-name order
    for cat, items in by_cat.items():
        assert len(items) == 8, cat
        qis = sorted({r["question_index"] for r in items}, key=int)
        assert len(qis) == 2, cat
        cells = collections.Counter((r["question_index"], r["context_condition"], r["question_polarity"])
                                    for r in items)
        assert set(cells) == {(q, c, p) for q in qis for c in ("ambig", "disambig") for p in ("neg", "nonneg")}
        assert set(cells.values()) == {1}
        ids = [r["example_id"] for r in items]
        assert ids == sorted(ids), f"{cat}: rows not in source order"
    conditions = collections.Counter(r["context_condition"] for r in rows)
    polarities = collections.Counter(r["question_polarity"] for r in rows)
    assert conditions == {"ambig": 24, "disambig": 24} and polarities == {"neg": 24, "nonneg": 24}


def test_winogender_copies_are_complete():
    templates = (SAMPLE / "winogender" / "templates.tsv").read_text("utf-8").splitlines()
    stats = (SAMPLE / "winogender" / "occupations-stats.tsv").read_text("utf-8").splitlines()
    assert templates[0].split("\t") == ["occupation(0)", "other-participant(1)", "answer", "sentence"]
    assert len(templates) - 1 == 120
    assert stats[0].split("\t") == ["occupation", "bergsma_pct_female", "bls_pct_female", "bls_year"]
    assert len(stats) - 1 == 60


def test_licences_and_attribution():
    assert (SAMPLE / "bbq" / "LICENSE").read_text("utf-8").startswith("Attribution 4.0 International")
    assert (SAMPLE / "winogender" / "LICENSE").read_text("utf-8").startswith("MIT License")
    text = (SAMPLE / "ATTRIBUTION.md").read_text("utf-8")
    for needle in (script.BBQ_COMMIT, script.WINOGENDER_COMMIT, "CC BY 4.0", "MIT", "Parrish", "Rudinger",
                   "sampling only", SAMPLE_JSONL_SHA256):
        assert needle in text


def test_reproduced_exactly_from_upstream():
    """SHA256SUMS is exactly what the generator writes for the shipped files; with the upstream copies,
    regenerating gives exactly the shipped folder."""
    expected = "".join(f"{sha((SAMPLE / rel).read_bytes())}  {rel}\n"
                       for rel in sorted(EXPECTED_FILES - {"SHA256SUMS"}))
    assert (SAMPLE / "SHA256SUMS").read_text("ascii") == expected
    if HAVE_UPSTREAM:
        files = script.build(UPSTREAM)
        assert set(files) == shipped_files()
        for rel, data in files.items():
            assert (SAMPLE / rel).read_bytes() == data, f"{rel} differs: run scripts/make_sample_data.py"
        assert script.diff(files, SAMPLE) == []


def test_every_row_is_an_upstream_line():
    """Each line is upstream-style JSON (``json.dumps`` defaults, as upstream writes it) whose example_id matches
    the attribution table; with the upstream copies, each line is byte-identical to the upstream line of the same
    example_id, and the selection rule picks exactly these lines."""
    lines = sample_lines()
    text = (SAMPLE / "ATTRIBUTION.md").read_text("utf-8")
    for line in lines:
        assert json.dumps(json.loads(line), ensure_ascii=False).encode("utf-8") == line
    for cat in script.BBQ_CATEGORIES:
        ids = ", ".join(str(json.loads(ln)["example_id"]) for ln in lines if json.loads(ln)["category"] == cat)
        assert f"| `{cat}` | 1, 2 | {ids} |" in text
    if HAVE_UPSTREAM:
        for line in lines:
            row = json.loads(line)
            upstream = (UPSTREAM / "bbq" / f"{row['category']}.jsonl").read_bytes().split(b"\n")
            assert upstream[row["example_id"]] == line
        for cat in script.BBQ_CATEGORIES:
            data = (UPSTREAM / "bbq" / f"{cat}.jsonl").read_bytes()
            chosen = [ln[:-1] for _, ln, _ in script.select_bbq_lines(data, cat)]
            assert chosen == [ln for ln in lines if json.loads(ln)["category"] == cat]


def test_selection_rule_on_synthetic_rows():
    """The rule itself: lowest complete templates, first example_id per cell, source order."""
    def row(eid, qi, cond, pol):
        r = dict.fromkeys(BBQ_FIELDS, "")
        r.update(example_id=eid, question_index=qi, context_condition=cond, question_polarity=pol, category="X")
        return json.dumps(r)

    lines = [
        row(0, "3", "ambig", "neg"), row(1, "3", "disambig", "neg"),  # template 3 incomplete (2 cells)
        row(2, "10", "ambig", "neg"), row(3, "10", "disambig", "neg"),
        row(4, "10", "ambig", "nonneg"), row(5, "10", "disambig", "nonneg"),
        row(6, "2", "disambig", "nonneg"), row(7, "2", "ambig", "nonneg"),
        row(8, "2", "disambig", "neg"), row(9, "2", "ambig", "neg"), row(10, "2", "ambig", "neg"),
        row(11, "11", "ambig", "neg"), row(12, "11", "disambig", "neg"),
        row(13, "11", "ambig", "nonneg"), row(14, "11", "disambig", "nonneg"),
    ]
    data = ("\n".join(lines) + "\n").encode()
    chosen = script.select_bbq_lines(data, "X")
    assert [r["example_id"] for _, _, r in chosen] == [2, 3, 4, 5, 6, 7, 8, 9]  # "2" < "10" numerically
    assert all(line.endswith(b"\n") for _, line, _ in chosen)


def test_generator_refuses_altered_input(tmp_path):
    (tmp_path / "bbq").mkdir()
    (tmp_path / "bbq" / "Age.jsonl").write_bytes(b'{"example_id": 0}\n')
    with pytest.raises(script.SampleDataError, match="does not match its pinned sha256"):
        script.build(tmp_path)
