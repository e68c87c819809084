"""Wall time of the quick start (``moraleval specs/quickstart.me``), before and after batched decoding became the
default, cold and warm cache (run by hand; prints a table + JSON).

    python bench/quickstart_wall.py [--rounds 2] [--json out.json]

- ``after``: the spec as shipped (the embedded default model with its defaults: ragged batches,
  ``generate_batch_size`` 32, scoring ``batch_size`` 8, KV reuse across the CoT turn).
- ``before``: the same spec with ``generate_batch_size: 1, batch_size: 1, kv_reuse_mb: 0`` in its model block —
  the defaults before issue 15, on today's graph.  (``--batch-size 1`` on the command line is *not* that: the
  runner hands the ONNX backend at least what its ``call_size`` asks for, so the backend still batches.)
  With ``--baseline-ref REF``, ``before`` is instead the spec as shipped run by the code of REF (unpacked with
  ``git archive``: e.g. the merge-base with main), and report.json is compared too.
- ``cold``: an empty ``--cache`` directory (the model is already imported: the first, untimed, run does that);
  ``warm``: the same command again on that cache (every result is read back, nothing is computed).

Every run is a separate ``python -m moraleval`` process, timed from outside; rounds interleave the
configurations (cold before, cold after, warm before, warm after) so load on a shared machine hits them alike.
The samples (every prompt, answer and log-prob) of before and after should be byte-identical (the backend's
batching is meant to change speed only): compared, and the differing lines counted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "specs" / "quickstart.me"
DEFAULT_LINE = 'default model smollm2 = onnx { model: "default" }'
BEFORE_LINE = 'default model smollm2 = onnx { model: "default", generate_batch_size: 1, batch_size: 1, kv_reuse_mb: 0 }'


def before_spec(tmp: Path) -> Path:
    """specs/quickstart.me with the pre-issue-15 decoding settings, next to a link to specs/lib."""
    text = SPEC.read_text(encoding="utf-8")
    if DEFAULT_LINE not in text:
        raise SystemExit(f"{SPEC} no longer ends with {DEFAULT_LINE!r}; update this bench")
    (tmp / "lib").symlink_to(ROOT / "specs" / "lib")
    path = tmp / "quickstart.me"
    path.write_text(text.replace(DEFAULT_LINE, BEFORE_LINE), encoding="utf-8")
    return path


def run(spec: Path, cache: Path, out: Path, *extra: str, code: Path = ROOT) -> float:
    env = {**os.environ, "PYTHONPATH": str(code)}
    env.pop("MORALEVAL_DATA", None)  # the quick start reads its builtin sample
    cmd = [sys.executable, "-m", "moraleval", str(spec), "--cache", str(cache), "--out", str(out), "--no-progress",
           *extra]
    t = time.perf_counter()
    # run from the code's own folder: `python -m` puts the working directory first on sys.path, before
    # PYTHONPATH, so run from this checkout the "before" code would silently be this checkout's
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=code)
    wall = time.perf_counter() - t
    if proc.returncode:
        print(proc.stdout, proc.stderr, file=sys.stderr)
        raise SystemExit(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
    return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep", type=Path, help="work in this (new) directory and keep it: caches, reports")
    ap.add_argument("--baseline-ref", help="'before' is the spec as shipped run by the code of this git ref (e.g. "
                                           "the merge-base with main) instead of the pre-issue-15 settings")
    args = ap.parse_args()
    rows: list[dict] = []
    load = [os.getloadavg()[0]]
    if args.keep is not None:
        args.keep.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="qs_wall_") as d:
        tmp = Path(d) if args.keep is None else args.keep
        specs = {"before": before_spec(tmp), "after": SPEC}
        code = {"before": ROOT, "after": ROOT}
        if args.baseline_ref:
            specs["before"] = SPEC
            code["before"] = tmp / "baseline"
            code["before"].mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_ref], capture_output=True,
                                     check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(code["before"])], input=archive, check=True)
        run(SPEC, tmp / "import-cache", tmp / "import-out", "--dry-run")  # imports the model if needed; untimed
        for rnd in range(args.rounds):
            for cache_state in ("cold", "warm"):
                for config in ("before", "after"):
                    cache, out = tmp / f"cache-{config}-{rnd}", tmp / f"out-{config}-{rnd}-{cache_state}"
                    wall = run(specs[config], cache, out, code=code[config])
                    load.append(os.getloadavg()[0])
                    rows.append({"round": rnd, "config": config, "cache": cache_state, "wall_s": wall})
                    print(f"  round {rnd} {cache_state} {config:6s} {wall:7.1f} s", flush=True)
            a = (tmp / f"out-before-{rnd}-cold" / "samples.jsonl").read_bytes()
            b = (tmp / f"out-after-{rnd}-cold" / "samples.jsonl").read_bytes()
            if args.baseline_ref:  # the same spec file: report.json compared too
                same = ((tmp / f"out-before-{rnd}-cold" / "report.json").read_bytes()
                        == (tmp / f"out-after-{rnd}-cold" / "report.json").read_bytes())
                print(f"round {rnd}: report.json {'byte-identical' if same else 'DIFFERS'} before/after", flush=True)
                rows.append({"round": rnd, "report_identical": same})
            if a != b:  # (report.json names the spec file, which differs in its model line)
                diff = [k for k, (x, y) in enumerate(zip(a.splitlines(), b.splitlines())) if x != y]
                print(f"round {rnd}: samples.jsonl differs between before and after on {len(diff)} of "
                      f"{len(a.splitlines())} lines (first: {diff[:10]})", flush=True)
                rows.append({"round": rnd, "samples_differ": len(diff), "lines": len(a.splitlines())})
        if not any("samples_differ" in r for r in rows):
            print("\nsamples.jsonl byte-identical before/after in every round")
        rows = [r for r in rows if "wall_s" in r] + [r for r in rows if "wall_s" not in r]
    print(f"load average (1 min) during the run: {min(load):.1f} .. {max(load):.1f} on {os.cpu_count()} CPUs")
    summary = {}
    for cache_state in ("cold", "warm"):
        b = [r["wall_s"] for r in rows if r.get("config") == "before" and r.get("cache") == cache_state]
        a = [r["wall_s"] for r in rows if r.get("config") == "after" and r.get("cache") == cache_state]
        ratios = [x / y for x, y in zip(b, a)]
        summary[cache_state] = {"before_s": b, "after_s": a, "ratio_per_round": ratios}
        print(f"{cache_state}: before {', '.join(f'{x:.1f}' for x in b)} s; after {', '.join(f'{x:.1f}' for x in a)} s;"
              f" before/after per round {', '.join(f'{x:.2f}x' for x in ratios)}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary, "load": load}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
