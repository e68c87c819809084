"""OnnxBackend on the tiny random model (fast) and on the real default model (slow)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from _onnx_ref import TINY, reference_logits
from backends.onnx import OnnxBackend, render_prompt
from moraleval.backend import (Backend, GenerateRequest, Message, Prompt, ScoreRequest, ScoreResult,
                               canonical_json)
from moraleval.errors import BackendError


def _log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _ref_score(be, weights, prompt: str, cont: str) -> float:
    p = be.text.encode_prompt(Prompt(prompt))
    c = be.text.encode_continuation(cont)
    lp = _log_softmax(reference_logits(weights, TINY, p + c))
    return float(sum(lp[len(p) - 1 + k, t] for k, t in enumerate(c)))


PROMPTS = ["the capital of France is", "is the", "Paris is the capital of the", "a", "the the the the (a) of"]
CONTS = (" (a)", " Paris", " of", " the capital", "")


def test_is_a_backend(tiny_backend):
    assert isinstance(tiny_backend, Backend)
    assert tiny_backend.name == "onnx"


def test_score_matches_numpy_reference(tiny_backend, tiny_weights):
    reqs = [ScoreRequest(Prompt(p), CONTS) for p in PROMPTS]
    seen = []
    res = tiny_backend.score(reqs, on_result=lambda i, r: seen.append(i))
    assert sorted(seen) == list(range(len(reqs)))
    for req, r in zip(reqs, res):
        assert isinstance(r, ScoreResult)
        assert r.n_tokens == tuple(len(tiny_backend.text.encode_continuation(c)) for c in CONTS)
        assert r.logprobs[-1] == 0.0 and r.n_tokens[-1] == 0  # empty continuation
        for c, lp in zip(CONTS, r.logprobs):
            assert lp == pytest.approx(_ref_score(tiny_backend, tiny_weights, req.prompt.text, c), abs=2e-3)
    assert any(n >= 2 for n in res[0].n_tokens) and any(n == 1 for n in res[0].n_tokens)


def test_batched_left_padded_equals_single(tiny_dir):
    reqs = [ScoreRequest(Prompt(p), CONTS, top_k=3) for p in PROMPTS]
    batched = OnnxBackend(model=str(tiny_dir), batch_size=8).score(reqs)
    single = OnnxBackend(model=str(tiny_dir), batch_size=1).score(reqs)
    # a small token budget: continuation rows then go one pass per choice slot instead of one gathered pass
    per_slot = OnnxBackend(model=str(tiny_dir), batch_size=8, max_batch_tokens=48).score(reqs)
    for a, b, c in zip(batched, single, per_slot):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
        np.testing.assert_allclose(c.logprobs, b.logprobs, atol=1e-4)
        assert [t for t, _ in a.top] == [t for t, _ in b.top]


def test_top_k_is_the_reference_top(tiny_backend, tiny_weights):
    prompt = "the capital of France is"
    r = tiny_backend.score([ScoreRequest(Prompt(prompt), (" (a)",), top_k=5)])[0]
    ids = tiny_backend.text.encode_prompt(Prompt(prompt))
    lp = _log_softmax(reference_logits(tiny_weights, TINY, ids))[-1]
    want = np.argsort(-lp)[:5]
    assert [t for t, _ in r.top] == [tiny_backend.text.token_text(int(i)) for i in want]
    np.testing.assert_allclose([p for _, p in r.top], lp[want], atol=1e-3)
    assert all(r.top[i][1] >= r.top[i + 1][1] for i in range(4))


def test_continuations_tokenised_separately(tiny_backend):
    """lm-eval convention: tokens(prompt) + tokens(continuation), not tokens(prompt + continuation)."""
    t = tiny_backend.text
    assert t.encode_prompt(Prompt("the capital of")) + t.encode_continuation(" Paris") == \
        t.encode_prompt(Prompt("the capital of Paris"))  # (holds here; the next line is the real check)
    joined = t.encode_prompt(Prompt("the capita")) + t.encode_continuation("l")
    assert joined != t.encode_prompt(Prompt("the capital"))
    r = tiny_backend.score([ScoreRequest(Prompt("the capita"), ("l",))])[0]
    assert r.n_tokens == (1,)


def test_identity_is_json_and_names_the_files(tiny_backend, tiny_dir):
    ident = tiny_backend.identity()
    canonical_json(ident)  # JSON-able, no NaN
    assert ident["backend"] == "onnx"
    assert set(ident["model"]["files"]) >= {"model.onnx", "model.onnx_data", "tokenizer.json", "config.json"}
    manifest = json.loads((tiny_dir / "manifest.json").read_text())
    assert ident["model"]["files"]["model.onnx_data"] == manifest["files"]["model.onnx_data"]
    assert ident["settings"]["quantize"] == "none"
    assert ident["settings"]["max_length"] == TINY.max_position_embeddings


# ------------------------------------------------------------------------------------------------ generation


def _ref_greedy(be, weights, prompt, n):
    ids = be.text.encode_prompt(Prompt(prompt))
    out = []
    for _ in range(n):
        nxt = int(np.argmax(reference_logits(weights, TINY, ids + out)[-1]))
        if nxt in be.text.stop_ids:
            break
        out.append(nxt)
    return out


def test_greedy_generation_matches_reference(tiny_backend, tiny_weights):
    r = tiny_backend.generate([GenerateRequest(Prompt("the capital of"), max_tokens=8)])[0]
    want = _ref_greedy(tiny_backend, tiny_weights, "the capital of", 8)
    assert r.text == tiny_backend.text.decode(want)
    assert r.n_tokens == len(want)
    assert r.finish_reason == ("length" if len(want) == 8 else "eos")


def test_sampling_is_seeded_and_independent_of_batch(tiny_dir):
    req = GenerateRequest(Prompt("the capital of"), max_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    others = [GenerateRequest(Prompt(p), max_tokens=6, temperature=0.8, seed=i) for i, p in enumerate(PROMPTS)]
    be1 = OnnxBackend(model=str(tiny_dir))
    alone = be1.generate([req])[0]
    mixed = be1.generate(others[:2] + [req] + others[2:])[2]
    assert alone == mixed
    be4 = OnnxBackend(model=str(tiny_dir), generate_batch_size=4)
    assert be4.generate(others[:2] + [req])[2].text == alone.text
    reseeded = be1.generate([GenerateRequest(req.prompt, 10, 1.0, 0.9, seed=8)])[0]
    again = be1.generate([GenerateRequest(req.prompt, 10, 1.0, 0.9, seed=8)])[0]
    assert reseeded == again
    texts = {be1.generate([GenerateRequest(req.prompt, 10, 1.5, 1.0, seed=s)])[0].text for s in range(6)}
    assert len(texts) > 1  # the seed matters


def test_stop_strings_are_excluded(tiny_backend):
    full = tiny_backend.generate([GenerateRequest(Prompt("the capital of"), max_tokens=12)])[0]
    assert full.n_tokens >= 4
    stop = full.text[len(full.text) // 2:][:2]
    cut = tiny_backend.generate([GenerateRequest(Prompt("the capital of"), max_tokens=12, stop=(stop,))])[0]
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[:full.text.find(stop)]
    assert stop not in cut.text


def test_eos_and_zero_tokens(tiny_dir, tiny_weights, monkeypatch):
    be = OnnxBackend(model=str(tiny_dir))
    ids = _ref_greedy(be, tiny_weights, "the capital of", 6)
    k = max(k for k in range(len(ids)) if ids[k] not in ids[:k])  # the last "new" token
    monkeypatch.setattr(be.text, "stop_ids", frozenset({ids[k]}))
    r = be.generate([GenerateRequest(Prompt("the capital of"), max_tokens=6)])[0]
    assert r.finish_reason == "eos" and r.n_tokens == k and r.text == be.text.decode(ids[:k])
    z = be.generate([GenerateRequest(Prompt("the capital of"), max_tokens=0)])[0]
    assert (z.text, z.n_tokens, z.finish_reason) == ("", 0, "length")


# ------------------------------------------------------------------------------------------------ chat


def test_chat_rendering_and_prefill(tiny_backend, tiny_dir):
    chat = Prompt(messages=(Message("system", "Be brief."), Message("user", "Capital of France?")))
    text = tiny_backend.render(chat)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    pre = Prompt(messages=chat.messages + (Message("assistant", "The answer is ("),))
    assert tiny_backend.render(pre) == text + "The answer is ("
    assert render_prompt(pre, model=str(tiny_dir)) == tiny_backend.render(pre)
    ids = tiny_backend.text.encode_prompt(pre)
    assert ids[0] == 1 and ids.count(2) == 2  # <|im_start|> / <|im_end|> as single special tokens
    r = tiny_backend.score([ScoreRequest(pre, ("a)", "b)"))])[0]
    assert all(np.isfinite(r.logprobs))


# ------------------------------------------------------------------------------------------------ bad input


def test_prompt_longer_than_context_names_the_item(tiny_dir):
    be = OnnxBackend(model=str(tiny_dir))
    long = " the" * 80
    reqs = [ScoreRequest(Prompt("the"), (" of",)), ScoreRequest(Prompt(long), (" of",))]
    with pytest.raises(BackendError, match=r"request 1: prompt \(80 tokens\).*max_length 64"):
        be.score(reqs)
    with pytest.raises(BackendError, match="request 0"):
        be.generate([GenerateRequest(Prompt(long), max_tokens=2)])
    trunc = OnnxBackend(model=str(tiny_dir), truncation="left")
    r = trunc.score(reqs)[1]
    same = trunc.score([ScoreRequest(Prompt(" the" * 63), (" of",))])[0]
    assert r.logprobs == pytest.approx(same.logprobs, abs=1e-4)


def test_bad_settings(tiny_dir):
    with pytest.raises(BackendError, match="truncation"):
        OnnxBackend(model=str(tiny_dir), truncation="middle")
    with pytest.raises(BackendError, match="quantize"):
        OnnxBackend(model=str(tiny_dir), quantize="int4")
    with pytest.raises(BackendError, match="default model only"):
        OnnxBackend(model=str(tiny_dir), quantize="int8")
    with pytest.raises(BackendError, match="batch_size"):
        OnnxBackend(model=str(tiny_dir), batch_size=0)


def test_missing_model_directory(tmp_path):
    with pytest.raises(BackendError, match="not found"):
        OnnxBackend(model=str(tmp_path / "nope"))


def test_hash_mismatch_is_detected(tiny_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    data = bytearray((d / "model.onnx_data").read_bytes())
    data[100] ^= 0xFF
    (d / "model.onnx_data").write_bytes(bytes(data))
    with pytest.raises(BackendError, match="hash mismatch.*model.onnx_data"):
        OnnxBackend(model=str(d))


def test_corrupt_onnx_without_manifest(tiny_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    (d / "manifest.json").unlink()
    (d / "model.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(BackendError, match="model.onnx"):
        OnnxBackend(model=str(d))


def test_truncated_weights_without_manifest(tiny_dir, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    (d / "manifest.json").unlink()
    data = (d / "model.onnx_data").read_bytes()
    (d / "model.onnx_data").write_bytes(data[: len(data) // 2])
    with pytest.raises(BackendError):
        OnnxBackend(model=str(d))


def test_not_a_decoder(tmp_path, tiny_dir):
    import onnx
    from onnx import TensorProto, helper

    d = tmp_path / "m"
    shutil.copytree(tiny_dir, d)
    (d / "manifest.json").unlink()
    (d / "model.onnx_data").unlink()
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(g), str(d / "model.onnx"))
    with pytest.raises(BackendError, match="not a causal-LM decoder"):
        OnnxBackend(model=str(d))


# ------------------------------------------------------------------------------------------------ real model


@pytest.mark.slow
def test_default_model_paris(default_backend):
    r = default_backend.score([ScoreRequest(Prompt("The capital of France is"), (" Paris", " London"), top_k=5)])[0]
    assert r.top[0][0] == " Paris"
    assert r.logprobs[0] == pytest.approx(r.top[0][1])
    assert -0.6 < r.logprobs[0] < -0.05  # llama.cpp on the same GGUF: -0.26
    assert r.logprobs[0] > r.logprobs[1] + 2


@pytest.mark.slow
def test_default_model_batches_and_multitoken(default_backend, default_model_dir):
    reqs = [ScoreRequest(Prompt(p), (" Paris", " the city of Paris", " (a)")) for p in
            ["The capital of France is", "Q: Which city is the capital of France?\nA:", "Hi"]]
    batched = default_backend.score(reqs)
    single = OnnxBackend(model=str(default_model_dir), batch_size=1).score(reqs)
    for a, b in zip(batched, single):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=2e-3)


@pytest.mark.slow
def test_default_model_chat_generation(default_backend):
    q = Prompt(messages=(Message("user", "What is the capital of France? Answer in one word."),))
    r = default_backend.generate([GenerateRequest(q, max_tokens=20)])[0]
    assert "Paris" in r.text
    assert r.finish_reason in ("eos", "stop")
    text = default_backend.render(q)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_render_prompt_default(default_model_dir):
    p = Prompt(messages=(Message("user", "Hi"), Message("assistant", "Hello")))
    assert render_prompt(p) == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                                "Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
                                "Hello")
    assert render_prompt(Prompt("raw text")) == "raw text"


def test_user_export_without_manifest(tiny_dir, tmp_path):
    """A directory as `optimum-cli export onnx` leaves it (no manifest): loaded, hashed for identity()."""
    d = tmp_path / "my-export"
    shutil.copytree(tiny_dir, d)
    (d / "manifest.json").unlink()
    be = OnnxBackend(model=str(d))
    ident = be.identity()
    assert ident["model"]["name"] == "my-export"
    assert "manifest.json" not in ident["model"]["files"] and "model.onnx" in ident["model"]["files"]
    reqs = [ScoreRequest(Prompt(p), CONTS) for p in PROMPTS[:2]]
    for a, b in zip(be.score(reqs), OnnxBackend(model=str(tiny_dir)).score(reqs)):
        assert a.logprobs == b.logprobs


def test_created_through_the_registry(tiny_dir):
    from moraleval.backend.registry import create_backend

    be = create_backend("onnx", {"model": str(tiny_dir), "batch_size": 2, "threads": 1})
    assert isinstance(be, OnnxBackend) and be.settings["threads"] == 1
    with pytest.raises(BackendError, match="does not accept"):
        create_backend("onnx", {"model": str(tiny_dir), "temperature": 1})


def test_render_prompt_needs_no_session(tiny_dir, monkeypatch):
    import onnxruntime

    def boom(*a, **k):
        raise AssertionError("render_prompt must not create an ONNX session")

    monkeypatch.setattr(onnxruntime, "InferenceSession", boom)
    text = render_prompt(Prompt(messages=(Message("user", "Hi"),)), model=str(tiny_dir))
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.slow
def test_default_model_gguf_blocks_agree_with_fp16(default_backend, default_model_dir):
    be = OnnxBackend(quantize="gguf")  # imported into the session's temporary cache
    assert be.identity()["model"]["name"] == "default:smollm2-135m-instruct-gguf"
    reqs = [ScoreRequest(Prompt("The capital of France is"), (" Paris", " London", " the city of Paris"), top_k=3)]
    a, b = be.score(reqs)[0], default_backend.score(reqs)[0]
    assert a.top[0][0] == " Paris"
    np.testing.assert_allclose(a.logprobs, b.logprobs, atol=2e-2)


@pytest.mark.slow
def test_scoring_is_batch_invariant_across_the_vector_tail(default_backend):
    """The quick start's two 129-token Q+IF prompts (128 + 1) rounded differently next to a prompt of 131+ tokens
    (1.5e-5 in a log-prob, the 6th stored decimal) while a prompt as long as its batch went unpadded
    (GroupQueryAttention takes another path for it, which rounds otherwise at 128k + 1 tokens); every prefill now pads
    every prompt (PREFILL_PAD; this test fails with it set to 0): each prompt scored alone must give the same bits as
    next to the longest prompt and inside a batch of eight."""
    from moraleval.checker.passes import check
    from moraleval.plan.compile import compile_plan

    plan = compile_plan(check(Path(__file__).resolve().parents[2] / "specs" / "quickstart.me", mode="plan"))
    by_key = plan.request_by_key()
    reqs = [by_key[i.request].score_request({}) for i in plan.items
            if i.task == "bbq_answer" and i.condition == "Q_IF"]
    lens = [len(default_backend._prompt_ids(k, r.prompt)) for k, r in enumerate(reqs)]
    tail = [j for j, n in enumerate(lens) if n % 128 == 1]
    assert tail, f"no prompt of 128k+1 tokens left in the quick start (lengths {sorted(set(lens))})"
    longest = max(range(len(reqs)), key=lambda j: lens[j])
    shortest = min(range(len(reqs)), key=lambda j: lens[j])
    picked = list(dict.fromkeys([*tail, longest, shortest, *range(len(reqs))]))[:8]
    alone = {j: default_backend.score([reqs[j]])[0].logprobs for j in picked}
    for j in tail:
        assert default_backend.score([reqs[j], reqs[longest]])[0].logprobs == alone[j], (j, lens[j])
    together = default_backend.score([reqs[j] for j in picked])
    assert [r.logprobs for r in together] == [alone[j] for j in picked]
