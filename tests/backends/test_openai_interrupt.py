"""Ctrl-C and SIGTERM while the server hangs: `moraleval run` stops within about a second (not after every retry
has timed out), keeps what finished, exits 130 and says how to resume; the rerun computes only the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from _openai_fake import FakeServer

from _support import REPO, TINY_ITEMS_SHA256, _tiny_items_bytes

SPEC = '''moraleval 1
dataset items {{
    file "tiny/items.jsonl" sha256 "{sha}"
    read jsonl "tiny/items.jsonl"
}}
task t on items {{
    format text
    choose pick from [" (a)", " (b)"] values [0, 1]
    condition Q {{
        human "{{{{ context }}}} {{{{ question }}}}"
        assistant "The answer is"
    }}
    condition R extends Q {{
        human "{{{{ question }}}} {{{{ context }}}}"
        assistant "The answer is"
    }}
}}
metric acc = mean(pick == label)
default model remote = openai {{ base_url: "{url}", model: "fake-model", scoring: "echo", timeout: 30,
    max_retries: 5, echo_alignment: "standard" }}
'''


def _hung_run(tmp_path, srv, where: str, **popen):
    """A `moraleval run` against ``srv`` whose requests to ``where`` hang (completions from the third on):
    (the process, the event set when a request hangs, the command, its environment)."""
    (tmp_path / "data" / "tiny").mkdir(parents=True, exist_ok=True)
    (tmp_path / "data" / "tiny" / "items.jsonl").write_bytes(_tiny_items_bytes())
    hung = threading.Event()

    def fault(n, path, body):
        if path.endswith(where) and (where == "models" or n > 2):
            hung.set()
            return ("sleep", 60)
        return None

    srv.fault = fault
    spec = tmp_path / "s.me"
    spec.write_text(SPEC.format(sha=TINY_ITEMS_SHA256, url=srv.base_url), encoding="utf-8")
    cmd = [sys.executable, "-m", "moraleval", "run", str(spec), "--data", str(tmp_path / "data"),
           "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "out"), "--no-progress"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                         **popen)
    return p, hung, cmd, env


@pytest.mark.parametrize("signum, where", [
    (signal.SIGINT, "completions"),
    pytest.param(signal.SIGTERM, "completions", marks=pytest.mark.slow),  # subprocess runs: one in the fast run
    pytest.param(signal.SIGINT, "models", marks=pytest.mark.slow),
])
def test_a_signal_during_a_hung_request_stops_the_run_at_once(tmp_path, signum, where):
    with FakeServer() as srv:
        p, hung, cmd, env = _hung_run(tmp_path, srv, where)
        try:
            assert hung.wait(60), p.communicate(timeout=5)
            time.sleep(0.3)
            sent = time.monotonic()
            p.send_signal(signum)
            _, err = p.communicate(timeout=30)
            took = time.monotonic() - sent
        finally:
            if p.poll() is None:
                p.kill()
        assert p.returncode == 130, err
        assert took < 5, f"stopped {took:.1f} s after the signal"  # ~0.1 s unloaded; generous for a busy CI box
        assert "Traceback" not in err
        assert "run the same command again to resume" in err
        assert not (tmp_path / "out" / "report.json").exists()
        srv.fault = None
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "report.json").is_file()
    if where == "completions":
        assert "1 cached" in done.stderr or "2 cached" in done.stderr  # what finished before the signal is reused


def test_a_run_started_with_sigint_ignored_still_stops_on_sigint(tmp_path):
    """The window of issue #24's lost Ctrl-C: a process started with SIGINT ignored (a background job of a shell
    script without job control, a CI runner) inherits SIG_IGN, Python keeps it, and the run went on to its end
    on ``kill -INT``.  The command line now installs its own SIGINT handler, and says at once that it got it."""
    with FakeServer() as srv:
        p, hung, _cmd, _env = _hung_run(tmp_path, srv, "completions",
                                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        try:
            assert hung.wait(60), p.communicate(timeout=5)
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
    assert p.returncode == 130, err
    assert "moraleval: SIGINT received, stopping (what is answered is kept)" in err and "Traceback" not in err
