"""Speed of the onnx backend's arithmetic routes on this machine, interleaved (run by hand; prints a table, JSON).

    MORALEVAL_DATA=/work/shared/data python bench/routes.py [--rounds 3] [--docs 240] \\
        [--routes today,none,w16a16,gguf,gguf-q8,int8,kv16,openvino] [--ov-python .venv-ov/bin/python]

Routes (the settings of the default model, bench/fidelity.py says how far each moves the numbers):

- ``today``: the code before issue 25 (``--baseline-ref``, default the merge-base with main, unpacked with
  ``git archive`` into a temporary folder), fp32, as the runner drives it (its call sizes);
- ``none``: fp32 now (the default); ``w16a16``, ``gguf``, ``gguf-q8``, ``int8``: ``quantize``; ``kv16``:
  ``kv_cache: "float16"``; ``openvino``: ``provider: "openvino"`` (bf16 on AMX), under ``--ov-python`` (an
  interpreter whose environment has onnxruntime-openvino instead of onnxruntime; skipped without it).

Each (route, round) is a fresh process, rounds interleave the routes (A B C ..., A B C ...), and the table shows the
medians and their ratios to the first route.  Measured per process, on lm-eval's BBQ items (bench/lmeval_bbq.me,
the first ``--docs``; a prompt is ~59 tokens, 12 continuations):

- **prefill tokens/s**: the prompts' real tokens over the time of their prefill passes, batched as the backend
  batches them in the calls the runner makes (``call_size("score")`` requests per call, plan order);
- **scoring items/s**: ``score()`` of every item, in those calls (prefill, continuations, top-k);
- **decode tokens/s**: 32 BBQ-style prompts, 64 greedy tokens each, at ``generate_batch_size`` 32 (the
  default): decode steps alone (``decode_timing()``), and the same at batch 1 on 4 of them (ratio in the table);
- **peak RSS** of the process (model load included).
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

ROOT = Path(__file__).resolve().parents[1]
ROUTES = {"today": {}, "none": {}, "w16a16": {"quantize": "w16a16"}, "gguf": {"quantize": "gguf"},
          "gguf-q8": {"quantize": "gguf-q8"}, "int8": {"quantize": "int8"}, "kv16": {"kv_cache": "float16"},
          "openvino": {"provider": "openvino"}}


def lmeval_requests(n: int):
    from moraleval.checker import check
    from moraleval.planner import compile_plan

    plan = compile_plan(check(ROOT / "bench" / "lmeval_bbq.me", mode="plan"))
    return [r.score_request({}) for r in plan.requests][:n]


def measure(route: str, docs: int) -> dict:
    """In a fresh process (the code on sys.path decides today vs now)."""
    from backends.onnx import OnnxBackend
    from bench.backend import bbq_prompt
    from moraleval.backend import GenerateRequest, Prompt

    settings = ROUTES[route]
    t0 = time.perf_counter()
    be = OnnxBackend(**settings)
    load_s = time.perf_counter() - t0
    reqs = lmeval_requests(docs)
    call = max(8, int(be.call_size("score")))  # the runner's call: max(--batch-size 8, call_size)
    be.score(reqs[:4])  # warm-up
    # prefill: the backend's own batching of each call's prompts
    prompts = [be._prompt_ids(i, r.prompt) for i, r in enumerate(reqs)]
    t_prefill = 0.0
    for s in range(0, len(prompts), call):
        chunk = prompts[s:s + call]
        for batch in be._batches([len(p) for p in chunk], be.settings["batch_size"]):
            t = time.perf_counter()
            be._decoder.prefill([chunk[i] for i in batch], want_present=False)
            t_prefill += time.perf_counter() - t
    tokens = sum(len(p) for p in prompts)
    t = time.perf_counter()
    for s in range(0, len(reqs), call):
        be.score(reqs[s:s + call])
    t_score = time.perf_counter() - t
    gens = [GenerateRequest(Prompt(bbq_prompt(i)), max_tokens=64) for i in range(32)]
    d0 = be.decode_timing()
    be.generate(gens)
    d1 = be.decode_timing()
    decode = (d1["decode_rows"] - d0["decode_rows"]) / (d1["decode_s"] - d0["decode_s"])
    rows = (d1["decode_rows"] - d0["decode_rows"]) / (d1["decode_steps"] - d0["decode_steps"])
    be.settings["generate_batch_size"] = 1
    d0 = be.decode_timing()
    be.generate(gens[:4])
    d1 = be.decode_timing()
    decode_b1 = (d1["decode_rows"] - d0["decode_rows"]) / (d1["decode_s"] - d0["decode_s"])
    return {"route": route, "settings": settings, "load_s": load_s, "prefill_tok_s": tokens / t_prefill,
            "prefill_tokens": tokens, "score_items_s": len(reqs) / t_score, "decode_tok_s": decode,
            "decode_rows_per_step": rows, "decode_b1_tok_s": decode_b1,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def baseline_tree(ref: str) -> Path:
    dest = Path(tempfile.mkdtemp(prefix="moraleval-baseline-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--docs", type=int, default=240)
    ap.add_argument("--routes", default="today,none,w16a16,gguf,gguf-q8,int8,kv16,openvino")
    ap.add_argument("--ov-python", help="interpreter with onnxruntime-openvino (for the openvino route)")
    ap.add_argument("--baseline-ref", help="the code of the 'today' route (default: merge-base with main)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.docs)))
        return 0
    routes = [r for r in args.routes.split(",") if r]
    unknown = set(routes) - set(ROUTES)
    if unknown:
        ap.error(f"unknown routes {sorted(unknown)}; choose from {', '.join(ROUTES)}")
    if "openvino" in routes and not args.ov_python:
        print("openvino route skipped: no --ov-python", file=sys.stderr)
        routes.remove("openvino")
    base = None
    if "today" in routes:
        ref = args.baseline_ref or subprocess.run(["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
                                                  capture_output=True, text=True, check=True).stdout.strip()
        base = baseline_tree(ref)
        print(f"today = {ref} in {base}")
    rows: list[dict] = []
    loads = [os.getloadavg()[0]]
    for rnd in range(args.rounds):
        for route in routes:
            code = str(base) if route == "today" else str(ROOT)
            python = args.ov_python if route == "openvino" else sys.executable
            # the measuring code is this file's, run against the route's backend (PYTHONPATH decides)
            cmd = [python, "-c", "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], "
                                 "run_name='__main__')", str(Path(__file__).resolve()), "--one", route,
                   "--docs", str(args.docs)]
            env = dict(os.environ, PYTHONPATH=code + os.pathsep + str(ROOT))
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=code)
            if out.returncode:
                print(out.stderr[-3000:], file=sys.stderr)
                return 1
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["round"] = rnd
            rows.append(row)
            loads.append(os.getloadavg()[0])
            print(f"  round {rnd} {route:9s} prefill {row['prefill_tok_s']:7.0f} tok/s  score "
                  f"{row['score_items_s']:6.2f} items/s  decode {row['decode_tok_s']:6.1f} tok/s "
                  f"(b1 {row['decode_b1_tok_s']:5.1f})  rss {row['rss_mb']:5.0f} MB", flush=True)
    print(f"\nload average (1 min) during the run: {min(loads):.1f} .. {max(loads):.1f} on {os.cpu_count()} CPUs; "
          f"{args.rounds} interleaved rounds, medians; ratios to '{routes[0]}'")
    med = {r: {k: float(np.median([x[k] for x in rows if x["route"] == r]))
               for k in ("prefill_tok_s", "score_items_s", "decode_tok_s", "decode_b1_tok_s", "decode_rows_per_step",
                         "load_s")} for r in routes}
    for r in routes:
        med[r]["rss_mb"] = max(x["rss_mb"] for x in rows if x["route"] == r)
    b = med[routes[0]]
    print("| route | settings | prefill tok/s | scoring items/s | decode tok/s (b32) | decode b32/b1 | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for r in routes:
        m = med[r]
        print(f"| {r} | `{json.dumps(ROUTES[r])}` | {m['prefill_tok_s']:.0f} ({m['prefill_tok_s'] / b['prefill_tok_s']:.2f}x) "
              f"| {m['score_items_s']:.2f} ({m['score_items_s'] / b['score_items_s']:.2f}x) "
              f"| {m['decode_tok_s']:.1f} ({m['decode_tok_s'] / b['decode_tok_s']:.2f}x) "
              f"| {m['decode_tok_s'] / m['decode_b1_tok_s']:.1f}x | {m['rss_mb']:.0f} MB |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "medians": med, "load": loads}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
