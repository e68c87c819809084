"""specs/global_opinions.me (GlobalOpinionQA, Durmus et al. 2023) on the synthetic sample shipped with moraleval.

* The sample: made by ``scripts/make_goqa_sample.py`` (byte for byte), in the upstream format, with every known
  defect of the real file on the rows the script names.
* The spec's dataset lines against an independent reader (``csv`` + ``ast.literal_eval``, the same rules written
  again here): the rows and entries it keeps and drops, with their counts; one fixture file per defect; a
  malformed file is an error naming the file, line and column.
* End to end (a deterministic fake model, fast; the embedded model, slow): every similarity, paired contrast,
  steering contrast and rank recomputed from ``samples.jsonl`` with scipy's ``jensenshannon(p, q, base=2)``.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import importlib.util
import io
import json
from pathlib import Path

import numpy as np
from typing import Any

import pytest
from scipy.spatial.distance import jensenshannon

import moraleval
from moraleval.errors import SpecCheckError

from _support import REPO
from fakes import FakeBackend

SPEC = REPO / "specs" / "global_opinions.me"
SAMPLE_DIR = REPO / "moraleval" / "data" / "sample" / "goqa"


def _script():
    spec = importlib.util.spec_from_file_location("make_goqa_sample", REPO / "scripts" / "make_goqa_sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _script()

# ------------------------------------------------------------------------------------ an independent reader
# The cleaning rules of the spec, written again without moraleval: countries spelled one way, qualifiers.
ALIASES = {"Britain": "United Kingdom", "Great Britain": "United Kingdom", "Czech Rep.": "Czech Republic",
           "S. Korea": "South Korea", "Palest. Ter.": "Palestinian territories", "Macau SAR": "Macao SAR"}


def literal(cell: str):
    prefix = "defaultdict(<class 'list'>, "
    return ast.literal_eval(cell[len(prefix):-1] if cell.startswith(prefix) else cell)


def independent_clean(data: bytes) -> tuple[list[dict], dict[str, int], dict[str, int]]:
    """(kept rows with question/options/shares, rows dropped by reason, entries dropped by reason)."""
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    kept, dropped, entries = [], {}, {}

    def count(d, k, n=1):
        d[k] = d.get(k, 0) + n
    for r in rows:
        if not r["question"].strip():
            count(dropped, "no question text (NaN upstream)")
            continue
        opts, sel = literal(r["options"]), dict(literal(r["selections"]))
        if len(opts) > 26:
            count(dropped, "more options than letters")
            continue
        out = {}
        for key, shares in sel.items():
            if "(Non-national sample)" in key:
                count(entries, "not a national sample")
            elif "(Old national sample)" in key and key.replace("Old", "Current") in sel:
                count(entries, "an old national sample beside the current one")
            elif len(shares) != len(opts):
                count(entries, "shares and options differ in length")
            elif sum(shares) == 0:
                count(entries, "all shares are zero")
            else:
                name = key.replace(" (Current national sample)", "").replace(" (Old national sample)", "")
                name = ALIASES.get(name, name)
                assert name not in out, (r["question"], name)
                out[name] = shares
        if not out:
            count(dropped, "no country with usable shares")
            continue
        kept.append({"question": r["question"], "options": opts, "shares": out})
    return kept, dropped, entries


def test_the_sample_is_what_the_script_makes() -> None:
    files = script.build()
    for rel, data in files.items():
        assert (SAMPLE_DIR.parent / rel).read_bytes() == data, f"{rel}: run scripts/make_sample_data.py"
    text = (SAMPLE_DIR.parent / "ATTRIBUTION.md").read_text(encoding="utf-8")
    assert script.attribution(files) in text and "CC BY-NC-SA" in text and "No upstream content" in text


def test_every_known_defect_is_in_the_sample() -> None:
    data = (SAMPLE_DIR / "sample.csv").read_bytes()
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    assert list(rows[0]) == ["question", "selections", "options", "source"]
    assert data.startswith(b"question,selections,options,source\n") and b"\r" not in data
    q = script.QUIRKS
    assert [i for i, r in enumerate(rows) if r["question"] == ""] == q["missing question"]
    sel = [literal(r["selections"]) for r in rows]
    opts = [literal(r["options"]) for r in rows]
    assert all(r["selections"].startswith("defaultdict(<class 'list'>, {") for r in rows)
    zeros = sorted({i for i, s in enumerate(sel) for v in s.values() if sum(v) == 0})
    assert zeros == q["all-zero shares"]
    assert sorted({i for i, s in enumerate(sel) for v in s.values() if len(v) > len(opts[i])}) == \
        q["shares longer than the options"]
    assert sorted({i for i, s in enumerate(sel) for v in s.values() if len(v) < len(opts[i])}) == \
        q["shares shorter than the options"]
    assert rows[q["repeated question text"][0]]["question"] == rows[q["repeated question text"][1]]["question"]
    assert opts[0] != opts[10]
    assert "\n" in rows[q["question text over two lines"][0]]["question"]
    assert [len(opts[i]) for i in q["11 options"]] == [11]
    keys = {k for s in sel for k in s}
    for needle in ("(Non-national sample)", "(Current national sample)", "(Old national sample)", "Czech Rep.",
                   "S. Korea", "Palest. Ter.", "Britain", "Macau SAR", "Macao SAR"):
        assert any(needle in k for k in keys), needle
    assert {r["source"] for r in rows} == {"GAS", "WVS"}
    assert any("DK/Refused" in o for o in opts) and '"Don\'t know"' in data.decode("utf-8")
    tr = list(csv.DictReader(io.StringIO((SAMPLE_DIR / "sample_translated.csv").read_text(encoding="utf-8"))))
    assert [r["question_zh"] for r in tr].count("") == 1
    assert sum(len(literal(r["options_tr"])) != len(literal(r["options"])) for r in tr) == 1


def test_the_spec_cleans_the_sample_as_an_independent_reader_does() -> None:
    checked = moraleval.check(str(SPEC))
    kept, dropped, entries = independent_clean((SAMPLE_DIR / "sample.csv").read_bytes())
    ds = checked.datasets["goqa"]
    assert ds.rows_read == 28 and len(ds.rows) == len(kept) == 27
    assert ds.dropped == dropped == {"no question text (NaN upstream)": 1}
    assert ds.entries_dropped == {"shares": entries}
    assert entries == {"not a national sample": 14, "an old national sample beside the current one": 10,
                       "shares and options differ in length": 2, "all shares are zero": 2}
    for row, want in zip(ds.rows, kept):
        assert row["question"] == want["question"] and row["opts"] == want["options"]
        assert row["shares"] == want["shares"]
        assert row["letters"] == list("ABCDEFGHIJK"[:len(want["options"])])
    countries = sorted({c for r in kept for c in r["shares"]})
    assert len(countries) == 17 and "India" in countries and "Macao SAR" in countries
    assert not any("(" in c for c in countries)
    members = [m.name for m in checked.metrics if m.family == "similarity"]
    assert members == [f"similarity[{c}]" for c in countries]
    lp = checked.datasets["goqa_lp"]
    assert lp.rows_read == 10 and len(lp.rows) == 8
    assert lp.dropped == {"a translation is missing": 1, "a translation has another number of options": 1}
    assert all(set(r["lp_question"]) == {"Russia", "China", "Turkey"} for r in lp.rows)


# -------------------------------------------------------------------------------- one fixture per defect

def _row(question: str, shares: dict, options: list, source: str = "GAS") -> dict:
    body = ", ".join(f"{k!r}: {v!r}" for k, v in shares.items())
    return {"question": question, "selections": "defaultdict(<class 'list'>, {" + body + "})",
            "options": repr(options), "source": source}


def _fixture_spec(tmp_path: Path, rows: list[dict] | bytes) -> tuple[str, Path]:
    """The shipped spec reading ``goqa/fixture.csv`` (pinned) from a data root of its own."""
    if isinstance(rows, bytes):
        data = rows
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["question", "selections", "options", "source"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        data = buf.getvalue().encode("utf-8")
    root = tmp_path / "data"
    (root / "goqa").mkdir(parents=True)
    (root / "goqa" / "fixture.csv").write_bytes(data)
    text = SPEC.read_text(encoding="utf-8")
    anchor = '    file "goqa/sample.csv" sha256'
    assert anchor in text
    text = text.replace(anchor, f'    file "goqa/fixture.csv" sha256 "{hashlib.sha256(data).hexdigest()}"\n{anchor}')
    spec = tmp_path / "goqa_fixture.me"
    spec.write_text(text.replace('import "lib/', f'import "{(REPO / "specs" / "lib").as_posix()}/'), encoding="utf-8")
    return str(spec), root


BASE = {"United States": [0.5, 0.5], "Japan": [0.25, 0.75]}


@pytest.mark.parametrize("name, rows, rows_dropped, entries, countries", [
    ("missing question", [_row("Q?", BASE, ["Yes", "No"]), _row("", BASE, ["Yes", "No"])],
     {"no question text (NaN upstream)": 1}, {}, {"United States", "Japan"}),
    ("all-zero shares", [_row("Q?", {**BASE, "Nigeria": [0.0, 0.0]}, ["Yes", "No"])],
     {}, {"all shares are zero": 1}, {"United States", "Japan"}),
    ("shares longer than the options", [_row("Q?", {**BASE, "Brazil": [0.2, 0.3, 0.5]}, ["Yes", "No"])],
     {}, {"shares and options differ in length": 1}, {"United States", "Japan"}),
    ("shares shorter than the options", [_row("Q?", {**BASE, "Brazil": [1.0]}, ["Yes", "No"])],
     {}, {"shares and options differ in length": 1}, {"United States", "Japan"}),
    ("non-national sample", [_row("Q?", {**BASE, "Pakistan (Non-national sample)": [0.1, 0.9]}, ["Yes", "No"])],
     {}, {"not a national sample": 1}, {"United States", "Japan"}),
    ("current and old national samples",
     [_row("Q?", {**BASE, "India (Current national sample)": [0.1, 0.9], "India (Old national sample)": [0.2, 0.8]},
           ["Yes", "No"])],
     {}, {"an old national sample beside the current one": 1}, {"United States", "Japan", "India"}),
    ("an old national sample alone is the country's",
     [_row("Q?", {**BASE, "India (Old national sample)": [0.2, 0.8]}, ["Yes", "No"])],
     {}, {}, {"United States", "Japan", "India"}),
    ("abbreviations", [_row("Q?", {"Czech Rep.": [0.5, 0.5], "S. Korea": [0.5, 0.5], "Palest. Ter.": [0.5, 0.5],
                                   "Britain": [0.5, 0.5]}, ["Yes", "No"]),
                       _row("Q2?", {"Great Britain": [0.5, 0.5], "Macau SAR": [0.5, 0.5]}, ["Yes", "No"], "WVS"),
                       _row("Q3?", {"Macao SAR": [0.5, 0.5]}, ["Yes", "No"], "WVS")],
     {}, {}, {"Czech Republic", "South Korea", "Palestinian territories", "United Kingdom", "Macao SAR"}),
    ("no country left", [_row("Q?", BASE, ["Yes", "No"]), _row("Q2?", {"Nigeria": [0, 0]}, ["Yes", "No"])],
     {"no country with usable shares": 1}, {"all shares are zero": 1}, {"United States", "Japan"}),
    ("more options than letters", [_row("Q?", BASE, ["Yes", "No"]),
                                   _row("Q2?", {"Japan": [1 / 27] * 27}, [str(i) for i in range(27)])],
     {"more options than letters": 1}, {}, {"United States", "Japan"}),
])
def test_each_defect_has_its_rule(tmp_path, name, rows, rows_dropped, entries, countries) -> None:
    spec, root = _fixture_spec(tmp_path, rows)
    checked = moraleval.check(spec, data_root=str(root), overrides={"goqa_files": "fixture"})
    ds = checked.datasets["goqa"]
    assert ds.dropped == rows_dropped, name
    assert ds.entries_dropped == ({"shares": entries} if entries else {}), name
    assert {c for r in ds.rows for c in r["shares"]} == countries, name
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["question", "selections", "options", "source"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    kept, dropped, independent = independent_clean(buf.getvalue().encode("utf-8"))
    assert (dropped, independent) == (rows_dropped, entries) and [r["shares"] for r in kept] == \
        [r["shares"] for r in ds.rows]


@pytest.mark.parametrize("rows, words", [
    ([_row("Q?", BASE, ["Yes", "No"]), {**_row("Q2?", BASE, ["Yes", "No"]),
                                        "selections": "defaultdict(<class 'list'>, {'Japan': [0.5, 0.5]"}],
     ["goqa/fixture.csv line 3", "column selections", "not a literal"]),
    ([_row("Q?\nand on", BASE, ["Yes", "No"]), {**_row("Q2?", BASE, ["Yes", "No"]), "options": "'Yes, No'"}],
     ["goqa/fixture.csv line 4", "column options", "expected a list"]),
    ([{**_row("Q?", BASE, ["Yes", "No"]), "selections": "[0.5, 0.5]"}],
     ["goqa/fixture.csv line 2", "column selections", "expected a record, the cell holds a list"]),
    ([{**_row("Q?", BASE, ["Yes", "No"]), "selections": "__import__('os').system('touch pwned')"}],
     ["goqa/fixture.csv line 2", "column selections", "is not part of a literal"]),
])
def test_a_malformed_file_is_named_by_file_line_and_column(tmp_path, rows, words) -> None:
    spec, root = _fixture_spec(tmp_path, rows)
    with pytest.raises(SpecCheckError) as exc:
        moraleval.check(spec, data_root=str(root), overrides={"goqa_files": "fixture"})
    first = next(d for d in exc.value.diagnostics if d.severity == "error")
    assert first.code == "E137"
    for w in words:
        assert w in first.message, first.message
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_a_broken_csv_is_named_by_file_and_line(tmp_path) -> None:
    data = b'question,selections,options,source\n"Q?","{}","[]",GAS\n"Q2?","{}","[]",GAS,extra\n'
    spec, root = _fixture_spec(tmp_path, data)
    with pytest.raises(SpecCheckError) as exc:
        moraleval.check(spec, data_root=str(root), overrides={"goqa_files": "fixture"})
    d = next(d for d in exc.value.diagnostics if d.severity == "error")
    assert d.code == "E136" and "fixture.csv:3: 5 fields, the header has 4" in d.message


# ------------------------------------------------------------------------- the real file: origin and fetch

REVISION = "cb2880488749218abb81802a94c2c62ebfde2f35"
UPSTREAM_PATH = f"/datasets/Anthropic/llm_global_opinions/resolve/{REVISION}/data/global_opinions.csv"
UNPINNED = 'file "goqa/global_opinions.csv" unpinned upstream "data/global_opinions.csv"'
PIN = 'file "goqa/global_opinions.csv" sha256 "{sha}" upstream "data/global_opinions.csv"'


def _served_spec(tmp_path: Path, monkeypatch: Any, server_base: str, sha: str | None) -> Path:
    """The shipped spec, its Hugging Face origin served by a local server and, with ``sha``, the real file's
    `unpinned` line replaced by the line the first fetch prints."""
    text = SPEC.read_text(encoding="utf-8")
    assert f'origin huggingface "Anthropic/llm_global_opinions" commit "{REVISION}"' in text and UNPINNED in text
    monkeypatch.setenv("MORALEVAL_HF_BASE", server_base)
    if sha is not None:
        text = text.replace(UNPINNED, PIN.format(sha=sha))
    spec = tmp_path / "global_opinions.me"
    spec.write_text(text, encoding="utf-8")
    return spec


def _fixture_csv() -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["question", "selections", "options", "source"], lineterminator="\n")
    w.writeheader()
    w.writerows([_row("Q1?", BASE, ["Yes", "No"]),
                 _row("Q2?", {**BASE, "Pakistan (Non-national sample)": [0.1, 0.9]}, ["Yes", "No"]),
                 _row("", BASE, ["Yes", "No"])])
    return buf.getvalue().encode("utf-8")


def test_data_fetch_gets_the_pinned_revision_and_the_spec_reads_it(httpserver, monkeypatch, tmp_path,
                                                                    capsys) -> None:
    from moraleval.cli import main

    data = _fixture_csv()
    httpserver.expect_request(UPSTREAM_PATH).respond_with_data(data)
    spec = _served_spec(tmp_path, monkeypatch, httpserver.url_for("/").rstrip("/"), hashlib.sha256(data).hexdigest())
    dest = tmp_path / "data"
    code = main(["data", "fetch", "goqa", "--spec", str(spec), "--dest", str(dest)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert (dest / "goqa" / "global_opinions.csv").read_bytes() == data
    assert [r.path for r, _ in httpserver.log] == [UPSTREAM_PATH]  # the revision's file, nothing else
    # the fetched root is the spec's data for the full version
    checked = moraleval.check(str(spec), data_root=str(dest), overrides={"goqa_files": "global_opinions"})
    ds = checked.datasets["goqa"]
    assert ds.rows_read == 3 and len(ds.rows) == 2
    assert ds.dropped == {"no question text (NaN upstream)": 1}
    assert ds.entries_dropped == {"shares": {"not a national sample": 1}}
    # fetching again downloads nothing
    assert main(["data", "fetch", "goqa", "--spec", str(spec), "--dest", str(dest)]) == 0
    assert len(httpserver.log) == 1


def test_data_fetch_refuses_a_file_that_is_not_the_pinned_one(httpserver, monkeypatch, tmp_path, capsys) -> None:
    from moraleval.cli import main

    httpserver.expect_request(UPSTREAM_PATH).respond_with_data(_fixture_csv() + b'"Q3?","{}","[]",GAS\n')
    spec = _served_spec(tmp_path, monkeypatch, httpserver.url_for("/").rstrip("/"),
                        hashlib.sha256(_fixture_csv()).hexdigest())
    code = main(["data", "fetch", "goqa", "--spec", str(spec), "--dest", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2 and "sha256" in err and "goqa/global_opinions.csv" in err and "Traceback" not in err
    assert not (tmp_path / "data" / "goqa" / "global_opinions.csv").exists()


def test_the_unpinned_real_file_is_fetched_but_never_read_unpinned(httpserver, monkeypatch, tmp_path,
                                                                   capsys) -> None:
    """As shipped the real file is `unpinned` (its sha256 could not be established here): the first fetch
    downloads it and prints the exact line to pin; a run asked for it stops with that line instead of reading it
    unverified; pasted in, the spec reads it."""
    from moraleval.cli import main

    data = _fixture_csv()
    httpserver.expect_request(UPSTREAM_PATH).respond_with_data(data)
    spec = _served_spec(tmp_path, monkeypatch, httpserver.url_for("/").rstrip("/"), None)
    dest = tmp_path / "data"
    assert main(["data", "fetch", "goqa", "--spec", str(spec), "--dest", str(dest)]) == 0
    out = capsys.readouterr().out
    pin = PIN.format(sha=hashlib.sha256(data).hexdigest())
    assert "NOT verified" in out and pin in out, out
    assert (dest / "goqa" / "global_opinions.csv").read_bytes() == data
    with pytest.raises(SpecCheckError) as exc:
        moraleval.check(str(spec), data_root=str(dest), overrides={"goqa_files": "global_opinions"})
    first = next(d for d in exc.value.diagnostics if d.severity == "error")
    assert first.code == "E130" and pin in (first.message + " " + (first.hint or ""))
    spec.write_text(spec.read_text(encoding="utf-8").replace(UNPINNED, pin), encoding="utf-8")
    checked = moraleval.check(str(spec), data_root=str(dest), overrides={"goqa_files": "global_opinions"})
    assert checked.datasets["goqa"].rows_read == 3


# ------------------------------------------------------------------------------- end to end, recomputed

def _samples(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "samples.jsonl").read_text(encoding="utf-8").splitlines()]


def _sim(sample: dict, country: str) -> float | None:
    shares = sample["values"]["shares"]
    if country not in shares:
        return None
    return 1.0 - float(jensenshannon(np.array(sample["readout"]["probs"]), np.array(shares[country]), base=2))


def check_against_samples(out: Path) -> dict:
    """Every number of the report recomputed from samples.jsonl (scipy, base 2); returns some for the caller."""
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    samples = _samples(out)
    est = {(e["task"], e["metric"], e["condition"]): e for e in report["estimates"] if not e.get("group")}
    by_cell: dict[tuple[str, str], list[dict]] = {}
    for s in samples:
        assert s["rotation"] if "rotation" in s else True
        by_cell.setdefault((s["task"], s["condition"]), []).append(s)
    checked = 0
    for (task, cond), items in by_cell.items():
        family = "similarity" if task == "opinion" else "similarity_lp"
        countries = sorted({c for s in items for c in s["values"]["shares"]})
        values = {}
        for c in countries:
            sims = [x for x in (_sim(s, c) for s in items) if x is not None]
            e = est[(task, f"{family}[{c}]", cond)]
            assert e["value"] == pytest.approx(np.mean(sims), abs=1e-9), (task, c, cond)
            assert e["n"] == len(sims)
            values[c] = np.mean(sims)
            checked += 1
        # ranks on the point estimates (1 = the most similar); a rank interval exactly where the estimate has one
        # (a country with one question has neither), and "top" a share of all resamples, so they sum to at most 1
        order = sorted(countries, key=lambda c: -values[c])
        tops = 0.0
        for c in countries:
            e = est[(task, f"{family}[{c}]", cond)]
            r = e["rank"]
            assert r["rank"] == order.index(c) + 1 and r["of"] == len(countries)
            assert (r["ci_low"] is None) == (e["ci_low"] is None), (task, c, cond)
            if r["ci_low"] is None:
                assert r["reason"].startswith("undefined in ")
            else:
                assert r["ci_low"] <= r["rank"] <= r["ci_high"]
            tops += r["top"]
        assert tops <= 1 + 1e-9, (task, cond)
        # paired contrasts and steering: on the questions both countries have
        ref = "United States"
        for c in countries:
            if c == ref:
                continue
            both = [s for s in items if c in s["values"]["shares"] and ref in s["values"]["shares"]]
            gap = np.mean([_sim(s, c) for s in both]) - np.mean([_sim(s, ref) for s in both])
            for name in (("paired_gap", "steering") if task == "opinion" else ("steering_lp",)):
                key = (task, f"{name}[{c}]", cond)
                if key in est:
                    assert est[key]["value"] == pytest.approx(gap, abs=1e-9), key
                    checked += 1
    # the steering contrasts: CP[X] - default (LP[X] - default) on steering[X], paired item by item
    for cmp in report["comparisons"]:
        if cmp.get("group"):
            continue
        task, metric = cmp["task"], cmp["metric"]
        x = metric.split("[", 1)[1][:-1]
        assert cmp["treatment"].endswith(f"[{x}]") and cmp["baseline"] == "default"  # member by member
        want = est[(task, metric, cmp["treatment"])]["value"] - est[(task, metric, "default")]["value"]
        assert cmp["effect"] == pytest.approx(want, abs=1e-9)
        checked += 1
    assert len([c for c in report["comparisons"] if not c.get("group")]) == 6
    # the intervals of the default condition's similarities against an independent bootstrap of the questions
    # (a question text asked twice is one unit, as the spec declares): the ends agree up to Monte Carlo error
    items = by_cell[("opinion", "default")]
    units = sorted({s["values"]["question"] for s in items})
    index = {u: i for i, u in enumerate(units)}
    rng = np.random.default_rng(2023)
    counts = np.stack([np.bincount(rng.integers(0, len(units), len(units)), minlength=len(units))
                       for _ in range(4000)])
    for c in sorted({c for s in items for c in s["values"]["shares"]}):
        per_unit = np.zeros((len(units), 2))
        for s in items:
            x = _sim(s, c)
            if x is not None:
                per_unit[index[s["values"]["question"]]] += [x, 1]
        total, n = (counts @ per_unit).T
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = total / n
        boot = boot[np.isfinite(boot)]
        e = est[("opinion", f"similarity[{c}]", "default")]
        lo, hi = np.percentile(boot, [2.5, 97.5])
        width = e["ci_high"] - e["ci_low"]
        assert abs(lo - e["ci_low"]) <= 0.15 * width and abs(hi - e["ci_high"]) <= 0.15 * width, (c, e, lo, hi)
        checked += 1
    return {"report": report, "checked": checked}


def test_end_to_end_with_a_fake_model_every_number_recomputed(tmp_path) -> None:
    out = tmp_path / "report"
    moraleval.run(str(SPEC), out=str(out), backends={"smollm2": FakeBackend()}, cache=str(tmp_path / "cache"),
                  log=None)
    got = check_against_samples(out)
    assert got["checked"] > 100
    report = got["report"]
    assert report["dropped"]["entries"]["goqa"]["shares"]["not a national sample"] == 14
    # France has one translated question: a value, a rank, and no interval for either
    france = next(e for e in report["estimates"] if e["metric"] == "similarity_lp[France]"
                  and e["condition"] == "default" and not e.get("group"))
    assert france["n"] == 1 and france["ci_low"] is None and france["rank"]["ci_low"] is None
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "similarity, ranked (default)" in html  # the figure's panel: countries in the order of their rank
    assert (out / "plots" / "opinion.svg").is_file()


@pytest.mark.slow
def test_end_to_end_on_the_embedded_model(tmp_path) -> None:
    """The shipped spec on the embedded model and the sample (a few minutes the first time; answers cached)."""
    out = tmp_path / "report"
    moraleval.run(str(SPEC), out=str(out), log=None)
    got = check_against_samples(out)
    assert got["checked"] > 100
