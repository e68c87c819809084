"""Cells that hold lists and records (GlobalOpinionQA's `selections`): `drop entries of COLUMN where ...` with its
counts in the plan and the report, the row functions that rebuild a record (`record`, `values`, `sum`,
`parse_literal(s, kind)`), `levels()` of a list or record column, and errors that name the file, line and column
of the row that failed."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import pytest

import moraleval
from moraleval.cli.plan import summarise_plan
from moraleval.data.tables import read_table, read_table_lines
from moraleval.errors import DataError, SpecCheckError
from moraleval.language.parser import parse_expression
from moraleval.language.rowexpr import evaluate

ROWS = [
    {"question": "Q one?", "selections": "defaultdict(<class 'list'>, {'A': [0.5, 0.5], 'B (Non-national sample)': "
                                         "[0.2, 0.8], 'C': [0.0, 0.0]})", "options": "['Yes', 'No']"},
    {"question": "Q two,\nover two lines?", "selections": "defaultdict(<class 'list'>, {'A': [0.1, 0.2, 0.7], "
                                                          "'C': [0.3, 0.7]})", "options": "['x', 'y', \"z's\"]"},
    {"question": "Q three?", "selections": "defaultdict(<class 'list'>, {'C': [1.0, 0.0]})", "options": "['a', 'b']"},
]


def _csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _spec(tmp_path, rows: list[dict] | bytes, body: str, *, tail: str = "") -> str:
    data = rows if isinstance(rows, bytes) else _csv(rows)
    (tmp_path / "d.csv").write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    spec = tmp_path / "s.me"
    spec.write_text(f'''moraleval 1
data "{tmp_path.as_posix()}"
dataset d {{
    file "d.csv" sha256 "{sha}"
    read csv "d.csv"
{body}
}}
task t on d {{
    choose answer from letters
    condition Q {{ human "{{{{ question }}}}" assistant "(" }}
}}
{tail}
''', encoding="utf-8")
    return str(spec)


CLEAN = '''    derive opts = parse_literal(options, "list")
    derive shares = parse_literal(selections, "record")
    drop entries of shares where contains(key, "(Non-national sample)") reason "not a national sample"
    drop entries of shares where len(value) != len(opts) reason "shares and options differ in length"
    drop entries of shares where sum(value) == 0 reason "all shares are zero"
    derive letters = [" " + "ABC"[i] for i in range(len(opts))]'''


def test_drop_entries_removes_and_counts_entries_by_reason(tmp_path) -> None:
    checked = moraleval.check(_spec(tmp_path, ROWS, CLEAN))
    ds = checked.datasets["d"]
    assert [r["shares"] for r in ds.rows] == [{"A": [0.5, 0.5]}, {"A": [0.1, 0.2, 0.7]}, {"C": [1.0, 0.0]}]
    assert ds.entries_dropped == {"shares": {"not a national sample": 1, "shares and options differ in length": 1,
                                             "all shares are zero": 1}}
    assert ds.dropped == {} and len(ds.rows) == 3  # entries go, rows stay
    plan = moraleval.compile_plan(checked)
    assert plan.datasets["d"]["entries_dropped"] == {"shares": {"all shares are zero": 1, "not a national sample": 1,
                                                                "shares and options differ in length": 1}}
    text = summarise_plan(plan, checked)
    assert ("  entries of shares dropped: 1 all shares are zero, 1 not a national sample, 1 shares and options "
            "differ in length") in text


def test_drop_entries_of_a_list_binds_the_position_and_keeps_the_order(tmp_path) -> None:
    rows = [{"question": "q", "vals": "[3, -1, 4, -1, 5]", "options": "['a']"}]
    checked = moraleval.check(_spec(tmp_path, rows, '''    derive v = parse_literal(vals, "list")
    drop entries of v where value < 0 or key == 0 reason "negative, or the first"
    derive letters = [" A"]'''))
    ds = checked.datasets["d"]
    assert ds.rows[0]["v"] == [4, 5] and ds.entries_dropped == {"v": {"negative, or the first": 3}}


def test_drop_entries_in_the_report(tmp_path) -> None:
    from fakes import FakeBackend

    spec = _spec(tmp_path, ROWS, CLEAN, tail='metric share_a = mean(shares["A"][0] where "A" in shares)\n'
                                              "bootstrap resamples 200 seed 0\n")
    moraleval.run(spec, out=str(tmp_path / "r"), backends={"default": FakeBackend()}, log=None,
                  cache=str(tmp_path / "cache"))
    report = json.loads((tmp_path / "r" / "report.json").read_text(encoding="utf-8"))
    assert report["dropped"]["entries"] == {"d": {"shares": {"all shares are zero": 1, "not a national sample": 1,
                                                             "shares and options differ in length": 1}}}
    assert "entries_dropped" not in report["datasets"]["d"]
    md = (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    assert "| dataset d, entries of shares | not a national sample | 1 |" in md
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "<h3>Dropped rows and entries</h3>" in html and "entries of shares" in html


@pytest.mark.parametrize("rows, body, words", [
    # a cell that is not a literal: the file's line (the second row starts on line 3), the column
    ([ROWS[0], {**ROWS[0], "selections": "defaultdict(<class 'list'>, {'A': [0.5, 0.5]"}], CLEAN,
     ["not a literal", "d.csv line 3", "column selections"]),
    # the third row, after a row over two lines, starts on line 5
    ([ROWS[0], ROWS[1], {**ROWS[2], "options": "'Yes or no'"}], CLEAN,
     ["expected a list, the cell holds a text", "d.csv line 5", "column options"]),
    # code in a cell is refused, never run
    ([{**ROWS[0], "selections": "__import__('os').system('echo pwned')"}], CLEAN,
     ["not part of a literal", "d.csv line 2", "column selections"]),
    # drop entries of a cell that is neither a record nor a list
    (ROWS, '''    derive letters = [" A"]
    drop entries of question where true''', ["the cell holds str", "not a record or a list", "d.csv line 2"]),
    # a name the entry condition does not know
    (ROWS, CLEAN.replace('sum(value) == 0', 'sum(valeu) == 0'), ["unknown column 'valeu'"]),
    (ROWS, CLEAN.replace("drop entries of shares where len", "drop entries of sharez where len"),
     ["no column 'sharez'", "did you mean 'shares'"]),
])
def test_a_failing_row_is_named_by_file_line_and_column(tmp_path, rows, body, words) -> None:
    with pytest.raises(SpecCheckError) as exc:
        moraleval.check(_spec(tmp_path, rows, body))
    messages = " | ".join(f"{d.message} {d.hint or ''}" for d in exc.value.diagnostics)
    for w in words:
        assert w in messages, messages
    assert all(d.code == "E137" for d in exc.value.diagnostics)


@pytest.mark.parametrize("data, words", [
    (b'question,selections,options\n"q","{}","[]"\n"q2","{}","[]",extra\n', ["d.csv:3: 4 fields, the header has 3"]),
    (b'question,selections,options\n"q","{}","[]"\n"q2\nstill q2","{}"\n', ["d.csv:3: 2 fields"]),
    (b'question,selections,options\n"q","{}","[]"\n"q2,"{}","[]"\n"q3","{}","[]"\n', ["d.csv:3:"]),
])
def test_a_malformed_csv_names_the_line(tmp_path, data, words) -> None:
    (tmp_path / "d.csv").write_bytes(data)
    with pytest.raises(DataError) as exc:
        read_table(tmp_path / "d.csv", "csv")
    for w in words:
        assert w in exc.value.message, exc.value.message


def test_rows_remember_the_line_they_start_on(tmp_path) -> None:
    (tmp_path / "d.csv").write_bytes(_csv(ROWS))
    rows, lines = read_table_lines(tmp_path / "d.csv", "csv")
    assert lines == [2, 3, 5] and rows[1]["question"] == "Q two,\nover two lines?"
    (tmp_path / "d.jsonl").write_text('{"a": 1}\n\n{"a": 2}\n', encoding="utf-8")
    assert read_table_lines(tmp_path / "d.jsonl", "jsonl")[1] == [1, 3]


def test_row_functions_that_rebuild_a_record() -> None:
    def ev(text: str, **env):
        return evaluate(parse_expression(text), env)

    assert ev('record(["b", "a"], [1, 2])') == {"b": 1, "a": 2}
    assert ev("values(r)", r={"x": [1], "y": [2]}) == [[1], [2]]
    assert ev("sum([0.25, 0.5])") == 0.75 and ev("sum([1, none])") is None
    assert ev('parse_literal("[1, 2]", "list")') == [1, 2]
    assert ev('parse_literal("{\'a\': 1}", "record")') == {"a": 1}
    for bad, msg in (('record(["a", "a"], [1, 2])', "given twice"), ('record(["a"], [1, 2])', "1 keys but 2"),
                     ('parse_literal("[1]", "record")', "expected a record, the cell holds a list"),
                     ('parse_literal("[1]", "table")', "the kind must be one of"), ('values([1])', "needs a record"),
                     ('sum(["a"])', "needs numbers")):
        with pytest.raises(Exception, match=msg):
            ev(bad)


def test_levels_of_a_record_or_list_column_are_its_keys_or_elements(tmp_path) -> None:
    checked = moraleval.check(_spec(tmp_path, ROWS, CLEAN + '''
    derive names = keys(shares)''', tail='''metric has for c in levels(shares) = mean(c in shares)
metric named for c in levels(names) = count(c in names)
'''))
    members = sorted(m.name for m in checked.metrics)
    assert members == ["has[A]", "has[C]", "named[A]", "named[C]"]
