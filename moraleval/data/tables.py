"""Data files: safe paths under a data root and reading jsonl/csv/tsv into rows (knows nothing of specs)."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from moraleval.errors import DataError
from moraleval.util import safeio


class UnsafePath(DataError):
    pass


def resolve_data_path(root: Path, relative: str) -> Path:
    """``root / relative``, refusing anything that could leave the data root (``..``, absolute, symlinks out)."""
    if not relative or relative.startswith(("/", "\\")) or (len(relative) > 1 and relative[1] == ":"):
        raise UnsafePath(f"data path '{relative}' is absolute",
                         hint="data paths are relative to the data roots (--data, the spec's data line, "
                              "MORALEVAL_DATA)")
    parts = Path(relative).parts
    if any(p == ".." for p in parts):
        raise UnsafePath(f"data path '{relative}' leaves the data root ('..')",
                         hint="data paths must stay inside the data root")
    root_real = Path(os.path.realpath(root))
    target = root / relative
    real = Path(os.path.realpath(target))
    if real != root_real and root_real not in real.parents:
        raise UnsafePath(f"data path '{relative}' resolves outside the data root (a symlink to {real})",
                         hint="copy the file into the data root instead of linking to it")
    return target


class Rows(list):
    """A file's rows, with ``lines[i]``: the line of the file that row i starts on, so that a problem found in a
    cell later (a malformed literal) can name the file's line, not only the row's position."""

    def __init__(self, rows: Any = (), lines: list[int] | None = None) -> None:
        super().__init__(rows)
        self.lines = lines

    def fresh(self) -> "Rows":
        """A copy whose rows can be changed without touching these (the lines are shared: they never change)."""
        return Rows((dict(r) for r in self), self.lines)


def read_table(path: Path, fmt: str) -> Rows:
    """Rows of a jsonl/csv/tsv file as dicts (csv/tsv cells are strings here; the dataset pipeline turns cells
    that are numbers into numbers, see ``convert_number``), with the line each row starts on."""
    try:
        data = safeio.read_text(path)
    except safeio.FileProblem as exc:
        raise DataError(f"{path} {exc.reason}", hint=exc.hint) from None
    if not data.strip():
        raise DataError(f"{path}: the file is empty", hint="restore the file (e.g. fetch it again)")
    if fmt == "jsonl":
        rows = Rows(lines=[])
        for lineno, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg})",
                                hint="a .jsonl file holds one JSON object per line") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: a jsonl row must be a JSON object")
            rows.append(row)
            rows.lines.append(lineno)
        return rows
    delimiter = "\t" if fmt == "tsv" else ","
    reader = csv.reader(io.StringIO(data, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return []
    header = [h if h else f"column{i}" for i, h in enumerate(header)]
    rows = Rows(lines=[])
    start = reader.line_num + 1  # a quoted cell may hold newlines: a row starts after the previous one ended
    try:
        for values in reader:
            if values and len(values) != len(header):
                raise DataError(f"{path}:{start}: {len(values)} fields, the header has {len(header)}",
                                hint=f"is this really a {fmt} file? (a cell with a stray quote runs on into the "
                                     "next lines)")
            if values:
                rows.append(dict(zip(header, values)))
                rows.lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path}:{start}: not a valid {fmt} row ({exc})",
                        hint="a quote that is opened must be closed, and a cell's own quotes doubled") from None
    if not rows:
        raise DataError(f"{path}: the file has a header line but no rows", hint="restore the file (e.g. fetch it "
                                                                                 "again)")
    return rows


def convert_number(value: Any) -> Any:
    """csv/tsv cells that are numbers become numbers (so `LSAT > 30` works); everything else stays a string."""
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                f = float(value)
            except ValueError:
                return value
            return f if f == f else value  # keep "nan" a string
    return value
