"""The response cache: round trips, persistence, WAL, corruption detection, location rules."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from moraleval.backend import GenerateResult, ScoreResult
from moraleval.execute.cache import CACHE_ENV, FILENAME, ResponseCache, default_cache_dir
from moraleval.backend import model_key
from moraleval.errors import RunError

MODEL = model_key({"backend": "fake", "version": 1})
SCORE = ScoreResult((-1.25, -0.5), (1, 2), ((" a", -0.1),))
GEN = GenerateResult(" some reasoning", 3, "stop")


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path / FILENAME))


class TestRoundTrip:
    def test_put_get_both_kinds(self, tmp_path: Path) -> None:
        with ResponseCache(tmp_path) as cache:
            cache.put(MODEL, "r1", SCORE)
            cache.put(MODEL, "r2", GEN)
            assert cache.get(MODEL, "r1") == SCORE
            assert cache.get(MODEL, "r2") == GEN
            assert cache.get(MODEL, "r3") is None
            assert cache.get(model_key({"backend": "other"}), "r1") is None
            assert cache.count(MODEL) == 2

    def test_persists_across_processes_and_reopen(self, tmp_path: Path) -> None:
        with ResponseCache(tmp_path) as cache:
            cache.put_many(MODEL, [("a", SCORE), ("b", GEN)])
        with ResponseCache(tmp_path) as cache:
            assert cache.get_many(MODEL, ["a", "b", "c"]) == {"a": SCORE, "b": GEN}

    def test_wal_mode(self, tmp_path: Path) -> None:
        ResponseCache(tmp_path).close()
        with _raw(tmp_path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def test_reader_sees_committed_writes_while_writer_open(self, tmp_path: Path) -> None:
        writer = ResponseCache(tmp_path)
        reader = ResponseCache(tmp_path)
        writer.put(MODEL, "x", SCORE)
        assert reader.get(MODEL, "x") == SCORE
        writer.close()
        reader.close()

    def test_minus_infinity_kept_nan_refused(self, tmp_path: Path) -> None:
        with ResponseCache(tmp_path) as cache:
            cache.put(MODEL, "inf", ScoreResult((-math.inf, -1.0), (1, 1)))
            assert cache.get(MODEL, "inf").logprobs[0] == -math.inf
            with pytest.raises(ValueError):
                cache.put(MODEL, "nan", ScoreResult((math.nan,), (1,)))

    def test_model_key_is_canonical(self) -> None:
        assert model_key({"a": 1, "b": [1, 2]}) == model_key({"b": [1, 2], "a": 1})
        assert model_key({"a": 1}) != model_key({"a": 2})

    def test_identity_recorded(self, tmp_path: Path) -> None:
        with ResponseCache(tmp_path) as cache:
            key = cache.register_model({"backend": "fake", "version": 1})
            assert key == MODEL
            assert cache.identity(key) == {"backend": "fake", "version": 1}


class TestCorruption:
    @pytest.mark.parametrize("sql", [
        "UPDATE responses SET value = replace(value, '-1.25', '-1.35') WHERE request='r1'",  # silent change
        "UPDATE responses SET value = '{\"logprobs\": [' WHERE request='r1'",  # truncated
        "UPDATE responses SET checksum = 'deadbeef' WHERE request='r1'",
        "UPDATE responses SET kind = 'generate' WHERE request='r1'",  # wrong shape
    ])
    def test_corrupted_entry_is_reported_deleted_and_missed(self, tmp_path: Path, sql: str) -> None:
        with ResponseCache(tmp_path) as cache:
            cache.put_many(MODEL, [("r1", SCORE), ("r2", GEN)])
        with _raw(tmp_path) as conn:
            conn.execute(sql)
        with ResponseCache(tmp_path) as cache:
            assert cache.get_many(MODEL, ["r1", "r2"]) == {"r2": GEN}
            assert len(cache.problems) == 1 and "r1" in cache.problems[0]
            assert cache.count(MODEL) == 1  # deleted
            cache.put(MODEL, "r1", SCORE)
            assert cache.get(MODEL, "r1") == SCORE

    def test_no_repair_leaves_entry(self, tmp_path: Path) -> None:
        with ResponseCache(tmp_path) as cache:
            cache.put(MODEL, "r1", SCORE)
        with _raw(tmp_path) as conn:
            conn.execute("UPDATE responses SET checksum = 'x'")
        with ResponseCache(tmp_path) as cache:
            assert cache.get(MODEL, "r1", repair=False) is None
            assert cache.count(MODEL) == 1

    def test_not_a_database(self, tmp_path: Path) -> None:
        (tmp_path / FILENAME).write_bytes(b"this is not sqlite" * 100)
        with pytest.raises(RunError, match="is damaged") as info:
            ResponseCache(tmp_path)
        assert "delete it" in (info.value.hint or "")

    def test_other_format_refused(self, tmp_path: Path) -> None:
        ResponseCache(tmp_path).close()
        with _raw(tmp_path) as conn:
            conn.execute("UPDATE meta SET value='99' WHERE key='format'")
        with pytest.raises(RunError, match="format 99"):
            ResponseCache(tmp_path)


class TestLocation:
    def test_env_overrides(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv(CACHE_ENV, str(tmp_path / "c"))
        assert default_cache_dir() == tmp_path / "c"
        with ResponseCache() as cache:
            assert Path(cache.path) == tmp_path / "c" / FILENAME

    def test_platformdirs_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import platformdirs

        monkeypatch.delenv(CACHE_ENV, raising=False)
        assert default_cache_dir() == Path(platformdirs.user_cache_dir("moraleval"))

    def test_memory(self) -> None:
        with ResponseCache(":memory:") as cache:
            cache.put(MODEL, "m", GEN)
            assert cache.get(MODEL, "m") == GEN


def _open_and_report(directory: str, barrier, results) -> None:
    barrier.wait()
    try:
        ResponseCache(directory).close()
        results.put("ok")
    except RunError as exc:
        results.put(str(exc))


class TestOpeningTogether:
    """Several runs starting on one new cache: SQLite runs no busy handler for the WAL conversion, so without a
    retry the second opener failed at once with "database is locked" (seen in CI: two runs, one cache)."""

    def test_a_new_cache_held_by_a_writer_is_opened_once_the_writer_lets_go(self, tmp_path: Path) -> None:
        import threading

        with _raw(tmp_path) as seed:  # a new file in rollback-journal mode, as another opener leaves it midway
            seed.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        holder = sqlite3.connect(str(tmp_path / FILENAME), isolation_level=None, check_same_thread=False)
        # a write lock on the rollback-journal file: SQLite refuses the WAL conversion at once, without waiting
        holder.execute("BEGIN IMMEDIATE")
        threading.Timer(0.5, lambda: holder.execute("COMMIT")).start()
        with ResponseCache(tmp_path) as cache:
            cache.put(MODEL, "r", SCORE)
            assert cache.get(MODEL, "r") == SCORE
        holder.close()
        with _raw(tmp_path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"

    def test_twelve_processes_open_one_new_cache_at_the_same_moment(self, tmp_path: Path) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        for round_ in range(4):
            directory = str(tmp_path / f"c{round_}")
            barrier, results = ctx.Barrier(12), ctx.Queue()
            procs = [ctx.Process(target=_open_and_report, args=(directory, barrier, results)) for _ in range(12)]
            for p in procs:
                p.start()
            got = [results.get(timeout=120) for _ in procs]
            for p in procs:
                p.join(timeout=60)
            assert got == ["ok"] * 12, [g for g in got if g != "ok"]

    def test_a_lock_that_outlasts_the_timeout_is_named_as_a_lock_not_damage(self, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
        import moraleval.execute.cache as cache_module

        monkeypatch.setattr(cache_module, "_BUSY_TIMEOUT_MS", 300)
        with _raw(tmp_path) as seed:
            seed.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        holder = sqlite3.connect(str(tmp_path / FILENAME), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(RunError, match="stayed locked by another process") as info:
                ResponseCache(tmp_path)
        finally:
            holder.close()
        assert "do not delete it" in (info.value.hint or "") and "damaged" not in info.value.message
        with ResponseCache(tmp_path) as cache:  # untouched: it opens once the other process is gone
            assert cache.count() == 0
