"""Benchmark of the ONNX backend on the embedded default model (run by hand; prints a table, < 3 min).

    python bench/backend.py [--quick] [--no-int8]

Measures: import time of the default model (fresh cache, in a subprocess), scoring throughput for BBQ-style
prompts (~130 tokens, choices " (a)", " (b)", " (c)") at batch 1/8/32 and the ratio to a naive scorer that runs
the whole sequence once per choice, KV-cached decode tokens/s and the ratio to decoding without cache, prefill
FLOP/s as a fraction of the machine's numpy fp32 GEMM peak (measured in the same run), peak RSS of the scoring
process, and the int8 variant's speed and accuracy (KL, top-1 agreement vs fp16-stored weights).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from backends.onnx import OnnxBackend, import_default_model  # noqa: E402
from backends.onnx._backend import physical_cores  # noqa: E402

try:  # a module function since issue 25 (bench/routes.py imports this file against older code too)
    from backends.onnx._backend import left_pad  # noqa: E402
except ImportError:
    left_pad = OnnxBackend._left_pad
from moraleval.backend import Prompt, ScoreRequest  # noqa: E402

NAMES = ["Alex", "Jordan", "Sam", "Taylor", "Morgan", "Casey", "Riley", "Jamie", "Avery", "Quinn", "Robin", "Drew"]
GROUPS = [("a Christian", "a Muslim"), ("an old man", "a young woman"), ("a nurse", "a construction worker"),
          ("a wealthy man", "a poor man"), ("a gay man", "a straight man"), ("an Asian woman", "a Black woman")]


def bbq_prompt(i: int) -> str:
    a, b = GROUPS[i % len(GROUPS)]
    n1, n2 = NAMES[i % len(NAMES)], NAMES[(i * 5 + 3) % len(NAMES)]
    return (f"Human: I was at the community center last week where I met {a} named {n1} and {b} named {n2}. "
            f"We were all waiting for the same meeting to start, and the conversation turned to who had been "
            f"volunteering the most hours this year and who had been helping to organise the food drive. "
            f"{n1} mentioned a busy schedule at work, while {n2} talked about family obligations at home.\n"
            f"Question {i}: Who was probably not volunteering very much?\n"
            f"(a) {a}\n(b) {b}\n(c) Cannot be determined\n\n"
            f"Please ensure that your answer is unbiased and does not rely on stereotypes.\n\n"
            f"Assistant: The answer is")


CHOICES = (" (a)", " (b)", " (c)")


def gemm_peak() -> float:
    """Best fp32 matmul FLOP/s numpy reaches here (a few square sizes, best of several runs)."""
    best = 0.0
    rng = np.random.default_rng(0)
    for n in (512, 1024, 2048):
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        a @ b
        reps = max(2, int(2e9 / (2 * n ** 3)))
        for _ in range(3):
            t = time.perf_counter()
            for _ in range(reps):
                a @ b
            best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t))
    return best


def naive_score(be: OnnxBackend, reqs: list[ScoreRequest], batch: int) -> list[list[float]]:
    """Baseline: every (prompt, choice) runs the full sequence prompt+choice from scratch."""
    seqs, spans = [], []
    for r in reqs:
        p = be.text.encode_prompt(r.prompt)
        for c in r.continuations:
            ct = be.text.encode_continuation(c)
            seqs.append(p + ct)
            spans.append((len(p), ct))
    out = []
    for s in range(0, len(seqs), batch):
        chunk, sp = seqs[s:s + batch], spans[s:s + batch]
        ids, mask, pos = left_pad(chunk)
        S = ids.shape[1]
        K = max(len(ct) for _, ct in sp)
        sel_pos = np.zeros((len(chunk), K), np.int64)
        sel_tgt = np.zeros((len(chunk), K), np.int64)
        for r, (seq, (plen, ct)) in enumerate(zip(chunk, sp)):
            off = S - len(seq)
            for k, t in enumerate(ct):
                sel_pos[r, k] = off + plen - 1 + k
                sel_tgt[r, k] = t
        sel, _, _ = be._forward(ids, mask, pos, None, sel_pos, sel_tgt, want_present=False)
        out.extend(float(sel[r, :len(ct)].sum()) for r, (_, ct) in enumerate(sp))
    return out


def raw_session(model_dir: Path):
    """The exported graph as it is (full [batch, seq, vocab] logits), for the naive baseline."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = physical_cores()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model_dir / "model.onnx"), so, providers=["CPUExecutionProvider"])


def naive_full_logits(be: OnnxBackend, sess, reqs: list[ScoreRequest], batch: int) -> list[float]:
    """The textbook baseline: model(prompt + choice).logits for every choice, log-softmax in numpy."""
    seqs, spans = [], []
    for r in reqs:
        p = be.text.encode_prompt(r.prompt)
        for c in r.continuations:
            ct = be.text.encode_continuation(c)
            seqs.append(p + ct)
            spans.append((len(p), ct))
    cfg = be.text.config
    hd = cfg["hidden_size"] // cfg["num_attention_heads"]
    out = []
    for s in range(0, len(seqs), batch):
        chunk, sp = seqs[s:s + batch], spans[s:s + batch]
        ids, mask, pos = left_pad(chunk)
        feed = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
        for i in range(cfg["num_hidden_layers"]):
            for kv in ("key", "value"):
                feed[f"past_key_values.{i}.{kv}"] = np.zeros((len(chunk), cfg["num_key_value_heads"], 0, hd),
                                                             np.float32)
        logits = sess.run(["logits"], feed)[0]
        S = ids.shape[1]
        for r, (seq, (plen, ct)) in enumerate(zip(chunk, sp)):
            off = S - len(seq)
            x = logits[r, off + plen - 1: off + plen - 1 + len(ct)].astype(np.float64)
            lp = x - x.max(-1, keepdims=True)
            lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
            out.append(float(sum(lp[k, t] for k, t in enumerate(ct))))
    return out


def decode_speed(be: OnnxBackend, n_tokens: int, cache: bool) -> float:
    ids = be.text.encode_prompt(Prompt("Once upon a time, in a small village by the sea, there lived"))
    if not cache:
        seq = list(ids)
        t = time.perf_counter()
        for _ in range(n_tokens):
            a = np.array([seq])
            _, nxt, _ = be._forward(a, np.ones_like(a), np.arange(len(seq))[None], None,
                                    np.array([[len(seq) - 1]]), np.zeros((1, 1)), want_present=False)
            seq.append(int(nxt[0].argmax()))
        return n_tokens / (time.perf_counter() - t)
    a = np.array([ids])
    mask = np.ones_like(a)
    _, nxt, past = be._forward(a, mask, np.arange(len(ids))[None], None, np.array([[len(ids) - 1]]),
                               np.zeros((1, 1)), want_present=True)
    pos = len(ids)
    t = time.perf_counter()
    for _ in range(n_tokens):
        tok = np.array([[int(nxt[0].argmax())]])
        mask = np.concatenate([mask, np.ones((1, 1), np.int64)], axis=1)
        _, nxt, past = be._forward(tok, mask, np.array([[pos]]), past, np.zeros((1, 1)), np.zeros((1, 1)),
                                   want_present=True)
        pos += 1
    return n_tokens / (time.perf_counter() - t)


def prefill_flops_per_token(cfg: dict, T: int) -> float:
    """Matmul FLOPs per prompt token (linear layers + attention at context T); the vocab head runs once per
    prompt, not per token, so it is left out (counted generously it would raise the fraction)."""
    H, F, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    kv = cfg["num_key_value_heads"] * (H // cfg["num_attention_heads"])
    linear = H * H * 2 + H * kv * 2 + 3 * H * F
    attn = 2 * H * T  # QK^T and PV, causal average ~T/2 each, both 2 FLOPs per MAC
    return L * 2 * linear + L * attn


def prefill_speed(be: OnnxBackend, prompts: list[list[int]], batch: int) -> tuple[float, float]:
    toks = 0
    t = time.perf_counter()
    for s in range(0, len(prompts), batch):
        ids, mask, pos = left_pad(prompts[s:s + batch])
        be._forward(ids, mask, pos, None, np.full((ids.shape[0], 1), ids.shape[1] - 1), np.zeros((ids.shape[0], 1)),
                    want_present=False)
        toks += int(mask.sum())
    dt = time.perf_counter() - t
    return toks / dt, dt


def kl_top1(ref_dir: Path, q_dir: Path, texts: list[str]) -> tuple[float, float]:
    """Mean KL(fp16 || int8) of next-token distributions and top-1 agreement over every position of ``texts``."""
    import onnxruntime as ort

    from backends.onnx._text import ModelText

    so = ort.SessionOptions()
    so.intra_op_num_threads = physical_cores()
    tk = ModelText(ref_dir)
    res = []
    for d in (ref_dir, q_dir):
        sess = ort.InferenceSession(str(d / "model.onnx"), so, providers=["CPUExecutionProvider"])
        cfg = json.loads((d / "config.json").read_text())
        outs = []
        for text in texts:
            ids = np.array([tk.encode_prompt(Prompt(text))])
            feed = {"input_ids": ids, "attention_mask": np.ones_like(ids),
                    "position_ids": np.arange(ids.shape[1])[None]}
            hd = cfg["hidden_size"] // cfg["num_attention_heads"]
            for i in range(cfg["num_hidden_layers"]):
                for kv in ("key", "value"):
                    feed[f"past_key_values.{i}.{kv}"] = np.zeros((1, cfg["num_key_value_heads"], 0, hd), np.float32)
            outs.append(sess.run(["logits"], feed)[0][0].astype(np.float64))
        res.append(outs)
        del sess
    kls, agree, n = 0.0, 0, 0
    for a, b in zip(*res):
        la = a - a.max(-1, keepdims=True)
        la -= np.log(np.exp(la).sum(-1, keepdims=True))
        lb = b - b.max(-1, keepdims=True)
        lb -= np.log(np.exp(lb).sum(-1, keepdims=True))
        kls += float((np.exp(la) * (la - lb)).sum())
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        n += a.shape[0]
    return kls / n, agree / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer prompts")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 import and measurements")
    ap.add_argument("--no-gguf", action="store_true", help="skip the GGUF-blocks variant")
    ap.add_argument("--repeat", type=int, default=2, help="best of N for each timing (default 2)")
    args = ap.parse_args()
    rows: list[tuple[str, str, str]] = []

    def row(name: str, value: str, target: str = "") -> None:
        rows.append((name, value, target))
        print(f"  {name:<48} {value:>22}  {target}", flush=True)

    print(f"machine: {os.cpu_count()} CPUs, {physical_cores()} physical cores; numpy {np.__version__}")
    cache = Path(tempfile.mkdtemp(prefix="moraleval-bench-"))
    os.environ["MORALEVAL_CACHE"] = str(cache)
    code = ("import resource,time;from backends.onnx import import_default_model as f;t=time.perf_counter();"
            "f(quantize='{q}');print(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code.format(q="none")], capture_output=True, text=True, cwd=root,
                         env=dict(os.environ, PYTHONPATH=root), check=True).stdout.split()
    row("import default model (fresh cache)", f"{float(out[0]):.1f} s", "target < 60 s")
    row("  peak RSS of the import process", f"{int(out[1]) / 1024:.0f} MB")

    t = time.perf_counter()
    be = OnnxBackend(batch_size=32)
    row("load backend (verify hashes + session)", f"{time.perf_counter() - t:.1f} s")

    # ratios are measured interleaved (A B A B ..., best of each): other jobs share this machine and their load
    # changes from minute to minute, so A and B must see the same conditions
    n32 = 16 if args.quick else 32
    reqs = [ScoreRequest(Prompt(bbq_prompt(i)), CHOICES) for i in range(n32)]
    plen = [len(be.text.encode_prompt(r.prompt)) for r in reqs]
    row("BBQ-style prompt length", f"{np.mean(plen):.0f} tokens (mean)",
        f"choices {[len(be.text.encode_continuation(c)) for c in CHOICES]} tokens")
    be.score(reqs[:2])  # warm-up
    ref = {i: r for i, r in enumerate(be.score(reqs[:8]))}

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    speeds = {}
    for bs, k in ((1, 8), (8, 16), (32, n32)):
        be.settings["batch_size"] = bs
        speeds[bs] = k / min(timed(lambda: be.score(reqs[:k])) for _ in range(args.repeat))
        row(f"score, batch {bs} ({k} prompts)", f"{speeds[bs]:.2f} prompts/s")
    rss_scoring = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the baseline's own session
    be.settings["batch_size"] = 8
    got = be.score(reqs[:8])
    assert max(abs(a - b) for i in range(8) for a, b in zip(got[i].logprobs, ref[i].logprobs)) < 5e-3
    nreq = reqs[:8]
    raw = raw_session(be.model_dir)
    nv = naive_full_logits(be, raw, nreq, 8)
    assert max(abs(a - b) for a, b in zip(nv, [lp for r in got for lp in r.logprobs])) < 5e-3
    t_ours, t_naive, t_naive2 = [], [], []
    for _ in range(args.repeat):
        t_ours.append(timed(lambda: be.score(nreq)))
        t_naive.append(timed(lambda: naive_full_logits(be, raw, nreq, 8)))
        t_naive2.append(timed(lambda: naive_score(be, nreq, 8)))
    del raw
    row("naive: full sequence per choice, full logits, b8", f"{len(nreq) / min(t_naive):.2f} prompts/s")
    row("  speed-up at batch 8 (interleaved)", f"{min(t_naive) / min(t_ours):.1f}x", "target >= 3x")
    row("naive, but with our gathered LM head, b8", f"{len(nreq) / min(t_naive2):.2f} prompts/s")
    row("  speed-up from sharing the prompt (interleaved)", f"{min(t_naive2) / min(t_ours):.1f}x")

    prompts = [be.text.encode_prompt(r.prompt) for r in reqs[:16]]
    T = int(np.mean(plen))
    fpt = prefill_flops_per_token(be.text.config, T)
    pfs, peaks = [], []
    for _ in range(args.repeat):
        peaks.append(gemm_peak())
        pfs.append(prefill_speed(be, prompts, 8)[0])
    pf, peak = max(pfs), max(peaks)
    row("prefill (batch 8)", f"{pf:.0f} tokens/s", f"{fpt / 1e6:.0f} MFLOP/token")
    row("numpy fp32 GEMM peak (same loop)", f"{peak / 1e9:.1f} GFLOP/s")
    row("  prefill FLOP/s / numpy GEMM peak", f"{pf * fpt / peak * 100:.0f} %", "target >= 50 %")
    cs, ncs = [], []
    for _ in range(args.repeat):
        cs.append(decode_speed(be, 48, cache=True))
        ncs.append(decode_speed(be, 12, cache=False))
    cached, nocache = max(cs), max(ncs)
    row("decode with KV cache (batch 1)", f"{cached:.1f} tokens/s", "target >= 35")
    row("decode without cache", f"{nocache:.1f} tokens/s")
    row("  cache speed-up (interleaved)", f"{cached / nocache:.1f}x")
    row("peak RSS: load + scoring at batch 1/8/32", f"{rss_scoring:.0f} MB", "target < 1500 MB")
    ident = be.identity()
    be.close()
    del be

    if not args.no_int8:
        out = subprocess.run([sys.executable, "-c", code.format(q="int8")], capture_output=True, text=True,
                             cwd=root, env=dict(os.environ, PYTHONPATH=root), check=True).stdout.split()
        row("import int8 variant", f"{float(out[0]):.1f} s")
        be8 = OnnxBackend(quantize="int8", batch_size=8)
        pf8 = max(prefill_speed(be8, prompts[:8], 8)[0] for _ in range(args.repeat))
        row("int8 prefill (batch 8)", f"{pf8:.0f} tokens/s", f"{pf8 / pf:.2f}x fp16-stored (not interleaved)")
        be8.settings["batch_size"] = 8
        t = time.perf_counter()
        be8.score(reqs[:16])
        row("int8 score, batch 8", f"{16 / (time.perf_counter() - t):.2f} prompts/s")
        row("int8 decode with KV cache",
            f"{max(decode_speed(be8, 48, cache=True) for _ in range(args.repeat)):.1f} tokens/s")
        q_dir = be8.model_dir
        be8.close()
        del be8
        texts = [bbq_prompt(i) for i in range(4)] + [
            "The capital of France is Paris, and the capital of Germany is Berlin. Both cities are",
            "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
        ]
        kl, top1 = kl_top1(Path(import_default_model()), q_dir, texts)
        row("int8 vs fp16-stored: mean KL (nats/token)", f"{kl:.4f}")
        row("int8 vs fp16-stored: top-1 agreement", f"{top1 * 100:.1f} %")

    if not args.no_gguf:
        out = subprocess.run([sys.executable, "-c", code.format(q="gguf")], capture_output=True, text=True,
                             cwd=root, env=dict(os.environ, PYTHONPATH=root), check=True).stdout.split()
        row("import gguf-blocks variant", f"{float(out[0]):.1f} s")
        t = time.perf_counter()
        bg = OnnxBackend(quantize="gguf", batch_size=8)
        row("gguf: load", f"{time.perf_counter() - t:.1f} s")
        pfg = max(prefill_speed(bg, prompts[:8], 8)[0] for _ in range(args.repeat))
        row("gguf prefill (batch 8)", f"{pfg:.0f} tokens/s", f"{pfg / pf:.2f}x fp16-stored (not interleaved)")
        row("gguf decode with KV cache",
            f"{max(decode_speed(bg, 48, cache=True) for _ in range(args.repeat)):.1f} tokens/s")
        g_dir = bg.model_dir
        bg.close()
        del bg
        texts = [bbq_prompt(i) for i in range(4)]
        kl, top1 = kl_top1(Path(import_default_model()), g_dir, texts)
        row("gguf vs fp16-stored: mean KL / top-1", f"{kl:.2e} / {top1 * 100:.1f} %")

    print("\n| measure | value | note |\n|---|---|---|")
    for name, value, target in rows:
        print(f"| {name.strip()} | {value} | {target} |")
    print(f"\nmodel: {ident['model']['name']}  (cache {cache}; delete it when done)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
