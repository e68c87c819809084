"""One writer at a time (issue #12, step 5): a report directory is locked by the run writing it (a second run is
refused naming the first; a lock left by a killed process is taken over silently), the response cache is shared
safely by two processes, a rerun removes the report files it owns and no longer writes (never a foreign file,
which `verify` names without failing), and what a killed model import left in the models directory is cleaned up
on the next start without touching a live import's folder."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from _models_support import backends, write_spec  # noqa: E402

import moraleval  # noqa: E402
from moraleval.errors import OutputDirBusy  # noqa: E402
from moraleval.util.locks import LOCK_NAME, WORK_LOCK, DirLock, lock_dir, sweep_work_dirs, work_dir  # noqa: E402
from moraleval.report import foreign_files, verify_report  # noqa: E402

from _support import REPO, run_cli  # noqa: E402

pytestmark = pytest.mark.usefixtures("no_env_data")  # the spec reads the shipped sample ("builtin:sample")

HOLDER = """
import sys, time
sys.path.insert(0, {repo!r})
from moraleval.util.locks import {what}
{body}
print("held", flush=True)
sys.stdin.readline()  # hold until the test says so (or kills us)
"""


@contextlib.contextmanager
def holder(what: str, body: str):
    """A second process that takes a lock (``body``) and holds it until the context ends."""
    code = HOLDER.format(repo=str(REPO), what=what, body=body)
    p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert line.strip() == "held", p.stderr.read()
        yield p
    finally:
        if p.poll() is None:
            p.stdin.close()
            p.wait(timeout=30)



def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------- the report directory's lock

def test_a_second_run_into_a_locked_out_is_refused_naming_the_holder(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    with holder("lock_dir", f"lock = lock_dir({str(out)!r}, label='x')") as p:
        t0 = time.monotonic()
        with pytest.raises(OutputDirBusy) as info:
            moraleval.run(spec, models="a", out=out, cache=tmp_path / "cache", backends=backends("a"), log=None)
        took = time.monotonic() - t0
    err = str(info.value)
    assert f"--out {out} is in use by another moraleval run: pid {p.pid}, started 20" in err
    assert "UTC (`python -c (moraleval as a library)`)" in err  # what it runs (`moraleval run ...` for the CLI)
    assert "hint: wait for that run to finish, or give this one another --out DIR" in err
    assert info.value.exit_code == 75
    assert took < 30  # refused at once, before any request (the backends were never called)
    assert not (out / "report.json").exists()
    # the holder is gone: the same run now goes through, and leaves no lock file behind
    res = moraleval.run(spec, models="a", out=out, cache=tmp_path / "cache", backends=backends("a"), log=None)
    assert res.out == out and (out / "report.json").is_file()
    assert not (out / LOCK_NAME).exists()


def test_the_cli_says_busy_in_one_message_with_exit_75(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    with holder("lock_dir", f"lock = lock_dir({str(out)!r}, label='x')") as p:
        code, _, err = run_cli(["run", str(spec), "--model", "a", "--out", str(out), "--cache",
                                str(tmp_path / "cache"), "--no-progress"])
    assert code == 75
    lines = err.strip().splitlines()
    assert lines[-2].startswith(f"error: --out {out} is in use by another moraleval run: pid {p.pid}, started ")
    assert lines[-1].startswith("  hint: wait for that run to finish") and len(lines) == 3  # after the plan line


def test_a_lock_left_by_a_killed_process_is_taken_over_silently(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with holder("lock_dir", f"lock = lock_dir({str(out)!r}, label='x')") as p:
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == p.pid
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    assert (out / LOCK_NAME).exists()  # kill -9 left the file; the kernel released the lock
    spec = write_spec(tmp_path)
    res = moraleval.run(spec, models="a", out=out, cache=tmp_path / "cache", backends=backends("a"), log=None)
    assert (res.out / "report.json").is_file() and not (out / LOCK_NAME).exists()


def test_the_lock_is_exclusive_and_reusable_within_one_process(tmp_path: Path) -> None:
    first = lock_dir(tmp_path, label="d")
    with pytest.raises(OutputDirBusy, match=f"pid {os.getpid()}"):
        lock_dir(tmp_path, label="d")
    first.release()
    again = DirLock(tmp_path)
    assert again.acquire() is None and again.locked
    again.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_moraleval_report_is_refused_while_a_run_writes(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    moraleval.run(spec, models="a", out=out, cache=tmp_path / "cache", backends=backends("a"), log=None)
    with holder("lock_dir", f"lock = lock_dir({str(out)!r}, label='x')") as p:
        code, _, err = run_cli(["report", str(out)])
    assert code == 75 and f"pid {p.pid}" in err


def test_two_processes_share_one_response_cache_safely(tmp_path: Path) -> None:
    """SQLite (WAL, busy_timeout) serialises the writers: two processes writing the same and different entries
    at once both finish, and every entry reads back valid."""
    writer = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from moraleval.backend import ScoreResult
from moraleval.execute.cache import ResponseCache
which = sys.argv[1]
with ResponseCache({str(tmp_path / 'cache')!r}) as c:
    model = c.register_model({{"name": "shared"}})
    for i in range(300):  # one transaction each, as a run stores its answers
        shared = i % 2 == 0  # half the keys both write (the same value: the same request, the same answer)
        key = f"req-{{i}}" if shared else f"req-{{which}}-{{i}}"
        c.put(model, key, ScoreResult((-float(i), -1.0), (1, 1)))
print(len(c.problems))
"""
    procs = [subprocess.Popen([sys.executable, "-c", writer, w], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for w in ("a", "b")]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    from moraleval.execute.cache import ResponseCache

    with ResponseCache(tmp_path / "cache") as c:
        model = c.register_model({"name": "shared"})
        assert c.count(model) == 150 + 150 + 150  # shared keys once, each process's own keys
        got = c.get_many(model, [f"req-{i}" for i in range(0, 300, 2)] + [f"req-a-{i}" for i in range(1, 300, 2)])
        assert len(got) == 300 and not c.problems
        assert got["req-4"].logprobs == (-4.0, -1.0)


# ---------------------------------------------------------------------------- stale files of an earlier run

def test_a_rerun_removes_the_files_it_owns_and_keeps_foreign_ones(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    moraleval.run(spec, models="a,b", out=out, cache=tmp_path / "cache", backends=backends("a", "b"), log=None)
    before = _files(out)
    across = [f for f in before if f.startswith("plots/models_")]
    assert across, before  # the two-model report has across-model figures
    (out / "plots" / "mine.svg").write_text("<svg/>")  # the user's own files in the report folder
    (out / "notes.txt").write_text("mine")
    (out / ".report.json.abcd1234").write_text("{")  # what a write interrupted by kill -9 leaves
    moraleval.run(spec, models="a", out=out, cache=tmp_path / "cache", backends=backends("a"), log=None)
    after = _files(out)
    assert not [f for f in after if f.startswith("plots/models_")], after  # figures of the removed model set
    assert ".report.json.abcd1234" not in after
    assert "plots/mine.svg" in after and "notes.txt" in after  # never deleted
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(set(after) - {"manifest.json"}) == sorted(set(manifest["outputs"]) | {"plots/mine.svg",
                                                                                        "notes.txt"})
    assert verify_report(out) == []
    assert foreign_files(out) == ["notes.txt", "plots/mine.svg"]
    code, stdout, _ = run_cli(["verify", str(out)])
    assert code == 0
    assert "foreign file: notes.txt (not in the manifest" in stdout
    assert "foreign file: plots/mine.svg" in stdout
    assert "the report matches its inputs (every hash checked); 2 foreign file(s)" in stdout


def test_a_rerun_believes_the_manifest_only_for_report_files(tmp_path: Path) -> None:
    """A manifest edited to list other files (outside the folder, or not a report file) deletes nothing."""
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    moraleval.run(spec, models="a", out=out, cache=tmp_path / "cache", backends=backends("a"), log=None)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "data.csv").write_text("mine")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["outputs"].update({"../victim.txt": "0" * 64, "data.csv": "0" * 64, "plots/../../victim.txt": "0" * 64})
    (out / "manifest.json").write_text(json.dumps(manifest))
    moraleval.run(spec, models="a", out=out, cache=tmp_path / "cache", backends=backends("a"), log=None)
    assert victim.read_text() == "keep me" and (out / "data.csv").read_text() == "mine"


def test_moraleval_report_removes_figures_it_no_longer_draws(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    moraleval.run(spec, models="a", out=out, cache=tmp_path / "cache", backends=backends("a"), log=None)
    manifest = json.loads((out / "manifest.json").read_text())
    stale = out / "plots" / "old_figure.svg"  # a figure an earlier version drew, recorded in the manifest
    stale.write_text("<svg/>")
    manifest["outputs"]["plots/old_figure.svg"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / "plots" / "mine.svg").write_text("<svg/>")
    code, _, _ = run_cli(["report", str(out)])
    assert code == 0
    assert not stale.exists() and (out / "plots" / "mine.svg").exists()
    assert verify_report(out) == [] and foreign_files(out) == ["plots/mine.svg"]


# ---------------------------------------------------------------------------- work folders of model imports

def _age(folder: Path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(folder, (t, t))


def test_sweep_removes_old_unlocked_leftovers_and_keeps_live_or_young_ones(tmp_path: Path) -> None:
    dead = tmp_path / ".m.tmp-dead"
    (dead / "model").mkdir(parents=True)
    (dead / "model" / "model.onnx_data").write_bytes(b"x" * 1000)
    _age(dead, 3600)
    young = tmp_path / ".gguf-young"
    young.mkdir()
    other = tmp_path / "not-ours"
    other.mkdir()
    _age(other, 3600)
    with holder("work_dir", f"cm = work_dir({str(tmp_path)!r}, '.gguf-'); live = cm.__enter__(); "
                            f"import os, time; os.utime(live, (time.time() - 3600,) * 2)"):
        live = next(p for p in tmp_path.iterdir() if p.name.startswith(".gguf-") and p != young)
        assert (live / WORK_LOCK).is_file()
        removed = sweep_work_dirs(tmp_path, (".gguf-", ".m.tmp-"), min_age=600)
        assert removed == [dead]
        assert live.is_dir() and young.is_dir() and other.is_dir()
    assert not live.exists()  # its owner removed it when it finished


def test_a_work_folder_left_by_kill_9_is_swept_on_the_next_start(tmp_path: Path) -> None:
    with holder("work_dir", f"cm = work_dir({str(tmp_path)!r}, '.gguf-'); live = cm.__enter__(); "
                            "(live / 'SmolLM2.gguf').write_bytes(b'x' * 100)") as p:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    left = [x for x in tmp_path.iterdir() if x.name.startswith(".gguf-")]
    assert len(left) == 1 and (left[0] / "SmolLM2.gguf").exists()
    assert sweep_work_dirs(tmp_path, (".gguf-",), min_age=600) == []  # too young to be sure
    _age(left[0], 3600)
    assert sweep_work_dirs(tmp_path, (".gguf-",), min_age=600) == left
    assert not left[0].exists()


def test_the_onnx_store_sweeps_its_models_dir_on_start(tmp_path: Path, monkeypatch) -> None:
    from backends.onnx import store

    monkeypatch.setenv("MORALEVAL_CACHE", str(tmp_path))
    models = tmp_path / "models"
    leftovers = [models / ".smollm2-135m-instruct.tmp-k2j3", models / ".gguf-x8s7",
                 models / ".smollm2-135m-instruct.old-123-456"]
    for d in leftovers:
        (d / "model").mkdir(parents=True)
        _age(d, 3600)
    keep = [models / "my-model", models / ".hidden-user-folder"]
    for d in keep:
        d.mkdir(parents=True)
        _age(d, 3600)
    assert sorted(store.sweep_leftovers()) == sorted(leftovers)
    assert all(d.is_dir() for d in keep) and not any(d.exists() for d in leftovers)



def test_a_directory_that_cannot_be_locked_is_one_clear_error(tmp_path: Path) -> None:
    from moraleval.errors import OutputDirError

    with pytest.raises(OutputDirError, match="--out x cannot be locked for writing: No such file or directory"):
        lock_dir(tmp_path / "gone", label="--out x")
