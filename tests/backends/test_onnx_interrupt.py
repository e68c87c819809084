"""Ctrl-C during a run on the embedded ONNX model (issue #12, step 4): `moraleval run` stops when the forward pass
that is running returns (within about a second), keeps every answer that finished, exits 130 and says how to
resume; the same command then finds those answers in the cache.  Both phases: a chain-of-thought generation
(specs/quickstart.me generates first) and batched scoring (a BBQ spec without generation).

Deterministic (issue #24: once, on a fresh machine, the signal was lost and the run went on to exit 0): the child
starts with SIGINT at its default disposition whatever this process inherited (a test run started as a background
job of a script ignores SIGINT, and a child inherits that); the signal is sent only once the child is ready — it
catches SIGINT (``/proc/PID/status``) and has stored an answer; and its delivery is checked (the CLI says at once
that it received it) rather than inferred from a timing."""

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


def _catches_sigint(pid: int) -> bool | None:
    """Whether process ``pid`` has a handler for SIGINT (its SigCgt mask; None where /proc does not say)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) >> (signal.SIGINT - 1) & 1)
    except OSError:
        return None
    return None


def _default_sigint() -> None:
    """In the child before exec: SIGINT at its default disposition, not whatever the test runner inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                         preexec_fn=_default_sigint)
    try:
        deadline = time.monotonic() + 600
        # ready: the child has stored an answer (it is computing) and catches SIGINT (the CLI's handler is in place)
        while (_stored(cache) == 0 or _catches_sigint(p.pid) is False) and p.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.poll() is None, p.communicate()
        assert _stored(cache) > 0, "no answer within 10 minutes"
        assert _catches_sigint(p.pid) in (True, None), "the run does not catch SIGINT"
        sent = time.monotonic()
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
        took = time.monotonic() - sent
    finally:
        if p.poll() is None:
            p.kill()
    assert "moraleval: SIGINT received, stopping" in err, err  # delivered, and the handler ran at once
    assert p.returncode == 130, err
    print(f"{phase}: stopped {took:.2f} s after Ctrl-C, {_stored(cache)} answers stored")
    # measured 0.1-1 s on a loaded 2-core machine; the bound only tells "stopped promptly" from "ran to its end"
    assert took < 30, f"stopped {took:.1f} s after Ctrl-C"
    assert "Traceback" not in err
    assert "hint: run the same command again to resume" in err
    stored = _stored(cache)
    assert f"{stored} new backend results were stored in the cache" in err  # every finished answer, no more
    assert not (tmp_path / "out" / "report.json").exists()
    # the same command again: what was stored is reused (--dry-run says so without computing the rest)
    again = subprocess.run([*cmd, "--dry-run"], env=env, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"backend calls: {stored} cached" in again.stdout + again.stderr
