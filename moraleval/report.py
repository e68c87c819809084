"""Writes a run's report directory and checks one against its inputs.

Files (default directory ``reports/<spec file stem>/``):

- ``report.json``: every estimate (metric × condition × group: value, CI, n, method, resamples B, unit), every
  comparison (effect, CI, test, p, adjusted p), dropped-row counts (per dataset from the plan, and the
  measurement's own), the metric formulas as written, the bootstrap settings, the model identity.
- ``samples.jsonl``: one line per answered plan item, in ``plan.items`` order: the exact prompts as rendered
  (``backend.render(prompt)`` where the backend has it, else the Prompt's JSON), generated texts, choice
  log-probs, the readout (probabilities / answer) and the item's row values.
- ``manifest.json``: sha256 of the spec, its imports, every data file, every model file named in the backend
  identity; versions; seeds; backend identity; sha256 of report.json and samples.jsonl; and, apart, a
  ``not_hashed`` section with start/end time and run statistics.
- ``report.md``, ``report.html`` (self-contained, inline SVG) and ``plots/*.svg``: rendered from report.json and
  samples.jsonl only, so :func:`rerender` rebuilds them without running anything.

Determinism: report.json and samples.jsonl hold nothing time- or machine-dependent (the spec is named by file
name, imports relative to the spec), keys are sorted, and every float is rounded to ``SIGNIFICANT_DIGITS`` = 10
significant digits (``float(f"{x:.10g}")``, then Python's shortest round-trip ``repr``), which hides last-bit
differences of numpy reductions; ``-0.0`` is written ``0.0``; non-finite floats are written as the strings
``"inf"``, ``"-inf"``, ``"nan"``.  The same plan and outcomes therefore give the same bytes.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import os
import platform
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import attrs

from moraleval.backend import Prompt, canonical_json
from moraleval.cache import model_key
from moraleval.errors import MoralevalError, ReportError
from moraleval.plan import Plan, PlanItem, PlanRequest
from moraleval.results import RequestOutcome

__all__ = ["REPORT_FORMAT", "MANIFEST_FORMAT", "SIGNIFICANT_DIGITS", "build_report", "build_samples",
           "default_report_dir", "dumps_json", "jsonable", "rerender", "verify_report", "write_report"]

REPORT_FORMAT = "moraleval-report/1"
MANIFEST_FORMAT = "moraleval-manifest/1"
SIGNIFICANT_DIGITS = 10
VERSIONED_PACKAGES = ("moraleval", "onnxruntime", "numpy", "statsmodels", "scipy", "lark", "jinja2", "matplotlib")
REPORT_JSON = "report.json"
SAMPLES_JSONL = "samples.jsonl"
MANIFEST_JSON = "manifest.json"



# -- serialisation --------------------------------------------------------------------------------------------

def _float(x: float) -> float | str:
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    r = float(f"{x:.{SIGNIFICANT_DIGITS}g}")
    return 0.0 if r == 0 else r


def jsonable(obj: Any) -> Any:
    """Plain JSON data with deterministic floats (see the module doc); attrs objects via ``to_json``/asdict."""
    t = type(obj)
    if obj is None or t is bool or t is str:
        return obj
    if t is float:
        return _float(obj)
    if t is int:
        return obj
    if t is dict:
        return {str(k): jsonable(v) for k, v in obj.items()}
    if t is list or t is tuple:
        return [jsonable(v) for v in obj]
    if isinstance(obj, (bool, str)):
        return bool(obj) if isinstance(obj, bool) else str(obj)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return _float(float(obj))
    try:
        import numpy as np

        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return _float(float(obj))
        if isinstance(obj, np.ndarray):
            return [jsonable(v) for v in obj.tolist()]
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [jsonable(v) for v in items]
    if hasattr(obj, "to_json"):
        return jsonable(obj.to_json())
    if attrs.has(type(obj)):
        return jsonable(attrs.asdict(obj, recurse=False))
    return str(obj)


def dumps_json(obj: Any, *, indent: int | None = 2) -> str:
    """The report's JSON text: sorted keys, deterministic floats, UTF-8 kept."""
    return json.dumps(jsonable(obj), sort_keys=True, ensure_ascii=False, allow_nan=False, indent=indent,
                      separators=(",", ": ") if indent is not None else (",", ":"))


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# -- building report.json -------------------------------------------------------------------------------------

def default_report_dir(plan: Plan) -> Path:
    return Path("reports") / Path(plan.spec_path).stem


def _condition_order(plan: Plan) -> dict[str, list[str]]:
    order: dict[str, list[str]] = {}
    for task, info in plan.tasks.items():
        conds = info.get("conditions", []) if isinstance(info, Mapping) else []
        order[task] = [c["name"] if isinstance(c, Mapping) else str(c) for c in conds]
    for item in plan.items:
        lst = order.setdefault(item.task, [])
        if item.condition not in lst:
            lst.append(item.condition)
    return order


def _rank(seq: Sequence[str], value: str) -> tuple[int, str]:
    return (seq.index(value), "") if value in seq else (len(seq), value)


def _group_key(group: Mapping[str, Any] | None) -> tuple[int, str]:
    """The whole condition ({}) first, then groups in canonical-JSON order."""
    return (1 if group else 0, canonical_json(group or {}))


def _spec_dir(plan: Plan) -> Path:
    return Path(plan.spec_path).resolve().parent


def _relative_to_spec(plan: Plan, path: str) -> str:
    p = Path(path)
    if not p.is_absolute():
        return path
    try:
        return os.path.relpath(p, _spec_dir(plan))
    except ValueError:
        return path


def _dropped(plan: Plan) -> dict[str, Any]:
    return {name: info.get("dropped", {}) for name, info in plan.datasets.items() if isinstance(info, Mapping)}


def build_report(plan: Plan, measurement: Any, outcomes: Mapping[str, RequestOutcome],
                 identity: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The content of report.json (plain data; serialise with :func:`dumps_json`)."""
    conds = _condition_order(plan)
    tasks = list(plan.tasks) + sorted({i.task for i in plan.items} - set(plan.tasks))
    metric_names = [m.name for m in plan.metrics]
    estimates = [jsonable(e) for e in getattr(measurement, "estimates", ())]
    comparisons = [jsonable(c) for c in getattr(measurement, "comparisons", ())]

    def est_key(e: dict[str, Any]) -> tuple:
        t = e.get("task", "")
        return (_rank(tasks, t), _rank(metric_names, e.get("metric", "")),
                _rank(conds.get(t, []), e.get("condition", "")), _group_key(e.get("group")))

    def cmp_key(c: dict[str, Any]) -> tuple:
        t = c.get("task", "")
        return (_rank(tasks, t), _rank(metric_names, c.get("metric", "")),
                _rank(conds.get(t, []), c.get("treatment", "")), _rank(conds.get(t, []), c.get("baseline", "")),
                canonical_json(c.get("group") or {}))

    answered_items = sum(1 for i in plan.items if i.request in outcomes)
    task_info: dict[str, Any] = {}
    for t in tasks:
        info = plan.tasks.get(t, {})
        t_items = [i for i in plan.items if i.task == t]
        task_info[t] = {
            "dataset": info.get("dataset") if isinstance(info, Mapping) else None,
            "format": info.get("format") if isinstance(info, Mapping) else None,
            "conditions": conds.get(t, []),
            "items": len(t_items),
            "items_answered": sum(1 for i in t_items if i.request in outcomes),
        }
    return {
        "format": REPORT_FORMAT,
        "study": plan.study,
        "spec": {"file": Path(plan.spec_path).name, "sha256": plan.spec_sha256,
                 "imports": dict(sorted((_relative_to_spec(plan, str(_resolve_import(plan, p))), h)
                                        for p, h in plan.imports.items()))},
        "params": plan.params,
        "model": ({"key": model_key(dict(identity)), "identity": dict(identity)} if identity is not None else None),
        "tasks": task_info,
        "metrics": [{"name": m.name, "task": m.task, "formula": m.formula, "doc": m.doc, "expr": m.expr}
                    for m in plan.metrics],
        "bootstrap": attrs.asdict(plan.bootstrap),
        "estimates": sorted(estimates, key=est_key),
        "comparisons": sorted(comparisons, key=cmp_key),
        "dropped": {"datasets": _dropped(plan), "measurement": jsonable(getattr(measurement, "dropped", None))},
        "warnings": jsonable(list(getattr(measurement, "warnings", ()) or ())),
        "datasets": {name: {k: v for k, v in info.items() if k != "dropped"}
                     for name, info in plan.datasets.items() if isinstance(info, Mapping)},
        "counts": {"requests": len(plan.requests), "requests_answered": sum(1 for r in plan.requests
                                                                           if r.key in outcomes),
                   "items": len(plan.items), "items_answered": answered_items},
        "float_format": f"{SIGNIFICANT_DIGITS} significant digits",
    }


# -- building samples.jsonl -----------------------------------------------------------------------------------

def _measurement_readouts(plan: Plan, measurement: Any) -> list[Any]:
    """Per-item readouts from the measurement, aligned with plan.items (None where it has none).

    Accepts ``items``/``readouts``/``item_readouts``: a sequence aligned with plan.items, or a mapping keyed by
    item index or by (task, condition, row, variant)."""
    src = None
    for name in ("item_readouts", "readouts", "items"):
        src = getattr(measurement, name, None)
        if src is not None:
            break
    n = len(plan.items)
    if src is None:
        return [None] * n
    if isinstance(src, Mapping):
        out = []
        for k, item in enumerate(plan.items):
            out.append(src.get(k, src.get((item.task, item.condition, item.row, item.variant))))
        return out
    src = list(src)
    return src if len(src) == n else [None] * n


def _fallback_readout(item: PlanItem, outcome: RequestOutcome) -> dict[str, Any]:
    lps = [float(v) for v in outcome.score.logprobs]
    finite = [v for v in lps if math.isfinite(v)]
    if not finite:
        return {"probs": None, "answer": None, "source": "report: no finite log-prob"}
    m = max(finite)
    ex = [math.exp(v - m) if math.isfinite(v) else 0.0 for v in lps]
    z = sum(ex)
    probs = [e / z for e in ex]
    k = max(range(len(probs)), key=lambda i: (probs[i], -i))
    answer = item.choice_values[k] if k < len(item.choice_values) else k
    return {"probs": probs, item.choice: answer, "source": "report: softmax over the listed choices, argmax"}


def _render(backend: Any, prompt: Prompt) -> Any:
    render = getattr(backend, "render", None)
    if callable(render):
        try:
            return render(prompt)
        except Exception:  # noqa: BLE001 - fall back to the prompt as data
            pass
    return prompt.to_json()


def build_samples(plan: Plan, outcomes: Mapping[str, RequestOutcome], measurement: Any = None,
                  backend: Any = None, model_name: str | None = None) -> list[dict[str, Any]]:
    """One record per answered item, in plan.items order (with "model": the model's name in the spec)."""
    from moraleval.itemkey import item_key, task_data_hashes

    requests = plan.request_by_key()
    readouts = _measurement_readouts(plan, measurement)
    dhash = task_data_hashes(plan.tasks, plan.datasets, plan.data_files)
    prompts: dict[str, dict[str, Any]] = {}
    out = []
    for k, item in enumerate(plan.items):
        oc = outcomes.get(item.request)
        req: PlanRequest | None = requests.get(item.request)
        if oc is None or req is None:
            continue
        if item.request not in prompts:
            rendered: dict[str, Any] = {}
            try:
                for s, (_turn, step) in enumerate(req.generate_steps):
                    rendered[f"generate:{step.name}"] = _render(backend, req.generate_request(s, oc.generated).prompt)
                rendered["score"] = _render(backend, req.score_request(oc.generated).prompt)
            except KeyError:
                pass
            prompts[item.request] = rendered
        readout = readouts[k]
        if readout is None:
            readout = _fallback_readout(item, oc)
        rec = {
            "index": k, "task": item.task, "condition": item.condition, "row": item.row, "variant": item.variant,
            "unit": item.unit, "request": item.request, "prompts": prompts[item.request],
            "generated": dict(sorted(oc.generated.items())), "choice": item.choice, "choices": list(req.choices),
            "choice_values": list(item.choice_values), "logprobs": list(oc.score.logprobs),
            "n_tokens": list(oc.score.n_tokens), "readout": jsonable(readout), "values": item.values,
            "item": item_key(dhash.get(item.task, ""), item.task, item.condition, item.row, item.variant),
        }
        if oc.score.top:
            rec["top"] = [list(t) for t in oc.score.top]
        if model_name is not None:
            rec["model"] = model_name
        out.append(rec)
    return out


# -- manifest -------------------------------------------------------------------------------------------------

def _versions() -> dict[str, str | None]:
    v: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in VERSIONED_PACKAGES:
        try:
            v[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            v[pkg] = None
    if v.get("moraleval") is None:  # running from a source checkout that is not installed
        try:
            import moraleval

            v["moraleval"] = getattr(moraleval, "__version__", None)
        except ImportError:  # pragma: no cover
            pass
    return v


def _model_files(identity: Mapping[str, Any] | None) -> dict[str, str]:
    """Model files named in a backend identity: any ``files`` mapping {path: sha256} (nested anywhere);
    relative paths are taken relative to a sibling ``model_dir``/``path``/``dir`` entry when there is one."""
    found: dict[str, str] = {}

    def walk(obj: Any) -> None:
        if isinstance(obj, Mapping):
            files = obj.get("files")
            base = next((obj[k] for k in ("model_dir", "path", "dir") if isinstance(obj.get(k), str)), None)
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


def _seeds(plan: Plan) -> dict[str, Any]:
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


def _resolve_import(plan: Plan, path: str) -> Path:
    """An imported spec's file: absolute as given, else relative to the spec's directory if it is there,
    else relative to the working directory (how the planner records it)."""
    p = Path(path)
    if p.is_absolute():
        return p
    cand = _spec_dir(plan) / p
    return cand.resolve() if cand.exists() else p.resolve()


def _build_manifest(plan: Plan, identity: Mapping[str, Any] | None, backend: Any, outputs: dict[str, str],
                    not_hashed: dict[str, Any]) -> dict[str, Any]:
    return {
        "format": MANIFEST_FORMAT,
        "spec": {"path": str(Path(plan.spec_path).resolve()), "sha256": plan.spec_sha256},
        "imports": [{"path": p, "resolved": str(_resolve_import(plan, p)), "sha256": h}
                    for p, h in sorted(plan.imports.items())],
        "data_root": str(Path(plan.data_root).resolve()),
        "data_files": dict(sorted(plan.data_files.items())),
        "model_files": _model_files(identity),
        "backend": {"name": getattr(backend, "name", None), "model_key": model_key(dict(identity)) if identity
                    is not None else None, "identity": identity, "settings": plan.models},
        "params": plan.params,
        "seeds": _seeds(plan),
        "versions": _versions(),
        "outputs": outputs,
        "not_hashed": not_hashed,
    }


# -- writing --------------------------------------------------------------------------------------------------

def write_report(plan: Plan, measurement: Any, outcomes: Mapping[str, RequestOutcome], *,
                 out_dir: str | os.PathLike[str] | None = None, backend: Any = None,
                 identity: Mapping[str, Any] | None = None, run_stats: Any = None,
                 started: datetime | None = None, finished: datetime | None = None,
                 model_name: str | None = None) -> Path:
    """Write report.json, samples.jsonl, manifest.json, report.md, report.html and plots/ into ``out_dir``
    (default ``reports/<spec stem>/``); returns the directory.  ``backend`` gives ``render`` and ``identity``."""
    out = Path(out_dir) if out_dir is not None else default_report_dir(plan)
    if identity is None and backend is not None:
        identity = backend.identity()
    report = build_report(plan, measurement, outcomes, identity)
    samples = build_samples(plan, outcomes, measurement, backend, model_name)
    report_bytes = (dumps_json(report) + "\n").encode("utf-8")
    samples_bytes = "".join(dumps_json(s, indent=None) + "\n" for s in samples).encode("utf-8")
    _write_atomic(out / REPORT_JSON, report_bytes)
    _write_atomic(out / SAMPLES_JSONL, samples_bytes)
    finished = finished or datetime.now(timezone.utc)
    not_hashed = {"started": started.isoformat() if started else None, "finished": finished.isoformat(),
                  "run": run_stats.to_json() if hasattr(run_stats, "to_json") else run_stats,
                  "note": "this section is not covered by any hash and may differ between identical runs"}
    manifest = _build_manifest(plan, identity, backend,
                               {REPORT_JSON: _sha256_bytes(report_bytes), SAMPLES_JSONL: _sha256_bytes(samples_bytes)},
                               not_hashed)
    _write_atomic(out / MANIFEST_JSON, (dumps_json(manifest) + "\n").encode("utf-8"))
    # render from the bytes just written, exactly as rerender() will read them back
    _render_files(out, json.loads(report_bytes), [json.loads(line) for line in samples_bytes.splitlines()])
    return out


def _load(out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    try:
        report = json.loads((out / REPORT_JSON).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ReportError(f"{out} has no {REPORT_JSON}", hint="is this a moraleval report directory?") from exc
    except json.JSONDecodeError as exc:
        raise ReportError(f"{out / REPORT_JSON} is not valid JSON: {exc}") from exc
    samples = []
    path = out / SAMPLES_JSONL
    if path.exists():
        with open(path, encoding="utf-8") as f:
            samples = [json.loads(line) for line in f if line.strip()]
    return report, samples


def rerender(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Re-render report.md, report.html and plots/ from report.json and samples.jsonl (nothing is run);
    returns the files written."""
    out = Path(out_dir)
    report, samples = _load(out)
    return _render_files(out, report, samples)


def verify_report(out_dir: str | os.PathLike[str], *, data_root: str | os.PathLike[str] | None = None) -> list[str]:
    """Re-hash the spec, its imports, the data files, the model files and the report outputs against the
    manifest.  Returns the problems found; an empty list means the report still matches its inputs.

    ``data_root`` looks for the data files there instead of the data root recorded in the manifest (data that
    moved, another machine)."""
    out = Path(out_dir)
    try:
        manifest = json.loads((out / MANIFEST_JSON).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return [f"{out / MANIFEST_JSON} is missing"]
    except json.JSONDecodeError as exc:
        return [f"{out / MANIFEST_JSON} is not valid JSON: {exc}"]
    problems: list[str] = []

    def check(label: str, path: Path, expected: str | None) -> None:
        if not path.is_file():
            problems.append(f"{label} {path} is missing")
            return
        got = _sha256_file(path)
        if got != expected:
            problems.append(f"{label} {path} changed: sha256 {got} != {expected} (manifest)")

    spec = manifest.get("spec") or {}
    if spec.get("path"):
        check("spec", Path(spec["path"]), spec.get("sha256"))
    for imp in manifest.get("imports", []):
        check("imported spec", Path(imp.get("resolved") or imp["path"]), imp.get("sha256"))
    root = Path(data_root) if data_root is not None else Path(manifest.get("data_root", "."))
    for rel, sha in (manifest.get("data_files") or {}).items():
        check("data file", root / rel, sha)
    for path, sha in (manifest.get("model_files") or {}).items():
        if os.path.isabs(path):
            check("model file", Path(path), sha)
    for name, sha in (manifest.get("outputs") or {}).items():
        check("output", out / name, sha)
    return problems


# -- rendering (md / html / plots) from report.json + samples -------------------------------------------------

def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}"


def _fmt_p(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def _group_label(group: Mapping[str, Any] | None) -> str:
    if not group:
        return "all"
    return ", ".join(f"{k}={v}" for k, v in sorted(group.items()))


def _cell(e: Mapping[str, Any]) -> str:
    if e.get("value") is None:
        return "undefined"
    return f"{_fmt(e['value'])} [{_fmt(e.get('ci_low'))}, {_fmt(e.get('ci_high'))}]"


def _task_tables(report: Mapping[str, Any]) -> list[tuple[str, list[str], list[list[str]], dict[str, Any]]]:
    """Per task: (task, header, rows, meta) with rows metric × group and columns the conditions."""
    out = []
    for task, info in report.get("tasks", {}).items():
        conds = list(info.get("conditions", []))
        ests = [e for e in report.get("estimates", []) if e.get("task") == task]
        for e in ests:
            if e.get("condition") not in conds:
                conds.append(e.get("condition"))
        rows: dict[tuple[str, str], dict[str, Any]] = {}
        for e in ests:
            rows.setdefault((e.get("metric"), _group_label(e.get("group"))), {})[e.get("condition")] = e
        header = ["metric", "group"] + conds
        body = []
        for (metric, group), by_cond in rows.items():
            body.append([metric, group] + [_cell(by_cond[c]) if c in by_cond else "–" for c in conds])
        meta = {}
        if ests:
            e0 = ests[0]
            meta = {"method": e0.get("method"), "resamples": e0.get("resamples"), "unit": e0.get("unit"),
                    "level": e0.get("level")}
        out.append((task, header, body, meta))
    return out


def _comparison_rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["task", "metric", "group", "comparison", "effect [CI]", "test", "p", "p adjusted", "n"]
    rows = []
    for c in report.get("comparisons", []):
        effect = "undefined" if c.get("effect") is None else \
            f"{_fmt(c['effect'])} [{_fmt(c.get('ci_low'))}, {_fmt(c.get('ci_high'))}]"
        rows.append([c.get("task", ""), c.get("metric", ""), _group_label(c.get("group")),
                     f"{c.get('treatment')} − {c.get('baseline')}", effect, str(c.get("test", "")),
                     _fmt_p(c.get("p_value")), f"{_fmt_p(c.get('p_adjusted'))} ({c.get('correction', '')})",
                     str(c.get("n", ""))])
    return header, rows


def _dropped_rows(report: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    dropped = report.get("dropped", {})
    for name, reasons in (dropped.get("datasets") or {}).items():
        for reason, n in (reasons or {}).items() if isinstance(reasons, Mapping) else []:
            rows.append([f"dataset {name}", str(reason), str(n)])
    meas = dropped.get("measurement")
    if isinstance(meas, Mapping):
        def walk(prefix: str, obj: Any) -> None:
            if isinstance(obj, Mapping):
                for k, v in obj.items():
                    walk(f"{prefix} / {k}" if prefix else str(k), v)
            else:
                where, _, reason = prefix.rpartition(" / ")
                rows.append([f"measurement {where}".strip(), reason, str(obj)])
        walk("", meas)
    elif isinstance(meas, list):
        for entry in meas:
            rows.append(["measurement", json.dumps(entry, sort_keys=True, ensure_ascii=False), ""])
    return rows


# --- expression evaluation for plots (per item; aggregate calls are not supported) ---

class _NotEvaluable(Exception):
    pass


def _eval(e: Mapping[str, Any], env: Mapping[str, Any]) -> Any:
    """One item's value of a per-item expression (the measure stage's semantics, for plotting only)."""
    if "lit" in e:
        return e["lit"]
    if "name" in e:
        if e["name"] not in env:
            raise _NotEvaluable(e["name"])
        return env[e["name"]]
    if "attr" in e:
        obj = _eval(e["obj"], env)
        if isinstance(obj, Mapping) and e["attr"] in obj:
            return obj[e["attr"]]
        raise _NotEvaluable(e["attr"])
    if "index" in e:
        try:
            return _eval(e["obj"], env)[_eval(e["index"], env)]
        except (KeyError, IndexError, TypeError) as exc:
            raise _NotEvaluable(str(exc)) from exc
    if "unary" in e:
        x = _eval(e["x"], env)
        return (not x) if e["unary"] == "not" else -x
    if "bin" in e:
        a, b = _eval(e["l"], env), _eval(e["r"], env)
        ops = {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b, "%": lambda: a % b}
        try:
            return ops[e["bin"]]()
        except (KeyError, TypeError, ZeroDivisionError) as exc:
            raise _NotEvaluable(str(exc)) from exc
    if "cmp" in e:
        a, b = _eval(e["l"], env), _eval(e["r"], env)
        ops = {"==": lambda: a == b, "!=": lambda: a != b, "<": lambda: a < b, "<=": lambda: a <= b,
               ">": lambda: a > b, ">=": lambda: a >= b, "in": lambda: a in b, "not in": lambda: a not in b}
        try:
            return ops[e["cmp"]]()
        except (KeyError, TypeError) as exc:
            raise _NotEvaluable(str(exc)) from exc
    if "bool" in e:
        a = _eval(e["l"], env)
        if e["bool"] == "and":
            return a and _eval(e["r"], env)
        return a or _eval(e["r"], env)
    if "then" in e:
        return _eval(e["then"], env) if _eval(e["if"], env) else _eval(e["else"], env)
    if "list" in e:
        return [_eval(x, env) for x in e["list"]]
    if "call" in e and e.get("where") is None:
        return _eval_call(e["call"], e.get("args") or [], env)
    raise _NotEvaluable("aggregate or unsupported expression")


def _eval_call(func: str, args: Sequence[Mapping[str, Any]], env: Mapping[str, Any]) -> Any:
    sample = env.get("__sample__") or {}
    if func in ("prob", "logprob") and len(args) == 2 and "name" in args[0]:
        if args[0]["name"] != sample.get("choice"):
            raise _NotEvaluable(f"unknown choice {args[0]['name']}")
        value = _eval(args[1], env)
        match = [k for k, v in enumerate(sample.get("choice_values") or []) if v == value]
        if not match:
            raise _NotEvaluable(f"no option with value {value!r}")
        if func == "prob":
            probs = (sample.get("readout") or {}).get("probs")
            if not probs:
                raise _NotEvaluable("no probabilities")
            return sum(float(probs[k]) for k in match)
        lps = [float(sample["logprobs"][k]) for k in match]
        m = max(lps)
        return m + math.log(sum(math.exp(v - m) for v in lps)) if math.isfinite(m) else m
    vals = [_eval(a, env) for a in args]
    try:
        if func in ("min", "max") and len(vals) >= 2:
            return (min if func == "min" else max)(float(v) for v in vals)
        if func in ("abs", "log", "exp", "sqrt") and len(vals) == 1:
            return {"abs": abs, "log": math.log, "exp": math.exp, "sqrt": math.sqrt}[func](float(vals[0]))
    except (TypeError, ValueError, OverflowError) as exc:
        raise _NotEvaluable(str(exc)) from exc
    raise _NotEvaluable(f"{func}() is not a per-item function")


def _find_calls(e: Any, func: str) -> Iterable[Mapping[str, Any]]:
    if isinstance(e, Mapping):
        if e.get("call") == func:
            yield e
        for v in e.values():
            yield from _find_calls(v, func)
    elif isinstance(e, list):
        for v in e:
            yield from _find_calls(v, func)


def _sample_env(s: Mapping[str, Any]) -> dict[str, Any]:
    env: dict[str, Any] = {"condition": s.get("condition"), "unit": s.get("unit"), "row": s.get("row"),
                           "__sample__": s}
    env.update(s.get("values") or {})
    readout = s.get("readout") or {}
    if isinstance(readout, Mapping):
        env.update(readout)
    return env


def _expanded_md(m: Mapping[str, Any]) -> str:
    """The formula with every metric reference and parameter inlined, when it differs from the written one."""
    expanded = _expr_source(m.get("expr") or {})
    return f"\n  expanded: `{expanded}`" if expanded != m.get("formula") else ""


def _expr_source(e: Mapping[str, Any]) -> str:
    try:
        from moraleval import exprjson

        return exprjson.to_source(exprjson.from_json(dict(e)))
    except Exception:  # noqa: BLE001 - only a label
        return json.dumps(e, sort_keys=True)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)


def _plots(report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str, str]]:
    """(task, file name, caption, svg) for every figure."""
    from moraleval import plots

    figs = []
    metric_formula = {(m["task"], m["name"]): m.get("formula", "") for m in report.get("metrics", [])}
    for task, info in report.get("tasks", {}).items():
        conds = list(info.get("conditions", []))
        ests = [e for e in report.get("estimates", []) if e.get("task") == task]
        metrics = list(dict.fromkeys(e.get("metric") for e in ests))
        for metric in metrics:
            series: dict[str, dict[str, tuple[Any, Any, Any]]] = {}
            for e in ests:
                if e.get("metric") != metric or isinstance(e.get("value"), str):
                    continue
                lo, hi = e.get("ci_low"), e.get("ci_high")
                series.setdefault(_group_label(e.get("group")), {})[e.get("condition")] = (
                    e.get("value"), lo if not isinstance(lo, str) else None, hi if not isinstance(hi, str) else None)
            if not any(v[0] is not None for s in series.values() for v in s.values()):
                continue
            if len(series) > 8 and "all" in series:
                series = {"all": series["all"]}
            svg = plots.estimate_bars(f"{task}: {metric}", conds, series, ylabel=metric)
            figs.append((task, f"{_slug(task)}-{_slug(metric)}.svg",
                         f"{metric} = {metric_formula.get((task, metric), '')} per condition, "
                         f"with {round((ests[0].get('level') or 0.95) * 100)}% CI", svg))
    for m in report.get("metrics", []):
        task = m.get("task")
        for call in _find_calls(m.get("expr"), "pearson"):
            args = call.get("args") or []
            if len(args) != 2:
                continue
            y_expr, x_expr = args
            where = call.get("where")
            conds = list(report.get("tasks", {}).get(task, {}).get("conditions", []))
            by_cond: dict[str, dict[str, list[tuple[float, float]]]] = {c: {} for c in conds}
            ok = True
            for s in samples:
                if s.get("task") != task:
                    continue
                env = _sample_env(s)
                try:
                    if where is not None and not _eval(where, env):
                        continue
                    y, x = float(_eval(y_expr, env)), float(_eval(x_expr, env))
                except (_NotEvaluable, TypeError, ValueError):
                    ok = False
                    break
                by_cond.setdefault(s["condition"], {}).setdefault(str(s.get("unit")), []).append((x, y))
            if not ok or not any(by_cond.values()):
                continue
            per_unit = any(len(v) > 1 for units in by_cond.values() for v in units.values())
            points = {c: [(sum(p[0] for p in v) / len(v), sum(p[1] for p in v) / len(v)) if per_unit else v[0]
                          for v in units.values()] for c, units in by_cond.items()}
            unit = ",".join(report.get("bootstrap", {}).get("unit") or []) or "unit"
            note = f"mean per {unit}" if per_unit else "one point per item"
            svg = plots.scatter_by_condition(f"{task}: {m['name']} = {m.get('formula', '')}", _expr_source(x_expr),
                                             _expr_source(y_expr), points, note=note)
            figs.append((task, f"{_slug(task)}-{_slug(m['name'])}-scatter.svg",
                         f"{_expr_source(y_expr)} vs {_expr_source(x_expr)} per condition ({note})", svg))
    return figs


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _render_files(out: Path, report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]) -> list[Path]:
    figs = _plots(report, samples)
    written = []
    for _task, name, _caption, svg in figs:
        written.append(out / "plots" / name)
        _write_atomic(written[-1], svg.encode("utf-8"))
    _write_atomic(out / "report.md", render_markdown(report, figs).encode("utf-8"))
    _write_atomic(out / "report.html", render_html(report, figs).encode("utf-8"))
    return [out / "report.md", out / "report.html", *written]


def _header_lines(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    spec = report.get("spec", {})
    model = report.get("model") or {}
    boot = report.get("bootstrap", {})
    counts = report.get("counts", {})
    ident = model.get("identity")
    return [
        ("spec", f"{spec.get('file')} (sha256 {str(spec.get('sha256'))[:16]}…)"),
        ("model", json.dumps(ident, sort_keys=True, ensure_ascii=False) if ident is not None else "–"),
        ("bootstrap", f"B = {boot.get('resamples')} resamples of {','.join(boot.get('unit') or []) or 'item'}, "
                      f"{boot.get('method')}, level {boot.get('level')}, seed {boot.get('seed')}"),
        ("items", f"{counts.get('items_answered')} of {counts.get('items')} answered "
                  f"({counts.get('requests_answered')} of {counts.get('requests')} requests)"),
    ]


def render_markdown(report: Mapping[str, Any], figs: Sequence[tuple[str, str, str, str]]) -> str:
    parts = [f"# {report.get('study', 'moraleval report')}", ""]
    parts += [f"- **{k}**: {v}" for k, v in _header_lines(report)]
    formulas = {m["task"]: [] for m in report.get("metrics", [])}
    for m in report.get("metrics", []):
        formulas[m["task"]].append(m)
    for task, header, rows, meta in _task_tables(report):
        parts += ["", f"## Task `{task}`", ""]
        if rows:
            parts.append(_md_table(header, rows))
            parts += ["", f"Cells: value [{round((meta.get('level') or 0.95) * 100)}% CI], {meta.get('method')} "
                          f"bootstrap, B = {meta.get('resamples')}, unit {meta.get('unit')}."]
        else:
            parts.append("No estimates.")
        if formulas.get(task):
            parts += ["", "Metrics (as written, then expanded to what was computed):", ""] + [
                f"- `{m['name']} = {m.get('formula', '')}`" + (f" — {m['doc']}" if m.get("doc") else "")
                + _expanded_md(m) for m in formulas[task]]
        for t, name, caption, _svg in figs:
            if t == task:
                parts += ["", f"![{caption}](plots/{name})"]
    header, rows = _comparison_rows(report)
    parts += ["", "## Comparisons", "", _md_table(header, rows) if rows else "None."]
    drows = _dropped_rows(report)
    parts += ["", "## Dropped rows", "", _md_table(["where", "reason", "n"], drows) if drows else "None."]
    return "\n".join(parts).rstrip() + "\n"


_CSS = """body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;
font-variant-numeric:tabular-nums}th{background:#f3f3f3}code{background:#f6f6f6;padding:0 .2rem}
figure{margin:1rem 0}figcaption{font-size:.85rem;color:#555}dt{font-weight:600}"""


def render_html(report: Mapping[str, Any], figs: Sequence[tuple[str, str, str, str]]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>{e(str(report.get('study', 'moraleval report')))}</title><style>{_CSS}</style></head><body>",
             f"<h1>{e(str(report.get('study', 'moraleval report')))}</h1><dl>"]
    parts += [f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in _header_lines(report)]
    parts.append("</dl>")
    for task, header, rows, meta in _task_tables(report):
        parts.append(f"<h2>Task <code>{e(task)}</code></h2>")
        if rows:
            parts.append(_html_table(header, rows))
            parts.append(f"<p>Cells: value [{round((meta.get('level') or 0.95) * 100)}% CI], {e(str(meta.get('method')))} "
                         f"bootstrap, B = {e(str(meta.get('resamples')))}, unit {e(str(meta.get('unit')))}.</p>")
        else:
            parts.append("<p>No estimates.</p>")
        ms = [m for m in report.get("metrics", []) if m.get("task") == task]
        if ms:
            parts.append("<ul>" + "".join(f"<li><code>{e(m['name'])} = {e(m.get('formula', ''))}</code>"
                                          + (f" — {e(m['doc'])}" if m.get("doc") else "")
                                          + (f"<br>expanded: <code>{e(_expr_source(m['expr']))}</code>"
                                             if _expr_source(m.get("expr") or {}) != m.get("formula") else "")
                                          + "</li>" for m in ms)
                         + "</ul>")
        for t, _name, caption, svg in figs:
            if t == task:
                parts.append(f"<figure>{svg}<figcaption>{e(caption)}</figcaption></figure>")
    header, rows = _comparison_rows(report)
    parts.append("<h2>Comparisons</h2>" + (_html_table(header, rows) if rows else "<p>None.</p>"))
    drows = _dropped_rows(report)
    parts.append("<h2>Dropped rows</h2>" + (_html_table(["where", "reason", "n"], drows) if drows else "<p>None.</p>"))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
