"""The fidelity gate of issue 25: how far an arithmetic route moves the default model's numbers (run by hand; prints
a table, writes JSON).

    MORALEVAL_DATA=/work/shared/data python bench/fidelity.py --candidate '{"quantize": "w16a16"}' [--candidate ...]

Each candidate is a set of OnnxBackend settings, compared with the reference (``--reference``, default the fp32
default model, ``{}``) on:

- **KL**: mean KL(reference || candidate) of the next-token distribution over every position of six texts (four
  BBQ-style prompts, prose, code: bench/backend.py's), and the top-1 agreement over those positions;
- **lm-eval BBQ**: the answer (argmax over lm-evaluation-harness's 12 continuations, bench/lmeval_bbq.me) on the
  first 240 rows of BBQ Religion: how many differ, and the accuracy of each;
- **quick start**: the answer (argmax over the options) of every quick-start item scored without a chain of thought
  (specs/quickstart.me: BBQ Q and Q_IF, Winogender's three conditions): how many differ;
- **chains of thought**: the quick start's 48 greedy CoT generations (48 tokens): how many texts differ, and how
  many of their answers (the follow-up turn scored on each side's own text).

The gate (issue 25): KL <= 1e-3 nats/token, the lm-eval answer identical on >= 99.5 % of the 240 items and on every
quick-start item without a chain of thought.  A candidate that needs another onnxruntime build (provider
"openvino": pip install onnxruntime-openvino) runs in that environment: ``--python`` names its interpreter, and
the reference then runs in the same process under it.  ``--activation-int8`` measures what int8 activations alone
cost (per token, dynamic; per tensor, static scales calibrated on other prompts), with the weights left in fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GATE_KL = 1e-3
GATE_LMEVAL = 0.995


def texts() -> list[str]:
    from bench.backend import bbq_prompt

    return [bbq_prompt(i) for i in range(4)] + [
        "The capital of France is Paris, and the capital of Germany is Berlin. Both cities are",
        "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    ]


def position_logprobs(be, ids: list[int]) -> np.ndarray:
    """log-softmax of the next-token logits at every position of ``ids`` [L, vocab], from the backend's own graph
    (its scoring head's log-probabilities made an output), in one right-padded prefill."""
    from onnx import TensorProto, helper

    from backends.onnx._ragged import SEQLENS, TOTAL

    if not hasattr(be, "_fidelity_session"):
        proto = be.prepared_graph()
        proto.graph.output.append(helper.make_tensor_value_info("scoring.logprobs", TensorProto.FLOAT, None))
        be._fidelity_session = be.create_session(proto.SerializeToString())
    L = len(ids)
    S = L + 1
    a = np.zeros((1, S), np.int64)
    a[0, :L] = ids
    feed = {"input_ids": a, "position_ids": np.arange(S)[None], SEQLENS: np.array([L - 1], np.int32),
            TOTAL: np.array([S], np.int32), "select_positions": np.arange(L)[None],
            "select_targets": np.zeros((1, L), np.int64)}
    for name in be._past_names:
        feed[name] = np.zeros((1, be._kv_heads, 0, be._head_dim), be._past_dtype)
    return be._fidelity_session.run(["scoring.logprobs"], feed)[0][0].astype(np.float64)


def activation_int8_kl() -> dict[str, float]:
    """KL(default || default with int8 activations) over the six texts, the activations of every linear layer
    (the LM head excepted) rounded to int8 in the graph: per token (dynamic, a scale per row) and per tensor with
    static scales (calibrated: max |x| of each layer's input over 16 other BBQ-style prompts).  Weights stay fp32, so
    this isolates what int8 activations alone cost, whatever GEMM would then run them."""
    from onnx import TensorProto, helper, numpy_helper

    from backends.onnx import OnnxBackend
    from bench.backend import bbq_prompt
    from moraleval.backend import Prompt

    be = OnnxBackend()
    ref = [position_logprobs(be, be.text.encode_prompt(Prompt(t))) for t in texts()]
    base = be.prepared_graph()
    linear = [n for n in base.graph.node if n.op_type == "MatMul" and "lm_head" not in n.name]
    # calibration: each linear layer's input max |x| over prompts that are not the six texts
    calib = base.__class__()
    calib.CopyFrom(base)
    inputs = list(dict.fromkeys(n.input[0] for n in linear))  # q, k and v share theirs, as gate and up do
    for x in inputs:
        calib.graph.output.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, None))
    sess = be.create_session(calib.SerializeToString())
    peak = {x: 0.0 for x in inputs}
    from backends.onnx._ragged import SEQLENS, TOTAL

    for i in range(100, 116):
        ids = be.text.encode_prompt(Prompt(bbq_prompt(i)))
        L = len(ids)
        feed = {"input_ids": np.array([ids + [0]]), "position_ids": np.arange(L + 1)[None],
                SEQLENS: np.array([L - 1], np.int32), TOTAL: np.array([L + 1], np.int32),
                "select_positions": np.array([[L - 1]]), "select_targets": np.zeros((1, 1), np.int64)}
        for name in be._past_names:
            feed[name] = np.zeros((1, be._kv_heads, 0, be._head_dim), be._past_dtype)
        for name, x in zip(inputs, sess.run(inputs, feed)):
            peak[name] = max(peak[name], float(np.abs(x[:, :L]).max()))
    out = {}
    for mode in ("per-token dynamic", "per-tensor static"):
        g = base.__class__()
        g.CopyFrom(base)
        nodes = []
        for k, n in enumerate(g.graph.node):
            if n.op_type == "MatMul" and "lm_head" not in n.name:
                x, q = n.input[0], f"int8act/{k}"
                if mode == "per-token dynamic":
                    nodes += [helper.make_node("Abs", [x], [q + "/abs"]),
                              helper.make_node("ReduceMax", [q + "/abs"], [q + "/max"], axes=[-1], keepdims=1),
                              helper.make_node("Div", [q + "/max", "int8act.127"], [q + "/scale"])]
                else:
                    g.graph.initializer.append(numpy_helper.from_array(
                        np.array(max(peak[x], 1e-30) / 127, np.float32), q + "/scale"))
                nodes += [helper.make_node("Div", [x, q + "/scale"], [q + "/d"]),
                          helper.make_node("Round", [q + "/d"], [q + "/r"]),
                          helper.make_node("Clip", [q + "/r", "int8act.m127", "int8act.127"], [q + "/c"]),
                          helper.make_node("Mul", [q + "/c", q + "/scale"], [q + "/q"])]
                n.input[0] = q + "/q"
            nodes.append(n)
        del g.graph.node[:]
        g.graph.node.extend(nodes)
        g.graph.initializer.extend([numpy_helper.from_array(np.array(127, np.float32), "int8act.127"),
                                    numpy_helper.from_array(np.array(-127, np.float32), "int8act.m127")])
        g.graph.output.append(helper.make_tensor_value_info("scoring.logprobs", TensorProto.FLOAT, None))
        s = be.create_session(g.SerializeToString())
        kl = n_pos = 0.0
        for t, a in zip(texts(), ref):
            be._fidelity_session = s
            b = position_logprobs(be, be.text.encode_prompt(Prompt(t)))
            kl += float((np.exp(a) * (a - b)).sum())
            n_pos += a.shape[0]
        out[mode] = kl / n_pos
    return out


def plans():
    from moraleval.checker import check
    from moraleval.plan.compile import compile_plan

    data = os.environ.pop("MORALEVAL_DATA", None)
    quick = compile_plan(check(ROOT / "specs" / "quickstart.me", mode="plan"))  # its builtin sample
    if data is not None:
        os.environ["MORALEVAL_DATA"] = data
    lmeval = compile_plan(check(ROOT / "bench" / "lmeval_bbq.me", mode="plan"))
    return quick, lmeval


def measure(settings: dict) -> dict:
    """Everything the gate compares, for one configuration (in this process)."""
    from backends.onnx import OnnxBackend
    from moraleval.backend import Prompt

    be = OnnxBackend(**settings)
    quick, lmeval = plans()
    out: dict = {"settings": settings, "identity": be.identity()}
    out["texts"] = [position_logprobs(be, be.text.encode_prompt(Prompt(t))) for t in texts()]
    lm_reqs = [r.score_request({}) for r in lmeval.requests]
    lm = be.score(lm_reqs)
    out["lmeval_answers"] = [int(np.argmax(r.logprobs)) for r in lm]
    out["lmeval_requests"] = [r.key for r in lmeval.requests]
    plain = [r for r in quick.requests if not r.generate_steps]
    q = be.score([r.score_request({}) for r in plain])
    out["quick_answers"] = {r.key: int(np.argmax(s.logprobs)) for r, s in zip(plain, q)}
    cot = [r for r in quick.requests if r.generate_steps]
    gens = be.generate([r.generate_request(0, {}) for r in cot])
    out["cot_texts"] = {r.key: g.text for r, g in zip(cot, gens)}
    follow = be.score([r.score_request({r.generate_steps[0][1].name: g.text}) for r, g in zip(cot, gens)])
    out["cot_answers"] = {r.key: int(np.argmax(s.logprobs)) for r, s in zip(cot, follow)}
    return out


def lmeval_accuracy(answers: list[int]) -> float:
    """lm-eval's acc: the chosen continuation's value (the dataset's answer index) is the label."""
    _, lmeval = plans()
    items = {i.request: i for i in lmeval.items}
    ok = sum(int(items[r.key].choice_values[a] == items[r.key].values["label"])
             for r, a in zip(lmeval.requests, answers))
    return ok / len(answers)


def compare(ref: dict, cand: dict) -> dict:
    kl = agree = n = 0.0
    for a, b in zip(ref["texts"], cand["texts"]):
        kl += float((np.exp(a) * (a - b)).sum())
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        n += a.shape[0]
    lm_same = sum(x == y for x, y in zip(ref["lmeval_answers"], cand["lmeval_answers"]))
    quick_diff = [k for k in ref["quick_answers"] if ref["quick_answers"][k] != cand["quick_answers"][k]]
    cot_text_diff = sum(ref["cot_texts"][k] != cand["cot_texts"][k] for k in ref["cot_texts"])
    cot_answer_diff = sum(ref["cot_answers"][k] != cand["cot_answers"][k] for k in ref["cot_answers"])
    res = {"kl": kl / n, "top1": agree / n, "positions": int(n),
           "lmeval_same": lm_same, "lmeval_n": len(ref["lmeval_answers"]),
           "lmeval_acc_ref": lmeval_accuracy(ref["lmeval_answers"]),
           "lmeval_acc": lmeval_accuracy(cand["lmeval_answers"]),
           "quick_differ": len(quick_diff), "quick_n": len(ref["quick_answers"]),
           "cot_texts_differ": cot_text_diff, "cot_answers_differ": cot_answer_diff, "cot_n": len(ref["cot_texts"])}
    res["passes"] = bool(res["kl"] <= GATE_KL and lm_same >= GATE_LMEVAL * res["lmeval_n"] and not quick_diff)
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidate", action="append", default=[], help="OnnxBackend settings as JSON (repeatable)")
    ap.add_argument("--reference", default="{}", help="the reference's settings (default: the default model)")
    ap.add_argument("--python", help="run everything under this interpreter (e.g. a venv with onnxruntime-openvino)")
    ap.add_argument("--json", type=Path, help="write the comparison here")
    ap.add_argument("--activation-int8", action="store_true",
                    help="also: KL of int8 activations alone (per token, dynamic; per tensor, static calibrated)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: settings JSON -> pickle path
    args = ap.parse_args()
    if args.activation_int8:
        for mode, kl in activation_int8_kl().items():
            print(f"int8 activations, {mode}, fp32 weights: KL {kl:.2e} nats/token (gate {GATE_KL:.0e})")
        if not args.candidate:
            return 0
    if args.one:
        import pickle

        settings, dest = json.loads(args.one), args.json
        with open(dest, "wb") as f:
            pickle.dump(measure(settings), f)
        return 0
    if not args.candidate:
        ap.error("give at least one --candidate")
    import pickle
    import tempfile

    python = args.python or sys.executable
    results = {}
    tmp = Path(tempfile.mkdtemp(prefix="moraleval-fidelity-"))
    for k, settings in enumerate([args.reference, *args.candidate]):
        dest = tmp / f"{k}.pickle"
        subprocess.run([python, __file__, "--one", settings, "--json", str(dest)], check=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
        with open(dest, "rb") as f:
            results[settings] = pickle.load(f)
    ref = results[args.reference]
    rows = {}
    print(f"reference {args.reference}: lm-eval BBQ accuracy {lmeval_accuracy(ref['lmeval_answers']):.4f}")
    print("| candidate | KL (nats/token) | top-1 | lm-eval answers same | accuracy | quick start answers differ "
          "| CoT texts differ | CoT answers differ | gate |")
    print("|---|---|---|---|---|---|---|---|---|")
    for settings in args.candidate:
        c = compare(ref, results[settings])
        rows[settings] = c
        print(f"| `{settings}` | {c['kl']:.2e} | {c['top1'] * 100:.2f} % | {c['lmeval_same']}/{c['lmeval_n']} "
              f"| {c['lmeval_acc']:.4f} | {c['quick_differ']}/{c['quick_n']} | {c['cot_texts_differ']}/{c['cot_n']} "
              f"| {c['cot_answers_differ']}/{c['cot_n']} | {'passes' if c['passes'] else 'fails'} |")
    if args.json:
        args.json.write_text(json.dumps({"reference": args.reference, "python": python, "candidates": rows},
                                        indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
