"""Persistent response cache: every backend answer, keyed by (model identity, request hash), in SQLite.

Layout: one file ``responses.sqlite3`` in the cache directory, which is ``--cache DIR`` if given, else the
``MORALEVAL_CACHE`` environment variable, else ``platformdirs.user_cache_dir("moraleval")``.

- key: ``model`` = sha256 of the backend identity's canonical JSON, ``request`` = ``backend.request_hash(req)``;
- value: the result's canonical JSON (as the runner normalised it) plus ``checksum`` = sha256 over
  model, request, kind and value.  An entry whose checksum, JSON or shape is wrong is never trusted: it is
  reported (``ResponseCache.problems`` and the ``moraleval.execute.cache`` logger), deleted and looked up as a miss,
  so the runner recomputes it.
- durability: WAL journal, one transaction per ``put`` (so per ``on_result`` callback).  A process killed with
  SIGKILL at any moment leaves every committed answer readable and no half-written one (SQLite's atomic commit);
  ``synchronous=NORMAL`` means a power cut (not a process kill) may lose the last few commits, never corrupt.
- concurrency: SQLite serialises writers (a second writer waits up to ``busy_timeout``), readers never block
  in WAL mode, so ``moraleval plan --dry-run`` can read while a run writes.  Opening is retried while the file
  is locked (the WAL conversion of a new file gets no busy handler from SQLite), so several runs may start on
  one new cache at the same moment.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Union

from moraleval.backend import GenerateResult, ScoreResult, canonical_json, model_key
from moraleval.errors import RunError

__all__ = ["CACHE_ENV", "CacheError", "FORMAT_VERSION", "ResponseCache", "Result", "cache_problem",
           "default_cache_dir", "model_key"]

CACHE_ENV = "MORALEVAL_CACHE"
FILENAME = "responses.sqlite3"
FORMAT_VERSION = "1"
_BUSY_TIMEOUT_MS = 60_000
_CHUNK = 500  # host parameters per SELECT ... IN (...)

Result = Union[ScoreResult, GenerateResult]
_KINDS: dict[str, type] = {"score": ScoreResult, "generate": GenerateResult}

log = logging.getLogger("moraleval.execute.cache")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (model TEXT PRIMARY KEY, identity TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS responses (
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    checksum TEXT NOT NULL,
    PRIMARY KEY (model, request)
) WITHOUT ROWID;
"""


def default_cache_dir() -> Path:
    """``$MORALEVAL_CACHE`` if set, else the user cache directory of moraleval."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("moraleval"))


def _checksum(model: str, request: str, kind: str, value: str) -> str:
    return hashlib.sha256(f"{model}\n{request}\n{kind}\n{value}".encode("utf-8")).hexdigest()


def result_kind(result: Result) -> str:
    if isinstance(result, ScoreResult):
        return "score"
    if isinstance(result, GenerateResult):
        return "generate"
    raise TypeError(f"not a backend result: {result!r}")


def encode_result(result: Result) -> str:
    """Canonical JSON of a result.  ``-inf`` log-probs (a token the model can't produce) are kept as
    ``-Infinity``; NaN is refused (a backend bug, not an answer)."""
    data = result.to_json()
    if isinstance(result, ScoreResult):
        values = list(result.logprobs) + [p for _t, p in result.top]
        if any(math.isnan(v) for v in values):
            raise ValueError("a log-prob is NaN")
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def decode_result(kind: str, value: str) -> Result:
    cls = _KINDS[kind]
    return cls.from_json(json.loads(value))


def _is_lock(exc: BaseException) -> bool:
    """SQLITE_BUSY or SQLITE_LOCKED (any extended code); Python 3.10 has no error code, only the message."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return any(w in str(exc).lower() for w in ("locked", "busy"))


def _retry_while_locked(step: Any) -> None:
    """Run ``step`` again, with growing jittered pauses, while SQLite says the file is locked.

    Why: ``PRAGMA journal_mode=WAL`` needs the file to itself and SQLite does not call the busy handler for it,
    so two runs that open one new cache at the same moment made the second fail at once with "database is
    locked" despite ``busy_timeout``.  The budget is the busy timeout's."""
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    pause = 0.005
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            if not _is_lock(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause * (0.5 + random.random()))
        pause = min(pause * 2, 0.25)


class CacheError(RunError):
    """The response cache cannot be read or written (damaged, read-only, not permitted, locked, its disk full):
    not the backend's failure, and each cause with its own fix (exit code 4, like every run failure)."""


_NOT_DAMAGED = "The file is not damaged: do not delete it (it holds every answer computed so far)"


def cache_problem(path: str, exc: BaseException, doing: str = "used") -> CacheError:
    """What SQLite's error ``exc`` means for the user, named by cause: "damaged" (and "delete it") only when the
    file is damaged; permissions, a read-only file, a full disk and a lock each as what they are."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc).lower()
    if _is_lock(exc):
        return CacheError(f"the response cache {path} stayed locked by another process for "
                          f"{_BUSY_TIMEOUT_MS / 1000:g} s: {exc}",
                          hint="another moraleval (or a tool holding the file open) is using this cache; wait for "
                               f"it, or pass another --cache DIR. {_NOT_DAMAGED}")
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "malformed" in text or "not a database" in text:
        return CacheError(f"the response cache {path} is damaged ({exc}), found when it was {doing}",
                          hint="delete it (it only holds answers already computed: they are computed again) or pass "
                               "another --cache DIR; `sqlite3 FILE .recover` may save the answers it still holds")
    if primary == sqlite3.SQLITE_READONLY or "readonly" in text or "read-only" in text:
        return CacheError(f"the response cache {path} is read-only ({exc}): new answers cannot be stored",
                          hint="make the file and its folder writable (SQLite also writes FILE-wal and FILE-shm "
                               f"beside it), or pass another --cache DIR. {_NOT_DAMAGED}")
    if primary in (sqlite3.SQLITE_PERM, sqlite3.SQLITE_AUTH, sqlite3.SQLITE_CANTOPEN) or "permission" in text \
            or "unable to open" in text:
        return CacheError(f"the response cache {path} cannot be opened: permission denied, or its folder cannot "
                          f"be written ({exc})",
                          hint="check the permissions of the file and its folder (SQLite writes FILE-wal and "
                               f"FILE-shm beside it), or pass another --cache DIR. {_NOT_DAMAGED}")
    room = _out_of_room(path) if primary in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR) or "full" in text else None
    if room is not None or primary == sqlite3.SQLITE_FULL or "full" in text:
        from moraleval.util.outdir import disk_of

        return CacheError(f"the response cache {path} cannot grow: "
                          + (room or f"the disk holding it is full ({disk_of(path)})") + "; new answers cannot be "
                          "stored",
                          hint="free some space (or raise `ulimit -f`) and run the same command again: what is "
                               f"stored is reused; or pass --cache DIR on another disk. {_NOT_DAMAGED}")
    if primary == sqlite3.SQLITE_IOERR:
        from moraleval.util.outdir import disk_of

        return CacheError(f"an I/O error on the response cache {path} ({exc}), on the disk {disk_of(path)}: the "
                          "disk may be failing or gone (a network share that went away)",
                          hint="check the disk, then run the same command again; or pass another --cache DIR")
    return CacheError(f"the response cache {path} failed when it was {doing}: {exc}",
                      hint="pass another --cache DIR to go on; run with --debug to see where it failed")


def _out_of_room(path: str) -> str | None:
    """Why a write to the cache found no room, when it is that: this process's file-size limit (``ulimit -f``;
    SQLite reports it as an I/O error) or a disk with almost no free space; None otherwise."""
    from moraleval.util.outdir import disk_of

    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        sizes = [os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p)]
        if soft != resource.RLIM_INFINITY and sizes and max(sizes) + 65536 >= soft:
            return (f"this process's file-size limit (ulimit -f: {soft:,} bytes) is reached, on the disk "
                    f"{disk_of(path)}")
    except (ImportError, OSError, ValueError):
        pass
    try:
        import shutil

        if shutil.disk_usage(os.path.dirname(path) or ".").free < 1024 * 1024:
            return f"the disk holding it is full ({disk_of(path)})"
    except OSError:
        pass
    return None


def _unopenable(path: str, exc: BaseException) -> RunError:
    return cache_problem(path, exc, "opened")


class ResponseCache:
    """The response store.  Use as a context manager or call ``close()``.

    ``directory=":memory:"`` gives a private in-memory cache (tests, ``--no-cache``).
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.problems: list[str] = []  # corrupted entries found (and removed) since opening
        self._lock = threading.Lock()
        if directory is not None and str(directory) == ":memory:":
            self.directory: Path | None = None
            self.path = ":memory:"
        else:
            self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RunError(f"cannot create the cache directory {self.directory}: {exc}",
                               hint=f"pass --cache DIR or set {CACHE_ENV} to a writable directory") from exc
            self.path = str(self.directory / FILENAME)
        self._conn = self._open()

    # -- connection -------------------------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.DatabaseError as exc:
            raise _unopenable(self.path, exc) from exc
        try:
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            _retry_while_locked(lambda: self._set_up(conn))
            return conn
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise _unopenable(self.path, exc) from exc
            raise

    def _set_up(self, conn: sqlite3.Connection) -> None:
        """WAL mode, the schema and the format check: idempotent, so a try that met a lock is simply repeated."""
        if self.path != ":memory:":
            # WAL is a property of the file: once converted, nothing to do (and no exclusive lock to take)
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]  # contention raises SQLITE_BUSY
                if str(mode).lower() != "wal":  # refused without an error: this file system cannot do WAL
                    raise RunError(f"the response cache {self.path} cannot use SQLite's WAL journal (the file "
                                   f"system gave {mode!r})",
                                   hint="put the cache on a local disk: pass --cache DIR or set "
                                        f"{CACHE_ENV} (network shares often lack the shared memory WAL needs)")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        if row is None:
            conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('format', ?)", (FORMAT_VERSION,))
        elif row[0] != FORMAT_VERSION:
            raise RunError(f"the response cache {self.path} has format {row[0]}, this moraleval reads "
                           f"format {FORMAT_VERSION}",
                           hint="use another --cache directory, or delete that one (it is only a cache)")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> "ResponseCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ResponseCache({self.path!r})"

    @contextlib.contextmanager
    def _failures(self, doing: str) -> Iterator[None]:
        """Any SQLite error in the block as one CacheError naming its cause (never "the backend failed")."""
        try:
            yield
        except sqlite3.Error as exc:
            raise cache_problem(self.path, exc, doing) from None

    # -- reading ----------------------------------------------------------------------------------------------

    def get(self, model: str, request: str, *, repair: bool = True) -> Result | None:
        return self.get_many(model, [request], repair=repair).get(request)

    def get_many(self, model: str, requests: Iterable[str], *, repair: bool = True) -> dict[str, Result]:
        """The valid stored results among ``requests``.  Corrupted entries are reported and (``repair``)
        deleted, so they read as misses."""
        wanted = list(dict.fromkeys(requests))
        found: dict[str, Result] = {}
        bad: list[tuple[str, str]] = []
        with self._lock, self._failures("read"):
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT request, kind, value, checksum FROM responses WHERE model=? AND request IN ({marks})",
                    (model, *chunk)).fetchall()
                for request, kind, value, checksum in rows:
                    why = None
                    if kind not in _KINDS:
                        why = f"unknown kind {kind!r}"
                    elif checksum != _checksum(model, request, kind, value):
                        why = "checksum mismatch"
                    else:
                        try:
                            found[request] = decode_result(kind, value)
                        except Exception as exc:  # noqa: BLE001 - any decoding failure means "don't trust"
                            why = f"unreadable value ({type(exc).__name__}: {exc})"
                    if why is not None:
                        bad.append((request, why))
            for request, why in bad:
                msg = f"corrupted cache entry {request[:12]}… ({why}) in {self.path}: " + (
                    "deleted, it will be recomputed" if repair else "it would be recomputed")
                self.problems.append(msg)
                log.warning(msg)
                if repair:
                    self._conn.execute("DELETE FROM responses WHERE model=? AND request=?", (model, request))
        return found

    def count(self, model: str | None = None) -> int:
        with self._lock, self._failures("read"):
            if model is None:
                return self._conn.execute("SELECT count(*) FROM responses").fetchone()[0]
            return self._conn.execute("SELECT count(*) FROM responses WHERE model=?", (model,)).fetchone()[0]

    def identity(self, model: str) -> dict[str, Any] | None:
        with self._lock, self._failures("read"):
            row = self._conn.execute("SELECT identity FROM models WHERE model=?", (model,)).fetchone()
        return json.loads(row[0]) if row else None

    # -- writing ----------------------------------------------------------------------------------------------

    def register_model(self, identity: dict[str, Any]) -> str:
        """Record the identity behind a model key (for people inspecting the cache); returns the key.  Writes only
        a model not recorded yet, so a read-only cache still serves a run whose answers it holds."""
        key = model_key(identity)
        with self._lock, self._failures("written"):
            if self._conn.execute("SELECT 1 FROM models WHERE model=?", (key,)).fetchone():
                return key
            self._conn.execute("INSERT OR IGNORE INTO models(model, identity) VALUES (?, ?)",
                               (key, canonical_json(identity)))
        return key

    def put(self, model: str, request: str, result: Result) -> None:
        """Store one result, committed before returning (one transaction)."""
        self.put_many(model, [(request, result)])

    def put_many(self, model: str, items: Iterable[tuple[str, Result]]) -> None:
        """Store several results in one transaction (all or none)."""
        rows = []
        for request, result in items:
            kind = result_kind(result)
            value = encode_result(result)
            rows.append((model, request, kind, value, _checksum(model, request, kind, value)))
        if not rows:
            return
        with self._lock, self._failures("written"):
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO responses(model, request, kind, value, checksum) "
                                 "VALUES (?, ?, ?, ?, ?)", rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def delete(self, model: str, request: str) -> None:
        with self._lock, self._failures("written"):
            self._conn.execute("DELETE FROM responses WHERE model=? AND request=?", (model, request))
