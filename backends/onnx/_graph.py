"""Build a Llama decoder (with KV cache) as an ONNX graph in the `optimum` layout, and add the scoring head.

The graph takes ``input_ids`` [batch, seq], ``attention_mask`` [batch, past+seq], ``position_ids`` [batch, seq]
and ``past_key_values.N.key/value`` [batch, kv_heads, past, head_dim]; it returns ``logits`` [batch, seq, vocab]
and ``present.N.key/value`` — the interface ``optimum-cli export onnx --task text-generation-with-past`` writes.

:func:`add_scoring_head` rewrites any such graph (ours or a user's export) so that it returns only what the
backend needs: log-probabilities of chosen target tokens at chosen positions and the next-token distribution at
the last chosen position.  For graphs whose ``logits`` come from a final MatMul the positions are gathered *before*
that MatMul, so the vocabulary projection runs only where it is needed.
"""

from __future__ import annotations

from typing import Any, Mapping

import attrs
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
W16_ACT_MAX = 32767.0  # w16a16: activations as round(x / s) in [-32767, 32767] (hi, lo halves)
HEAD_INPUT = "/lm_head/Input"  # an Identity node marking where a multi-node LM head starts
W16_WEIGHT_MAX = 127.0 * 257.0  # w16a16: weights as round(w / s_w) in [-32639, 32639], so |w_hi| <= 127
SELECT_POSITIONS = "select_positions"  # [batch, k] int64: positions (within this call's input_ids) to score
SELECT_TARGETS = "select_targets"  # [batch, k] int64: token whose log-prob is wanted at each selected position
SELECTED_LOGPROBS = "selected_logprobs"  # [batch, k] float32
NEXT_LOGPROBS = "next_logprobs"  # [batch, vocab] float32: log-softmax at select_positions[:, -1]


@attrs.frozen
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_hf(self) -> dict[str, Any]:
        """The fields of a Hugging Face ``config.json`` for this model."""
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "use_cache": True,
        }


# Weight names follow Hugging Face: embed, blocks.{i}.{attn_norm,q,k,v,o,ffn_norm,gate,up,down}, norm, [lm_head].
# Linear weights are stored as [out, in] (as in HF and GGUF); Q/K rows in HF (rotate-half) order.


@attrs.frozen
class BlockQuant:
    """A weight [out, in] stored as GGUF stores it, for com.microsoft MatMulNBits: w = scale * (q - zero_point)
    per block of ``block_size`` inputs.  Q4_1 (w = d*q + m) and Q8_0 (w = d*q) map onto it exactly."""

    bits: int
    block_size: int
    q: np.ndarray = attrs.field(repr=False)  # uint8 [out, in], unpacked
    scales: np.ndarray = attrs.field(repr=False)  # float32 [out, in // block_size]
    zero_points: np.ndarray = attrs.field(repr=False)  # float32 [out, in // block_size]

    def permute_rows(self, perm: np.ndarray) -> "BlockQuant":
        return BlockQuant(self.bits, self.block_size, self.q[perm], self.scales[perm], self.zero_points[perm])

    def dequantize(self) -> np.ndarray:
        n, k = self.q.shape
        q = self.q.reshape(n, k // self.block_size, self.block_size).astype(np.float32)
        return ((q - self.zero_points[..., None]) * self.scales[..., None]).reshape(n, k)

    def packed(self) -> np.ndarray:
        n, k = self.q.shape
        q = self.q.reshape(n, k // self.block_size, self.block_size)
        if self.bits == 8:
            return np.ascontiguousarray(q)
        return np.ascontiguousarray((q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8))


class _Builder:
    def __init__(self, dtype: str, quantize: str, blocks: Mapping[str, BlockQuant] | None = None) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.dtype = dtype
        self.quantize = quantize
        self.blocks = blocks or {}
        self._n = 0
        self._w16_inputs: dict[str, tuple[str, str, str]] = {}

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, name: str | None = None, **attrs_: Any):
        outs = [self.name(f"/{op_type}") for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name or self.name(op_type), **attrs_))
        return outs[0] if n_out == 1 else outs

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.require(array, requirements="C"), name))
        return name

    def weight(self, name: str, array: np.ndarray) -> str:
        """A float weight, stored in the chosen dtype and cast to float32 for computation."""
        if self.dtype == "float16":
            self.const(name, array.astype(np.float16))
            return self.op("Cast", [name], to=TensorProto.FLOAT)
        return self.const(name, array.astype(np.float32))

    def matmul_nbits(self, x: str, name: str, bq: BlockQuant, output: str | None = None) -> str:
        """x [B, S, in] @ w.T with w in GGUF blocks: w = scale * q + offset per block.

        onnxruntime's fast MatMulNBits path needs integer zero points, but Q4_1's offset (m = -zp * scale) is
        any float; so it runs with zero point 0 and the offsets are added exactly as
        blocksum(x) @ offset.T, a [.., in/32] x [in/32, out] product (0.6 % of the layer's FLOPs)."""
        if bq.bits != 4:
            raise ValueError("only 4-bit GGUF blocks run through MatMulNBits (its 8-bit CPU path is slow)")
        n, k = bq.q.shape
        nb = k // bq.block_size
        w = self.const(name + ".q4", bq.packed())
        sc = self.const(name + ".scales", bq.scales.astype(np.float32).reshape(-1))
        zp = self.const(name + ".zero_points", np.zeros(n * ((nb + 1) // 2), np.uint8))
        y = self.name("/MatMulNBits")
        # accuracy_level 0: activations stay fp32; the 4-bit blocks are expanded inside the kernel
        self.nodes.append(helper.make_node("MatMulNBits", [x, w, sc, zp], [y], name=name + "/MatMulNBits",
                                           domain="com.microsoft", K=k, N=n, bits=4, block_size=bq.block_size,
                                           accuracy_level=0))
        offset = (-bq.zero_points * bq.scales).astype(np.float32)  # [out, nb]
        if not offset.any():
            return y
        shape = self.const(name + ".block_shape", np.array([0, 0, nb, bq.block_size], np.int64))
        sums = self.op("ReduceSum", [self.op("Reshape", [x, shape]), "axes.last"], keepdims=0)  # [B, S, nb]
        corr = self.op("MatMul", [sums, self.const(name + ".offsets", np.ascontiguousarray(offset.T))])
        out = output or self.name("/Add")
        self.nodes.append(helper.make_node("Add", [y, corr], [out], name=self.name("Add")))
        return out

    def _w16_activation(self, x: str) -> tuple[str, str, str]:
        """x [.., K] float as 16-bit integers per row, in two int8 halves for the int8 matrix units:
        q = round(x / s) with s = max|x| / 32767 per row, q = 256 * hi + lo (hi in [-128, 127], lo in [0, 255]).
        Returns (hi + 128 as uint8, [hi + 128 | lo] as uint8 [.., 2K], s [.., 1]); both read with zero point 128.
        Computed once per tensor (q, k and v, or gate and up, share their input)."""
        got = self._w16_inputs.get(x)
        if got is not None:
            return got
        if "w16.lv" not in {t.name for t in self.inits}:
            self.const("w16.eps", np.array(1e-30, np.float32))
            self.const("w16.lv", np.array(W16_ACT_MAX, np.float32))
            self.const("w16.256", np.array(256.0, np.float32))
            self.const("w16.128", np.array(128.0, np.float32))
            self.const("w16.zp", np.array(128, np.uint8))
            self.const("w16.one", np.array(1.0, np.float32))
        m = self.op("ReduceMax", [self.op("Abs", [x])], axes=[-1], keepdims=1)
        s = self.op("Div", [self.op("Max", [m, "w16.eps"]), "w16.lv"])
        q = self.op("Round", [self.op("Div", [x, s])])
        hi = self.op("Floor", [self.op("Div", [q, "w16.256"])])
        lo = self.op("Sub", [q, self.op("Mul", [hi, "w16.256"])])
        hiu = self.op("Cast", [self.op("Add", [hi, "w16.128"])], to=TensorProto.UINT8)
        cat = self.op("Concat", [hiu, self.op("Cast", [lo], to=TensorProto.UINT8)], axis=-1)
        self._w16_inputs[x] = (hiu, cat, s)
        return hiu, cat, s

    def linear_w16(self, x: str, name: str, w_in_out: np.ndarray, output: str | None = None) -> str:
        """x [.., K] @ w [K, N] with 16-bit weights and activations on the int8 matrix units (AMX/VNNI).

        Weights: q = round(w / s_w) per output column (|q| <= 127 * 257), q = 256 * w_hi + w_lo with both int8.
        Activations: 16-bit per row (:meth:`_w16_activation`).  Then
        x @ w = s * s_w * (65536 hi @ w_hi + 256 (hi @ w_lo + lo @ w_hi) + lo @ w_lo): the first term is one int8
        product, the middle two are one product of [hi | lo] with [w_lo ; w_hi], and the last, the product of the
        two low bytes, is not computed: lo = 128 + (lo - 128), so it is 128 colsum(w_lo), added exactly, plus
        (lo - 128) @ w_lo, a zero-mean term below 2^-16 of max|x| max|w| sqrt(K), left out (left in, it would cost
        a third product; left out uncentred, its mean made a per-column bias: KL 1.4e-4 instead of the figure in
        docs/backends/onnx.md).  Each integer product is exact (int32); MatMulIntegerToFloat scales it per column
        and adds the constant terms in its output stage, so a row's numbers never depend on the other rows."""
        w = np.asarray(w_in_out, dtype=np.float32)
        s_w = (np.maximum(np.abs(w).max(axis=0), 1e-30) / W16_WEIGHT_MAX).astype(np.float32)
        q = np.round(w / s_w)  # |q| <= 32639 (integers exact in float32)
        w_hi = np.round(q / 256.0)
        w_lo = q - 256.0 * w_hi
        carry = w_lo > 127  # q / 256 exactly halfway, rounded down: move 256 from lo to hi (|w_hi| stays <= 127)
        w_hi[carry] += 1
        w_lo[carry] -= 256
        w_hi8, w_lo8 = w_hi.astype(np.int8), w_lo.astype(np.int8)
        hiu, cat, s = self._w16_activation(x)
        big = self.const(name + ".w16_hi", w_hi8)
        mixed = self.const(name + ".w16_mixed", np.concatenate([w_lo8, w_hi8], axis=0))
        s_w = s_w.astype(np.float64)
        scale_hi = self.const(name + ".w16_scale_hi", (65536.0 * s_w).astype(np.float32))
        scale_mid = self.const(name + ".w16_scale_mid", (256.0 * s_w).astype(np.float32))
        # constant per column: the zero point 128 of lo in the middle product (hi @ w_lo + (lo - 128) @ w_hi is
        # computed, 256 * 128 colsum(w_hi) added back) and the centre of the low bytes' product, 128 colsum(w_lo)
        fix = self.const(name + ".w16_zero_fix", ((256.0 * 128.0 * w_hi8.astype(np.int64).sum(axis=0)
                                                   + 128.0 * w_lo8.astype(np.int64).sum(axis=0)) * s_w)
                         .astype(np.float32))
        y_hi = self.op("MatMulIntegerToFloat", [hiu, big, "w16.one", scale_hi, "w16.zp"], domain="com.microsoft")
        y_mid = self.op("MatMulIntegerToFloat", [cat, mixed, "w16.one", scale_mid, "w16.zp", "", fix],
                        domain="com.microsoft")
        out = output or self.name("/Mul")
        self.nodes.append(helper.make_node("Mul", [self.op("Add", [y_hi, y_mid]), s], [out], name=name + "/w16"))
        return out

    def linear(self, x: str, name: str, w_out_in: np.ndarray, keep_float: bool = False,
               key: str | None = None) -> str:
        if self.quantize == "w16a16":
            return self.linear_w16(x, name, np.asarray(w_out_in).T)
        if self.quantize == "gguf" and key in self.blocks and self.blocks[key].bits == 4:
            return self.matmul_nbits(x, name, self.blocks[key])
        w = np.asarray(w_out_in, dtype=np.float32).T  # [in, out]
        if self.quantize == "int8" and not keep_float:
            # per-output-channel symmetric int8 weights, dynamically quantised uint8 activations (VNNI path)
            scale = np.maximum(np.abs(w).max(axis=0), 1e-12) / 127.0
            wq = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
            wq_name = self.const(name + ".int8", wq)
            ws_name = self.const(name + ".scale", scale.astype(np.float32))
            xq, xs, xzp = self.op("DynamicQuantizeLinear", [x], n_out=3)
            acc = self.op("MatMulInteger", [xq, wq_name, xzp])
            accf = self.op("Cast", [acc], to=TensorProto.FLOAT)
            s = self.op("Mul", [xs, ws_name])
            return self.op("Mul", [accf, s])
        return self.op("MatMul", [x, self.weight(name, w)])


def _rms_norm(b: _Builder, x: str, w: str, eps: str) -> str:
    # Pow -> ReduceMean -> Add -> Sqrt -> Div -> Mul: the pattern onnxruntime fuses to SimplifiedLayerNormalization
    two = "const.two"
    sq = b.op("Pow", [x, two])
    mean = b.op("ReduceMean", [sq], axes=[-1], keepdims=1)
    var = b.op("Add", [mean, eps])
    std = b.op("Sqrt", [var])
    normed = b.op("Div", [x, std])
    return b.op("Mul", [normed, w])


def build_llama(weights: Mapping[str, np.ndarray], cfg: LlamaConfig, *, dtype: str = "float16",
                quantize: str = "none", blocks: Mapping[str, BlockQuant] | None = None) -> onnx.ModelProto:
    """The decoder-with-past graph for ``weights`` (HF layout, float arrays).

    ``quantize``: "none" (float weights stored as ``dtype``), "int8" (per-channel int8, ffn_down float),
    "gguf" (every weight found in ``blocks`` kept in its GGUF block format, run by MatMulNBits) or "w16a16" (every
    linear layer and the LM head with 16-bit weights and activations on the int8 matrix units, :meth:`_Builder.linear_w16`)."""
    if dtype not in ("float16", "float32"):
        raise ValueError(f"dtype must be float16 or float32, not {dtype!r}")
    if quantize not in ("none", "int8", "gguf", "w16a16"):
        raise ValueError(f"quantize must be 'none', 'int8', 'gguf' or 'w16a16', not {quantize!r}")
    b = _Builder(dtype, quantize, blocks)
    H, nh, nkv, hd = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    group = nh // nkv
    if nh % nkv:
        raise ValueError(f"{nh} attention heads cannot be grouped over {nkv} key/value heads")

    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                             ["batch_size", "sequence_length", cfg.vocab_size])]
    for i in range(cfg.num_hidden_layers):
        for kv in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kv}", TensorProto.FLOAT,
                                                        ["batch_size", nkv, "past_sequence_length", hd]))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kv}", TensorProto.FLOAT,
                                                         ["batch_size", nkv, "total_sequence_length", hd]))

    b.const("const.two", np.array(2.0, np.float32))
    eps = b.const("const.eps", np.array(cfg.rms_norm_eps, np.float32))
    b.const("const.scale", np.array(1.0 / np.sqrt(hd), np.float32))
    b.const("const.neg_big", np.array(-1e9, np.float32))
    b.const("const.zero_f", np.array(0.0, np.float32))
    b.const("const.one_i", np.array(1, np.int64))
    b.const("const.zero_i", np.array(0, np.int64))
    inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    b.const("const.inv_freq", inv_freq.astype(np.float32).reshape(1, 1, hd // 2))
    b.const("shape.q", np.array([0, 0, nh, hd], np.int64))
    b.const("shape.kv", np.array([0, 0, nkv, hd], np.int64))
    b.const("shape.grouped_flat", np.array([0, nkv, -1, hd], np.int64))  # [B, nkv, g*S, hd]
    b.const("shape.heads", np.array([0, nh, -1, hd], np.int64))
    b.const("shape.hidden", np.array([0, 0, H], np.int64))
    b.const("axes.last", np.array([-1], np.int64))
    b.const("axes.1", np.array([1], np.int64))
    b.const("axes.12", np.array([1, 2], np.int64))
    b.const("split.half", np.array([hd // 2, hd // 2], np.int64))

    # token embedding (shared with the LM head when tied)
    embed = b.weight("model.embed_tokens.weight", weights["embed"])
    x = b.op("Gather", [embed, "input_ids"], axis=0)

    # rotary tables from position_ids: [B, 1, S, hd]
    pos = b.op("Cast", ["position_ids"], to=TensorProto.FLOAT)
    pos = b.op("Unsqueeze", [pos, "axes.last"])  # [B, S, 1]
    freqs = b.op("Mul", [pos, "const.inv_freq"])  # [B, S, hd/2]
    emb = b.op("Concat", [freqs, freqs], axis=-1)
    cos = b.op("Unsqueeze", [b.op("Cos", [emb]), "axes.1"])
    sin = b.op("Unsqueeze", [b.op("Sin", [emb]), "axes.1"])

    # attention bias [B, 1, 1, S, T]: causal (by index in the concatenated sequence) and padding
    shape_ids = b.op("Shape", ["input_ids"])
    seq_len = b.op("Gather", [shape_ids, "const.one_i"], axis=0)
    shape_mask = b.op("Shape", ["attention_mask"])
    total_len = b.op("Gather", [shape_mask, "const.one_i"], axis=0)
    past_len = b.op("Sub", [total_len, seq_len])
    key_idx = b.op("Range", ["const.zero_i", total_len, "const.one_i"])  # [T]
    q_idx = b.op("Range", [past_len, total_len, "const.one_i"])  # [S]
    q_idx = b.op("Unsqueeze", [q_idx, "axes.last"])  # [S, 1]
    causal = b.op("LessOrEqual", [key_idx, q_idx])  # [S, T]
    pad = b.op("Cast", ["attention_mask"], to=TensorProto.BOOL)
    pad = b.op("Unsqueeze", [pad, "axes.12"])  # [B, 1, 1, T]
    allowed = b.op("And", [causal, pad])  # [B, 1, S, T]
    bias = b.op("Where", [allowed, "const.zero_f", "const.neg_big"])
    bias = b.op("Unsqueeze", [bias, "axes.1"])  # [B, 1, 1, S, T]
    b.const("shape.scores5_head", np.array([0, nkv, group, -1], np.int64))
    b.const("shape.scores4_head", np.array([0, nkv, -1], np.int64))
    total_1 = b.op("Unsqueeze", [total_len, "axes.last"])
    shape5 = b.op("Concat", ["shape.scores5_head", total_1], axis=0)  # [B, nkv, g, S, T]
    shape4 = b.op("Concat", ["shape.scores4_head", total_1], axis=0)  # [B, nkv, g*S, T]

    def rope(t: str) -> str:  # t: [B, heads, S, hd], rotate-half convention
        x1, x2 = b.op("Split", [t, "split.half"], n_out=2, axis=-1)
        rot = b.op("Concat", [b.op("Neg", [x2]), x1], axis=-1)
        return b.op("Add", [b.op("Mul", [t, cos]), b.op("Mul", [rot, sin])])

    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}"
        blk = lambda n: weights[f"blocks.{i}.{n}"]  # noqa: E731
        h = _rms_norm(b, x, b.weight(f"{p}.input_layernorm.weight", blk("attn_norm")), eps)
        q = b.linear(h, f"{p}.self_attn.q_proj.weight", blk("q"), key=f"blocks.{i}.q")
        k = b.linear(h, f"{p}.self_attn.k_proj.weight", blk("k"), key=f"blocks.{i}.k")
        v = b.linear(h, f"{p}.self_attn.v_proj.weight", blk("v"), key=f"blocks.{i}.v")
        q = b.op("Transpose", [b.op("Reshape", [q, "shape.q"])], perm=[0, 2, 1, 3])  # [B, nh, S, hd]
        k = b.op("Transpose", [b.op("Reshape", [k, "shape.kv"])], perm=[0, 2, 1, 3])  # [B, nkv, S, hd]
        v = b.op("Transpose", [b.op("Reshape", [v, "shape.kv"])], perm=[0, 2, 1, 3])
        q = b.op("Mul", [rope(q), "const.scale"])
        k = rope(k)
        b.nodes.append(helper.make_node("Concat", [f"past_key_values.{i}.key", k], [f"present.{i}.key"], axis=2,
                                        name=f"{p}/concat_k"))
        b.nodes.append(helper.make_node("Concat", [f"past_key_values.{i}.value", v], [f"present.{i}.value"],
                                        axis=2, name=f"{p}/concat_v"))
        # grouped-query attention without repeating K/V: fold the query group into the sequence axis
        qg = b.op("Reshape", [q, "shape.grouped_flat"])  # [B, nkv, g*S, hd]
        kt = b.op("Transpose", [f"present.{i}.key"], perm=[0, 1, 3, 2])  # [B, nkv, hd, T]
        scores = b.op("MatMul", [qg, kt])  # [B, nkv, g*S, T]
        scores = b.op("Reshape", [scores, shape5])  # [B, nkv, g, S, T]
        scores = b.op("Add", [scores, bias])
        probs = b.op("Softmax", [scores], axis=-1)
        probs = b.op("Reshape", [probs, shape4])  # [B, nkv, g*S, T]
        ctx = b.op("MatMul", [probs, f"present.{i}.value"])  # [B, nkv, g*S, hd]
        ctx = b.op("Reshape", [ctx, "shape.heads"])  # [B, nh, S, hd]
        ctx = b.op("Reshape", [b.op("Transpose", [ctx], perm=[0, 2, 1, 3]), "shape.hidden"])
        x = b.op("Add", [x, b.linear(ctx, f"{p}.self_attn.o_proj.weight", blk("o"), key=f"blocks.{i}.o")])
        h = _rms_norm(b, x, b.weight(f"{p}.post_attention_layernorm.weight", blk("ffn_norm")), eps)
        gate = b.linear(h, f"{p}.mlp.gate_proj.weight", blk("gate"), key=f"blocks.{i}.gate")
        up = b.linear(h, f"{p}.mlp.up_proj.weight", blk("up"), key=f"blocks.{i}.up")
        act = b.op("Mul", [b.op("Mul", [gate, b.op("Sigmoid", [gate])]), up])
        # ffn_down has activation outliers: int8 there costs most of the accuracy, so it stays float
        x = b.op("Add", [x, b.linear(act, f"{p}.mlp.down_proj.weight", blk("down"), keep_float=True,
                                      key=f"blocks.{i}.down")])

    x = _rms_norm(b, x, b.weight("model.norm.weight", weights["norm"]), eps)
    head_key = "lm_head" if "lm_head" in weights and not cfg.tie_word_embeddings else "embed"
    if quantize == "gguf" and head_key in b.blocks and b.blocks[head_key].bits == 4:
        b.matmul_nbits(x, "lm_head.weight", b.blocks[head_key], output="logits")
        b.nodes[-1].name = "/lm_head/MatMul"
    elif quantize == "w16a16":
        # the head's input marked for add_scoring_head, which gathers the scored positions before the whole head
        head_in = "/lm_head/input"
        b.nodes.append(helper.make_node("Identity", [x], [head_in], name=HEAD_INPUT))
        b.linear_w16(head_in, "lm_head.weight", np.asarray(weights[head_key]).T, output="logits")
    else:
        if head_key == "lm_head":
            head = b.weight("lm_head.weight", np.asarray(weights["lm_head"]).T)
        else:
            head = b.op("Transpose", [embed], perm=[1, 0])
        b.nodes.append(helper.make_node("MatMul", [x, head], ["logits"], name="/lm_head/MatMul"))

    graph = helper.make_graph(b.nodes, "llama_decoder_with_past", inputs, outputs, b.inits)
    opsets = [helper.make_opsetid("", OPSET)]
    if any(n.domain == "com.microsoft" for n in b.nodes):
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="moraleval")
    model.ir_version = 8
    return model


_POSITIONWISE = {"Cast", "Add", "Mul", "Div", "Sub", "Tanh"}


def add_scoring_head(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace the ``logits`` output by ``selected_logprobs`` [B, K] and ``next_logprobs`` [B, V].

    Positions are gathered before the final vocabulary MatMul when the graph has one (then the head runs on K
    positions only); otherwise after ``logits`` (still never handed to Python in full).
    """
    g = model.graph
    out_names = [o.name for o in g.output]
    if "logits" not in out_names:
        raise ValueError("the graph has no 'logits' output")
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            consumers[i] = consumers.get(i, 0) + 1

    # find the tensor to gather positions from: the input A of the MatMul that ends the graph (or, when the head is
    # more than one MatMul, the input of the node build_llama marks as its start)
    gather_from, rewire_node, rewire_idx = "logits", None, None
    node, tensor = producers.get("logits"), "logits"
    hops = 0
    marked = next((n for n in g.node if n.name == HEAD_INPUT and n.op_type == "Identity"), None)
    if marked is not None:
        gather_from, rewire_node, rewire_idx = marked.input[0], marked, 0
        node = None
    while node is not None and hops < 4:
        if node.op_type in ("MatMul", "Gemm", "MatMulNBits") and consumers.get(node.input[0], 0) == 1:
            gather_from, rewire_node, rewire_idx = node.input[0], node, 0
            break
        if node.op_type not in _POSITIONWISE:
            break
        tensor = node.input[0]
        node = producers.get(tensor)
        hops += 1

    nodes: list[onnx.NodeProto] = []
    inits = [numpy_helper.from_array(np.array([-1], np.int64), "scoring.axes_last"),
             numpy_helper.from_array(np.array(-1, np.int64), "scoring.minus_one")]
    nodes.append(helper.make_node("Unsqueeze", [SELECT_POSITIONS, "scoring.axes_last"], ["scoring.pos3"]))
    if rewire_node is not None:
        nodes.append(helper.make_node("GatherND", [gather_from, "scoring.pos3"], ["scoring.hidden_sel"],
                                      batch_dims=1))
        rewire_node.input[rewire_idx] = "scoring.hidden_sel"
        logits = "logits"
    else:
        nodes.append(helper.make_node("GatherND", ["logits", "scoring.pos3"], ["scoring.logits_sel"],
                                      batch_dims=1))
        logits = "scoring.logits_sel"
    nodes.append(helper.make_node("Cast", [logits], ["scoring.logits_f32"], to=TensorProto.FLOAT))
    nodes.append(helper.make_node("LogSoftmax", ["scoring.logits_f32"], ["scoring.logprobs"], axis=-1))
    nodes.append(helper.make_node("Unsqueeze", [SELECT_TARGETS, "scoring.axes_last"], ["scoring.tgt3"]))
    nodes.append(helper.make_node("GatherElements", ["scoring.logprobs", "scoring.tgt3"], ["scoring.sel3"], axis=2))
    nodes.append(helper.make_node("Squeeze", ["scoring.sel3", "scoring.axes_last"], [SELECTED_LOGPROBS]))
    nodes.append(helper.make_node("Gather", ["scoring.logprobs", "scoring.minus_one"], [NEXT_LOGPROBS], axis=1))
    g.node.extend(nodes)
    g.initializer.extend(inits)
    g.input.extend([
        helper.make_tensor_value_info(SELECT_POSITIONS, TensorProto.INT64, ["batch_size", "num_selected"]),
        helper.make_tensor_value_info(SELECT_TARGETS, TensorProto.INT64, ["batch_size", "num_selected"]),
    ])
    keep = [o for o in g.output if o.name != "logits"]
    del g.output[:]
    g.output.extend(keep)
    g.output.extend([
        helper.make_tensor_value_info(SELECTED_LOGPROBS, TensorProto.FLOAT, ["batch_size", "num_selected"]),
        helper.make_tensor_value_info(NEXT_LOGPROBS, TensorProto.FLOAT, ["batch_size", None]),
    ])
    # value_info for the old logits shape would now be wrong (K instead of S): drop it
    keep_vi = [vi for vi in g.value_info if vi.name != "logits"]
    del g.value_info[:]
    g.value_info.extend(keep_vi)
    return model


def set_nbits_accuracy(model: onnx.ModelProto, level: int) -> int:
    """Set every MatMulNBits node's ``accuracy_level`` (4: int8 activations, quantised per block inside the
    kernel, as llama.cpp's Q8_1); returns how many nodes were changed."""
    n = 0
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            for a in node.attribute:
                if a.name == "accuracy_level":
                    a.i = level
                    n += 1
    return n
