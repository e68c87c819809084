"""manifest.json and the files of a report directory.

``manifest.json``: sha256 of the spec, its imports, every data file, every model file named in the backend
identity; versions; seeds; backend identity (for several models, each model's); sha256 of every file the report
writes (report.json, samples.jsonl, report.md, report.html, plots/*.svg); and, apart, a ``not_hashed`` section
with start/end time and run statistics.  ``verify_report`` re-hashes everything it names; a rerun removes only the
files an earlier manifest lists (``remove_stale``), so any other file there (``foreign_files``) is the user's.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import platform
import re
import stat
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from moraleval.backend import model_key
from moraleval.errors import ReportError
from moraleval.plan.types import Plan
from moraleval.report.build import resolve_import
from moraleval.report.folder import folder_path, read_manifest
from moraleval.util.locks import LOCK_NAME
from moraleval.util.text import for_terminal

__all__ = ["MANIFEST_FORMAT", "MANIFEST_JSON", "REPORT_HTML", "REPORT_JSON", "REPORT_MD", "SAMPLES_JSONL",
           "TOP_FILES", "VERSIONED_PACKAGES", "build_manifest", "build_models_manifest", "foreign_files",
           "is_report_output", "model_files", "previous_outputs", "remove_stale", "seeds", "verify_report",
           "versions"]

MANIFEST_FORMAT = "moraleval-manifest/1"
VERSIONED_PACKAGES = ("moraleval", "onnxruntime", "numpy", "statsmodels", "scipy", "lark", "jinja2", "matplotlib")
REPORT_JSON = "report.json"
SAMPLES_JSONL = "samples.jsonl"
MANIFEST_JSON = "manifest.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
#: the top-level files every report writes; figures go to plots/<name>.svg
TOP_FILES = (REPORT_JSON, SAMPLES_JSONL, MANIFEST_JSON, REPORT_MD, REPORT_HTML)
# what an interrupted util.files.write_atomic leaves (mkstemp's ".<name>.<8 random characters>"), and outdir's
# write probe
_ATOMIC_LEFTOVER = re.compile(r"\.(?:" + "|".join(re.escape(n) for n in TOP_FILES) + r"|[^/]+\.svg)\.[A-Za-z0-9_]{8}"
                              r"|\.moraleval-write-test-[A-Za-z0-9_]{8}")


# -- building manifest.json -----------------------------------------------------------------------------------

def versions() -> dict[str, str | None]:
    """Python's version and the installed versions of the packages that shape a result."""
    v: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in VERSIONED_PACKAGES:
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            v[pkg] = None
    if v.get("moraleval") is None:  # running from a source checkout that is not installed
        # the package's own __version__; moraleval is loaded already (it is this module's package), so reading
        # it imports nothing
        v["moraleval"] = getattr(sys.modules.get("moraleval"), "__version__", None)
    return v


def model_files(identity: Mapping[str, Any] | None, model_dir: Any = None) -> dict[str, str]:
    """Model files named in a backend identity: any ``files`` mapping {path: sha256} (nested anywhere);
    relative paths are taken relative to a sibling ``model_dir``/``path``/``dir`` entry when there is one, else
    to the backend's own ``model_dir`` (kept out of the identity, which must not depend on where a cache lives),
    so that verify can re-hash them and the report can give their sizes."""
    found: dict[str, str] = {}
    default_base = str(model_dir) if model_dir is not None else None

    def walk(obj: Any) -> None:
        if isinstance(obj, Mapping):
            files = obj.get("files")
            base = next((obj[k] for k in ("model_dir", "path", "dir") if isinstance(obj.get(k), str)), default_base)
            if isinstance(files, Mapping):
                for name, sha in files.items():
                    if isinstance(sha, str) and len(sha) == 64:
                        p = str(name)
                        if base is not None and not os.path.isabs(p) and os.path.isdir(base):
                            p = os.path.join(base, p)
                        found[p] = sha
            for v in obj.values():
                walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)

    walk(identity)
    return dict(sorted(found.items()))


def seeds(plan: Plan) -> dict[str, Any]:
    """Every seed the run used: the bootstrap's, each generate step's, the datasets' (sampling, shuffling)."""
    gen: dict[str, list[int]] = {}
    for r in plan.requests:
        for _i, step in r.generate_steps:
            lst = gen.setdefault(step.name, [])
            if step.seed not in lst:
                lst.append(step.seed)
    datasets = {}
    for name, info in plan.datasets.items():
        if isinstance(info, Mapping):
            s = {k: v for k, v in info.items() if "seed" in k}
            if s:
                datasets[name] = s
    return {"bootstrap": plan.bootstrap.seed, "generate": {k: sorted(v) for k, v in sorted(gen.items())},
            "datasets": datasets}


def build_manifest(plan: Plan, identity: Mapping[str, Any] | None, backend: Any, outputs: dict[str, str],
                   not_hashed: dict[str, Any]) -> dict[str, Any]:
    """manifest.json of a one-model run (``outputs``: the hashes of the files written so far)."""
    return {
        "format": MANIFEST_FORMAT,
        "spec": {"path": str(Path(plan.spec_path).resolve()), "sha256": plan.spec_sha256},
        "imports": [{"path": p, "resolved": str(resolve_import(plan, p)), "sha256": h}
                    for p, h in sorted(plan.imports.items())],
        "data_root": str(Path(plan.data_root).resolve()),
        "data_files": dict(sorted(plan.data_files.items())),
        "model_files": model_files(identity, getattr(backend, "model_dir", None)),
        "backend": {"name": getattr(backend, "name", None), "model_key": _identity_key(identity),
                    "identity": identity, "settings": plan.models},
        "params": plan.params,
        "seeds": seeds(plan),
        "versions": versions(),
        "outputs": outputs,
        "not_hashed": not_hashed,
    }


def build_models_manifest(plan: Plan, names: Sequence[str], runs: Mapping[str, Any], missing: Sequence[str],
                          outputs: dict[str, str], not_hashed: dict[str, Any]) -> dict[str, Any]:
    """manifest.json of a run over several models: every model's files, backend and identity (``backends``,
    by name; ``backend`` is None), and the models that did not complete."""
    first = next((runs[n] for n in names if runs[n].complete), None)
    manifest = build_manifest(plan, first.identity if first else None, None, outputs, not_hashed)
    files: dict[str, str] = {}
    backends = {}
    for n in names:
        mr = runs[n]
        files.update(model_files(mr.identity, mr.model_dir))
        backends[n] = {"name": mr.backend, "model_key": _identity_key(mr.identity), "identity": mr.identity,
                       "settings": plan.models.get(n), "complete": mr.complete, "error": mr.error}
    manifest["model_files"] = dict(sorted(files.items()))
    manifest["backend"] = None
    manifest["backends"] = backends
    manifest["missing_models"] = list(missing)
    return manifest


def _identity_key(identity: Mapping[str, Any] | None) -> str | None:
    return model_key(dict(identity)) if identity is not None else None


# -- the files of a report directory --------------------------------------------------------------------------

def is_report_output(name: str) -> bool:
    """Whether ``name`` (relative, with ``/``) is a kind of file moraleval writes into a report directory: one of
    the top-level files, or ``plots/<name>.svg``.  A manifest naming anything else is not believed."""
    parts = name.split("/")
    if len(parts) == 1:
        return name in TOP_FILES
    return (len(parts) == 2 and parts[0] == "plots" and parts[1].endswith(".svg") and not parts[1].startswith(".")
            and "\\" not in parts[1])


def previous_outputs(out: Path) -> set[str]:
    """The report files an earlier run recorded in ``out/manifest.json`` (read before it is replaced): the files
    moraleval owns there.  No manifest, or an unreadable one: none."""
    try:
        manifest = read_manifest(out)
    except ReportError:
        return set()
    names = (manifest or {}).get("outputs") or {}
    return {n for n in names if isinstance(n, str) and is_report_output(n)}


def remove_stale(out: Path, previous: Iterable[str], current: Iterable[str]) -> list[str]:
    """Delete the files of an earlier rendering that this one does not write (plots of conditions, tasks or models
    no longer in the spec): only those the earlier manifest listed (``previous``), and the leftovers of an
    interrupted atomic write.  Any other file in ``out`` is the user's and stays (``moraleval verify`` names it).
    Called while the directory's lock is held, before the new manifest is written, so a kill in between leaves
    the old manifest listing what is still to remove.  Returns the names removed."""
    keep = {n.replace(os.sep, "/") for n in current} | {MANIFEST_JSON}
    removed = []
    plots_elsewhere = (out / "plots").is_symlink()  # never follow it out of the report directory
    for name in sorted(set(previous) - keep):
        path = out / name
        if "/" in name and plots_elsewhere:
            continue
        try:
            if path.is_symlink() or path.is_file():
                path.unlink()
                removed.append(name)
        except OSError:
            pass
    for folder, rel in ((out, ""), (out / "plots", "plots/")):
        try:
            entries = list(folder.iterdir()) if folder.is_dir() and not folder.is_symlink() else []
        except OSError:
            entries = []
        for path in entries:
            if _ATOMIC_LEFTOVER.fullmatch(path.name) and path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(rel + path.name)
    plots = out / "plots"
    if removed and plots.is_dir() and not plots.is_symlink():
        with contextlib.suppress(OSError):
            if not any(plots.iterdir()):
                plots.rmdir()
    return removed



def verify_report(out_dir: str | os.PathLike[str], *, data_root: str | os.PathLike[str] | None = None) -> list[str]:
    """Re-hash the spec, its imports, the data files, the model files and the report outputs against the
    manifest.  Returns the problems found (printable: names from the manifest are escaped for a terminal); an
    empty list means the report still matches its inputs.

    ``data_root`` looks for the data files there instead of the data root recorded in the manifest (data that
    moved, another machine).  The manifest is untrusted: an output it names must be a report file inside the
    folder (``plots/x.svg``, never ``../../etc/passwd``), a data file must stay inside the data root, and only
    plain files are opened (never a FIFO or a device, which would block or never end); the hash of a file outside
    the report folder is compared, never printed."""
    out = folder_path(out_dir, what="report to verify")
    try:
        manifest = read_manifest(out, missing_ok=True)
    except ReportError as exc:
        return [exc.message]
    if manifest is None:
        raise ReportError(f"{for_terminal(out)} has no {MANIFEST_JSON}: it is not a moraleval report directory, so "
                          "nothing can be verified", hint="pass the directory `moraleval run` wrote")
    problems: list[str] = []
    hashed: dict[tuple[int, int, int, int], str] = {}

    def check(label: str, path: Path, expected: str | None, *, inside: bool = False) -> None:
        shown = for_terminal(path)
        got, why = _hash_plain(path, hashed, nofollow=inside)
        if why is not None:
            problems.append(f"{label} {shown} {why}")
        elif got != expected:
            problems.append(f"{label} {shown} changed: sha256 {got} != {for_terminal(expected)} (manifest)" if inside
                            else f"{label} {shown} changed: its sha256 differs from the manifest's "
                                 f"{for_terminal(expected)}")

    spec = manifest.get("spec") or {}
    if spec.get("path"):
        check("spec", Path(spec["path"]), spec.get("sha256"))
    for imp in manifest.get("imports") or []:
        check("imported spec", Path(imp.get("resolved") or imp["path"]), imp.get("sha256"))
    root = Path(data_root) if data_root is not None else Path(manifest.get("data_root") or ".")
    for rel, sha in (manifest.get("data_files") or {}).items():
        bad = _outside(root, rel)
        if bad:
            problems.append(f"data file {for_terminal(rel)} {bad}: not checked")
        else:
            check("data file", root / rel, sha)
    for path, sha in (manifest.get("model_files") or {}).items():
        if os.path.isabs(path):
            check("model file", Path(path), sha)
    plots_link = (out / "plots").is_symlink()
    for name, sha in (manifest.get("outputs") or {}).items():
        if not is_report_output(name):
            problems.append(f"{MANIFEST_JSON} names an output {for_terminal(name)!s} that is not a report file "
                            "inside the folder: not checked")
        elif "/" in name and plots_link:
            problems.append(f"output {for_terminal(out / name)} is in plots/, which is a symbolic link out of the "
                            "report folder: not checked")
        else:
            check("output", out / name, sha, inside=True)
    return problems


def _outside(root: Path, rel: str) -> str | None:
    """Why the data file ``rel`` is not under ``root`` (None when it is): the data reader's own rules."""
    if not rel or os.path.isabs(rel) or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        return "is an absolute path, not one inside the data root"
    if ".." in Path(rel).parts:
        return "leaves the data root ('..')"
    try:
        real_root, real = os.path.realpath(root), os.path.realpath(root / rel)
    except (OSError, ValueError):
        return "cannot be resolved"
    if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
        return "resolves outside the data root (a symbolic link)"
    return None


def _hash_plain(path: Path, seen: dict[tuple[int, int, int, int], str], *, nofollow: bool
                ) -> tuple[str | None, str | None]:
    """(sha256, None) of a plain file, or (None, why not): missing, a link (``nofollow``: inside the report folder),
    a directory, a FIFO or a device (never opened for reading: it could block or never end), unreadable."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if nofollow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None, "is missing"
    except NotADirectoryError:
        return None, "is missing"
    except OSError as exc:
        if exc.errno == errno.ELOOP and nofollow:
            return None, "is a symbolic link (a report folder holds its own files): not checked"
        return None, f"cannot be read ({exc.strerror or exc})"
    except ValueError:
        return None, "is not a valid path"
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            return None, "is a directory, not a file"
        if not stat.S_ISREG(st.st_mode):
            return None, "is not a regular file (a FIFO, socket or device): not checked"
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if key not in seen:
            h = hashlib.sha256()
            with os.fdopen(os.dup(fd), "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            seen[key] = h.hexdigest()
        return seen[key], None
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    finally:
        os.close(fd)


#: at most this many foreign files are listed by name (a folder with a million stray files says how many more)
MAX_FOREIGN_LISTED = 200


def foreign_files(out_dir: str | os.PathLike[str]) -> list[str]:
    """Files in a report directory that its manifest does not list (relative names, sorted, escaped for a
    terminal): not written by moraleval, so neither checked by ``verify`` nor ever deleted by a rerun.  No
    manifest, or a damaged one: empty.  Links are listed, never followed."""
    out = Path(out_dir)
    try:
        manifest = read_manifest(out)
    except ReportError:
        return []
    if manifest is None:
        return []
    listed = set(manifest.get("outputs") or {}) | {MANIFEST_JSON, LOCK_NAME}
    found = []
    for folder, dirs, files in os.walk(out, followlinks=False):
        base = Path(folder)
        for name in [*files, *(d for d in dirs if (base / d).is_symlink())]:
            rel = (base / name).relative_to(out).as_posix()
            if rel not in listed:
                found.append(rel)
    found.sort()
    shown = [for_terminal(n) for n in found[:MAX_FOREIGN_LISTED]]
    if len(found) > MAX_FOREIGN_LISTED:
        shown.append(f"... and {len(found) - MAX_FOREIGN_LISTED:,} more")
    return shown
