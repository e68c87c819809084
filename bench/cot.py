"""Chain-of-thought throughput of the ONNX backend, batch 1 vs the default (run by hand; prints a table + JSON).

    MORALEVAL_DATA=/work/shared/data python bench/cot.py [--rounds 1] [--b1-items 8] [--items 64]

Two workloads, each a full CoT item (generate the reasoning, then score the follow-up turn's three choices):

- ``quickstart``: the quick start's Q_IF_CoT requests (48-token reasoning), all 48 items;
- ``bbq256``: specs/bbq.me's Q_IF_CoT on the first ``--items`` BBQ Religion items with the paper's 256 tokens.

Configurations: ``padded-b1`` (the graph before this change: left-padded batches, ``generate_batch_size: 1``),
``ragged-b1`` (the ragged graph one sequence at a time), ``ragged-default`` (the default: continuous batching, all
items generated in one call, then their follow-up turns scored), ``ragged-stream`` (the default settings through
``generate_and_score``: each follow-up turn scored as soon as its chain of thought finishes, so the decoding batch
stays full) and ``kv16-stream`` (the same with ``kv_cache: "float16"``).
Every measurement runs in its own subprocess (own peak RSS), interleaved round by round so that load on a shared
machine hits all of them alike; batch-1 runs use the first ``--b1-items`` items only (rates are per item/token).
Reports decode tokens/s (generated tokens / generation seconds), CoT items/s end to end, peak RSS, the load
average, the decode steps alone (prefill split out) against bench/roofline.py's bound, the ratios to ``padded-b1`` (or to the first of ``--configs``), and the projected wall time of the paper's full BBQ (58,492 rows x 3
conditions; Q and Q+IF scored from the measured scoring rate, Q+IF+CoT at the measured 256-token CoT rate).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PAPER_BBQ_ROWS = 58_492
CONFIGS = ("padded-b1", "ragged-b1", "ragged-default", "ragged-stream", "kv16-stream", "runner-groups",
           "runner-stream")
RUNNERS = ("runner-groups", "runner-stream")  # the whole run_plan path: groups of call_size vs generate_and_score
STREAMS = ("ragged-stream", "kv16-stream")  # generate_and_score: each follow-up scored as its generation finishes
FULL_ITEMS = 64  # the plan is always built for 64 items and cut to n (per_cell changes which rows are sampled)


def _requests(workload: str, n: int, *, plan_too: bool = False):
    from moraleval.checker.passes import check
    from moraleval.plan.compile import compile_plan

    if workload == "quickstart":  # its builtin sample, whatever MORALEVAL_DATA says
        data = os.environ.pop("MORALEVAL_DATA", None)
        plan = compile_plan(check(ROOT / "specs" / "quickstart.me", mode="plan"))
        if data is not None:
            os.environ["MORALEVAL_DATA"] = data
    else:
        per_cell = max(1, max(FULL_ITEMS, n if plan_too else 0) // 2)
        plan = compile_plan(check(ROOT / "specs" / "bbq.me", mode="plan",
                                  overrides={"categories": "Religion", "per_cell": str(per_cell)}))
    keys = []
    for item in plan.items:
        if item.condition == "Q_IF_CoT" and item.request not in keys:
            keys.append(item.request)
    by_key = {r.key: r for r in plan.requests}
    reqs = [by_key[k] for k in keys[:n]]
    if plan_too:  # the plan cut to these requests' CoT items, for run_plan
        import attrs

        want = {r.key for r in reqs}
        return reqs, attrs.evolve(plan, requests=tuple(reqs), items=tuple(
            i for i in plan.items if i.request in want and i.condition == "Q_IF_CoT"))
    return reqs


def decode_flops_per_token(cfg: dict, ctx: float) -> float:
    """Matmul FLOPs to decode one token with ``ctx`` tokens in the KV cache: the linear layers, the vocabulary
    head (it runs for every generated token) and attention over the cache (QK^T and PV, 2 FLOPs a MAC)."""
    from bench.roofline import matmul_flops_per_token

    return matmul_flops_per_token(cfg) + cfg["num_hidden_layers"] * 4 * cfg["hidden_size"] * ctx


def measure(config: str, workload: str, n: int) -> dict:
    """In a subprocess: generate + score ``n`` CoT items with ``config``."""
    from backends.onnx import _backend
    from moraleval.backend import ScoreRequest

    if config in RUNNERS:
        return _measure_runner(config, workload, n)
    reqs = _requests(workload, n)
    if config == "padded-b1":
        _backend.make_ragged = lambda proto, n_pos, **kw: False
    be = _backend.OnnxBackend(generate_batch_size=1 if config.endswith("b1") else None,
                              kv_cache="float16" if config.startswith("kv16") else "float32")
    names = [r.generate_steps[0][1].name for r in reqs]
    if config in STREAMS:  # one call: every follow-up scored as soon as its generation finishes
        t0 = time.perf_counter()
        gens, _ = be.generate_and_score([r.generate_request(0, {}) for r in reqs],
                                        lambda i, g: reqs[i].score_request({names[i]: g.text}))
        t_gen, t_score = time.perf_counter() - t0, 0.0
        timing = be.decode_timing()
        scores = [r.score_request({name: g.text}) for r, name, g in zip(reqs, names, gens)]
    else:
        t0 = time.perf_counter()
        gens = be.generate([r.generate_request(0, {}) for r in reqs])
        t_gen = time.perf_counter() - t0
        timing = be.decode_timing()  # ragged only: prefill vs decode-step seconds of the generation
        scores = [r.score_request({name: g.text}) for r, name, g in zip(reqs, names, gens)]
        t1 = time.perf_counter()
        be.score(scores)
        t_score = time.perf_counter() - t1
    # Q / Q+IF items: one prompt, three single-token choices (the quick start's Q_IF prompt shape)
    short = [ScoreRequest(s.prompt.__class__(messages=s.prompt.messages[:2] + (s.prompt.messages[-1],)),
                          s.continuations) for s in scores[:32]] if scores[0].prompt.is_chat else []
    t2 = time.perf_counter()
    if short:
        be.score(short)
    t_short = time.perf_counter() - t2
    tokens = sum(g.n_tokens for g in gens)
    # decode FLOPs per generated token at the mean context length seen while decoding
    ctx = sum(len(be.text.encode_prompt(r.generate_request(0, {}).prompt)) + g.n_tokens / 2
              for r, g in zip(reqs, gens)) / len(reqs)
    from bench.roofline import SHAPE_KEYS

    return {"flops_per_token": decode_flops_per_token(be.text.config, ctx), "mean_ctx": ctx,
            "shape": {k: be.text.config[k] for k in SHAPE_KEYS},
            "config": config, "workload": workload, "items": len(reqs), "tokens": tokens,
            "gen_s": t_gen, "score_s": t_score, "tok_s": tokens / t_gen, "items_s": len(reqs) / (t_gen + t_score),
            "short_items_s": len(short) / t_short if short else None,
            "batch": be.settings["generate_batch_size"], "texts": [g.text for g in gens], "timing": timing,
            "decode_only_tok_s": timing["decode_rows"] / timing["decode_s"] if timing and timing["decode_s"] else None,
            "rows_per_step": timing["decode_rows"] / timing["decode_steps"] if timing and timing["decode_steps"] else None,
            "prefill_share": timing["prefill_s"] / t_gen if timing else None,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _measure_runner(config: str, workload: str, n: int) -> dict:
    """``n`` CoT items through ``run_plan`` (an in-memory cache): the runner's groups of ``call_size("generate")``,
    each generated then scored, or (``runner-stream``) its calls to ``generate_and_score``."""
    from backends.onnx import _backend
    from moraleval.execute.cache import ResponseCache
    from moraleval.execute.runner import run_plan

    reqs, plan = _requests(workload, n, plan_too=True)
    be = _backend.OnnxBackend()
    if config == "runner-groups":
        be.generate_and_score = None  # the runner's generate-then-score groups
    t0 = time.perf_counter()
    out = run_plan(plan, be, cache=ResponseCache(":memory:"), progress=False)
    wall = time.perf_counter() - t0
    timing = be.decode_timing()
    texts = [out[r.key].generated[r.generate_steps[0][1].name] for r in reqs]
    tokens = sum(s.work for s in out.stats.stages if s.kind == "generate")
    from bench.roofline import SHAPE_KEYS

    return {"flops_per_token": decode_flops_per_token(be.text.config, 200.0), "mean_ctx": 200.0,
            "shape": {k: be.text.config[k] for k in SHAPE_KEYS}, "config": config, "workload": workload,
            "items": len(reqs), "tokens": tokens, "gen_s": wall, "score_s": 0.0, "tok_s": tokens / wall,
            "items_s": len(reqs) / wall, "short_items_s": None, "batch": be.settings["generate_batch_size"],
            "texts": texts, "timing": timing,
            "decode_only_tok_s": timing["decode_rows"] / timing["decode_s"] if timing and timing["decode_s"] else None,
            "rows_per_step": timing["decode_rows"] / timing["decode_steps"] if timing and timing["decode_steps"] else None,
            "prefill_share": timing["prefill_s"] / wall if timing else None,
            "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--b1-items", type=int, default=8)
    ap.add_argument("--workloads", default="quickstart,bbq256")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="which configurations (the first is the base)")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # internal: config workload n
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    configs = tuple(args.configs.split(","))
    if not set(configs) <= set(CONFIGS):
        ap.error(f"--configs: choose from {', '.join(CONFIGS)}")
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], int(args.one[2]))))
        return 0
    from bench.backend import gemm_peak

    rows = []
    peaks = []
    load = [os.getloadavg()]
    for rnd in range(args.rounds):
        peaks.append(gemm_peak())  # numpy fp32 GEMM, in this (otherwise idle) driver process
        print(f"  numpy fp32 GEMM peak (round {rnd}): {peaks[-1] / 1e9:.1f} GFLOP/s", flush=True)
        for workload in args.workloads.split(","):
            full = 48 if workload == "quickstart" else args.items
            for config in configs:
                n = min(full, args.b1_items) if config.endswith("b1") else full
                out = subprocess.run([sys.executable, __file__, "--one", config, workload, str(n)],
                                     capture_output=True, text=True, env=os.environ)
                if out.returncode:
                    print(out.stderr, file=sys.stderr)
                    return 1
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row["round"] = rnd
                rows.append(row)
                load.append(os.getloadavg())
                print(f"  {workload:10s} {config:15s} {row['items']:3d} items  {row['tok_s']:7.1f} tok/s  "
                      f"{row['items_s']:6.3f} CoT items/s  rss {row['rss_mb']:6.0f} MB", flush=True)
    peaks.append(gemm_peak())
    print(f"  numpy fp32 GEMM peak (after the last round): {peaks[-1] / 1e9:.1f} GFLOP/s", flush=True)
    print(f"\nload average (1 min) during the run: {min(x[0] for x in load):.1f} .. {max(x[0] for x in load):.1f}"
          f" on {os.cpu_count()} CPUs")
    summary = {}
    for workload in args.workloads.split(","):
        base = [r for r in rows if r["workload"] == workload and r["config"] == configs[0]]
        for config in configs:
            mine = [r for r in rows if r["workload"] == workload and r["config"] == config]
            tok = sum(r["tok_s"] for r in mine) / len(mine)
            its = sum(r["items_s"] for r in mine) / len(mine)
            btok = sum(r["tok_s"] for r in base) / len(base)
            bits = sum(r["items_s"] for r in base) / len(base)
            summary[f"{workload}/{config}"] = {"tok_s": tok, "items_s": its, "tok_ratio": tok / btok,
                                              "items_ratio": its / bits, "rss_mb": max(r["rss_mb"] for r in mine)}
            print(f"{workload:10s} {config:15s} {tok:7.1f} tok/s ({tok / btok:4.1f}x)  {its:6.3f} items/s "
                  f"({its / bits:4.1f}x)  peak RSS {max(r['rss_mb'] for r in mine):5.0f} MB")
        peak = max(peaks)
        for config in configs:
            mine = [r for r in rows if r["workload"] == workload and r["config"] == config]
            fpt = sum(r["flops_per_token"] for r in mine) / len(mine)
            tok = summary[f"{workload}/{config}"]["tok_s"]
            summary[f"{workload}/{config}"].update(flops_per_token=fpt, peak_share=tok * fpt / peak)
            print(f"{workload:10s} {config:15s} {fpt / 1e6:5.0f} MFLOP/token x {tok:6.1f} tok/s = "
                  f"{tok * fpt / 1e9:6.1f} GFLOP/s = {tok * fpt / peak * 100:4.1f} % of the numpy GEMM peak "
                  f"({peak / 1e9:.0f} GFLOP/s, best of {len(peaks)})")
        # greedy texts: the default's equal the one-at-a-time ones on the shared items
        ref = next(r for r in rows if r["workload"] == workload and r["config"] == "ragged-b1")
        for config in configs:
            if config.endswith("b1"):
                continue
            dflt = next(r for r in rows if r["workload"] == workload and r["config"] == config)
            same = sum(a == b for a, b in zip(ref["texts"], dflt["texts"]))
            print(f"{workload:10s} greedy texts, {config} vs one at a time: {same}/{len(ref['texts'])} identical")
            summary[f"{workload}/greedy_identical/{config}"] = [same, len(ref["texts"])]
        # decode steps alone (the part batching speeds up), against what this machine allows a step
        from bench.roofline import matmul_step_seconds, read_bandwidth, step_bound
        from backends.onnx._backend import physical_cores
        bw = read_bandwidth()
        matmul_s: dict[int, float] = {}  # rows -> one step's matmul seconds, measured once per workload
        b1 = [r for r in rows if r["workload"] == workload and r["config"] == "ragged-b1"]
        b1_dec = sum(r["decode_only_tok_s"] for r in b1) / len(b1)
        for config in [c for c in configs if c != "padded-b1"]:
            mine = [r for r in rows if r["workload"] == workload and r["config"] == config]
            if not mine:
                continue
            dec = sum(r["decode_only_tok_s"] for r in mine) / len(mine)
            occ = sum(r["rows_per_step"] for r in mine) / len(mine)
            share = sum(r["prefill_share"] for r in mine) / len(mine)
            ctx = sum(r["mean_ctx"] for r in mine) / len(mine)
            shape = mine[0]["shape"]
            bounds = {}
            for a in sorted({1, round(occ), mine[0]["batch"]}):
                if a not in matmul_s:
                    matmul_s[a] = matmul_step_seconds(shape, a, physical_cores())
                bounds[a] = a / step_bound(shape, a, ctx, matmul_s[a], bw)
            summary[f"{workload}/{config}"].update(decode_only_tok_s=dec, decode_only_ratio=dec / b1_dec,
                                                  rows_per_step=occ, prefill_share=share, bound_tok_s=bounds)
            print(f"{workload:10s} {config:15s} decode steps alone {dec:6.1f} tok/s ({dec / b1_dec:4.1f}x ragged-b1) at "
                  f"{occ:4.1f} rows/step; prefill {share * 100:4.1f} % of generation time; roofline at ctx {ctx:.0f} "
                  + ", ".join(f"{a} rows {t:.0f} tok/s" for a, t in bounds.items())
                  + f" (read bandwidth {bw / 1e9:.1f} GB/s)")
    if "bbq256" in args.workloads:
        short = [r["short_items_s"] for r in rows if r["workload"] == "bbq256" and r["short_items_s"]]
        q_rate = sum(short) / len(short)
        for config in configs:
            cot = summary[f"bbq256/{config}"]["items_s"]
            hours = (2 * PAPER_BBQ_ROWS / q_rate + PAPER_BBQ_ROWS / cot) / 3600
            summary[f"paper_bbq_hours/{config}"] = hours
            print(f"projected full paper BBQ (58,492 rows x Q, Q+IF, Q+IF+CoT-256) with {config}: {hours:,.0f} h "
                  f"(Q/Q+IF {2 * PAPER_BBQ_ROWS / q_rate / 3600:,.1f} h at {q_rate:.1f} items/s)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary, "load": load, "gemm_peaks": peaks},
                                        indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
