"""The dataset pipeline that turns a ``dataset`` block into rows: one handler per statement (read, join, derive,
filter, sample, expand); reading the files is ``moraleval.data.tables``'.

The checker's datasets pass (``moraleval.checker.datasets``) supplies the file loader and turns the problems found
here into located diagnostics.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import string
from typing import Any, Callable

import attrs
import numpy as np

from moraleval.checker.row_env import RowEnv
from moraleval.data.tables import convert_number
from moraleval.language import nodes as n
from moraleval.language.exprjson import to_source
from moraleval.language.nodes import ROW_ID, VARIANT
from moraleval.language.rowexpr import EvalError, compile_expr, evaluate
from moraleval.util.text import shorten

#: ``load(relative_path, fmt, node, optional) -> rows | None``: a verified file's rows (None: not loaded)
Loader = Callable[[str, str, Any, bool], "list[dict[str, Any]] | None"]


@attrs.define
class DatasetResult:
    """Rows of one dataset after its pipeline, plus what happened on the way (for the plan and the report)."""

    name: str
    rows: list[dict[str, Any]]
    columns: list[str]
    files_read: dict[str, str]  # relative path -> sha256
    rows_read: int = 0
    dropped: dict[str, int] = attrs.Factory(dict)  # reason -> rows
    # `drop entries of COLUMN`: column -> reason -> entries removed from the rows' cells
    entries_dropped: dict[str, dict[str, int]] = attrs.Factory(dict)
    joins: dict[str, dict[str, Any]] = attrs.Factory(dict)  # join name -> {"file":..., "present": bool, ...}
    expanded_from: int | None = None  # rows before the first expand
    # each expand line in order: {"column", "values" (how many), "rows_before", "rows_after"}
    expansions: list[dict[str, Any]] = attrs.Factory(list)
    # False when a file the dataset reads could not be loaded: its columns are then unknown, and checks that
    # need them (template variables, metric names) are skipped rather than reported as false errors
    columns_known: bool = True
    # check only: rows of stand-in files (same format, declared by the dataset) for absent ones, so templates
    # can still be rendered once; never planned or run
    stand_in_rows: list[dict[str, Any]] | None = None
    # rows left out because they fail a `fields` or `expect` line (each failure is an error: the run stops)
    malformed_rows: int = 0


class StatementError(Exception):
    """A dataset statement failed; ``node`` is where, ``row`` the offending row index when one is to blame,
    ``code`` the diagnostic code (E137 for a failing line; E128/E129 for a malformed row of a data file)."""

    def __init__(self, message: str, node: Any, hint: str | None = None, row: str | None = None,
                 names: list[str] | None = None, code: str = "E137") -> None:
        super().__init__(message)
        self.node, self.hint, self.row, self.names, self.code = node, hint, row, names, code


class SourcedRows(list):
    """A file's rows as the loader returns them, with the file's path and the line each row starts on, so that a
    malformed row can be named by its file and line (a plain list from a loader is accepted too: no lines)."""

    def __init__(self, rows: list[dict[str, Any]], file: str, lines: list[int]) -> None:
        super().__init__(rows)
        self.file, self.lines = file, lines


def key_string(v: Any) -> str:
    """Join keys compare as text, so jsonl ints match csv strings ("12" == 12); floats like 12.0 read as 12."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def sample_rows(rows: list[dict[str, Any]], size: int, per: tuple[str, ...], seed: int) -> list[dict[str, Any]]:
    """Deterministic sample: a seeded permutation, then the first ``size`` rows of each group, in original order."""
    order = np.random.Generator(np.random.PCG64(seed)).permutation(len(rows))
    taken: dict[tuple, int] = {}
    keep = np.zeros(len(rows), dtype=bool)
    for i in order:
        key = tuple(key_string(rows[i].get(c)) for c in per)
        if taken.get(key, 0) < size:
            taken[key] = taken.get(key, 0) + 1
            keep[i] = True
    return [r for r, k in zip(rows, keep) if k]


def file_list(read: n.Read, consts: dict[str, Any]) -> list[tuple[dict[str, Any], str]]:
    """The files a ``read`` line names: [(loop binding, relative path)]."""
    if read.var is None:
        return [({}, read.path)]
    values = evaluate(read.iterable, consts)
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise StatementError(f"'for {read.var} in ...' needs a list, got {values!r}", read.iterable)
    pieces = _path_pieces(read)
    return [({read.var: v}, "".join(p if field is None else str(v) for p, field in pieces)) for v in values]


def _path_pieces(read: n.Read) -> list[tuple[str, str | None]]:
    """``read.path`` split into literal text and ``{var}`` placeholders.  Only the bare loop variable may appear
    in braces (no attributes, indexes, conversions or format specs: a path is not a program); ``{{``/``}}`` are
    literal braces."""
    pieces: list[tuple[str, str | None]] = []
    fix = f"write '{{{read.var}}}' for the loop value, '{{{{' and '}}}}' for literal braces"
    try:
        parsed = list(string.Formatter().parse(read.path))
    except ValueError as exc:
        raise StatementError(f"path '{read.path}' has unbalanced braces ({exc})", read, hint=fix) from None
    for literal, field, spec, conversion in parsed:
        if literal:
            pieces.append((literal, None))
        if field is None:
            continue
        if field != read.var or spec or conversion:
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise StatementError(f"path '{read.path}' has a placeholder '{shown}' that is not '{{{read.var}}}'",
                                 read, hint=fix)
        pieces.append(("", field))
    return pieces


@contextlib.contextmanager
def gc_paused():
    """Bulk building of rows and requests makes millions of small containers and no garbage cycles; the cyclic
    collector would rescan the growing heap again and again (super-linear time), so it waits until the end."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


@attrs.define(eq=False)
class _Pipeline:
    """The rows and columns so far, and where problems go; each statement's handler updates them in place."""

    consts: dict[str, Any]
    load: Loader
    on_error: Callable[[StatementError], None] | None
    result: DatasetResult
    rows: list[dict[str, Any]] = attrs.Factory(list)
    columns: list[str] = attrs.Factory(list)
    # id(row) -> (the row, file, line) for rows read from a file with lines; the row is held so its id stays its own
    sources: dict[int, tuple[dict[str, Any], str, int]] = attrs.Factory(dict)

    def where(self, r: dict[str, Any], i: int) -> str:
        """``file:line`` of a row read from a file, else its position (and id column)."""
        src = self.sources.get(id(r))
        if src is not None and src[0] is r:
            return f"{src[1]}:{src[2]}"
        return _row_label(self, r, i)

    def report(self, exc: StatementError | EvalError) -> None:
        if self.on_error is None:
            raise exc
        if isinstance(exc, EvalError):
            exc = StatementError(str(exc), exc.node)
        self.on_error(exc)


def _read(p: _Pipeline, read: n.Read) -> None:
    """The rows of every file the line names, appended (the loop value as a column when the row has none);
    csv/tsv cells that read as numbers become numbers."""
    try:
        files = file_list(read, p.consts)
    except (StatementError, EvalError) as exc:
        p.report(exc)
        return
    for binding, rel in files:
        loaded = p.load(rel, read.format, read, False)
        if loaded is None:
            p.result.columns_known = False
            continue
        if isinstance(loaded, SourcedRows):
            for r, line in zip(loaded, loaded.lines):
                p.sources[id(r)] = (r, loaded.file, line)
        for r in loaded:
            if binding:
                for k, v in binding.items():
                    r.setdefault(k, v)
            if read.format != "jsonl":
                for k in list(r):
                    r[k] = convert_number(r[k])
        p.rows.extend(loaded)


def _join(p: _Pipeline, stmt: n.Join) -> None:
    """Each row gets the joined file's matching row (or None) as column ``stmt.name``."""
    right = p.load(stmt.path, stmt.format, stmt, stmt.optional)
    p.result.joins[stmt.name] = {"file": stmt.path, "present": right is not None,
                                 "keys": [list(k) for k in stmt.keys]}
    if right is None:
        for r in p.rows:
            r[stmt.name] = None
        p.columns.append(stmt.name)
        return
    if stmt.format != "jsonl":
        for r in right:
            for k in list(r):
                r[k] = convert_number(r[k])
    right_columns = list(dict.fromkeys(k for r in right for k in r))
    left_known = p.result.columns_known and bool(p.columns)
    bad = [(side, k, cols) for lk, rk in stmt.keys
           for side, k, cols in (("the dataset's rows", lk, p.columns), (stmt.path, rk, right_columns))
           if k not in cols and (left_known or cols is right_columns)]
    if bad:
        for side, k, cols in bad:
            close = difflib.get_close_matches(k, cols, n=1)
            p.report(StatementError(f"join '{stmt.name}': no column '{k}' in {side}", stmt,
                                    f"did you mean '{close[0]}'?" if close else "columns: " + ", ".join(cols[:20])))
        for r in p.rows:
            r[stmt.name] = None
        p.columns.append(stmt.name)
        return
    index: dict[tuple, dict[str, Any]] = {}
    for r in right:
        key = tuple(key_string(r.get(rk)) for _, rk in stmt.keys)
        if key in index:
            p.report(StatementError(f"join '{stmt.name}': key {key} appears twice in {stmt.path}", stmt,
                                    "join keys must identify one row of the joined file"))
            break
        index[key] = r
    missing = 0
    for r in p.rows:
        key = tuple(key_string(r.get(lk)) for lk, _ in stmt.keys)
        match = index.get(key)
        if match is None:
            missing += 1
        r[stmt.name] = match
    p.result.joins[stmt.name]["unmatched"] = missing
    p.columns.append(stmt.name)


def _derive(p: _Pipeline, stmt: n.Derive) -> None:
    failed = _apply(p, compile_expr(stmt.value), lambda r, v: r.__setitem__(stmt.name, v))
    p.columns.append(stmt.name)
    if failed:
        for r in p.rows:
            r.setdefault(stmt.name, None)


def _filter(p: _Pipeline, stmt: n.Filter) -> None:
    keep: list[dict[str, Any]] = []
    _apply(p, compile_expr(stmt.cond), lambda r, v: keep.append(r) if v else None)
    reason = stmt.reason or f"filter at line {stmt.span.line if stmt.span else '?'}"
    if len(p.rows) != len(keep):
        p.result.dropped[reason] = p.result.dropped.get(reason, 0) + len(p.rows) - len(keep)
    p.rows = keep


class _EntryEnv(RowEnv):
    """A row's names, with ``key`` and ``value`` bound to one entry of a cell (they win over columns so named)."""

    def __init__(self, row: dict[str, Any], consts: dict[str, Any]) -> None:
        super().__init__(row, consts)
        self.entry: tuple[Any, Any] = (None, None)

    def __getitem__(self, key: str) -> Any:
        if key == "key":
            return self.entry[0]
        if key == "value":
            return self.entry[1]
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        return key in ("key", "value") or super().__contains__(key)

    def __iter__(self):
        return iter(["key", "value", *super().__iter__()])


def _drop_entries(p: _Pipeline, stmt: n.DropEntries) -> None:
    """In each row, the entries of a record (or list) cell for which the condition holds are removed and counted
    under the statement's reason; a row keeps its other entries (and stays a row)."""
    col = stmt.column
    if p.result.columns_known and p.columns and col not in p.columns:
        close = difflib.get_close_matches(col, p.columns, n=1)
        p.report(StatementError(f"drop entries: no column '{col}' in the dataset's rows", stmt,
                                f"did you mean '{close[0]}'?" if close else "derive the column first"))
        return
    cond = compile_expr(stmt.cond)
    env = _EntryEnv({}, p.consts)
    removed = 0
    for i, r in enumerate(p.rows):
        cell = r.get(col)
        if cell is None:
            continue
        if isinstance(cell, dict):
            entries = list(cell.items())
        elif isinstance(cell, list):
            entries = list(enumerate(cell))
        else:
            p.report(StatementError(f"drop entries of '{col}': the cell holds {type(cell).__name__} "
                                    f"{_short(cell)}, not a record or a list", stmt,
                                    f"derive '{col}' as a record or a list first (e.g. parse_literal({col}, "
                                    "\"record\"))", row=_row_label(p, r, i, [col])))
            return
        env.row = r
        kept = []
        for k, v in entries:
            env.entry = (k, v)
            try:
                hit = cond(env)
            except EvalError as exc:
                names = ["key", "value", *r, *p.consts, "row"]
                label = _row_label(p, r, i, _columns_read(exc.node, r) or [col])
                p.report(StatementError(str(exc), exc.node, row=label, names=names))
                return
            if not hit:
                kept.append((k, v))
        if len(kept) != len(entries):
            removed += len(entries) - len(kept)
            r[col] = dict(kept) if isinstance(cell, dict) else [v for _k, v in kept]
    reason = stmt.reason or f"drop at line {stmt.span.line if stmt.span else '?'}"
    if removed:
        per = p.result.entries_dropped.setdefault(col, {})
        per[reason] = per.get(reason, 0) + removed


def _sample(p: _Pipeline, stmt: n.Sample) -> None:
    size = stmt.n
    if stmt.n_expr is not None:
        try:
            size = evaluate(stmt.n_expr, p.consts)
        except EvalError as exc:
            p.report(exc)
            return
        if not isinstance(size, int) or isinstance(size, bool):
            p.report(StatementError(f"sample size must be a whole number, got {size!r}", stmt))
            return
    if size < 0:
        p.report(StatementError(f"sample size must be 0 (keep every row) or more, got {size}", stmt))
        return
    if size == 0:
        return  # sample 0 (e.g. a parameter left at 0) keeps every row
    if any(c not in p.columns for c in stmt.per):
        return  # an unknown grouping column (the checker reports it)
    before = len(p.rows)
    p.rows = sample_rows(p.rows, size, stmt.per, stmt.seed)
    if before != len(p.rows):
        p.result.dropped["not sampled"] = p.result.dropped.get("not sampled", 0) + before - len(p.rows)


def _expand(p: _Pipeline, stmt: n.Expand) -> None:
    """Each row once per value, as variants of the same row id."""
    try:
        values = evaluate(stmt.values, p.consts)
    except EvalError as exc:
        p.report(exc)
        return
    if not isinstance(values, list) or not values:
        p.report(StatementError("expand needs a non-empty list of values", stmt.values))
        return
    if p.result.expanded_from is None:
        p.result.expanded_from = len(p.rows)
    before = len(p.rows)
    expanded = []
    for r in p.rows:
        for j, v in enumerate(values):
            copy = dict(r)
            copy[stmt.var] = v
            copy[VARIANT] = r[VARIANT] * len(values) + j
            expanded.append(copy)
    p.rows = expanded
    p.result.expansions.append({"column": stmt.var, "values": len(values), "rows_before": before,
                                "rows_after": len(expanded)})
    if stmt.var not in p.columns:
        p.columns.append(stmt.var)


_ABSENT = object()


def _is_type(value: Any, kind: str) -> bool:
    """Whether a row's value has a ``fields`` type (``_ABSENT`` for a field the row lacks)."""
    if kind == "none":
        return value is _ABSENT or value is None
    if value is _ABSENT:
        return False
    if kind.startswith("list of "):
        return isinstance(value, list) and all(_is_type(v, kind[8:]) for v in value)
    return {"text": lambda v: isinstance(v, str),
            "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "bool": lambda v: isinstance(v, bool),
            "list": lambda v: isinstance(v, list),
            "record": lambda v: isinstance(v, dict),
            "any": lambda v: v is not None}[kind](value)


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    for kind in ("bool", "int", "number", "text", "record"):
        if _is_type(value, kind):
            return {"int": "a whole number", "number": "a number", "record": "a record", "bool": "true/false"}.get(
                kind, kind)
    if isinstance(value, list):
        inner = sorted({_kind_of(v) for v in value})
        return "a list" + (f" of {', '.join(inner)}" if inner else " (empty)")
    return type(value).__name__


def _more(p: _Pipeline, failing: list[int]) -> str:
    """`` (and 47 more rows: lines 2, 3, 4, 5, 6, ... of f.jsonl)``: where else the same problem is, briefly."""
    if len(failing) <= 1:
        return ""
    places = [p.where(p.rows[i], i) for i in failing[1:6]]
    tail = ", ..." if len(failing) > 6 else ""
    files = {w.rpartition(":")[0] for w in places}
    if len(files) == 1 and all(w.rpartition(":")[2].isdigit() for w in places):
        shown = "lines " + ", ".join(w.rpartition(":")[2] for w in places) + tail + f" of {files.pop()}"
    else:
        shown = ", ".join(places) + tail
    return f" (and {len(failing) - 1} more row(s): {shown})"


_MALFORMED_HINT = ("the data file is malformed or is not the version the spec was written for: look at that line "
                   "(restore the file, e.g. with `moraleval data fetch`), or correct the spec if the format is right")


def _fields(p: _Pipeline, stmt: n.Fields) -> None:
    """Every row has every declared field, of a declared type; a field that may be ``none`` is set to none where
    absent (so every row has the column).  Rows that fail are reported (E128) and dropped from the pipeline, so
    the lines below do not fail on them again."""
    bad: set[int] = set()
    for fd in stmt.fields:
        failing = [i for i, r in enumerate(p.rows) if not any(_is_type(r.get(fd.name, _ABSENT), k) for k in fd.types)]
        if failing:
            i = failing[0]
            value = p.rows[i].get(fd.name, _ABSENT)
            got = "is missing" if value is _ABSENT else f"is {_kind_of(value)} ({shorten(_show(value), 60)})"
            want = " or ".join("absent or null" if k == "none" else k for k in fd.types)
            p.report(StatementError(f"{p.where(p.rows[i], i)}: field '{fd.name}' {got}, expected {want}"
                                    f"{_more(p, failing)}", fd, _MALFORMED_HINT, code="E128"))
            bad.update(failing)
        if "none" in fd.types:
            for r in p.rows:
                r.setdefault(fd.name, None)
            if fd.name not in p.columns:
                p.columns.append(fd.name)
    if bad:
        p.result.malformed_rows += len(bad)
        p.rows = [r for i, r in enumerate(p.rows) if i not in bad]


def _expect(p: _Pipeline, stmt: n.Expect) -> None:
    """Every row meets the condition; the rows that do not are reported (E129, with the values the condition
    read) and dropped from the pipeline (a row on which the condition cannot be evaluated is reported as E137)."""
    fn = compile_expr(stmt.cond)
    env = RowEnv({}, p.consts)
    false_rows: list[int] = []
    broken: list[int] = []
    for i, r in enumerate(p.rows):
        env.row = r
        try:
            ok = fn(env)
        except EvalError as exc:
            if not broken:
                p.report(_row_failure(p, exc, r, i))
            broken.append(i)
            continue
        if not ok:
            false_rows.append(i)
    if false_rows:
        i = false_rows[0]
        shown = ", ".join(f"{name} = {shorten(_show(p.rows[i].get(name)), 50)}"
                          for name in _column_names(stmt.cond) if name in p.rows[i])
        why = f" ({stmt.reason})" if stmt.reason else ""
        p.report(StatementError(f"{p.where(p.rows[i], i)}: expect{why} fails: `{to_source(stmt.cond)}` is false "
                                f"for this row" + (f" ({shown})" if shown else "") + _more(p, false_rows), stmt,
                                _MALFORMED_HINT, code="E129"))
    if false_rows or broken:
        drop = set(false_rows) | set(broken)
        p.result.malformed_rows += len(drop)
        p.rows = [r for i, r in enumerate(p.rows) if i not in drop]


def _column_names(expr: Any) -> list[str]:
    """The plain names an expression reads, in order, once each (for showing a failing row's values)."""
    out: list[str] = []

    def walk(e: Any) -> None:
        if isinstance(e, n.Name):
            if e.name not in out:
                out.append(e.name)
        elif attrs.has(type(e)):
            for f in attrs.fields(type(e)):
                v = getattr(e, f.name)
                for x in (v if isinstance(v, tuple) else (v,)):
                    if attrs.has(type(x)):
                        walk(x)

    walk(expr)
    return out


def _show(v: Any) -> str:
    import json

    try:
        return json.dumps(v, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(v)


#: the handler of each statement that changes the rows read, run in the order written (``origin`` and ``file``
#: lines only declare; ``read`` and ``expand`` lines have steps of their own, see ``run_pipeline``)
ROW_HANDLERS: dict[type, Callable[[_Pipeline, Any], None]] = {
    n.Join: _join, n.Derive: _derive, n.Filter: _filter, n.DropEntries: _drop_entries, n.Sample: _sample,
    n.Fields: _fields, n.Expect: _expect,
}


def run_pipeline(ds: n.Dataset, consts: dict[str, Any], load: Loader, *,
                 on_error: Callable[[StatementError], None] | None = None) -> DatasetResult:
    """Apply a dataset block's statements, in three steps.

    Every ``read`` comes first, wherever it is written (the rows of all files, concatenated); then each join,
    derive, filter and sample by its handler, in the order written; then the row ids are fixed, and each
    ``expand`` multiplies the rows into variants of those ids.

    ``load(relative_path, fmt, node, optional) -> rows | None`` reads a verified file (the checker supplies it:
    it knows the data root, the pinned hashes and how to report problems).  ``on_error(StatementError)``
    receives each problem; the pipeline goes on where it can so one pass finds them all (without ``on_error``
    the first problem is raised).
    """
    with gc_paused():
        p = _Pipeline(consts, load, on_error, DatasetResult(ds.name, [], [], {}))
        for stmt in ds.body:
            if isinstance(stmt, n.Read):
                _read(p, stmt)
        p.result.rows_read = len(p.rows)
        p.columns = list(dict.fromkeys(k for r in p.rows for k in r))  # in order of first appearance
        for stmt in ds.body:
            handler = ROW_HANDLERS.get(type(stmt))
            if handler is not None:
                handler(p, stmt)
        for i, r in enumerate(p.rows):
            r[ROW_ID] = i
            r[VARIANT] = 0
        p.columns += [ROW_ID, VARIANT]
        for stmt in ds.body:
            if isinstance(stmt, n.Expand):
                _expand(p, stmt)
        p.result.rows = p.rows
        p.result.columns = list(dict.fromkeys(p.columns))
        return p.result


def _apply(p: _Pipeline, fn: Callable[[RowEnv], Any], store: Callable[[dict, Any], None]) -> bool:
    """Run ``fn`` on every row; report the first failure (with its row) and keep going without it."""
    env = RowEnv({}, p.consts)
    failed = False
    for i, r in enumerate(p.rows):
        env.row = r
        try:
            value = fn(env)
        except EvalError as exc:
            if not failed:
                p.report(_row_failure(p, exc, r, i))
                failed = True
            continue
        store(r, value)
    return failed


def _row_failure(p: _Pipeline, exc: EvalError, r: dict[str, Any], i: int) -> StatementError:
    """An expression failed on a row: name the row (its file and line when known, the columns it reads).  A name
    that other rows have as a column is a field this row lacks (a malformed row), not an unknown column."""
    node = exc.node
    if str(exc).startswith("unknown name") and isinstance(node, n.Name) and node.name in p.columns:
        return StatementError(f"{p.where(r, i)}: field '{node.name}' is missing (other rows have it)", node,
                              _MALFORMED_HINT + "; or declare it `fields " + node.name + ": ... or none`",
                              code="E128")
    return StatementError(str(exc), node, row=_row_label(p, r, i, _columns_read(node, r)),
                          names=[*r, *p.consts, "row"])


def _columns_read(node: Any, r: dict[str, Any]) -> list[str]:
    """The row's columns an expression reads (the fields to name when it fails on that row)."""
    out: list[str] = []

    def walk(e: Any) -> None:
        if isinstance(e, n.Name) and e.name in r and e.name not in out:
            out.append(e.name)
        if attrs.has(type(e)):
            for a in attrs.fields(type(e)):
                v = getattr(e, a.name)
                for x in (v if isinstance(v, tuple) else (v,)):
                    if attrs.has(type(x)):
                        walk(x)
    walk(node)
    return out


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _row_label(p: _Pipeline, r: dict[str, Any], i: int, fields: list[str] | None = None) -> str:
    """'row 3 (goqa/sample.csv line 5, column selections)': the row's position after the lines above, the file
    and line it was read from, the columns the failing expression reads, and its id where it has one."""
    parts = []
    src = p.sources.get(id(r))
    if src is not None and src[0] is r:
        parts.append(f"{src[1]} line {src[2]}")
    if fields:
        parts.append(("column " if len(fields) == 1 else "columns ") + ", ".join(fields))
    for key in ("example_id", "id", "sentid"):
        if key in r:
            parts.append(f"{key} {r[key]!r}")
            break
    return f"row {i} ({', '.join(parts)})" if parts else f"row {i}"
