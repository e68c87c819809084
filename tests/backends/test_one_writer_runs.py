"""Two real `moraleval run` processes (against a local fake OpenAI server): the same --out at once → the second is
refused at once naming the first, which finishes untouched, and the second goes through afterwards from the
cache; a different --out on the same cache → both finish, with byte-identical reports (SQLite serialises the
writers; nothing is lost or corrupted)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from _openai_fake import FakeServer
from test_openai_interrupt import SPEC

from _support import REPO, TINY_ITEMS_SHA256, _tiny_items_bytes


def _setup(tmp_path: Path, srv: FakeServer) -> tuple[Path, dict]:
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    (tmp_path / "data" / "tiny" / "items.jsonl").write_bytes(_tiny_items_bytes())
    spec = tmp_path / "s.me"
    spec.write_text(SPEC.format(sha=TINY_ITEMS_SHA256, url=srv.base_url), encoding="utf-8")
    return spec, dict(os.environ, PYTHONPATH=str(REPO))


def _cmd(tmp_path: Path, spec: Path, out: str) -> list[str]:
    return [sys.executable, "-m", "moraleval", "run", str(spec), "--data", str(tmp_path / "data"),
            "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / out), "--no-progress"]


def test_a_second_identical_run_is_refused_while_the_first_runs(tmp_path: Path) -> None:
    with FakeServer() as srv:
        held, release = threading.Event(), threading.Event()

        def fault(n, path, body):
            if path.endswith("completions") and n > 2:
                held.set()
                release.wait(20)  # the first run is mid-run, holding its --out
            return None

        srv.fault = fault
        spec, env = _setup(tmp_path, srv)
        first = subprocess.Popen(_cmd(tmp_path, spec, "out"), env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        try:
            assert held.wait(60), first.communicate(timeout=5)
            t0 = time.monotonic()
            second = subprocess.run(_cmd(tmp_path, spec, "out"), env=env, capture_output=True, text=True,
                                    cwd=tmp_path, timeout=120)
            took = time.monotonic() - t0
            release.set()
            _, first_err = first.communicate(timeout=120)
        finally:
            release.set()
            if first.poll() is None:
                first.kill()
        assert second.returncode == 75, second.stderr
        assert f"is in use by another moraleval run: pid {first.pid}, started " in second.stderr
        assert f"`moraleval run {spec}" in second.stderr
        assert "give this one another --out DIR" in second.stderr and "Traceback" not in second.stderr
        assert took < 60  # refused before any request: it never waits for the first run
        assert first.returncode == 0, first_err  # the first run is untouched
        again = subprocess.run(_cmd(tmp_path, spec, "out"), env=env, capture_output=True, text=True, cwd=tmp_path,
                               timeout=120)
    assert again.returncode == 0, again.stderr
    assert "8 cached, 0 computed" in again.stderr  # everything the first run computed
    assert not (tmp_path / "out" / ".moraleval.lock").exists()


@pytest.mark.slow
def test_two_runs_on_one_cache_with_different_out_both_finish_with_the_same_bytes(tmp_path: Path) -> None:
    with FakeServer() as srv:
        srv.delay = 0.2  # both runs are in flight at the same time
        spec, env = _setup(tmp_path, srv)
        procs = [subprocess.Popen(_cmd(tmp_path, spec, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, cwd=tmp_path) for out in ("one", "two")]
        results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    one, two = ((tmp_path / d / "report.json").read_bytes() for d in ("one", "two"))
    assert one == two
    assert not any("cache:" in err for _, err in results)  # no corrupted entry was found
