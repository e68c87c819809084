"""The report directory: checked (created, a directory, writable) before any request runs, so a typo in ``--out``
costs nothing instead of a whole run's compute."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from moraleval.errors import OutputDirError


def prepare_out_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and its parents) if needed and prove it is a writable directory; raise OutputDirError."""
    out = Path(path)
    shown = str(out) if len(str(out)) <= 120 else str(out)[:58] + "…" + str(out)[-58:]
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {shown} is a file, not a directory",
                             hint="give a directory (it is created if needed), e.g. --out reports/run1")
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputDirError(f"--out {shown} is under {parent}, which is a file",
                                 hint="give a directory whose parents are directories")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"--out {shown} cannot be created: {os_error_reason(exc)}",
                             hint="give a directory you can write to, e.g. --out reports/run1") from None
    try:
        fd, probe = tempfile.mkstemp(prefix=".moraleval-write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputDirError(f"--out {shown} is not writable: {os_error_reason(exc)}",
                             hint="give a directory you can write to, e.g. --out reports/run1") from None
    return out


def os_error_reason(exc: OSError, path: str | os.PathLike[str] | None = None) -> str:
    """What the operating system said, as a person would say it: permissions and read-only named as such, a full
    disk named by its mount point and free space (``path``: where the write went), a file-size limit as
    ``ulimit -f``, a link that moraleval refused to follow as a link."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str):  # moraleval.util.files.NotWritable: already one clause
        return reason
    if exc.errno == errno.ENAMETOOLONG:
        return "the name is too long for the file system"
    if exc.errno == errno.ELOOP:
        return "it is a symbolic link (moraleval does not follow links when it writes)"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied" if exc.errno != errno.EROFS else "the file system is read-only"
    if exc.errno == errno.ENOSPC:
        return "no space left on the disk" + (f" {disk_of(path)}" if path is not None else "")
    if exc.errno == errno.EDQUOT:
        return "the disk quota is exceeded" + (f" on {disk_of(path)}" if path is not None else "")
    if exc.errno == errno.EFBIG:
        return "the file would exceed this process's file-size limit (ulimit -f) or the file system's"
    return exc.strerror or str(exc)


def disk_of(path: str | os.PathLike[str]) -> str:
    """``"mounted at /data (12.0 MB free)"``: the file system holding ``path`` (its nearest existing folder)."""
    import shutil

    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    mount = p
    try:
        dev = mount.stat().st_dev
        while mount != mount.parent and mount.parent.stat().st_dev == dev:
            mount = mount.parent
        free = shutil.disk_usage(p).free
    except OSError:
        return f"holding {p}"
    return f"mounted at {mount} ({_size(free)} free)"


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n}"  # pragma: no cover
