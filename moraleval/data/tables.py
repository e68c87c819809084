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


def read_table(path: Path, fmt: str) -> list[dict[str, Any]]:
    """Rows of a jsonl/csv/tsv file as dicts (csv/tsv cells are strings here; the dataset pipeline turns cells
    that are numbers into numbers, see ``convert_number``)."""
    return read_table_lines(path, fmt)[0]


def read_table_lines(path: Path, fmt: str) -> tuple[list[dict[str, Any]], list[int]]:
    """``read_table``'s rows and, for each, the line of the file it starts on (1-based), so that a problem
    found later in a row (a missing field, a failed ``expect``) can name the file and the line."""
    try:
        data = safeio.read_text(path)
    except safeio.FileProblem as exc:
        raise DataError(f"{path} {exc.reason}", hint=exc.hint) from None
    if not data.strip():
        raise DataError(f"{path}: the file is empty", hint="restore the file (e.g. fetch it again)")
    if fmt == "jsonl":
        rows, lines = [], []
        # lines end at "\n" (and "\r\n") only: U+2028, U+2029 and U+0085 are valid inside a JSON string
        for lineno, line in enumerate(data.split("\n"), 1):
            if not line.strip():
                continue
            rows.append(_jsonl_row(path, lineno, line[:-1] if line.endswith("\r") else line))
            lines.append(lineno)
        return rows, lines
    delimiter = "\t" if fmt == "tsv" else ","
    reader = csv.reader(io.StringIO(data, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return [], []
    header = [h if h else f"column{i}" for i, h in enumerate(header)]
    rows, lines = [], []
    start = reader.line_num + 1
    try:
        for values in reader:
            lineno, start = start, reader.line_num + 1  # a quoted cell may span lines: the row starts at `lineno`
            if not values:
                continue
            if len(values) != len(header):
                raise DataError(f"{path}:{lineno}: {len(values)} fields, the header has {len(header)}",
                                hint=f"is this really a {fmt} file? (a cell with a stray quote runs on into the "
                                     "next lines)")
            rows.append(dict(zip(header, values)))
            lines.append(lineno)
    except csv.Error as exc:
        raise DataError(f"{path}:{start}: not a valid {fmt} row ({exc})",
                        hint="a quote that is opened must be closed, and a cell's own quotes doubled") from None
    if not rows:
        raise DataError(f"{path}: the file has a header line but no rows", hint="restore the file (e.g. fetch it "
                                                                                 "again)")
    return rows, lines


def _json_kind(value: Any) -> str:
    return {list: "a list", str: "a string", bool: "true/false", type(None): "null"}.get(type(value), "a number")


#: a row nested deeper than this is refused (BBQ's rows nest 3 levels); report folders hold rows at this depth
MAX_ROW_DEPTH = 200


def _jsonl_row(path: Path, lineno: int, line: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg}, column {exc.colno})",
                        hint="a .jsonl file holds one JSON object per line") from None
    except RecursionError:
        raise DataError(f"{path}:{lineno}: the row is nested more than {MAX_ROW_DEPTH} levels deep") from None
    if not isinstance(row, dict):
        raise DataError(f"{path}:{lineno}: a jsonl row must be a JSON object, not {_json_kind(row)}",
                        hint="a .jsonl file holds one JSON object per line")
    if "\\u" in line or "\\U" in line:  # only an escape can make a lone surrogate (UTF-8 text cannot hold one)
        try:
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DataError(f"{path}:{lineno}: a string holds the escape \\u{ord(exc.object[exc.start]):04x}, "
                            "half of a surrogate pair, which is not a character",
                            hint="write the character itself, or both halves of its pair (\\ud83d\\ude00)") from None
    stack = [(row, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_ROW_DEPTH:
            raise DataError(f"{path}:{lineno}: the row is nested more than {MAX_ROW_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return row


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
