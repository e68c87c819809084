"""Ctrl-C during a run on the embedded ONNX model (issue #12, step 4): `moraleval run` stops when the forward pass
that is running returns (within about a second), keeps every answer that finished, exits 130 and says how to
resume; the same command then finds those answers in the cache.  Both phases: a chain-of-thought generation
(specs/quickstart.me generates first) and batched scoring (a BBQ spec without generation)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _support import REPO, SPECS

sys.path.insert(0, str(REPO / "tests"))

from _models_support import write_spec  # noqa: E402

pytestmark = pytest.mark.slow  # the real default model (imported once per session by default_model_dir)


def _stored(cache: Path) -> int:
    db = cache / "responses.sqlite3"
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT count(*) FROM responses").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:  # not created yet
        return 0


@pytest.mark.parametrize("phase", ["generate", "score"])
def test_ctrl_c_during_an_onnx_run_stops_promptly_and_resumes(tmp_path: Path, default_model_dir: Path, phase):
    if phase == "generate":
        spec, extra = SPECS / "quickstart.me", []
    else:
        spec, extra = write_spec(tmp_path), ["--model", "a"]  # onnx {model: "default"}, scoring only
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "moraleval", "run", str(spec), *extra, "--cache", str(cache),
           "--out", str(tmp_path / "out"), "--no-progress"]
    env = {k: v for k, v in os.environ.items() if k not in ("MORALEVAL_DATA",)}
    env.update(PYTHONPATH=str(REPO), MORALEVAL_CACHE=str(default_model_dir.parents[1]))  # the imported model
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 600
        while _stored(cache) == 0 and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert p.poll() is None, p.communicate()
        assert _stored(cache) > 0, "no answer within 10 minutes"
        sent = time.monotonic()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    print(f"{phase}: stopped {took:.2f} s after Ctrl-C, {_stored(cache)} answers stored")
    assert took < 5, f"stopped {took:.1f} s after Ctrl-C"  # 0.1-1 s measured on a loaded 2-core machine
    assert "Traceback" not in err
    assert "hint: run the same command again to resume" in err
    stored = _stored(cache)
    assert f"{stored} new backend results were stored in the cache" in err  # every finished answer, no more
    assert not (tmp_path / "out" / "report.json").exists()
    # the same command again: what was stored is reused (--dry-run says so without computing the rest)
    again = subprocess.run([*cmd, "--dry-run"], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"backend calls: {stored} cached" in again.stdout + again.stderr
