"""The report's engines and the metric language's vocabulary: the sample browser (``browser.js``) implements
exactly the functions the vocabulary says it recounts, the page embeds that list, and the per-sample evaluator of
the figures calls the vocabulary's own implementations."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from report_support import every_function_report  # noqa: E402

from moraleval.language import vocabulary  # noqa: E402
from moraleval.language.vocabulary import (AGGREGATE, CHOICE, ELEMENTWISE, FUNCTIONS, VECTOR, Function,  # noqa: E402
                                           browser_names, functions_of)
from moraleval.report.per_sample import CHOICE_READERS, NotEvaluable, evaluate, sample_env  # noqa: E402

BROWSER_JS = Path(__file__).resolve().parents[2] / "moraleval" / "report" / "static" / "browser.js"


def _js_functions() -> dict[str, str]:
    """{name: kind} of the ``FUNCTIONS`` table in browser.js: the only place its recount dispatches on a name."""
    js = BROWSER_JS.read_text(encoding="utf-8")
    table = re.search(r"\n  var FUNCTIONS = \{\n(.*?)\n  \};\n", js, re.S)
    assert table, "browser.js has no `var FUNCTIONS = {...};` table"
    entries = re.findall(r"^    (\w+): \{ kind: \"(\w+)\"", table.group(1), re.M)
    assert len(entries) == len(re.findall(r"^    \w+:", table.group(1), re.M)), "an entry the test cannot read"
    return dict(entries)


def _calls(e) -> set[str]:
    if isinstance(e, dict):
        return ({e["call"]} if "call" in e else set()) | {c for v in e.values() for c in _calls(v)}
    if isinstance(e, list):
        return {c for v in e for c in _calls(v)}
    return set()


def test_browser_js_implements_exactly_the_functions_the_vocabulary_lists() -> None:
    js = _js_functions()
    assert js == {name: FUNCTIONS[name].kind for name in browser_names()}
    assert set(js) and {ELEMENTWISE, CHOICE, VECTOR, AGGREGATE} == set(js.values())
    # no other dispatch on a function's name (the recount looks every call up in FUNCTIONS and D.functions)
    source = BROWSER_JS.read_text(encoding="utf-8")
    assert not re.search(r"(?:\.call|\bf) === \"", source)
    assert not any(f'"{name}"' in source for name in browser_names())


def test_the_page_embeds_the_list_and_the_test_report_calls_every_function(tmp_path: Path) -> None:
    out = every_function_report(tmp_path / "report")
    html = (out / "report.html").read_text(encoding="utf-8")
    data = json.loads(re.search(r'<script type="application/json" id="moraleval-data">(.*?)</script>', html,
                                re.S).group(1))
    assert data["functions"] == browser_names()
    # the browser test recounts this report: its metrics must call every function the browser recounts
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set().union(*(_calls(m["expr"]) for m in report["metrics"])) >= set(browser_names())


def _sample() -> dict:
    return {"task": "t", "condition": "Q", "unit": "u1", "row": 3, "choice": "answer", "choice_values": [0, 1, 1],
            "logprobs": [-2.0, -1.0, -0.5], "readout": {"probs": [0.2, 0.3, 0.5], "answer": 1},
            "values": {"x": 0.64, "y": 2.5}}


def _call(name: str, *args) -> dict:
    return {"call": name, "args": list(args), "where": None}


def test_per_sample_choice_readers_are_the_vocabularys_choice_functions() -> None:
    assert set(CHOICE_READERS) == set(functions_of(CHOICE))
    env = sample_env(_sample())
    assert evaluate(_call("prob", {"name": "answer"}, {"lit": 1}), env) == pytest.approx(0.8)
    assert evaluate(_call("logprob", {"name": "answer"}, {"lit": 1}), env) == \
        pytest.approx(math.log(math.exp(-1.0) + math.exp(-0.5)))
    with pytest.raises(NotEvaluable, match="no option with value 7"):
        evaluate(_call("prob", {"name": "answer"}, {"lit": 7}), env)


def test_per_sample_elementwise_functions_are_the_vocabularys_scalars(monkeypatch) -> None:
    env = sample_env(_sample())
    for f in functions_of(ELEMENTWISE).values():
        args = [0.64, 2.5, 0.25][:f.arity[0]]
        got = evaluate(_call(f.name, *({"lit": a} for a in args)), env)
        assert got == f.scalar(*args), f.name
    with pytest.raises(NotEvaluable, match="not a per-item function"):
        evaluate(_call("mean", {"name": "x"}), env)
    # a function added to the vocabulary is evaluated with no change here
    monkeypatch.setitem(vocabulary.FUNCTIONS, "cube", Function("cube", ELEMENTWISE, (1, 1), "x", "x cubed",
                                                                scalar=lambda x: x ** 3))
    assert evaluate(_call("cube", {"name": "y"}), env) == 2.5 ** 3
