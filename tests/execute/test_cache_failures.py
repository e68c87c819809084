"""The response cache failing during a run (issue #24): each cause is a cache error with its own fix, never "the
backend failed ... run again" (which failed identically forever) and never a traceback.  A damaged page says to
delete the damaged cache; a read-only file, permissions and a full disk are named as what they are, and say not
to delete it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fakes import FakeBackend, make_plan  # noqa: E402

from moraleval.execute.cache import FILENAME, CacheError, ResponseCache  # noqa: E402
from moraleval.execute.runner import run_plan  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def _filled(tmp_path: Path, rows: int = 60) -> tuple[object, Path]:
    """A plan fully answered into a cache at ``tmp_path/cache``, closed (its WAL checkpointed into the file)."""
    plan = make_plan(rows)
    cache = tmp_path / "cache"
    run_plan(plan, FakeBackend(), cache=cache, progress=False)
    return plan, cache / FILENAME


def _damage_pages(db: Path) -> None:
    """Overwrite the b-tree pages after the schema page with garbage, as a disk error or a bad copy would."""
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    assert len(data) >= 4 * page, "the cache should span several pages"
    for start in range(2 * page, len(data), page):
        data[start:start + 12] = b"\xff" * 12  # each page's header: its type and cell counts
    db.write_bytes(bytes(data))


def test_a_damaged_page_found_during_a_run_is_a_cache_error_that_says_to_delete_the_cache(tmp_path) -> None:
    plan, db = _filled(tmp_path)
    _damage_pages(db)
    for _attempt in range(2):  # the same answer every time: no "run again"
        with pytest.raises(CacheError) as info:
            run_plan(plan, FakeBackend(), cache=db.parent, progress=False)
        err = info.value
        assert "is damaged" in err.message and str(db) in err.message and "backend" not in err.message
        assert "delete it" in (err.hint or "") and "run the same command again" not in (err.hint or "")
        assert err.exit_code == 4
    shutil.rmtree(db.parent)  # what the hint says: delete it, and the run works again
    assert run_plan(plan, FakeBackend(), cache=db.parent, progress=False).stats.completed == len(plan.requests)


def test_the_cli_says_the_same_without_a_traceback(tmp_path) -> None:
    """Through `moraleval run`: one error naming the damaged cache, exit code 4, every time."""
    from _models_support import salted_spec
    from _support import run_cli

    spec = salted_spec(tmp_path)
    cache = tmp_path / "cache"
    args = ["run", str(spec), "--model", "a", "--cache", str(cache), "--out", str(tmp_path / "out"), "--no-progress"]
    assert run_cli(args)[0] == 0
    _damage_pages(cache / FILENAME)
    for _attempt in range(2):
        code, _out, err = run_cli(args)  # run_cli asserts that no traceback is printed
        assert code == 4, err
        assert "is damaged" in err and "backend failed" not in err and "hint: delete it" in err


def _make_read_only(path: Path) -> None:
    if os.geteuid() == 0:  # root writes through mode bits: make the file immutable instead
        if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
            pytest.skip("running as root on a file system without chattr +i: a read-only file cannot be made")
    else:
        path.chmod(0o444)


def _writable_again(path: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    path.chmod(0o644)


def test_a_read_only_cache_file_is_named_as_read_only(tmp_path) -> None:
    plan, db = _filled(tmp_path, rows=4)
    _make_read_only(db)
    try:
        with pytest.raises(CacheError) as info:  # a new model's answers cannot be stored
            run_plan(plan, FakeBackend(version=2), cache=db.parent, progress=False)
        err = info.value
        assert "read-only" in err.message and "damaged" not in err.message
        assert "do not delete it" in (err.hint or "") and "writable" in (err.hint or "")
        # what is stored is still read: the answered plan needs nothing written
        assert run_plan(plan, FakeBackend(), cache=db.parent, progress=False).stats.cached > 0
    finally:
        _writable_again(db)


@pytest.mark.skipif(os.geteuid() == 0, reason="root is not refused by permissions")
def test_a_cache_folder_without_permission_is_named_as_permissions(tmp_path) -> None:
    plan, db = _filled(tmp_path, rows=4)
    db.parent.chmod(0o500)  # the file readable, but SQLite cannot create its -wal/-shm files beside it
    db.chmod(0o400)
    try:
        with pytest.raises(CacheError) as info:
            run_plan(plan, FakeBackend(version=2), cache=db.parent, progress=False)
        assert "damaged" not in info.value.message and "do not delete it" in (info.value.hint or "")
    finally:
        db.parent.chmod(0o700)
        db.chmod(0o600)


_FULL_SCRIPT = textwrap.dedent("""
    import resource, sys
    sys.path[:0] = [{tests!r}, {repo!r}]
    from fakes import FakeBackend, make_plan
    from moraleval.execute.runner import run_plan
    from moraleval.errors import MoralevalError
    plan = make_plan(200)
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))  # as a full disk: writes past it fail
    try:
        run_plan(plan, FakeBackend(), cache={cache!r}, progress=False)
    except MoralevalError as exc:
        print(type(exc).__name__, exc.exit_code)
        print(str(exc))
""")


def test_a_full_disk_under_the_cache_is_named(tmp_path) -> None:
    """RLIMIT_FSIZE (``ulimit -f``) in a child process: the file cannot grow, as on a full disk (SQLite reports
    it as an I/O error, so the cache finds the cause itself and names the limit and the disk)."""
    cache = tmp_path / "cache"
    ResponseCache(cache).close()
    script = _FULL_SCRIPT.format(tests=str(REPO / "tests"), repo=str(REPO), limit=48 * 1024, cache=str(cache))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.startswith("CacheError 4"), proc.stdout + proc.stderr
    assert "cannot grow: this process's file-size limit (ulimit -f: 49,152 bytes) is reached" in proc.stdout
    assert "on the disk mounted at" in proc.stdout and "free)" in proc.stdout  # which disk, and its room
    assert "is damaged" not in proc.stdout and "do not delete it" in proc.stdout


@pytest.fixture
def small_disk(tmp_path):
    """A 256 kB tmpfs (root only; skipped where mounting is not allowed): a disk that really fills up."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def test_a_really_full_disk_under_the_cache_is_named(small_disk) -> None:
    with pytest.raises(CacheError) as info:
        run_plan(make_plan(400), FakeBackend(), cache=small_disk / "cache", progress=False)
    err = info.value
    assert "cannot grow: the disk holding it is full (mounted at" in err.message and str(small_disk) in err.message
    assert "damaged" not in err.message and "do not delete it" in (err.hint or "")
