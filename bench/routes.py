"""Speed of the onnx backend's arithmetic routes on this machine, interleaved (run by hand; prints a table, JSON).

    MORALEVAL_DATA=/work/shared/data python bench/routes.py [--rounds 3] [--docs 240] \\
        [--routes today,none,w16a16,gguf,gguf-q8,int8,kv16,openvino] [--ov-python .venv-ov/bin/python]

Routes (the settings of the default model; bench/fidelity.py says how far each moves the numbers):

- ``today``: the code before issue 25 (``--baseline-ref``, default the merge-base with main, unpacked with
  ``git archive`` into a temporary folder), fp32, as the runner drives it (its call sizes);
- ``none``: fp32 now (the default); ``w16a16``, ``gguf``, ``gguf-q8``, ``int8``: ``quantize``; ``kv16``:
  ``kv_cache: "float16"``; ``openvino``: ``provider: "openvino"`` (bf16 on AMX), under ``--ov-python`` (an
  interpreter whose environment has onnxruntime-openvino instead of onnxruntime; skipped without it).

The machine is shared and its load changes from one minute to the next, so every route runs in its own worker
process (its own code, environment and peak RSS), all loaded at once, and the coordinator hands them the same
small piece of work in turn — one call's prefills, one call's scoring, one batch of decoding — round after round:
each piece's ratio compares routes that ran seconds apart.  The table shows, per route, the median over pieces of
(the first route's time / the route's time), and the rates from the summed times.  Workloads, on lm-eval's BBQ
items (bench/lmeval_bbq.me, the first ``--docs``; a prompt is ~59 tokens, 12 continuations):

- **prefill tokens/s**: one runner call's prompts (``call_size("score")`` requests, plan order), prefilled as the
  backend batches them; real tokens over the time of the prefill passes;
- **scoring items/s**: ``score()`` of one call's items (prefill, continuations, top-k);
- **decode tokens/s**: 32 BBQ-style prompts, 48 greedy tokens each, at ``generate_batch_size`` 32 (the default),
  decode steps alone (``decode_timing()``); and 4 of them one at a time (``b1``);
- **peak RSS** of the worker (model load and everything above).
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
WORK = ("prefill", "score", "decode", "decode_b1")


def serve(route: str, docs: int) -> None:
    """Worker: load the route's backend, then do what the coordinator asks, one JSON line in, one out."""
    from backends.onnx import OnnxBackend
    from bench.backend import bbq_prompt
    from moraleval.backend import GenerateRequest, Prompt
    from moraleval.checker import check
    try:  # the baseline ('today') worker runs this file against the code before issue 20's layout
        from moraleval.plan.compile import compile_plan
    except ImportError:
        from moraleval.planner import compile_plan

    be = OnnxBackend(**ROUTES[route])
    try:  # the backend's length-sorted batches (a method of the backend before issue 25's split)
        from backends.onnx._backend import length_batches

        def batches(lengths: list[int]) -> list[list[int]]:
            return length_batches(lengths, be.settings["batch_size"], be.settings["max_batch_tokens"])
    except ImportError:
        def batches(lengths: list[int]) -> list[list[int]]:
            return be._batches(lengths, be.settings["batch_size"])
    plan = compile_plan(check(ROOT / "bench" / "lmeval_bbq.me", mode="plan"))
    reqs = [r.score_request({}) for r in plan.requests][:docs]
    call = max(8, int(be.call_size("score")))  # the runner's call: max(--batch-size 8, call_size)
    gens = [GenerateRequest(Prompt(bbq_prompt(i)), max_tokens=48) for i in range(32)]
    be.score(reqs[:4])  # warm-up
    print(json.dumps({"ready": route, "call": call}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        span = reqs[cmd.get("a", 0):cmd.get("b", 0)]  # this piece's items, in this route's runner calls
        calls = [span[s:s + call] for s in range(0, len(span), call)]
        if op == "prefill":
            t, work = 0.0, 0
            for c in calls:
                chunk = [be._prompt_ids(i, r.prompt) for i, r in enumerate(c)]
                work += sum(len(p) for p in chunk)
                for batch in batches([len(p) for p in chunk]):
                    t0 = time.perf_counter()
                    be._decoder.prefill([chunk[i] for i in batch], want_present=False)
                    t += time.perf_counter() - t0
            out = {"s": t, "work": work}
        elif op == "score":
            t0 = time.perf_counter()
            for c in calls:
                be.score(c)
            out = {"s": time.perf_counter() - t0, "work": len(span)}
        elif op in ("decode", "decode_b1"):
            be.settings["generate_batch_size"] = 1 if op == "decode_b1" else 32
            d0 = be.decode_timing()
            be.generate(gens[:4] if op == "decode_b1" else gens)
            d1 = be.decode_timing()
            out = {"s": d1["decode_s"] - d0["decode_s"], "work": d1["decode_rows"] - d0["decode_rows"],
                   "steps": d1["decode_steps"] - d0["decode_steps"]}
        elif op == "rss":
            out = {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        else:
            break
        print(json.dumps(out), flush=True)


def baseline_tree(ref: str) -> Path:
    dest = Path(tempfile.mkdtemp(prefix="moraleval-baseline-"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


class Worker:
    def __init__(self, route: str, python: str, code: Path, docs: int) -> None:
        # the serving code is this file's, against the route's backend (PYTHONPATH decides which code)
        cmd = [python, "-c", "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], "
                             "run_name='__main__')", str(Path(__file__).resolve()), "--serve", route,
               "--docs", str(docs)]
        env = dict(os.environ, PYTHONPATH=str(code) + os.pathsep + str(ROOT))
        self.route = route
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=str(code))
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"worker {self.route} ended (exit {self.proc.wait()})")
        return json.loads(line)

    def ask(self, op: str, a: int = 0, b: int = 0) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, "a": a, "b": b}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--docs", type=int, default=240)
    ap.add_argument("--routes", default="today,none,w16a16,gguf,gguf-q8,int8,kv16,openvino")
    ap.add_argument("--ov-python", help="interpreter with onnxruntime-openvino (for the openvino route)")
    ap.add_argument("--baseline-ref", help="the code of the 'today' route (default: merge-base with main)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve, args.docs)
        return 0
    routes = [r for r in args.routes.split(",") if r]
    unknown = set(routes) - set(ROUTES)
    if unknown:
        ap.error(f"unknown routes {sorted(unknown)}; choose from {', '.join(ROUTES)}")
    if "openvino" in routes and not args.ov_python:
        print("openvino route skipped: no --ov-python", file=sys.stderr)
        routes.remove("openvino")
    code = {r: ROOT for r in routes}
    if "today" in routes:
        ref = args.baseline_ref or subprocess.run(["git", "-C", str(ROOT), "merge-base", "HEAD", "main"],
                                                  capture_output=True, text=True, check=True).stdout.strip()
        code["today"] = baseline_tree(ref)
        print(f"today = {ref} in {code['today']}")
    workers = {r: Worker(r, args.ov_python if r == "openvino" else sys.executable, code[r], args.docs)
               for r in routes}
    # a piece of scoring work: the same items for every route, as many as the largest runner call (each route
    # runs them in its own calls)
    span = max(w.info["call"] for w in workers.values())
    pieces: list[dict] = []  # one per (op, piece): every route's seconds and work
    loads = [os.getloadavg()[0]]
    for rnd in range(args.rounds):
        for op in WORK:
            starts = range(0, args.docs, span) if op in ("prefill", "score") else [0]
            for a in starts:
                piece = {"op": op, "round": rnd, "a": a}
                for r in routes:
                    piece[r] = workers[r].ask(op, a, a + span)
                pieces.append(piece)
                loads.append(os.getloadavg()[0])
        print(f"  round {rnd} done (load {loads[-1]:.1f})", flush=True)
    rss = {r: w.ask("rss")["rss_mb"] for r, w in workers.items()}
    for w in workers.values():
        w.close()
    base = routes[0]
    summary: dict = {}
    for op in WORK:
        ps = [p for p in pieces if p["op"] == op]
        for r in routes:
            s = sum(p[r]["s"] for p in ps)
            work = sum(p[r]["work"] for p in ps)
            rate = work / s
            # per round: the route's rate / the base's rate over the same items, median over rounds
            ratios = []
            for rnd in range(args.rounds):
                mine = theirs = [p for p in ps if p["round"] == rnd]
                rr = (sum(p[r]["work"] for p in mine) / sum(p[r]["s"] for p in mine))
                rb = (sum(p[base]["work"] for p in theirs) / sum(p[base]["s"] for p in theirs))
                ratios.append(rr / rb)
            summary.setdefault(r, {})[op] = {"rate": rate, "ratio_median": float(np.median(ratios)),
                                             "ratios": ratios}
            if op == "decode":
                summary[r]["decode_rows_per_step"] = work / sum(p[r]["steps"] for p in ps)
        for r in routes:
            summary[r]["rss_mb"] = rss[r]
    print(f"\nload average (1 min) during the run: {min(loads):.1f} .. {max(loads):.1f} on {os.cpu_count()} CPUs; "
          f"{args.rounds} rounds, each piece of work run by every route in turn; ratio = median over rounds of "
          f"(route rate / '{base}' rate on the same pieces)")
    print("| route | settings | prefill tok/s | scoring items/s | decode tok/s, batch 32 | decode b32 / b1 | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    for r in routes:
        m = summary[r]
        print(f"| {r} | `{json.dumps(ROUTES[r])}` | {m['prefill']['rate']:.0f} ({m['prefill']['ratio_median']:.2f}x) "
              f"| {m['score']['rate']:.2f} ({m['score']['ratio_median']:.2f}x) "
              f"| {m['decode']['rate']:.1f} ({m['decode']['ratio_median']:.2f}x) "
              f"| {m['decode']['rate'] / m['decode_b1']['rate']:.1f}x | {m['rss_mb']:.0f} MB |")
    if args.json:
        args.json.write_text(json.dumps({"pieces": pieces, "summary": summary, "load": loads, "routes": routes},
                                        indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
