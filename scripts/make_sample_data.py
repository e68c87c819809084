#!/usr/bin/env python3
"""Regenerate ``moraleval/data/sample/`` (the quickstart's shipped sample) from a data root, deterministically.

The data root is a folder laid out like ``shared/data`` (see its README): ``bbq/<Category>.jsonl``,
``bbq/LICENSE``, ``winogender/templates.tsv``, ``winogender/occupations-stats.tsv``, ``winogender/LICENSE``,
each a byte-for-byte copy of the upstream file at the pinned commit.  Every input is checked against its pinned
sha256 before it is used, so the output depends only on the upstream bytes.

Sampling rule for BBQ (the only change made to any upstream content):

* categories: the category files present, in file-name order (6 at present; see ``BBQ_CATEGORIES``);
* in each category: the two numerically lowest ``question_index`` values for which all four combinations of
  ``context_condition`` (ambig / disambig) x ``question_polarity`` (neg / nonneg) occur;
* for each of those 2 x 4 = 8 (question_index, context_condition, question_polarity) cells: the row with the
  lowest ``example_id``;
* the chosen rows are written in source-file order, each one exactly as its source line (bytes unchanged,
  ``\\n``-terminated).  6 categories x 8 rows = 48 rows.

The Winogender files and both licences are copied whole.  Synthetic samples (``SYNTHETIC_GENERATORS``: rows made up
in a dataset's format, e.g. GlobalOpinionQA's) come from their own scripts.  ``ATTRIBUTION.md`` and ``SHA256SUMS``
are generated.

Usage::

    python scripts/make_sample_data.py                    # ../shared/data -> moraleval/data/sample
    python scripts/make_sample_data.py --check            # exit 1 if the shipped sample differs
    python scripts/make_sample_data.py --data-root DIR --out DIR

Standard library only, so it runs anywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
DEFAULT_OUT = REPO_ROOT / "moraleval" / "data" / "sample"

BBQ_REPO = "nyu-mll/BBQ"
BBQ_COMMIT = "bea11bd97d79217245b5871acd247b9d6eb24598"
WINOGENDER_REPO = "rudinger/winogender-schemas"
WINOGENDER_COMMIT = "1c7f8b481ad8a234b41e9f76a424d6e856e13f7f"

# Pinned sha256 of every input (relative to the data root) -> upstream path at the pinned commit.
BBQ_CATEGORIES = (
    "Age",
    "Disability_status",
    "Nationality",
    "Physical_appearance",
    "Religion",
    "Sexual_orientation",
)
INPUT_SHA256 = {
    "bbq/Age.jsonl": "46e805b3fc2d8cbd26eeb8e8430d98cf7b2dc9c83574ff3674e8ce4f0fca2a60",
    "bbq/Disability_status.jsonl": "375d40d9b71f056150264445ec189b13934998f3f49a1e311aa7578eb3b45e5f",
    "bbq/Nationality.jsonl": "a583e74666aec0341ded8aa3983e7cad694eb24de72c254d28b2df3035720090",
    "bbq/Physical_appearance.jsonl": "e48d7e13508565f4801574e611043470c25c95a0a62af3699cb5ee7cb02608fb",
    "bbq/Religion.jsonl": "cb9555f9f3454a52cd2df85956b59bd7fcca5aa922c8527693b1164d08417616",
    "bbq/Sexual_orientation.jsonl": "2c71036b9e7584fe589c42aef32c1a42bc01b9a5e9b1b8704342630cdb08cefd",
    "bbq/LICENSE": "95df2e9564862e51d69683a899b6dcc8218d577057bdf67322880769ff85f29e",
    "winogender/templates.tsv": "496f2e2dc77296bcebcdd8865a8dc5715ce22b772de9abb5f531d5b3114c48a0",
    "winogender/occupations-stats.tsv": "3f7f37c16381a70571356982ea7fe613ac700ad04a6d3b19b9f2be18248df567",
    "winogender/LICENSE": "22756588705091904ca7903df15eb7f6ed45a11a7eec0783567295e9502e9316",
}
UPSTREAM_PATH = {
    **{f"bbq/{c}.jsonl": f"data/{c}.jsonl" for c in BBQ_CATEGORIES},
    "bbq/LICENSE": "LICENSE",
    "winogender/templates.tsv": "data/templates.tsv",
    "winogender/occupations-stats.tsv": "data/occupations-stats.tsv",
    "winogender/LICENSE": "LICENSE",
}
# Files copied whole: output path -> input path.
COPIED = {
    "bbq/LICENSE": "bbq/LICENSE",
    "winogender/LICENSE": "winogender/LICENSE",
    "winogender/templates.tsv": "winogender/templates.tsv",
    "winogender/occupations-stats.tsv": "winogender/occupations-stats.tsv",
}
SAMPLE_PATH = "bbq/sample.jsonl"
TEMPLATES_PER_CATEGORY = 2
CELLS = (("ambig", "neg"), ("disambig", "neg"), ("ambig", "nonneg"), ("disambig", "nonneg"))
BBQ_FIELDS = (
    "example_id", "question_index", "question_polarity", "context_condition", "category", "answer_info",
    "additional_metadata", "context", "question", "ans0", "ans1", "ans2", "label",
)


class SampleDataError(Exception):
    pass


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified(data_root: Path, rel: str) -> bytes:
    """The bytes of an input file, after checking them against the pinned sha256."""
    path = data_root / rel
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SampleDataError(f"cannot read input {path}: {exc}") from exc
    actual = sha256_bytes(data)
    if actual != INPUT_SHA256[rel]:
        raise SampleDataError(
            f"input {path} does not match its pinned sha256 (expected {INPUT_SHA256[rel]}, got {actual}); "
            f"use the file from {UPSTREAM_PATH[rel]} at the pinned upstream commit"
        )
    return data


def select_bbq_lines(data: bytes, category: str) -> list[tuple[int, bytes, dict]]:
    """The chosen rows of one category file: (0-based line number, exact line bytes incl. ``\\n``, parsed row)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    rows: list[tuple[int, bytes, dict]] = []
    for lineno, line in enumerate(lines):
        if not line.strip():
            continue
        row = json.loads(line)
        if tuple(row) != BBQ_FIELDS:
            raise SampleDataError(f"bbq/{category}.jsonl line {lineno + 1}: unexpected fields {list(row)}")
        if row["category"] != category:
            raise SampleDataError(f"bbq/{category}.jsonl line {lineno + 1}: category {row['category']!r}")
        rows.append((lineno, line + b"\n", row))

    # first (lowest example_id) row of every (question_index, context_condition, question_polarity) cell
    first: dict[tuple[str, str, str], tuple[int, bytes, dict]] = {}
    for item in rows:
        row = item[2]
        key = (row["question_index"], row["context_condition"], row["question_polarity"])
        if key not in first or row["example_id"] < first[key][2]["example_id"]:
            first[key] = item
    complete = sorted(
        {qi for (qi, _, _) in first if all((qi, c, p) in first for c, p in CELLS)},
        key=lambda qi: (int(qi), qi),
    )
    if len(complete) < TEMPLATES_PER_CATEGORY:
        raise SampleDataError(f"bbq/{category}.jsonl: fewer than {TEMPLATES_PER_CATEGORY} complete templates")
    chosen = [first[(qi, c, p)] for qi in complete[:TEMPLATES_PER_CATEGORY] for c, p in CELLS]
    return sorted(chosen, key=lambda item: item[0])  # source order


def _repo_of(rel: str) -> str:
    return BBQ_REPO if rel.startswith("bbq/") else WINOGENDER_REPO


def attribution_text(chosen: dict[str, list[tuple[int, bytes, dict]]], sample_sha: str,
                     synthetic: str = "") -> str:
    n_rows = sum(len(v) for v in chosen.values())
    table = []
    for category, items in chosen.items():
        qis = sorted({it[2]["question_index"] for it in items}, key=int)
        ids = ", ".join(str(it[2]["example_id"]) for it in items)
        table.append(f"| `{category}` | {', '.join(qis)} | {ids} |")
    inputs = "\n".join(
        f"| `{rel}` | {_repo_of(rel)} `{UPSTREAM_PATH[rel]}` | `{INPUT_SHA256[rel]}` |" for rel in INPUT_SHA256
    )
    return f"""# Sample data shipped with moraleval: attribution

This folder holds small extracts of two public datasets so that the quickstart runs on a fresh install, with
no download, and synthetic rows in the format of datasets whose rows may not be redistributed (each synthetic
set says so in its section).  It is generated by `scripts/make_sample_data.py` (in the moraleval source repository) from
byte-for-byte copies of the upstream files, each checked against the sha256 listed at the end; rerun the
script to reproduce every file here exactly.  `SHA256SUMS` lists the checksum of every file in this folder.

The full datasets are fetched with `moraleval data fetch`; these extracts are for trying moraleval out, not
for reporting results.

## BBQ (Bias Benchmark for QA)

- Files: `bbq/sample.jsonl` ({n_rows} rows), `bbq/LICENSE`.
- Upstream: https://github.com/{BBQ_REPO} at commit `{BBQ_COMMIT}`, files `data/<Category>.jsonl` and `LICENSE`.
- Authors and paper (please cite): Alicia Parrish, Angelica Chen, Nikita Nangia, Vishakh Padmakumar, Jason
  Phang, Jana Thompson, Phu Mon Htut and Samuel R. Bowman (2022). *BBQ: A Hand-Built Bias Benchmark for
  Question Answering*. Findings of the Association for Computational Linguistics: ACL 2022, pages 2086-2105.
  https://aclanthology.org/2022.findings-acl.165
- Licence: Creative Commons Attribution 4.0 International (CC BY 4.0),
  https://creativecommons.org/licenses/by/4.0/ ; full text in `bbq/LICENSE` (copied unchanged from upstream).
- Changes: **sampling only.** `bbq/sample.jsonl` is a subset of the rows of six upstream category files
  (Age, Disability_status, Nationality, Physical_appearance, Religion, Sexual_orientation); every line in it
  is byte-for-byte identical to a line of the upstream file of its category (all 13 fields, same key order,
  same formatting, original `example_id`).  No row was edited, added or reordered within a category.
- How the rows were chosen (deterministic): for each category, in the order above, the two numerically
  lowest `question_index` values for which all four combinations of `context_condition` (ambig, disambig)
  and `question_polarity` (neg, nonneg) occur; for each of those 8 cells, the row with the lowest
  `example_id`.  The rows are written category by category, in source-file order within a category:
  8 rows per category, {n_rows} in total, balanced across context condition and question polarity.

| category | question_index | example_id of the chosen rows |
| --- | --- | --- |
{chr(10).join(table)}

sha256 of `bbq/sample.jsonl`: `{sample_sha}`.

## Winogender schemas

- Files: `winogender/templates.tsv` (120 templates), `winogender/occupations-stats.tsv` (60 occupations),
  `winogender/LICENSE`.
- Upstream: https://github.com/{WINOGENDER_REPO} at commit `{WINOGENDER_COMMIT}`, files
  `data/templates.tsv`, `data/occupations-stats.tsv` and `LICENSE`.
- Authors and paper (please cite): Rachel Rudinger, Jason Naradowsky, Brian Leonard and Benjamin Van Durme
  (2018). *Gender Bias in Coreference Resolution*. Proceedings of NAACL-HLT 2018, pages 8-14.
  https://aclanthology.org/N18-2002
- Licence: MIT, Copyright (c) 2018 Rachel Rudinger; full text in `winogender/LICENSE` (copied unchanged).
- Changes: none; both data files are complete, byte-for-byte copies of the upstream files.

{synthetic}## Upstream inputs

| input (under the data root) | upstream repository and path | sha256 |
| --- | --- | --- |
{inputs}
"""


# Synthetic samples: rows written for moraleval in a dataset's format (no upstream bytes), each by its own
# generator in scripts/ with `build() -> {path: bytes}` and `attribution(files) -> str` (its ATTRIBUTION.md section).
SYNTHETIC_GENERATORS = (
    "make_synthetic_samples",  # discrim-eval, model-written evaluations, Winogenerated (CC BY 4.0 upstream)
    "make_goqa_sample",  # GlobalOpinionQA (CC BY-NC-SA upstream: synthetic rows only)
)


def _generator(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_files() -> tuple[dict[str, bytes], str]:
    """The files of every synthetic sample and their ATTRIBUTION.md sections, in the order listed."""
    files: dict[str, bytes] = {}
    sections = []
    for name in SYNTHETIC_GENERATORS:
        gen = _generator(name)
        made = gen.build()
        files.update(made)
        sections.append(gen.attribution(made).rstrip("\n") + "\n\n")
    return files, "".join(sections)


def build(data_root: Path) -> dict[str, bytes]:
    """Every output file (path relative to the sample folder -> bytes), SHA256SUMS included."""
    out: dict[str, bytes] = {}
    chosen: dict[str, list[tuple[int, bytes, dict]]] = {}
    for category in BBQ_CATEGORIES:
        data = read_verified(data_root, f"bbq/{category}.jsonl")
        chosen[category] = select_bbq_lines(data, category)
    sample = b"".join(line for items in chosen.values() for _, line, _ in items)
    out[SAMPLE_PATH] = sample
    for dst, src in COPIED.items():
        out[dst] = read_verified(data_root, src)
    synthetic, sections = synthetic_files()
    out.update(synthetic)
    out["ATTRIBUTION.md"] = attribution_text(chosen, sha256_bytes(sample), sections).encode("utf-8")
    sums = "".join(f"{sha256_bytes(out[rel])}  {rel}\n" for rel in sorted(out))
    out["SHA256SUMS"] = sums.encode("ascii")
    return out


def write(files: dict[str, bytes], out_dir: Path) -> None:
    for rel, data in sorted(files.items()):
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def diff(files: dict[str, bytes], out_dir: Path) -> list[str]:
    """Differences between the generated files and ``out_dir`` (missing, changed, or unexpected files)."""
    problems = []
    for rel, data in sorted(files.items()):
        path = out_dir / rel
        if not path.is_file():
            problems.append(f"missing: {rel}")
        elif path.read_bytes() != data:
            problems.append(f"differs: {rel}")
    if out_dir.is_dir():
        for path in sorted(out_dir.rglob("*")):
            rel = path.relative_to(out_dir).as_posix()
            if path.is_file() and rel not in files and "__pycache__" not in path.parts:
                problems.append(f"unexpected: {rel}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                    help=f"folder laid out like shared/data (default: {DEFAULT_DATA_ROOT})")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing; exit 1 on any difference")
    args = ap.parse_args(argv)
    try:
        files = build(args.data_root)
    except SampleDataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        problems = diff(files, args.out)
        for p in problems:
            print(p)
        print("sample data is up to date" if not problems else f"{len(problems)} difference(s)")
        return 1 if problems else 0
    write(files, args.out)
    for rel in sorted(files):
        print(f"{sha256_bytes(files[rel])}  {len(files[rel]):>7}  {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
