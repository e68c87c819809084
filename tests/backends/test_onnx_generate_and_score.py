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


def test_the_runner_streams_chain_of_thought_follow_ups_with_the_same_results(tiny_dir, tmp_path):
    """A run's chain-of-thought requests go through generate_and_score (each follow-up scored as its generation
    finishes): the same outcomes, bit for bit, as the generate-then-score path, every result stored in the cache
    and counted as computed, and a second run answers everything from the cache."""
    from moraleval.execute.runner import run_plan

    class GenerateThenScore(OnnxBackend):
        generate_and_score = None  # the runner's other path

    plan = _short_cot_plan(12)
    limit = None
    streamed_backend = OnnxBackend(model=str(tiny_dir), generate_batch_size=4, batch_size=2)
    calls = []
    real = streamed_backend.generate_and_score
    streamed_backend.generate_and_score = lambda *a, **k: calls.append(len(a[0])) or real(*a, **k)
    streamed = run_plan(plan, streamed_backend, cache=tmp_path / "a", limit=limit, progress=False)
    plain = run_plan(plan, GenerateThenScore(model=str(tiny_dir), generate_batch_size=4, batch_size=2),
                     cache=tmp_path / "b", limit=limit, progress=False)
    assert calls and sum(calls) == sum(s.computed for s in streamed.stats.stages if s.kind == "generate")
    assert dict(streamed.items()) == dict(plain.items())
    assert any(o.generated for o in streamed.values())
    for mine, theirs in zip(streamed.stats.stages, plain.stats.stages):
        assert (mine.name, mine.requests, mine.unique, mine.computed, mine.cached) == \
               (theirs.name, theirs.requests, theirs.unique, theirs.computed, theirs.cached)
    again = run_plan(plan, streamed_backend, cache=tmp_path / "a", limit=limit, progress=False)
    assert dict(again.items()) == dict(streamed.items())
    assert sum(s.computed for s in again.stats.stages) == 0


def _short_cot_plan(n_rows: int):
    """Plan data (the tiny model's context is 64 tokens): conditions Q, CoT and CoT2, which share CoT's generation
    and differ after it (so one generation has two follow-ups)."""
    import sys
    from pathlib import Path

    from moraleval.plan.types import GenerateStep, PlanItem, PlanRequest, PlanTurn

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fakes import make_plan

    base = make_plan(n_rows)
    requests: dict[str, PlanRequest] = {}
    items = []
    for row in range(n_rows):
        think = GenerateStep("reasoning", max_tokens=1 + row % 3, temperature=0.0, seed=1)
        conds = {"Q": [PlanTurn("user", f"R{row}"), PlanTurn("assistant", "A")],
                 "CoT": [PlanTurn("user", f"R{row}"), PlanTurn("assistant", "T", generate=think),
                         PlanTurn("user", "S"), PlanTurn("assistant", "A")],
                 "CoT2": [PlanTurn("user", f"R{row}"), PlanTurn("assistant", "T", generate=think),
                          PlanTurn("user", "W"), PlanTurn("assistant", "A")]}
        for cond, turns in conds.items():
            req = PlanRequest("text", turns, (" a", " b", " c"))
            requests.setdefault(req.key, req)
            items.append(PlanItem("answer", cond, row, 0, f"q{row}", req.key, "pred", (0, 1, 2), {"q": row}))
    return base.__class__(**{**_fields(base), "requests": tuple(requests.values()), "items": tuple(items),
                             "tasks": {"answer": {"dataset": "toy", "format": "text",
                                                  "conditions": ["Q", "CoT", "CoT2"]}}})


def _fields(obj):
    import attrs

    return {a.name: getattr(obj, a.name) for a in attrs.fields(type(obj))}
