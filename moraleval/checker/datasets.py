"""The datasets pass: the data search path, then each dataset's files located, verified against their pinned
sha256 and run through the dataset pipeline (``moraleval.checker.dataset_pipeline``), every problem located.

When selected files are absent, the columns are still learnt from stand-in files (see ``_stand_in_columns``) so
the templates and metrics are checked anyway.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import attrs

from moraleval.checker.context import CheckContext
from moraleval.checker.dataset_pipeline import DatasetResult, SourcedRows, StatementError, run_pipeline
from moraleval.data.roots import (BUILTIN_SAMPLE, DataRoot, describe_roots, locate, near_names, sample_data_dir,
                                  search_path)
from moraleval.data.tables import UnsafePath, read_table, read_table_lines
from moraleval.errors import DataError
from moraleval.errors.source import Source
from moraleval.language import nodes as n
from moraleval.language.rowexpr import ROW_FUNCTIONS
from moraleval.util import safeio
from moraleval.util.text import did_you_mean, shorten

_SHA256 = re.compile(r"[0-9a-f]{64}")


def load_datasets(ctx: CheckContext) -> None:
    ctx.data_roots = roots = _search_path(ctx, ctx.statements(n.DataRoot))
    ctx.datasets = {ds.name: _dataset(ctx, ds) for ds in ctx.statements(n.Dataset)}
    used = list(ctx.used_roots.values())
    first = used[0] if used else next((r for r in roots if safeio.is_dir(r.path)), None)
    ctx.data_root = first.path if first else None
    ctx.data_root_reason = (first.rule if first else "none found") + (
        f"; files also from {', '.join(str(r.path) for r in used[1:])}" if len(used) > 1 else "")


def _search_path(ctx: CheckContext, stmts: list[n.DataRoot]) -> list[DataRoot]:
    """The data roots in lookup order (see moraleval.data.roots): --data, the spec's data lines,
    $MORALEVAL_DATA, the user data directory."""
    lines = []
    for d in stmts:
        src = ctx.source_of(d)
        where = f"{src.display_path}:{d.span.line}" if d.span else src.display_path
        lines.append((d.path, Path(src.path).parent, where))
    roots = search_path(ctx.cli_data_roots, lines)
    for d, root in zip(stmts, roots[len(ctx.cli_data_roots):]):
        if d.path != BUILTIN_SAMPLE and not safeio.is_dir(root.path):
            ctx.warn(f"data root '{d.path}' does not exist (looked for {root.path}); it is skipped", d,
                     "create it, fix the path (relative to this file), or drop the line", ctx.source_of(d),
                     code="W133")
    return roots


@attrs.define(eq=False)
class _DatasetFiles:
    """One dataset's files: located on the search path, verified, read once; the loader the pipeline calls."""

    ctx: CheckContext
    ds: n.Dataset
    src: Source
    declared: dict[str, n.FileDecl]
    origin: n.Origin | None
    files_read: dict[str, str] = attrs.Factory(dict)  # relative path -> sha256
    cache: dict[str, Any] = attrs.Factory(dict)  # relative path -> rows (None: could not be read)
    lines: dict[str, list[int]] = attrs.Factory(dict)  # relative path -> the line each row starts on
    missing: dict[int, tuple[Any, list[str]]] = attrs.Factory(dict)  # id(statement) -> (statement, absent files)

    def pinned(self, rel: str) -> str | None:
        decl = self.declared.get(rel)
        return decl.sha256 if decl is not None and decl.sha256 and _SHA256.fullmatch(decl.sha256) else None

    def load(self, rel: str, fmt: str, node: Any, optional: bool) -> list[dict[str, Any]] | None:
        """A fresh copy of the file's rows, or None (the reason reported, or the file noted as missing)."""
        ctx, ds, src, cache = self.ctx, self.ds, self.src, self.cache
        if rel in cache:
            return self._copy(rel)
        cache[rel] = None
        decl = self.declared.get(rel)
        try:
            found = locate(ctx.data_roots, rel, self.pinned(rel))
        except UnsafePath as exc:
            ctx.error(exc.message, node, exc.hint, src, code="E133")
            return None
        if found.path is None and not found.mismatched and found.problems:
            bad, problem = found.problems[0]
            ctx.error(f"data file '{shorten(rel)}' {problem.reason} ({shorten(str(bad))})", node, problem.hint,
                      src, code="E136")
            return None
        if found.path is None and found.mismatched:
            root, path, actual = found.mismatched[0]
            restore = (f"moraleval data fetch {ds.name} --only {rel}" if self.origin and decl.upstream
                       else "copy the original file into a data root")
            ctx.error(f"data file '{rel}' does not match its pinned sha256 (file {path}; expected "
                      f"{decl.sha256}, actual {actual})", decl,
                      f"the file was altered or is another version: restore the original ({restore}); "
                      f"if the change is intended, pin the new hash: sha256 \"{actual}\"",
                      src, code="E135")
            return None
        if found.path is None:
            if not optional:
                self.missing.setdefault(id(node), (node, []))[1].append(rel)
            return None
        if decl is None:
            # with an origin, `data fetch` reads the file at the same path there unless `upstream` names another
            upstream = (f" (and upstream \"PATH\" if origin {self.origin.kind} \"{self.origin.location}\" keeps it "
                        "under another path)" if self.origin else "")
            ctx.error(f"data file '{rel}' has no pinned sha256", node,
                      f"add to dataset '{ds.name}': file \"{rel}\" sha256 \"{found.sha256}\"{upstream} "
                      f"(after checking the file is the one you mean)", src, code="E134")
            return None
        if decl.sha256 is None:
            upstream = f' upstream "{decl.upstream}"' if decl.upstream else ""
            ctx.error(f"data file '{rel}' is declared `unpinned`: its sha256 is not in the spec, so nothing could "
                      f"tell whether it is the file the study means; it is not read (found {found.path})", decl,
                      f"check the file (the sha256 its origin publishes, or a second download), then replace the "
                      f"`unpinned` line with: file \"{rel}\" sha256 \"{found.sha256}\"{upstream}", src, code="E130")
            return None
        try:
            rows, lines = read_table_lines(found.path, fmt)
        except DataError as exc:
            ctx.error(exc.message, node, exc.hint, src, code="E136")
            return None
        self.files_read[rel] = found.sha256
        ctx.data_paths[rel] = found.path
        ctx.used_roots.setdefault(found.root.path, found.root)
        cache[rel] = rows
        self.lines[rel] = lines
        return self._copy(rel)

    def _copy(self, rel: str) -> SourcedRows | None:
        """A fresh copy of a file's rows (the pipeline changes rows in place), with their lines."""
        rows = self.cache[rel]
        if rows is None:
            return None
        return SourcedRows([dict(r) for r in rows], rel, self.lines.get(rel, []))

    def report(self, exc: StatementError) -> None:
        """A pipeline problem as a diagnostic: an unknown name is a column (or function) of this dataset."""
        hint = exc.hint
        message = str(exc)
        if message.startswith("unknown name") and exc.names is not None:
            name = exc.node.name if isinstance(exc.node, n.Name) else ""
            hint = did_you_mean(name, exc.names) or ("columns here: " + ", ".join(sorted(exc.names)[:20]))
            message = f"unknown column '{name}' in dataset '{self.ds.name}'"
        elif message.startswith("unknown function") and isinstance(exc.node, n.Call):
            name = exc.node.func
            hint = did_you_mean(name, ROW_FUNCTIONS) or "functions: " + ", ".join(sorted(ROW_FUNCTIONS))
            message = f"unknown function '{name}' in dataset '{self.ds.name}'"
        elif exc.row:
            message = f"{message} (in {exc.row})"
        self.ctx.error(message, exc.node, hint, self.src, code=exc.code)


def _dataset(ctx: CheckContext, ds: n.Dataset) -> DatasetResult:
    src = ctx.source_of(ds)
    declared: dict[str, n.FileDecl] = {}
    origin = next((s for s in ds.body if isinstance(s, n.Origin)), None)
    for f in (s for s in ds.body if isinstance(s, n.FileDecl)):
        if f.sha256 is not None and not _SHA256.fullmatch(f.sha256):
            ctx.error(f"sha256 of '{f.path}' must be 64 hex digits, got {len(f.sha256)} characters", f,
                      "copy the value from the dataset's SHA256SUMS", src, code="E131")
        if f.path in declared:
            ctx.error(f"file '{f.path}' is declared twice", f, source=src, code="E102")
        declared[f.path] = f
    for sample in (s for s in ds.body if isinstance(s, n.Sample)):
        if sample.n_expr is None and sample.n <= 0:
            ctx.error("sample size must be at least 1", sample, source=src, code="E132")
    fetch_hint = (f"run 'moraleval data fetch {ds.name}' (downloads the pinned files from "
                  f"{origin.location}{' at ' + origin.commit[:12] if origin and origin.commit else ''}) "
                  f"or put the files under one of the data roots (e.g. --data DIR)"
                  if origin else "put the files under one of the data roots (e.g. --data DIR)")
    files = _DatasetFiles(ctx, ds, src, declared, origin)
    result = run_pipeline(ds, ctx.consts, files.load, on_error=files.report)
    result.files_read = files.files_read
    for node, rels in files.missing.values():
        _missing(ctx, rels, node, src, fetch_hint, declared)
    if not result.columns_known and files.missing:
        _stand_in_columns(ctx, files, result)
    if not result.columns_known:
        result.columns = []  # unknown: checks that need the columns are skipped (the cause is reported)
    for sample in (s for s in ds.body if isinstance(s, n.Sample)):
        _check_sample(ctx, sample, result, src)
    if (not result.rows and files.files_read and result.columns_known and not files.missing
            and not result.malformed_rows):
        ctx.warn(f"dataset '{ds.name}' has no rows left after its filters", ds, source=src, code="W131")
    return result


def _stand_in_columns(ctx: CheckContext, files: _DatasetFiles, result: DatasetResult) -> None:
    """Some selected files are absent: learn the dataset's columns anyway, so templates and metrics are still
    checked.  Each absent file of a ``read`` is stood in for by a file of the same format the dataset
    declares and that can be read: one read here, else a pinned copy in a data root, else the sample
    shipped with moraleval.  The stand-in rows give columns only (their errors are not reported)."""
    ds, declared, cache, src = files.ds, files.declared, files.cache, files.src
    absent = {rel for node, rels in files.missing.values() for rel in rels}
    fallback_roots = ctx.data_roots + [DataRoot(sample_data_dir(), "the sample shipped with moraleval")]
    stand_ins: dict[str, Any] = {}

    def stand_in(fmt: str):
        if fmt in stand_ins:
            return stand_ins[fmt]
        stand_ins[fmt] = None
        ext = "." + fmt
        ordered = [r for r in declared if r.endswith(ext) and r not in absent]
        ordered.sort(key=lambda r: (cache.get(r) is None, r))
        for rel in ordered:
            if cache.get(rel) is not None:
                stand_ins[fmt] = (rel, cache[rel])
                break
            decl = declared[rel]
            if decl.sha256 is None:
                continue  # an unpinned file is never read, not even for its columns
            try:
                found = locate(fallback_roots, rel, decl.sha256)
            except UnsafePath:
                continue
            if found.path is None:
                continue
            try:
                stand_ins[fmt] = (rel, read_table(found.path, fmt))
            except DataError:
                continue
            break
        return stand_ins[fmt]

    used: list[str] = []

    def load(rel, fmt, node, optional):
        if cache.get(rel) is not None:
            return [dict(r) for r in cache[rel]]
        if rel in absent and isinstance(node, n.Read):
            got = stand_in(fmt)
            if got is not None:
                if got[0] not in used:
                    used.append(got[0])
                return [dict(r) for r in got[1]]
        return None

    proxy = run_pipeline(ds, ctx.consts, load, on_error=lambda exc: None)
    what = "template variables and metric columns on dataset"
    if proxy.columns_known:
        result.columns = proxy.columns
        result.columns_known = True
        result.stand_in_rows = proxy.rows
        if ctx.mode == "check" and any(u not in result.files_read for u in used):
            ctx.warn(f"dataset '{ds.name}': some selected files are absent, so {what} '{ds.name}' are checked "
                     f"against the columns of {', '.join(used)}", ds,
                     "the absent files are assumed to have the same columns", src, code="W134")
    elif ctx.mode == "check":  # (plan and run stop at the absent files anyway)
        names = ", ".join(sorted(absent)) or "a file"
        ctx.warn(f"{what} '{ds.name}' are NOT checked: its columns are unknown ({names} absent, and no "
                 f"other file of the same format the dataset declares can be read)", ds,
                 "fetch or add the data, then check again", src, code="W135")


def _missing(ctx: CheckContext, rels: list[str], node: Any, src: Source, hint: str,
             declared: dict[str, n.FileDecl]) -> None:
    """One diagnostic for the absent files of one statement: every root tried and why, near names."""
    if len(rels) == 1:
        what = f"data file '{rels[0]}' is missing"
    else:
        what = f"{len(rels)} data files are missing: " + ", ".join(rels)
    message = f"{what}; looked in:\n" + describe_roots(ctx.data_roots)
    near = []
    for rel in rels:
        near += [c for c in near_names(ctx.data_roots, rel, declared) if c not in near and c not in rels]
    if near:
        hint = "did you mean " + " or ".join(f"'{c}'" for c in near[:3]) + "? otherwise " + hint
    if ctx.mode == "check":
        ctx.warn(message, node, hint, src, code="W130")
    else:
        ctx.error(message, node, hint, src, code="E138")


def _check_sample(ctx: CheckContext, sample: n.Sample, result: DatasetResult, src: Source) -> None:
    for c in sample.per:
        if result.columns and c not in result.columns:
            ctx.error(f"sample per '{c}': no such column", sample,
                      did_you_mean(c, result.columns), src, code="E139")
