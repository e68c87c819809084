"""Ragged, batch-invariant decoding (backends/onnx/_ragged.py) on the tiny random Llama: every result is the same
bits alone or in any batch, for generation (greedy and sampled, with continuous batching) and for scoring."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from _onnx_ref import TINY, random_weights, reference_logits
from backends.onnx import OnnxBackend
from backends.onnx._graph import add_scoring_head, build_llama
from backends.onnx._ragged import make_ragged
from moraleval.backend import GenerateRequest, Prompt, ScoreRequest

PROMPTS = ["the capital of France is", "is the", "Paris is the capital of the", "a", "the the the the (a) of",
           "of the capital", "France", "the (a) (b) (c) is the capital of the the"]
CONTS = (" (a)", " Paris", " of", " the capital of France", "")


def _requests(max_tokens=12):
    reqs = [GenerateRequest(Prompt(p), max_tokens=max_tokens - (i % 4)) for i, p in enumerate(PROMPTS)]
    reqs += [GenerateRequest(Prompt(p), max_tokens=9, temperature=0.9, top_p=0.95, seed=i)
             for i, p in enumerate(PROMPTS[:5])]
    return reqs


def test_own_graphs_are_ragged_and_batch_sizes_leave_identity(tiny_dir):
    a = OnnxBackend(model=str(tiny_dir))
    b = OnnxBackend(model=str(tiny_dir), batch_size=3, generate_batch_size=5)
    assert a.ragged and b.ragged
    assert a.settings["generate_batch_size"] > 1  # batched by default
    assert a.identity() == b.identity()  # batch sizes change speed, never a result
    assert a.identity()["settings"]["attention"] == "ragged"


@pytest.mark.parametrize("batch", [2, 3, 16])
def test_generation_is_the_same_bits_in_any_batch(tiny_dir, batch):
    reqs = _requests()
    alone = OnnxBackend(model=str(tiny_dir), generate_batch_size=1)
    want = [alone.generate([r])[0] for r in reqs]
    be = OnnxBackend(model=str(tiny_dir), generate_batch_size=batch)
    seen = []
    got = be.generate(reqs, on_result=lambda i, r: seen.append(i))
    assert got == want
    assert sorted(seen) == list(range(len(reqs)))
    # another order and company: the same answer for each request
    perm = list(reversed(range(len(reqs))))
    assert [be.generate([reqs[i] for i in perm])[k] for k in range(len(reqs))] == [want[i] for i in perm]
    assert len({r.n_tokens for r in want}) > 1  # sequences finish at different steps (slots are refilled)


def test_decode_timing_accounts_for_every_prefill_and_step(tiny_dir):
    reqs = _requests()
    be = OnnxBackend(model=str(tiny_dir), generate_batch_size=4)
    assert be.decode_timing()["decode_steps"] == 0
    got = be.generate(reqs)
    t = be.decode_timing()
    assert t["prefill_rows"] == len(reqs)  # each prompt prefilled once, into a free slot
    # every prompt is padded by at least one position (PREFILL_PAD), never to a multiple of 64 any more
    lens = [len(be.text.encode_prompt(r.prompt)) for r in reqs]
    assert sum(n + 1 for n in lens) <= t["prefill_positions"] < sum(n + 64 for n in lens)
    # a sequence's first token comes from its prefill; each later one (or the end-of-sequence pick) from a step
    assert t["decode_rows"] == sum(r.n_tokens - 1 if r.finish_reason == "length" else r.n_tokens for r in got)
    assert t["decode_rows"] <= 4 * t["decode_steps"] and t["decode_steps"] >= max(r.n_tokens for r in got) - 1
    assert t["prefill_s"] > 0 and t["decode_s"] > 0


def test_ragged_greedy_matches_numpy_reference(tiny_dir, tiny_weights):
    be = OnnxBackend(model=str(tiny_dir), generate_batch_size=4)
    res = be.generate([GenerateRequest(Prompt(p), max_tokens=6) for p in PROMPTS])
    for p, r in zip(PROMPTS, res):
        ids = be.text.encode_prompt(Prompt(p))
        out: list[int] = []
        for _ in range(6):
            nxt = int(np.argmax(reference_logits(tiny_weights, TINY, ids + out)[-1]))
            if nxt in be.text.stop_ids:
                break
            out.append(nxt)
        assert r.text == be.text.decode(out)


def test_scoring_is_the_same_bits_in_any_batch(tiny_dir):
    reqs = [ScoreRequest(Prompt(p), CONTS, top_k=3) for p in PROMPTS]
    single = OnnxBackend(model=str(tiny_dir), batch_size=1).score(reqs)
    for bs, budget in ((8, 8192), (3, 8192), (8, 40)):  # a small budget: continuation rows in several passes
        assert OnnxBackend(model=str(tiny_dir), batch_size=bs, max_batch_tokens=budget).score(reqs) == single
    assert any(n >= 3 for n in single[0].n_tokens)


def test_ragged_scores_match_the_padded_graph(tiny_dir):
    """The rewrite changes the arithmetic's order only: log-probs agree with the original graph to fp32 noise."""
    from backends.onnx import _backend

    reqs = [ScoreRequest(Prompt(p), CONTS) for p in PROMPTS]
    ragged = OnnxBackend(model=str(tiny_dir)).score(reqs)
    orig = _backend.make_ragged
    _backend.make_ragged = lambda proto, n, **kw: False
    try:
        padded_be = OnnxBackend(model=str(tiny_dir))
    finally:
        _backend.make_ragged = orig
    assert not padded_be.ragged and padded_be.settings["generate_batch_size"] == 1
    for a, b in zip(ragged, padded_be.score(reqs)):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)


def test_foreign_graphs_are_left_alone():
    model = build_llama(random_weights(TINY), TINY, dtype="float32")
    model.producer_name = "optimum"
    add_scoring_head(model)
    before = model.SerializeToString()
    assert make_ragged(model, 64) is False
    assert model.SerializeToString() == before
    mine = onnx.load_from_string(before)
    mine.producer_name = "moraleval"
    assert make_ragged(mine, 64) is True
    assert any(n.op_type == "GroupQueryAttention" for n in mine.graph.node)
    assert not any(n.op_type in ("Softmax", "Cos", "Sin") for n in mine.graph.node)


def test_cot_turn_reuses_the_generation_cache_and_scores_as_from_scratch(tiny_dir):
    """Generate, then score prompt + reasoning + a follow-up turn: the score extends the generation's KV cache
    (counted) and equals scoring the full text on a backend that never generated (to the bit; stored to 6 dp)."""
    prompts = [p + " the (a) of" for p in PROMPTS]
    be = OnnxBackend(model=str(tiny_dir), generate_batch_size=3)
    gens = be.generate([GenerateRequest(Prompt(p), max_tokens=4 + i % 3) for i, p in enumerate(prompts)])
    follow = [ScoreRequest(Prompt(p + g.text + " of the"), (" (a)", " Paris", " of", ""), top_k=2)
              for p, g in zip(prompts, gens)]
    reused = be.score(follow)
    # (prompts shorter than MIN_REUSE tokens, or a generation that ended at its first token, start afresh)
    assert be._decoder.prefixes.hits >= len(follow) // 2 and be._decoder.prefixes.reused_tokens > 0
    fresh_be = OnnxBackend(model=str(tiny_dir), kv_reuse_mb=0)
    assert not fresh_be.reuses_generated_prefix
    fresh = fresh_be.score(follow)
    assert fresh_be._decoder.prefixes.hits == 0
    assert reused == fresh


def test_prefix_cache_is_bounded():
    from backends.onnx._ragged import PrefixCache

    c = PrefixCache(3 * 400)
    for i in range(5):
        c.put([i] * 10, [np.zeros(100, np.float32)])  # 400 bytes each
    assert len(c.entries) == 3 and c.bytes == 1200
    assert c.longest([4] * 12)[0] == 10 and c.longest([0] * 12) == (0, None)  # the oldest left first


def test_a_prompt_that_only_shares_a_start_with_a_generation_is_computed_from_scratch(tiny_dir):
    """The Q+IF prompt shares its human turn with the CoT generation prompt but is no extension of it: no reuse
    (extending a cache cut short moved log-probs by ~1e-5 on the default model), so its numbers do not depend on
    which generations ran before in the process."""
    base = " ".join(PROMPTS[:5])  # longer than MIN_REUSE tokens, short enough for the tiny context
    be = OnnxBackend(model=str(tiny_dir))
    be.generate([GenerateRequest(Prompt(base + " Let us think"), max_tokens=3)])
    diverging = [ScoreRequest(Prompt(base + " The answer is"), (" (a)", " (b)"), top_k=2),
                 ScoreRequest(Prompt(base + " Let us think"), (" (a)",))]  # the generation prompt itself
    got = be.score(diverging)
    assert be._decoder.prefixes.hits == 0
    assert got == OnnxBackend(model=str(tiny_dir), kv_reuse_mb=0).score(diverging)
