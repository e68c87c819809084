"""The arithmetic routes of the onnx backend beyond fp32 (tiny random Llama): 16-bit weights and activations on the
int8 matrix units (``quantize: "w16a16"``), an fp16 KV cache, the GGUF blocks with int8 activations
(``quantize: "gguf-q8"``) and the OpenVINO provider's settings.  Each keeps batch invariance and has its own
identity; how close each comes to fp32 on the real model is bench/fidelity.py's job."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from backends.onnx import OnnxBackend
from backends.onnx import _backend, store
from backends.onnx._graph import HEAD_INPUT, W16_ACT_MAX, W16_WEIGHT_MAX, _Builder
from moraleval.backend import GenerateRequest, Prompt, ScoreRequest
from moraleval.errors import BackendError

PROMPTS = ["the capital of France is", "is the", "Paris is the capital of the", "a", "of the capital", "France"]
CONTS = (" the capital of France", " the capital of the", " the city", " of", "")


def _reqs():
    return [ScoreRequest(Prompt(p), CONTS, top_k=3) for p in PROMPTS]


def _gens():
    return ([GenerateRequest(Prompt(p), max_tokens=6 + i % 3) for i, p in enumerate(PROMPTS)]
            + [GenerateRequest(Prompt(p), max_tokens=5, temperature=0.9, seed=i) for i, p in enumerate(PROMPTS[:3])])


def _assert_batch_invariant(make):
    """Scores and generations of a backend built by ``make(**sizes)``: the same bits one at a time and batched."""
    one, many = make(batch_size=1, generate_batch_size=1), make(batch_size=4, generate_batch_size=3)
    assert one.identity() == many.identity()
    assert one.score(_reqs()) == many.score(_reqs())
    assert one.generate(_gens()) == many.generate(_gens())


def _w16_session(w_in_out: np.ndarray):
    from backends.onnx._ort import import_onnxruntime

    b = _Builder("float32", "w16a16")
    y = b.linear_w16("x", "lin", w_in_out)
    graph = helper.make_graph(b.nodes, "w16", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", None])],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    return import_onnxruntime().InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_w16_linear_is_the_16_bit_product_and_row_invariant():
    rng = np.random.default_rng(0)
    K, N = 96, 40
    w = (rng.standard_normal((K, N)) * 0.05).astype(np.float32)
    x = rng.standard_normal((37, K)).astype(np.float32)
    x[:, 3] *= 20  # an outlier channel, as RMSNorm outputs have
    sess = _w16_session(w)
    got = sess.run(None, {"x": x})[0]
    # the exact product of the 16-bit integers (what the three int8 products and the constant terms make, but for
    # the centred product of the two low bytes, which is left out)
    s = np.abs(x).max(axis=1, keepdims=True) / W16_ACT_MAX
    s_w = np.abs(w.astype(np.float64)).max(axis=0) / W16_WEIGHT_MAX
    exact16 = (np.round(x / s) @ np.round(w / s_w)) * s * s_w
    scale = np.abs(x).max(axis=1, keepdims=True) * np.abs(w).max(axis=0) * np.sqrt(K)
    assert np.abs(got - exact16).max() <= (2.0 ** -15 * scale).max()
    assert np.abs(got - x.astype(np.float64) @ w).max() / np.abs(x @ w).max() < 2e-3
    for rows in (1, 2, 5, 16, 37):  # a row's bits do not depend on the other rows
        assert np.array_equal(sess.run(None, {"x": x[:rows]})[0], got[:rows])
    assert np.array_equal(sess.run(None, {"x": x[::-1].copy()})[0], got[::-1])


@pytest.fixture(scope="module")
def w16_dir(tmp_path_factory, tiny_gguf):
    from backends.onnx.store import write_model_dir

    dest = tmp_path_factory.mktemp("models") / "tiny-w16a16"
    write_model_dir(dest, tiny_gguf, quantize="w16a16", dtype="float32")
    return dest


def test_w16a16_model_scores_like_fp32_and_is_batch_invariant(w16_dir, tiny_dir):
    model = onnx.load(str(w16_dir / "model.onnx"), load_external_data=False)
    assert sum(n.op_type == "MatMulIntegerToFloat" for n in model.graph.node) == 2 * (7 * 2 + 1)  # 2 layers + head
    assert sum(n.op_type == "MatMul" for n in model.graph.node) == 2 * 2  # only attention's (replaced when ragged)
    be = OnnxBackend(model=str(w16_dir))
    assert be.ragged and be.identity()["model"]["files"] != OnnxBackend(model=str(tiny_dir)).identity()["model"][
        "files"]
    # the scoring head gathers the scored positions before the whole multi-node LM head
    from backends.onnx._graph import add_scoring_head

    add_scoring_head(model)
    marked = next(n for n in model.graph.node if n.name == HEAD_INPUT)
    assert marked.input[0] == "scoring.hidden_sel"
    got, want = be.score(_reqs()), OnnxBackend(model=str(tiny_dir)).score(_reqs())
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=2e-3)
        assert [t for t, _ in a.top] == [t for t, _ in b.top]
    _assert_batch_invariant(lambda **kw: OnnxBackend(model=str(w16_dir), **kw))


def test_fp16_kv_cache_is_its_own_identity_close_to_fp32_and_batch_invariant(tiny_dir):
    fp16 = OnnxBackend(model=str(tiny_dir), kv_cache="float16")
    fp32 = OnnxBackend(model=str(tiny_dir))
    assert fp16.identity()["settings"]["kv_cache"] == "float16" and "kv_cache" not in fp32.identity()["settings"]
    assert fp16._past_dtype == np.float16
    got, want = fp16.score(_reqs()), fp32.score(_reqs())
    assert got != want  # other arithmetic...
    for a, b in zip(got, want):  # ...within fp16 rounding of the attention's inputs and output
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=5e-3)
    _assert_batch_invariant(lambda **kw: OnnxBackend(model=str(tiny_dir), kv_cache="float16", **kw))
    with pytest.raises(BackendError, match="kv_cache"):
        OnnxBackend(model=str(tiny_dir), kv_cache="bfloat16")


@pytest.fixture()
def tiny_q4_default(tmp_path, tiny_weights, monkeypatch):
    """The default model's "gguf" import, from a tiny Q4_1 GGUF (so quantize settings apply)."""
    from _onnx_ref import TINY, write_tiny_gguf

    gguf = tmp_path / "tiny-q4.gguf"
    write_tiny_gguf(gguf, tiny_weights, TINY, linear_q4_1=True)
    monkeypatch.setenv("MORALEVAL_CACHE", str(tmp_path / "cache"))
    dirs = {q: store.import_gguf(gguf, f"tiny-{q}", quantize=q) for q in ("gguf",)}
    monkeypatch.setattr(store, "ensure_default_model", lambda quantize="none": dirs[quantize])
    return dirs


def test_gguf_q8_runs_the_gguf_blocks_with_int8_activations(tiny_q4_default):
    q8 = OnnxBackend(quantize="gguf-q8")
    exact = OnnxBackend(quantize="gguf")
    assert q8.model_dir == exact.model_dir
    assert q8.identity()["settings"]["quantize"] == "gguf-q8" and q8.identity() != exact.identity()
    got, want = q8.score(_reqs()), exact.score(_reqs())
    assert got != want
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=0.1)
    _assert_batch_invariant(lambda **kw: OnnxBackend(quantize="gguf-q8", **kw))


def test_the_accuracy_level_rewrite_sets_every_matmulnbits(tiny_q4_default):
    from backends.onnx._graph import set_nbits_accuracy

    model = onnx.load(str(tiny_q4_default["gguf"] / "model.onnx"), load_external_data=False)
    n = sum(x.op_type == "MatMulNBits" for x in model.graph.node)
    assert n > 0 and set_nbits_accuracy(model, 4) == n
    assert {a.i for x in model.graph.node if x.op_type == "MatMulNBits" for a in x.attribute
            if a.name == "accuracy_level"} == {4}


def test_provider_settings_are_checked(tiny_dir, monkeypatch):
    with pytest.raises(BackendError, match="precision"):
        OnnxBackend(model=str(tiny_dir), precision="bf16")  # bf16 needs the OpenVINO provider
    with pytest.raises(BackendError, match="provider"):
        OnnxBackend(model=str(tiny_dir), provider="cuda")
    from backends.onnx._ort import import_onnxruntime

    ort = import_onnxruntime()
    if "OpenVINOExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(BackendError, match="onnxruntime-openvino"):
            OnnxBackend(model=str(tiny_dir), provider="openvino")
    else:  # the OpenVINO build of onnxruntime: bf16 named in the identity
        be = OnnxBackend(model=str(tiny_dir), provider="openvino")
        assert be.identity()["settings"]["precision"] == "bf16"
    assert _backend.QUANTIZE[-1] == "gguf-q8"
