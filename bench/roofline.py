"""What this machine allows a decode step, measured: onnxruntime's own fp32 MatMul on the decoder's shapes and the
memory read bandwidth (run by hand, or imported by bench/cot.py).

    python bench/roofline.py [--rows 1,8,32,64] [--ctx 400]

A decode step of A sequences runs every linear layer on A rows (compute: weights reused across rows) and then
reads each sequence's whole KV cache in attention (bandwidth: nothing reused).  onnxruntime runs the two one after
the other, so a lower bound on one step is

    t_step(A, ctx) >= t_matmul(A)  +  A * kv_bytes(ctx) / read_bandwidth

with ``t_matmul(A)`` the measured time of one step's matmuls (all layers and the vocabulary head, on A rows, in a
graph of only those MatMuls, with distinct weights per layer as in the model, at the backend's thread count) and ``kv_bytes(ctx)`` the fp32 keys and values of
``ctx`` positions in every layer.  The bound's tokens/s (A / t_step) is the most batching can give; bench/cot.py
prints it next to the measured rates.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# SmolLM2-135M (the embedded default): hidden, intermediate, layers, kv heads x head_dim, vocabulary
DEFAULT_SHAPE = {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
                 "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152}


SHAPE_KEYS = tuple(DEFAULT_SHAPE)


def _kv_width(cfg: dict) -> int:
    return cfg["num_key_value_heads"] * (cfg["hidden_size"] // cfg["num_attention_heads"])


def _linear_shapes(cfg: dict) -> list[tuple[int, int]]:
    """(in, out) of one layer's matmuls: q, k, v, o, gate, up, down."""
    H, F, kv = cfg["hidden_size"], cfg["intermediate_size"], _kv_width(cfg)
    return [(H, H), (H, kv), (H, kv), (H, H), (H, F), (H, F), (F, H)]


def matmul_flops_per_token(cfg: dict) -> int:
    """The linear layers' and the vocabulary head's FLOPs for one token (2 a multiply-add)."""
    return 2 * (cfg["num_hidden_layers"] * sum(i * o for i, o in _linear_shapes(cfg))
                + cfg["hidden_size"] * cfg["vocab_size"])


def kv_bytes_per_position(cfg: dict, itemsize: int = 4) -> int:
    return 2 * _kv_width(cfg) * cfg["num_hidden_layers"] * itemsize


def matmul_step_seconds(cfg: dict, rows: int, threads: int, repeats: int = 7) -> float:
    """Best time of one decode step's matmuls on ``rows`` rows, in onnxruntime (CPU provider, fp32)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, inputs, outputs = [], [], [], []
    # every layer's weights, distinct (as in the model: 0.5 GB that does not fit in any cache), and the head
    shapes = _linear_shapes(cfg) * cfg["num_hidden_layers"] + [(cfg["hidden_size"], cfg["vocab_size"])]
    widths = sorted({i for i, _ in shapes})
    inputs = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [rows, i]) for i in widths]
    for k, (i, o) in enumerate(shapes):
        inits.append(numpy_helper.from_array((rng.standard_normal((i, o)) * 0.02).astype(np.float32), f"w{k}"))
        nodes.append(helper.make_node("MatMul", [f"x{i}", f"w{k}"], [f"y{k}"]))
        outputs.append(helper.make_tensor_value_info(f"y{k}", TensorProto.FLOAT, [rows, o]))
    model = helper.make_model(helper.make_graph(nodes, "matmuls", inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    feed = {f"x{i}": rng.standard_normal((rows, i)).astype(np.float32) for i in widths}
    sess.run(None, feed)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        sess.run(None, feed)
        best = min(best, time.perf_counter() - t)
    return best


def read_bandwidth(mb: int = 512, repeats: int = 5) -> float:
    """Bytes/s of a streaming read (numpy sum of float32, best of several)."""
    a = np.ones(mb << 18, np.float32)
    a.sum()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a.sum()
        best = min(best, time.perf_counter() - t)
    return a.nbytes / best


def step_bound(cfg: dict, rows: int, ctx: float, matmul_s: float, bandwidth: float) -> float:
    """Lower bound (seconds) on one decode step: matmuls, then every row's KV read once."""
    return matmul_s + rows * ctx * kv_bytes_per_position(cfg) / bandwidth


def main() -> int:
    from backends.onnx._backend import physical_cores

    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="1,8,32,64")
    ap.add_argument("--ctx", type=float, default=400)
    args = ap.parse_args()
    cfg = DEFAULT_SHAPE
    bw = read_bandwidth()
    print(f"read bandwidth {bw / 1e9:.1f} GB/s; KV {kv_bytes_per_position(cfg) / 1024:.0f} KiB per position")
    for a in (int(x) for x in args.rows.split(",")):
        mm = matmul_step_seconds(cfg, a, physical_cores())
        flops = a * matmul_flops_per_token(cfg)
        t = step_bound(cfg, a, args.ctx, mm, bw)
        print(f"rows {a:4d}: matmuls {mm * 1e3:7.1f} ms ({flops / mm / 1e9:6.1f} GFLOP/s)  bound at ctx "
              f"{args.ctx:.0f}: {t * 1e3:7.1f} ms/step = {a / t:7.1f} tok/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
