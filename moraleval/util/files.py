"""Files: content hashes and atomic writes, the one implementation every stage uses.

Writing never follows a link: a temporary file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (so a name planted
in the folder cannot redirect it) and renamed over the target, which replaces whatever is at that name rather than
writing through it; :class:`Folder` goes further for a report folder, where a link, a hard link or a non-file at
a name moraleval writes is refused with one sentence.  New files get the permissions of the user's umask
(``0o666 & ~umask``), like any file a program creates, not ``mkstemp``'s fixed 0600.
"""

from __future__ import annotations

import errno
import hashlib
import os
import random
import stat
import string
from pathlib import Path

__all__ = ["Folder", "NotWritable", "current_umask", "sha256_bytes", "sha256_file", "write_atomic"]

_TMP_CHARS = string.ascii_letters + string.digits + "_"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def current_umask() -> int:
    """This process's umask, read without changing it where the system says it (Linux's /proc); elsewhere set and
    restored at once."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class NotWritable(OSError):
    """A name in a folder that moraleval refuses to write: a symbolic link, a hard link, a directory or device
    where a file belongs.  ``reason`` is one lower-case clause (``"is a symbolic link"``)."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(errno.EPERM, f"{path} {reason}")
        self.path, self.reason = str(path), reason


def _temp_name(name: str) -> str:
    """``.<name>.<8 random characters>``: what an interrupted write leaves (``report.manifest`` removes those)."""
    return f".{name}.{''.join(random.choices(_TMP_CHARS, k=8))}"


def _write_new(name: str, data: bytes, dir_fd: int | None) -> str:
    """A new temporary file beside ``name`` holding ``data``, fsynced; its name."""
    for _ in range(100):
        tmp = _temp_name(name)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o666, dir_fd=dir_fd)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 100 collisions of 62**8 names
        raise FileExistsError(errno.EEXIST, f"no free temporary name for {name}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink_quietly(tmp, dir_fd)
        raise
    return tmp


def _unlink_quietly(name: str, dir_fd: int | None) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one, never a part: a
    temporary file ``.<name>.<8 random characters>`` beside it (what an interruption leaves behind), fsynced,
    then renamed over ``path`` (a link at ``path`` is replaced, never written through)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / _write_new_in_dir(path.parent, path.name, data))
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp, None)
        raise


def _write_new_in_dir(directory: Path, name: str, data: bytes) -> str:
    fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    try:
        return _write_new(name, data, fd)
    finally:
        os.close(fd)


class Folder:
    """A directory opened once, written by name without following any link inside it.

    Every operation goes through the directory's descriptor (``openat``/``renameat``), so replacing a
    subfolder by a link between a check and a write changes nothing.  The folder itself may be reached through a
    link (the user named it); what is *in* it is never followed."""

    def __init__(self, path: str | os.PathLike[str], *, _fd: int | None = None) -> None:
        self.path = Path(path)
        self.fd = _fd if _fd is not None else os.open(self.path, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "Folder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def lstat(self, name: str) -> os.stat_result | None:
        try:
            return os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def check_writable(self, name: str) -> None:
        """Raise NotWritable when ``name`` exists and is not a plain file moraleval may replace."""
        st = self.lstat(name)
        if st is None:
            return
        if stat.S_ISLNK(st.st_mode):
            raise NotWritable(self.path / name, "is a symbolic link")
        if stat.S_ISDIR(st.st_mode):
            raise NotWritable(self.path / name, "is a directory, not a file")
        if not stat.S_ISREG(st.st_mode):
            raise NotWritable(self.path / name, "is not a regular file")

    def subfolder(self, name: str, *, create: bool = True) -> "Folder":
        """The folder ``name`` inside this one (created when missing); a link there is refused."""
        st = self.lstat(name)
        if st is None and create:
            try:
                os.mkdir(name, 0o777, dir_fd=self.fd)
            except FileExistsError:
                pass
            st = self.lstat(name)
        if st is None:
            raise FileNotFoundError(errno.ENOENT, f"{self.path / name} does not exist")
        if stat.S_ISLNK(st.st_mode):
            raise NotWritable(self.path / name, "is a symbolic link")
        if not stat.S_ISDIR(st.st_mode):
            raise NotWritable(self.path / name, "is not a directory")
        try:
            fd = os.open(name, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise NotWritable(self.path / name, "is a symbolic link") from None
            raise
        return Folder(self.path / name, _fd=fd)

    def write(self, name: str, data: bytes) -> None:
        """Replace ``name`` by a file holding ``data``, atomically (see :func:`write_atomic`); a link, directory
        or device at ``name`` is refused (NotWritable), never followed or replaced."""
        self.check_writable(name)
        tmp = _write_new(name, data, self.fd)
        try:
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            _unlink_quietly(tmp, self.fd)
            raise

    def unlink(self, name: str) -> None:
        os.unlink(name, dir_fd=self.fd)
