"""Writing a report directory, and re-rendering its pages without running anything.

A run writes report.json and samples.jsonl (``moraleval.report.build``, or ``moraleval.report.models`` for several
models), renders report.md, report.html and plots/*.svg from those bytes exactly as :func:`rerender` reads them
back (``moraleval.report.render``), removes the files of an earlier rendering that this one no longer writes, and
writes manifest.json last (``moraleval.report.manifest``), hashing every file written.  Everything is rendered in
memory first and written in one short step with Ctrl-C held back (:func:`commit_files`), never through a link.
Re-rendering reads the folder through ``moraleval.report.folder`` (bounded, schema-checked).
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from moraleval.errors import OutputDirError
from moraleval.plan.types import Plan, RequestOutcome
from moraleval.report.build import build_report, build_samples, default_report_dir, dumps_json
from moraleval.report.manifest import (MANIFEST_JSON, REPORT_HTML, REPORT_JSON, REPORT_MD, SAMPLES_JSONL,
                                       build_manifest, build_models_manifest, previous_outputs, remove_stale)
from moraleval.report.folder import ReportFolder, load_report_folder
from moraleval.report.models import build_models_report
from moraleval.report.render import render_pages
from moraleval.util.files import Folder, NotWritable, sha256_bytes
from moraleval.util.locks import lock_dir
from moraleval.util.outdir import os_error_reason
from moraleval.util.signals import deferred_signals
from moraleval.util.text import for_terminal

__all__ = ["commit_files", "load_report_dir", "lock_report_dir", "render_files", "rerender", "rerender_files",
           "write_models_report", "write_report"]

Log = Callable[[str], None]

_NOT_HASHED_NOTE = "this section is not covered by any hash and may differ between identical runs"


def write_report(plan: Plan, measurement: Any, outcomes: Mapping[str, RequestOutcome], *,
                 out_dir: str | os.PathLike[str] | None = None, backend: Any = None,
                 identity: Mapping[str, Any] | None = None, run_stats: Any = None,
                 started: datetime | None = None, finished: datetime | None = None,
                 model_name: str | None = None, log: Log | None = None) -> Path:
    """Write report.json, samples.jsonl, manifest.json, report.md, report.html and plots/ into ``out_dir``
    (default ``reports/<spec stem>/``); returns the directory.  ``backend`` gives ``render`` and ``identity``."""
    out = Path(out_dir) if out_dir is not None else default_report_dir(plan)
    if identity is None and backend is not None:
        identity = backend.identity()
    report = build_report(plan, measurement, outcomes, identity)
    samples = build_samples(plan, outcomes, measurement, backend, model_name)

    def manifest(outputs: dict[str, str]) -> dict[str, Any]:
        done = finished or datetime.now(timezone.utc)
        not_hashed = {"started": started.isoformat() if started else None, "finished": done.isoformat(),
                      "run": run_stats.to_json() if hasattr(run_stats, "to_json") else run_stats,
                      "note": _NOT_HASHED_NOTE}
        return build_manifest(plan, identity, backend, outputs, not_hashed)

    return _write_dir(out, report, samples, manifest, log)


def write_models_report(plan: Any, sel: Any, runs: Mapping[str, Any], across: Any, *, out_dir: Any = None,
                        missing: Sequence[str] = (), log: Log | None = None) -> Path:
    """The report of a run over the models ``sel`` names (see ``moraleval.report.models``), written like
    :func:`write_report`'s; returns the directory."""
    out = Path(out_dir) if out_dir is not None else default_report_dir(plan)
    report = build_models_report(plan, sel, runs, across, missing)
    samples = [s for n in sel.names if runs[n].complete for s in runs[n].samples]

    def manifest(outputs: dict[str, str]) -> dict[str, Any]:
        not_hashed = {"finished": datetime.now(timezone.utc).isoformat(),
                      "run": {n: runs[n].outcomes.stats.to_json() for n in sel.names if runs[n].outcomes is not None},
                      "note": _NOT_HASHED_NOTE}
        return build_models_manifest(plan, sel.names, runs, missing, outputs, not_hashed)

    return _write_dir(out, report, samples, manifest, log)


def _write_dir(out: Path, report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]],
               manifest_for: Callable[[dict[str, str]], dict[str, Any]], log: Log | None = None) -> Path:
    """report.json and samples.jsonl, the pages rendered from their bytes, then manifest.json
    (``manifest_for(hashes of the two data files)``) with every file's hash: all rendered in memory first, then
    written together (:func:`commit_files`), so an interruption leaves the old folder or the new one."""
    previous = previous_outputs(out)  # read before the new manifest replaces it
    report_bytes = (dumps_json(report) + "\n").encode("utf-8")
    samples_bytes = "".join(dumps_json(s, indent=None) + "\n" for s in samples).encode("utf-8")
    manifest = manifest_for({REPORT_JSON: sha256_bytes(report_bytes), SAMPLES_JSONL: sha256_bytes(samples_bytes)})
    # render from the bytes just made, exactly as rerender() will read them back; the manifest hashes every file
    # the report writes (report.md, report.html and the figures included)
    pages = render_pages(json.loads(report_bytes), [json.loads(line) for line in samples_bytes.split(b"\n") if line],
                         json.loads(dumps_json(manifest)), samples_bytes=len(samples_bytes), log=log)
    manifest["outputs"].update({name: sha256_bytes(data) for name, data in pages.items()})
    commit_files(out, {REPORT_JSON: report_bytes, SAMPLES_JSONL: samples_bytes, **pages}, previous, manifest)
    return out


_ORDER = (REPORT_JSON, SAMPLES_JSONL, REPORT_MD, REPORT_HTML)


def _page_order(name: str) -> tuple[int, str]:
    return (_ORDER.index(name) if name in _ORDER else len(_ORDER), name)


def commit_files(out: Path, files: Mapping[str, bytes], previous: set[str], manifest: Mapping[str, Any] | None
                 ) -> list[Path]:
    """Write ``files`` ({name relative to ``out``: bytes}) into ``out``, remove what the earlier rendering wrote
    and this one does not, then write ``manifest`` (when given) last; returns the paths written.

    Nothing is followed: a link (or a directory, a device) at a name to be written, or a ``plots`` that is not a
    real folder, is refused before anything is written.  The writes run with Ctrl-C/SIGTERM held back
    (``util.signals``): each file is replaced atomically and the set is finished before the signal is acted on,
    so the folder is never half old, half new.  A write that fails (a full disk, a file-size limit, permissions)
    is one OutputDirError naming the cause."""
    plots = sorted(n for n in files if n.startswith("plots/"))
    top = sorted((n for n in files if not n.startswith("plots/")), key=_page_order)
    written: list[Path] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        with Folder(out) as folder:
            for name in [*top, MANIFEST_JSON]:
                folder.check_writable(name)
            sub = folder.subfolder("plots", create=False) if plots and folder.lstat("plots") is not None else None
            try:
                for name in plots if sub is not None else ():
                    sub.check_writable(name[len("plots/"):])
                with deferred_signals():
                    if plots and sub is None:
                        sub = folder.subfolder("plots")
                    for name in top:
                        folder.write(name, files[name])
                        written.append(out / name)
                    for name in plots:
                        sub.write(name[len("plots/"):], files[name])  # type: ignore[union-attr]
                        written.append(out / name)
                    if manifest is not None:
                        remove_stale(out, previous, set(manifest.get("outputs") or {}) | set(files))
                        folder.write(MANIFEST_JSON, (dumps_json(manifest) + "\n").encode("utf-8"))
            finally:
                if sub is not None:
                    sub.close()
    except NotWritable as exc:
        raise OutputDirError(f"{for_terminal(exc.path)} {exc.reason}: moraleval does not write through links or "
                             "into anything but plain files in a report folder",
                             hint="remove it (a report folder holds only files moraleval wrote), or write the "
                                  "report to another --out directory") from None
    except OSError as exc:
        raise OutputDirError(f"{for_terminal(out)}: the report cannot be written: {os_error_reason(exc, out)}",
                             hint="the answers are stored in the response cache: fix this and run the same command "
                                  "again (nothing is recomputed), or give another --out directory") from None
    return written


def render_files(out: Path, report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]],
                 manifest: Mapping[str, Any] | None = None, *, samples_bytes: int | None = None,
                 log: Log | None = None) -> list[Path]:
    """Write report.md, report.html and plots/*.svg (of a one- or several-model report) into ``out``; returns
    the files written."""
    files = render_pages(report, samples, manifest, samples_bytes=samples_bytes, log=log)
    return commit_files(out, files, set(), None)


def lock_report_dir(out: Path) -> Any:
    """``moraleval report DIR`` writes there too: the same lock as a run's."""
    return lock_dir(out, label=str(out))


def load_report_dir(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """report.json and the records of samples.jsonl (none when it is absent) of a report directory, bounded and
    checked (``report.folder``)."""
    folder = load_report_folder(out)
    return folder.report, folder.samples or []


def rerender(out_dir: str | os.PathLike[str], *, log: Log | None = None) -> list[Path]:
    """Re-render report.md, report.html and plots/ (of a one- or several-model report) from report.json,
    samples.jsonl and manifest.json (nothing is run) and record their new hashes in the manifest; returns the
    files written.  The folder is read through ``report.folder`` (bounded, schema-checked): a damaged one is one
    error naming the file."""
    folder = load_report_folder(out_dir)
    with lock_report_dir(folder.path):
        return _rerender(folder, log)


def rerender_files(out: Path, report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]], *,
                   log: Log | None = None) -> list[Path]:
    """Re-render the pages of ``out`` from its report and samples (the caller holds the directory's lock), drop
    the files of the earlier rendering that this one no longer writes, and record the new hashes in the manifest
    (when there is one)."""
    from moraleval.report.folder import DamagedReport, read_manifest

    try:
        manifest = read_manifest(out)
    except DamagedReport:
        manifest = None
    size = (out / SAMPLES_JSONL).stat().st_size if (out / SAMPLES_JSONL).is_file() else None
    return _rerender(ReportFolder(out, dict(report), list(samples), manifest, size), log)


def _rerender(folder: ReportFolder, log: Log | None) -> list[Path]:
    out, manifest = folder.path, folder.manifest
    previous = previous_outputs(out)
    files = render_pages(folder.report, folder.samples or [], manifest, samples_bytes=folder.samples_bytes, log=log)
    if manifest is None:
        return commit_files(out, files, set(), None)
    outputs = {k: v for k, v in (manifest.get("outputs") or {}).items() if k in (REPORT_JSON, SAMPLES_JSONL)}
    outputs.update({name: sha256_bytes(data) for name, data in files.items()})
    manifest = dict(manifest, outputs=outputs)
    return commit_files(out, files, previous, manifest)
