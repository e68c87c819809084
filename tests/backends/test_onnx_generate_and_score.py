"""OnnxBackend.generate_and_score: each chain of thought's follow-up turn scored as soon as its generation finishes
(tiny random Llama): the same bits as generating everything and then scoring, with the decoding batch kept full."""

from __future__ import annotations

from backends.onnx import OnnxBackend
from moraleval.backend import GenerateRequest, Prompt, ScoreRequest

PROMPTS = ["the capital of France is", "is the", "Paris is", "a", "of the capital", "France", "the (a) (b)", "of"]


def _requests():
    base = "Paris is the capital of the"  # with each prompt, more than MIN_REUSE tokens: follow-ups extend caches
    gens = [GenerateRequest(Prompt(base + " " + p), max_tokens=3 + i % 5) for i, p in enumerate(PROMPTS * 2)]
    gens += [GenerateRequest(Prompt(base + " " + p), max_tokens=6, temperature=0.8, seed=i)
             for i, p in enumerate(PROMPTS[:4])]

    def follow_up(i, res):
        if i % 7 == 3:
            return None  # a request without a follow-up turn
        return ScoreRequest(Prompt(gens[i].prompt.text + res.text + " of the"), (" (a)", " Paris", " the capital"),
                            top_k=2)

    return gens, follow_up


def test_follow_ups_scored_as_they_finish_give_the_bits_of_generate_then_score(tiny_dir):
    gens, follow_up = _requests()
    be = OnnxBackend(model=str(tiny_dir), generate_batch_size=3, batch_size=2)
    order: list[tuple[str, int]] = []
    got_gen, got_score = be.generate_and_score(gens, follow_up,
                                               on_generated=lambda i, r: order.append(("gen", i)),
                                               on_scored=lambda i, r: order.append(("score", i)))
    ref = OnnxBackend(model=str(tiny_dir), generate_batch_size=1, batch_size=1, kv_reuse_mb=0)
    want_gen = ref.generate(gens)
    assert got_gen == want_gen
    want_score = [None if follow_up(i, g) is None else ref.score([follow_up(i, g)])[0] for i, g in enumerate(want_gen)]
    assert got_score == want_score
    assert sum(r is None for r in got_score) == sum(1 for i in range(len(gens)) if i % 7 == 3)
    # scoring started before the last generation finished (interleaved), and each follow-up extended its held
    # prompt cache
    first_score = order.index(next(e for e in order if e[0] == "score"))
    last_gen = max(k for k, e in enumerate(order) if e[0] == "gen")
    assert first_score < last_gen
    assert be._decoder.prefixes.hits > 0
    assert sorted(i for kind, i in order if kind == "score") == [i for i, s in enumerate(got_score) if s is not None]


def test_without_kv_reuse_it_generates_then_scores(tiny_dir):
    gens, follow_up = _requests()
    be = OnnxBackend(model=str(tiny_dir), kv_reuse_mb=0)
    got_gen, got_score = be.generate_and_score(gens, follow_up)
    assert got_gen == be.generate(gens)
    assert got_score == [None if follow_up(i, g) is None else be.score([follow_up(i, g)])[0]
                         for i, g in enumerate(got_gen)]
