"""One writer at a time: an advisory lock on a directory, and work folders that a later start can clean up.

Both use ``fcntl.flock`` on a small lock file.  The kernel releases such a lock when its process ends, however it
ends (exit, exception, ``kill -9``, a crash), so a lock left by a dead process is never in the way: the next
``flock`` simply succeeds and takes it over, with no pid guessing and no timeout.  (A pid file alone cannot tell a
dead process from a reused pid; ``fcntl``/``lockf`` byte-range locks are released when *any* descriptor of the
file is closed in the process, which is easy to get wrong.)  The holder writes who it is (pid, host, start time,
command) into the file, only so that a refusal can name it.

- :func:`lock_dir` guards a report directory (``--out``): a second run into the same directory while the first is
  running is refused with :class:`~moraleval.errors.OutputDirBusy`, which names the other process.  The lock file
  (``.moraleval.lock``) is removed when the lock is released; one left by a killed run is taken over silently.
- :func:`work_dir` / :func:`sweep_work_dirs`: a temporary folder (a model import's) holds a lock file inside it
  for as long as it is in use; a later start removes such folders that are older than ``min_age`` seconds and
  whose lock nobody holds, so two concurrent imports never delete each other's work.

Where ``fcntl`` does not exist (Windows) or the file system refuses ``flock`` (some network file systems), nothing
is locked and the caller is told (``DirLock.locked`` is False); nothing else changes.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

from moraleval.errors import OutputDirBusy, OutputDirError
from moraleval.util.outdir import os_error_reason

LOCK_NAME = ".moraleval.lock"
WORK_LOCK = ".in-use.lock"  # inside a work folder: held while the folder is in use
_UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS}
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_MAX_LOCK_BYTES = 4096  # a holder record is one short JSON line


def _holder_info() -> dict[str, object]:
    program = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    if program in ("moraleval", "__main__.py"):  # the command line, or `python -m moraleval`
        command = " ".join(["moraleval", *sys.argv[1:]])
    else:  # moraleval.run() inside another program (a notebook, a script, pytest)
        program = "python -c" if program in ("", "-c") else program
        command = " ".join([program, *sys.argv[1:]]) + " (moraleval as a library)"
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "command": command if len(command) <= 300 else command[:297] + "..."}


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: someone else holds it; None: this file system cannot lock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        if exc.errno in _UNSUPPORTED:
            return None
        raise


def _read_holder(path: Path) -> dict[str, object]:
    """What the holder wrote (it writes right after locking: a reader may come in between, so try briefly).
    Never follows a link, reads at most 4 kB."""
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
            try:
                text = os.pread(fd, _MAX_LOCK_BYTES, 0).decode("utf-8", errors="replace")
            finally:
                os.close(fd)
            if text.strip():
                info = json.loads(text)
                if isinstance(info, dict):
                    return info
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    return {}


def _is_holder_record(data: bytes) -> bool:
    """Whether ``data`` is what a holder writes into a lock file (empty, or one JSON object naming a pid): the
    only contents moraleval truncates.  Anything else is not our file, so it is left alone."""
    if not data.strip():
        return True
    if len(data) >= _MAX_LOCK_BYTES:
        return False
    try:
        info = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(info, dict) and set(info) <= {"pid", "host", "started", "command"} and "pid" in info


class NotALockFile(OSError):
    """The lock file's name is taken by something that is not a moraleval lock file (a link, a hard link to
    another file, a device, a file with other contents): nothing is truncated or written."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(errno.EEXIST, f"{path} {reason}")
        self.reason = f"{path.name} {reason}"


class DirLock:
    """An exclusive lock on one directory, held from :meth:`acquire` to :meth:`release` (or process end)."""

    def __init__(self, directory: str | os.PathLike[str], name: str = LOCK_NAME) -> None:
        self.directory = Path(directory)
        self.path = self.directory / name
        self.locked = False
        self.why_not: str | None = None  # set when the lock could not be taken for a reason other than a holder
        self._fd: int | None = None

    def acquire(self) -> dict[str, object] | None:
        """Take the lock: None when taken (or impossible here, see ``why_not``), else what the holder wrote."""
        if fcntl is None:  # pragma: no cover - Windows
            self.why_not = "file locks are not available on this system"
            return None
        for _ in range(50):
            fd = self._open()
            got = _try_flock(fd)
            if got is None:
                os.close(fd)
                self.why_not = "the file system does not support file locks"
                return None
            if not got:
                os.close(fd)
                return _read_holder(self.path) or {"pid": None}
            # the file may have been unlinked by the holder releasing it between our open() and flock(): then we
            # hold a lock on a file nobody else will open; start again on the one at the path
            try:
                same = os.path.samestat(os.fstat(fd), os.lstat(self.path))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            # ours to overwrite only if it holds what a holder writes (we hold the lock: nobody writes meanwhile)
            if not _is_holder_record(os.pread(fd, _MAX_LOCK_BYTES, 0)):
                os.close(fd)
                raise NotALockFile(self.path, "is not a moraleval lock file (it holds something else), so it is "
                                              "left as it is")
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(_holder_info()) + "\n").encode("utf-8"), 0)
            self._fd, self.locked = fd, True
            return None
        raise OSError(errno.EAGAIN, f"could not lock {self.path}: it keeps being replaced")

    def _open(self) -> int:
        """The lock file, opened (created when missing) without following a link, and checked to be a plain file
        with no other name: a planted link or hard link must not make us write into another file."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
                         | getattr(os, "O_NONBLOCK", 0), 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise NotALockFile(self.path, "is a symbolic link (moraleval does not follow links in a report "
                                              "folder)") from None
            raise
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "is not a regular file"
        elif st.st_nlink != 1:
            problem = "has other names (a hard link to another file)"
        if problem is not None:
            os.close(fd)
            raise NotALockFile(self.path, problem + ", so it is left as it is")
        return fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(self._fd), os.lstat(self.path)):
                os.unlink(self.path)  # while still holding it (see acquire)
        os.close(self._fd)
        self._fd, self.locked = None, False

    def __enter__(self) -> "DirLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_dir(directory: str | os.PathLike[str], *, label: str) -> DirLock:
    """Lock a report directory for this process, or raise OutputDirBusy naming the process that holds it.

    ``label`` is how the user named the directory (``--out reports/x``)."""
    lock = DirLock(directory)
    try:
        holder = lock.acquire()
    except NotALockFile as exc:  # a planted link or someone else's file at the lock's name: nothing is touched
        raise OutputDirError(f"{label} cannot be locked for writing: {exc.reason}",
                             hint=f"remove {lock.path} if it is not yours to keep, or give another directory"
                             ) from None
    except OSError as exc:  # a read-only or vanished directory: the user's to fix, in one sentence
        raise OutputDirError(f"{label} cannot be locked for writing: {os_error_reason(exc)}",
                             hint="give a directory you can write to") from None
    if holder is not None:
        raise OutputDirBusy(f"{label} is in use by another moraleval run: {describe_holder(holder)}",
                            hint="wait for that run to finish, or give this one another --out DIR (both share the "
                                 "response cache, so nothing computed is lost); if that process is gone, just run "
                                 "again: a lock left by a process that died is taken over automatically")
    return lock


def describe_holder(info: dict[str, object]) -> str:
    pid = info.get("pid")
    if pid is None:
        return "its process did not say who it is yet"
    here = info.get("host") == socket.gethostname()
    parts = [f"pid {pid}" + ("" if here or not info.get("host") else f" on host {info.get('host')}")]
    if info.get("started"):
        parts.append(f"started {info['started']}")
    text = ", ".join(parts)
    if info.get("command"):
        text += f" (`{info['command']}`)"
    return text


# ---------------------------------------------------------------------------------------------- work folders

@contextlib.contextmanager
def work_dir(parent: str | os.PathLike[str], prefix: str) -> Iterator[Path]:
    """A fresh folder ``parent/<prefix><random>``, locked while in use and removed afterwards (even on error).

    A process killed with SIGKILL leaves it behind, unlocked: :func:`sweep_work_dirs` removes it later."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    lock = DirLock(folder, WORK_LOCK)
    try:
        lock.acquire()
        yield folder
    finally:
        lock.release()
        shutil.rmtree(folder, ignore_errors=True)


def sweep_work_dirs(parent: str | os.PathLike[str], prefixes: tuple[str, ...], *, min_age: float = 300.0,
                    now: float | None = None, match: Callable[[str], bool] | None = None) -> list[Path]:
    """Remove the folders in ``parent`` whose name starts with one of ``prefixes`` (and satisfies ``match``),
    that were last changed more than ``min_age`` seconds ago and whose lock no live process holds; return those
    removed.  Never raises.

    The age check covers the moment between a folder's creation and its lock (and folders from versions that did
    not lock them); the lock covers imports that run longer than ``min_age``."""
    removed: list[Path] = []
    now = time.time() if now is None else now
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    for folder in entries:
        if not folder.name.startswith(prefixes) or (match is not None and not match(folder.name)):
            continue
        try:
            if folder.is_symlink() or not folder.is_dir() or now - folder.stat().st_mtime < min_age:
                continue
        except OSError:
            continue
        lock = DirLock(folder, WORK_LOCK)
        try:
            if lock.acquire() is not None:
                continue  # in use by a live process
        except OSError:
            continue
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            lock.release()
        if not folder.exists():
            removed.append(folder)
    return removed
