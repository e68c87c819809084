"""The test llama.cpp server's faster log-prob sort (``_openai_llama.fast_sorted``) returns exactly what Python's
``sorted(zip(logprobs, range(n)), reverse=True)`` returns in llama-cpp-python: same tuples, order and types."""

from __future__ import annotations

import numpy as np
from _openai_llama import fast_sorted


def test_fast_logprob_sort_is_sorted() -> None:
    rng = np.random.default_rng(0)
    for trial in range(12):
        if trial % 3 == 0:  # many ties: the larger id first, as tuple comparison orders them
            v = rng.integers(0, 4, 500).astype(np.float32)
        else:
            v = rng.normal(size=500).astype(np.float32 if trial % 2 else np.float64)
        for seq in (v, v.tolist()):
            want = list(sorted(zip(seq, range(len(seq))), reverse=True))
            got = fast_sorted(zip(seq, range(len(seq))), reverse=True)
            assert got == want
            assert [type(x) for x, _ in got[:3]] == [type(x) for x, _ in want[:3]]
            assert [type(i) for _, i in got[:3]] == [int] * 3


def test_anything_else_goes_to_the_builtin() -> None:
    assert fast_sorted([3, 1, 2]) == [1, 2, 3]
    nan = [1.0, float("nan"), 0.5]  # NaN: whatever the builtin does (compared as text: nan != nan)
    assert repr(fast_sorted(zip(nan, range(3)), reverse=True)) == repr(sorted(zip(nan, range(3)), reverse=True))
    assert fast_sorted(zip([0.1, 0.2], range(1, 3)), reverse=True) == [(0.2, 2), (0.1, 1)]
    assert fast_sorted(zip([0.3, 0.1], range(2)), key=lambda t: t[1]) == [(0.3, 0), (0.1, 1)]
