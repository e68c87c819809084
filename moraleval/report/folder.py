"""Reading a report folder: the one loader of report.json, samples.jsonl and manifest.json.

A report folder is untrusted input (a colleague's, a pull request's, a tarball's), so ``moraleval verify``,
``diff``, ``report`` (re-render), ``view`` and the several-model report read it only through here:

- **bounded**: each file's size (report.json 256 MB, manifest.json 64 MB, samples.jsonl 16 GB with lines of at
  most 64 MB and 50 million rows), JSON nested at most :data:`MAX_DEPTH` levels, no non-finite number (``1e309``,
  ``NaN``), ``bootstrap.resamples`` within the spec language's own range;
- **plain files only**: a name in the folder that is a symbolic link, a directory, a FIFO or a device is refused,
  never followed or opened for reading (a FIFO would block);
- **schema-checked** (``report.schema``): every field the pages, diff, verify and view use has the kind they use;
- samples.jsonl is split on ``\\n`` only (a U+2028 inside a string is text, not a line break).

Every problem is one :class:`DamagedReport` (a :class:`~moraleval.errors.ReportError`, exit code 2) naming the
file and what is wrong with it: ``reports/x/report.json: estimates[3].value is a list, expected a number``.
"""

from __future__ import annotations

import errno
import gc
import json
import os
import stat
from pathlib import Path
from typing import Any, Callable, Iterator

import attrs

from moraleval.errors import ReportError
from moraleval.report.schema import MANIFEST, SAMPLE, SchemaProblem, check, check_report, sample_ok
from moraleval.util.text import for_terminal

__all__ = ["DamagedReport", "MAX_DEPTH", "ReportFolder", "check_samples_file", "diff_reports", "folder_path",
           "iter_lines",
           "load_report_folder", "parse_json", "parse_sample_line", "read_manifest", "read_report_json", "read_samples"]

MAX_REPORT_BYTES = 256 * 1024 * 1024
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
MAX_SAMPLES_BYTES = 16 * 1024 ** 3
MAX_LINE_BYTES = 64 * 1024 * 1024
MAX_ROWS = 50_000_000
#: JSON nesting: a metric formula nested as deep as the spec language allows (100 levels) takes about 200
MAX_DEPTH = 256

NEWLINE = b"\n"
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_HINT = ("this report folder is damaged or was not written by moraleval: ask for a fresh copy, or run its spec "
         "again to write a new one")


class DamagedReport(ReportError):
    """A report folder's file that cannot be read as what moraleval writes (exit code 2)."""


@attrs.frozen(eq=False)
class ReportFolder:
    """What a report folder holds: report.json, the rows of samples.jsonl (None when not read), manifest.json
    (None when absent) and samples.jsonl's size in bytes (None when absent)."""

    path: Path
    report: dict[str, Any]
    samples: list[dict[str, Any]] | None
    manifest: dict[str, Any] | None
    samples_bytes: int | None


def _shown(path: Path) -> str:
    return for_terminal(path)


def _damaged(path: Path, what: str, hint: str = _HINT) -> DamagedReport:
    """``what`` is a verb phrase ("is not valid JSON ...") or, after a colon, a field or a line ("line 3: ...")."""
    sep = ": " if what.startswith(("line ", ":")) else " "
    return DamagedReport(f"{_shown(path)}{sep}{what.lstrip(':').lstrip()}", hint=hint)


def folder_path(path: str | os.PathLike[str], *, what: str = "report folder") -> Path:
    """``path`` when it is a directory, else a DamagedReport/ReportError saying what it is instead."""
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ReportError(f"{_shown(p)} does not exist: there is no {what} there",
                              hint="pass the directory `moraleval run` wrote, e.g. reports/<spec name>/") from None
        raise ReportError(f"{_shown(p)} cannot be read: {exc.strerror or exc}") from None
    except ValueError:  # a NUL byte in the name
        raise ReportError(f"{_shown(p)} is not a valid path") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ReportError(f"{_shown(p)} is a file, not a {what} (a directory holding report.json, samples.jsonl "
                          "and manifest.json)", hint="pass the directory `moraleval run` wrote")
    return p


def _open_plain(path: Path, limit: int, *, missing_ok: bool = False) -> tuple[int, int] | None:
    """(fd, size) of a plain file no bigger than ``limit``; None when missing and ``missing_ok``."""
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            if missing_ok:
                return None
            raise _damaged(path, "is missing", hint="is this a moraleval report directory? (`moraleval run` "
                                                    "writes report.json, samples.jsonl and manifest.json)") from None
        if exc.errno == errno.ELOOP:
            raise _damaged(path, "is a symbolic link: a report folder holds its own files, and moraleval does not "
                                 "follow links out of it") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise ReportError(f"{_shown(path)} cannot be read (permission denied)") from None
        raise _damaged(path, f"cannot be read ({exc.strerror or exc})") from None
    st = os.fstat(fd)
    problem = None
    if stat.S_ISDIR(st.st_mode):
        problem = "is a directory, not a file"
    elif not stat.S_ISREG(st.st_mode):
        problem = "is not a regular file (a FIFO, socket or device)"
    elif st.st_size > limit:
        problem = f"is {st.st_size:,} bytes, more than a report file can be ({limit:,})"
    if problem is not None:
        os.close(fd)
        raise _damaged(path, problem)
    return fd, st.st_size


def check_samples_file(folder: Path) -> int:
    """The size of ``folder/samples.jsonl`` after the loader's checks (present, a plain file, not a link, within
    the size bound), for a reader that reads it itself (``moraleval view``)."""
    opened = _open_plain(folder / "samples.jsonl", MAX_SAMPLES_BYTES)
    assert opened is not None
    os.close(opened[0])
    return opened[1]


def _read_all(fd: int, size: int) -> bytes:
    chunks, got = [], 0
    while True:
        chunk = os.read(fd, max(1 << 20, size - got + 1))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        got += len(chunk)


def parse_json(data: bytes, path: Path, *, line: int | None = None) -> Any:
    """``data`` as JSON (UTF-8; standard JSON only: no NaN/Infinity, no number that overflows to infinity; at most
    MAX_DEPTH levels deep), or a DamagedReport naming ``path`` (and ``line``)."""
    def at(what: str) -> str:  # "line 3 is ..." in samples.jsonl, "is ..." in a JSON file
        return f"line {line} {what}" if line is not None else what

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"line {line if line is not None else data.count(NEWLINE, 0, exc.start) + 1}"
        raise _damaged(path, f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at {where})") from None
    if not text or text.isspace():
        raise _damaged(path, at("is empty"))
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise _damaged(path, at(f"is nested too deeply to read (more than {MAX_DEPTH} levels)")) from None
    except _NonStandard as exc:
        raise _damaged(path, at(f"holds {exc.args[0]}, which is not standard JSON")) from None
    except _NonFinite:
        raise _damaged(path, at("holds a number too large to represent (it reads as infinity)")) from None
    except ValueError as exc:
        msg = getattr(exc, "msg", str(exc))
        pos = f"line {line}, column {exc.colno}" if line is not None and hasattr(exc, "colno") else \
            f"line {exc.lineno}, column {exc.colno}" if hasattr(exc, "lineno") else ""
        raise _damaged(path, f"is not valid JSON ({msg}{' at ' + pos if pos else ''})") from None
    if text.count("[") + text.count("{") > MAX_DEPTH:  # only then can it be nested deeper than the bound
        _check_depth(value, path, at)
    if "\\ud" in text or "\\uD" in text:  # only an escape can hold half a surrogate pair (UTF-8 text cannot)
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise _damaged(path, at("holds a \\ud800-\\udfff escape that is half of a surrogate pair, not a "
                                    "character")) from None
    return value


class _NonStandard(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NonStandard(name)


class _NonFinite(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e309: JSON has no infinity, Python's float() reads one
        raise _NonFinite(text)
    return value


def _check_depth(value: Any, path: Path, at: Callable[[str], str]) -> None:
    """At most MAX_DEPTH levels; iterative (the value may be as deep as Python's parser allows)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, (dict, list)):
            if depth > MAX_DEPTH:
                raise _damaged(path, at(f"is nested more than {MAX_DEPTH} levels deep"))
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))


def _read_json_file(path: Path, limit: int, *, missing_ok: bool = False) -> Any:
    opened = _open_plain(path, limit, missing_ok=missing_ok)
    if opened is None:
        return None
    fd, size = opened
    try:
        data = _read_all(fd, size)
    except OSError as exc:
        raise _damaged(path, f"cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # grew while being read
        raise _damaged(path, f"is more than {limit:,} bytes")
    return parse_json(data, path)


def read_report_json(folder: Path) -> dict[str, Any]:
    """report.json of ``folder``, schema-checked."""
    path = folder / "report.json"
    report = _read_json_file(path, MAX_REPORT_BYTES)
    try:
        check_report(report)
    except SchemaProblem as exc:
        raise _damaged(path, f": {exc}") from None
    return report


def read_manifest(folder: Path, *, missing_ok: bool = True) -> dict[str, Any] | None:
    """manifest.json of ``folder``, schema-checked; None when there is none and ``missing_ok``."""
    path = folder / "manifest.json"
    manifest = _read_json_file(path, MAX_MANIFEST_BYTES, missing_ok=missing_ok)
    if manifest is None and missing_ok:
        return None
    try:
        check(MANIFEST, manifest)
    except SchemaProblem as exc:
        raise _damaged(path, f": {exc}") from None
    return manifest


def parse_sample_line(data: bytes, path: Path, line: int) -> dict[str, Any]:
    """One row of samples.jsonl (``data`` without its ``\\n``), parsed and schema-checked."""
    if len(data) > MAX_LINE_BYTES:
        raise _damaged(path, f"line {line} is {len(data):,} bytes, more than a sample row can be "
                             f"({MAX_LINE_BYTES:,})")
    rec = parse_json(data, path, line=line)
    if sample_ok(rec):
        return rec
    try:
        check(SAMPLE, rec)
    except SchemaProblem as exc:
        raise _damaged(path, f"line {line}: {exc}") from None
    return rec


def iter_lines(fd: int, path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(line number, byte offset, bytes without the ``\\n``) of each non-blank line of the open file ``fd``, split
    on ``\\n`` only; a line longer than MAX_LINE_BYTES is refused before it is held whole."""
    buf = b""
    offset = 0  # of buf's first byte
    lineno = 0
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            break
        buf += chunk
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            lineno += 1
            line = buf[start:end]
            if line.strip():
                yield lineno, offset + start, line
            start = end + 1
        buf = buf[start:]
        offset += start
        if len(buf) > MAX_LINE_BYTES:
            raise _damaged(path, f"line {lineno + 1} is more than {MAX_LINE_BYTES:,} bytes long")
    if buf.strip():
        yield lineno + 1, offset, buf


def read_samples(folder: Path, *, missing_ok: bool = False) -> tuple[list[dict[str, Any]] | None, int | None]:
    """(the rows of samples.jsonl, its size in bytes); (None, None) when missing and ``missing_ok``."""
    path = folder / "samples.jsonl"
    opened = _open_plain(path, MAX_SAMPLES_BYTES, missing_ok=missing_ok)
    if opened is None:
        return None, None
    fd, size = opened
    rows: list[dict[str, Any]] = []
    collecting = gc.isenabled()
    gc.disable()  # every row is kept: the collector's passes over them would only cost time
    try:
        for lineno, _offset, line in iter_lines(fd, path):
            if len(rows) >= MAX_ROWS:
                raise _damaged(path, f"has more than {MAX_ROWS:,} rows")
            rows.append(parse_sample_line(line, path, lineno))
    except OSError as exc:
        raise _damaged(path, f"cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
        if collecting:
            gc.enable()
    return rows, size


def load_report_folder(path: str | os.PathLike[str], *, samples: bool = True, samples_required: bool = False,
                       manifest_required: bool = False) -> ReportFolder:
    """report.json, samples.jsonl (unless ``samples`` is False) and manifest.json of a report folder, each
    bounded and schema-checked; raises DamagedReport / ReportError naming the file and the problem."""
    folder = folder_path(path)
    report = read_report_json(folder)
    rows, size = read_samples(folder, missing_ok=not samples_required) if samples else (None, None)
    if not samples:
        try:
            st = os.stat(folder / "samples.jsonl", follow_symlinks=False)
            size = st.st_size if stat.S_ISREG(st.st_mode) else None
        except OSError:
            size = None
    manifest = read_manifest(folder, missing_ok=not manifest_required)
    if samples and rows is None:  # no samples.jsonl, and none required: a report without rows
        rows = []
    return ReportFolder(folder, report, rows, manifest, size)


def diff_reports(a: str | os.PathLike[str], b: str | os.PathLike[str], **options: Any) -> Any:
    """``moraleval diff A B`` as a library call: read both folders (bounded, schema-checked, samples required to
    pair items) and compare them (``moraleval.compare.diff.diff_folders``; the options are its own)."""
    from moraleval.compare.diff import diff_folders

    return diff_folders(load_report_folder(a, samples_required=True), load_report_folder(b, samples_required=True),
                        **options)
