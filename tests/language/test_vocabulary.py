"""The vocabulary is the one list of the metric language's words: the docs' function table is generated from it,
and the checker, the measure stage and the report read it (their own tests check them against it)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from moraleval.language.vocabulary import (AGGREGATE, BOOT_METHODS, CORRECTIONS, ELEMENTWISE, FUNCTIONS, TESTS,
                                           function_table_markdown)

DOC = Path(__file__).resolve().parents[2] / "docs" / "spec-language.md"


def test_the_docs_function_table_is_the_vocabulary() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = re.search(r"<!-- functions: generated .*? -->\n(.*?)\n<!-- end of functions -->", text, re.S)
    assert block is not None, "the generated function table is missing from docs/spec-language.md"
    assert block.group(1) == function_table_markdown()


@pytest.mark.parametrize("name", sorted(n for n, f in FUNCTIONS.items() if f.kind == ELEMENTWISE))
def test_elementwise_numpy_and_scalar_implementations_agree(name: str) -> None:
    fn = FUNCTIONS[name]
    lo, _hi = fn.arity
    rng = np.random.default_rng(7)
    args = [rng.uniform(0.1, 5.0, 50) for _ in range(max(lo, 1))]
    vec = fn.numpy(*args)
    one = [fn.scalar(*(float(a[i]) for a in args)) for i in range(50)]
    assert np.allclose(vec, one, rtol=1e-15, atol=0)


def test_every_aggregate_has_a_recipe_and_a_reference_and_every_function_a_doc() -> None:
    for f in FUNCTIONS.values():
        assert f.doc and f.args is not None
        if f.kind == AGGREGATE:  # by unit sums (a recipe), or from the items' weights (an order statistic, a
            # statistic of group means): exactly one way
            ways = [f.recipe, f.weighted, f.grouped]
            assert sum(w is not None for w in ways) == 1 and f.items is not None, f.name
        if f.kind == ELEMENTWISE:
            assert f.numpy is not None and f.scalar is not None, f.name


def test_mean_recipe_matches_its_reference_on_unit_sums() -> None:
    x = np.array([1.0, 0.0, 3.0, 4.0])
    inc = np.array([1.0, 1.0, 0.0, 1.0])
    cols = FUNCTIONS["mean"].recipe.columns(inc, x * inc)
    notes = []
    value = FUNCTIONS["mean"].recipe.finish([np.array([c.sum()]) for c in cols], lambda c, m: notes.append(m))
    assert value[0] == pytest.approx(FUNCTIONS["mean"].items([(1.0,), (0.0,), (4.0,)]))
    assert notes == [] or all(isinstance(m, str) for m in notes)


def test_pearson_reference_is_the_textbook_correlation() -> None:
    xs, ys = [1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 4.0, 3.0]
    assert FUNCTIONS["pearson"].items(list(zip(xs, ys))) == pytest.approx(np.corrcoef(xs, ys)[0, 1])
    assert math.isnan(FUNCTIONS["pearson"].items([(1.0, 2.0), (1.0, 3.0)]))


def test_the_statement_words_are_declared_with_meanings() -> None:
    assert set(TESTS) == {"bootstrap", "mcnemar", "paired_t", "wilcoxon", "tost"}
    assert set(CORRECTIONS) == {"holm", "bh", "bonferroni", "none"}
    assert set(BOOT_METHODS) == {"percentile", "bca"}
    assert all(w.doc for table in (TESTS, CORRECTIONS, BOOT_METHODS) for w in table.values())
