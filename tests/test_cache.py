"""The response cache: round trips, persistence, WAL, corruption detection, location rules."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from moraleval.backend import GenerateResult, ScoreResult
from moraleval.cache import CACHE_ENV, FILENAME, ResponseCache, default_cache_dir, model_key
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
        with pytest.raises(RunError, match="cannot be opened") as info:
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
