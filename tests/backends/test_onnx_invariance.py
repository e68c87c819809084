"""The kernel behaviour batch-invariant scoring rests on (onnxruntime's CPU GroupQueryAttention, fast, no model),
and the scoring paths built on it (tiny random Llama): prefills padded by any amount give the same bits, and the
continuations' prefix tree gives the bits of each continuation scored on its own."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from backends.onnx import OnnxBackend
from backends.onnx import _ragged
from moraleval.backend import Prompt, ScoreRequest

NH, NKV, HD = 9, 3, 64  # the default model's attention shape


@pytest.fixture(scope="module")
def gqa():
    from backends.onnx._ort import import_onnxruntime

    ort = import_onnxruntime()
    node = helper.make_node("GroupQueryAttention", ["q", "k", "v", "pk", "pv", "sl", "tot"], ["o", "ok", "ov"],
                            domain="com.microsoft", num_heads=NH, kv_num_heads=NKV, scale=0.125)
    graph = helper.make_graph(
        [node], "gqa",
        [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["b", "s", NH * HD]),
         helper.make_tensor_value_info("k", TensorProto.FLOAT, ["b", "s", NKV * HD]),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, ["b", "s", NKV * HD]),
         helper.make_tensor_value_info("pk", TensorProto.FLOAT, ["b", NKV, "p", HD]),
         helper.make_tensor_value_info("pv", TensorProto.FLOAT, ["b", NKV, "p", HD]),
         helper.make_tensor_value_info("sl", TensorProto.INT32, ["b"]),
         helper.make_tensor_value_info("tot", TensorProto.INT32, [1])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("o", "ok", "ov")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _prefill(sess, seqs, S, rng):
    """Right-padded prefill of ``seqs`` (q, k, v per sequence) to length S; pad rows hold random values."""
    B = len(seqs)
    q = rng.standard_normal((B, S, NH * HD)).astype(np.float32)
    k = rng.standard_normal((B, S, NKV * HD)).astype(np.float32)
    v = rng.standard_normal((B, S, NKV * HD)).astype(np.float32)
    for b, (qq, kk, vv) in enumerate(seqs):
        q[b, :len(qq)], k[b, :len(qq)], v[b, :len(qq)] = qq, kk, vv
    empty = np.zeros((B, NKV, 0, HD), np.float32)
    out = sess.run(["o"], {"q": q, "k": k, "v": v, "pk": empty, "pv": empty,
                           "sl": np.array([len(s[0]) - 1 for s in seqs], np.int32), "tot": np.array([S], np.int32)})[0]
    return [out[b, :len(s[0])] for b, s in enumerate(seqs)]


def test_a_padded_sequence_gets_the_same_bits_whatever_the_padding(gqa):
    """PREFILL_PAD's premise: once a sequence is padded at all, neither the amount of padding nor the batch changes
    a bit of its attention output (lengths around the 128-key blocks included, where an unpadded sequence of
    128k + 1 tokens rounds otherwise)."""
    rng = np.random.default_rng(0)
    for L in (1, 2, 15, 16, 17, 63, 64, 65, 127, 128, 129, 130, 255, 256, 257):
        seq = (rng.standard_normal((L, NH * HD)).astype(np.float32) * 0.5,
               rng.standard_normal((L, NKV * HD)).astype(np.float32),
               rng.standard_normal((L, NKV * HD)).astype(np.float32))
        want = _prefill(gqa, [seq], L + 1, rng)[0]
        assert np.isfinite(want).all()
        for pad in (2, 3, 16, 17, 64, 100):
            assert np.array_equal(_prefill(gqa, [seq], L + pad, rng)[0], want), (L, pad)
        other = tuple(rng.standard_normal((L + 5, x.shape[1])).astype(np.float32) for x in seq)
        assert np.array_equal(_prefill(gqa, [other, seq], L + 9, rng)[1], want), (L, "batch")


PROMPTS = ["the capital of France is", "is the", "Paris is the capital of the", "a", "of the capital", "France"]
# continuations sharing prefixes of several lengths (" the capital" / " the city"), single tokens and an empty one
CONTS = (" the capital of France", " the capital of the", " the city", " the", " of", " Paris is", "")


def test_the_prefix_tree_scores_each_continuation_as_alone(tiny_dir):
    """Continuations that share leading tokens share their passes (a prefix tree): each still gets the bits it gets
    scored in a request of its own, in any group and chunking (a tiny token budget splits the tree's depths)."""
    together = [ScoreRequest(Prompt(p), CONTS, top_k=2) for p in PROMPTS]
    be = OnnxBackend(model=str(tiny_dir))
    got = be.score(together)
    t = be.decode_timing()
    toks = [be.text.encode_continuation(x) for x in CONTS]
    nodes = sum(len({tuple(c[:d]) for c in toks if len(c) > d}) for d in range(1, max(map(len, toks))))
    assert t["score_step_rows"] == nodes * len(PROMPTS)  # one row per tree node, not per continuation token
    assert nodes < sum(max(len(c) - 1, 0) for c in toks)
    single = OnnxBackend(model=str(tiny_dir), batch_size=1)
    for p, res in zip(PROMPTS, got):
        alone = [single.score([ScoreRequest(Prompt(p), (c,), top_k=2)])[0] for c in CONTS]
        assert res.logprobs == tuple(a.logprobs[0] for a in alone)
        assert res.n_tokens == tuple(a.n_tokens[0] for a in alone)
        assert res.top == alone[0].top
    for bs, budget in ((3, 8192), (8, 24)):
        assert OnnxBackend(model=str(tiny_dir), batch_size=bs, max_batch_tokens=budget).score(together) == got


def test_prefill_padding_amount_changes_no_bit(tiny_dir, monkeypatch):
    reqs = [ScoreRequest(Prompt(p), CONTS, top_k=3) for p in PROMPTS]
    want = OnnxBackend(model=str(tiny_dir)).score(reqs)
    for pad in (2, 7, 64):
        monkeypatch.setattr(_ragged, "PREFILL_PAD", pad)
        assert OnnxBackend(model=str(tiny_dir)).score(reqs) == want
