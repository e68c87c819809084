"""report.json and samples.jsonl: what a run measured and what each item was asked and answered, as plain data.

- ``report.json``: every estimate (metric × condition × group: value, CI, n, method, resamples B, unit), every
  comparison (effect, CI, test, p, adjusted p), dropped-row counts (per dataset from the plan, and the
  measurement's own), the metric formulas as written, the bootstrap settings, the model identity.
- ``samples.jsonl``: one line per answered plan item, in ``plan.items`` order: the exact prompts as rendered
  (``backend.render(prompt)`` where the backend has it, else the Prompt's JSON), generated texts, choice
  log-probs, the readout (probabilities / answer) and the item's row values.

The rest of a report directory: ``moraleval.report.manifest`` (manifest.json and the files the directory holds)
and ``moraleval.report.files`` (writing everything, re-rendering the pages).

Determinism: report.json and samples.jsonl hold nothing time- or machine-dependent (the spec is named by file
name, imports relative to the spec), keys are sorted, and every float is rounded to ``SIGNIFICANT_DIGITS`` = 10
significant digits (``float(f"{x:.10g}")``, then Python's shortest round-trip ``repr``), which hides last-bit
differences of numpy reductions; ``-0.0`` is written ``0.0``; non-finite floats are written as the strings
``"inf"``, ``"-inf"``, ``"nan"``.  The same plan and outcomes therefore give the same bytes.
"""

from __future__ import annotations

import collections
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import attrs

from moraleval.backend import Prompt, canonical_json, model_key
from moraleval.plan.itemkey import item_key, task_data_hashes
from moraleval.plan.memo import memoised
from moraleval.plan.types import Plan, PlanItem, PlanRequest, RequestOutcome

__all__ = ["REPORT_FORMAT", "SIGNIFICANT_DIGITS", "build_report", "build_samples", "default_report_dir",
           "dumps_json", "jsonable", "resolve_import", "spec_dir"]

REPORT_FORMAT = "moraleval-report/1"
SIGNIFICANT_DIGITS = 10


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


# characters that Python's str.splitlines() (and some editors and terminals) treat as line breaks although JSON
# allows them raw inside strings: written as escapes, so that one JSON value stays one line of samples.jsonl
# for every reader
_LINE_BREAKS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def dumps_json(obj: Any, *, indent: int | None = 2) -> str:
    """The report's JSON text: sorted keys, deterministic floats, UTF-8 kept (except U+2028, U+2029 and U+0085,
    written as ``\\u`` escapes: the same value, never a line break to a line-splitting reader)."""
    return json.dumps(jsonable(obj), sort_keys=True, ensure_ascii=False, allow_nan=False, indent=indent,
                      separators=(",", ": ") if indent is not None else (",", ":")).translate(_LINE_BREAKS)


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


def spec_dir(plan: Plan) -> Path:
    """The spec file's directory: imports and relative paths are read against it."""
    return Path(plan.spec_path).resolve().parent


def resolve_import(plan: Plan, path: str) -> Path:
    """An imported spec's file: absolute as given, else relative to the spec's directory if it is there,
    else relative to the working directory (how the planner records it)."""
    p = Path(path)
    if p.is_absolute():
        return p
    cand = spec_dir(plan) / p
    return cand.resolve() if cand.exists() else p.resolve()


def _relative_to_spec(plan: Plan, path: str) -> str:
    p = Path(path)
    if not p.is_absolute():
        return path
    try:
        return os.path.relpath(p, spec_dir(plan))
    except ValueError:
        return path


def _dropped(plan: Plan) -> dict[str, Any]:
    return {name: info.get("dropped", {}) for name, info in plan.datasets.items() if isinstance(info, Mapping)}


def _entries_dropped(plan: Plan) -> dict[str, Any]:
    """`drop entries of` counts: dataset -> column -> reason -> entries (only datasets that dropped some)."""
    return {name: info["entries_dropped"] for name, info in plan.datasets.items()
            if isinstance(info, Mapping) and info.get("entries_dropped")}


def _unit_label(plan: Plan, task: str) -> str:
    """The task's resampling unit as the measure stage names it (``row`` when every item is its own unit)."""
    info = plan.tasks.get(task) or {}
    cols = (info.get("unit") if isinstance(info, Mapping) else None) or list(plan.bootstrap.unit)
    return ",".join(str(c) for c in cols if c != "row_id") or "row"


def _metric_entry(m: Any) -> dict[str, Any]:
    """A metric as report.json lists it; a family member also says its family, level, test and correction, a
    formula that uses per-item definitions lists them, and a regression's coefficient gives the R code that refits
    its model (keys absent where they do not apply, so a plain metric's entry is what it always was)."""
    d: dict[str, Any] = {"name": m.name, "task": m.task, "formula": m.formula, "doc": m.doc, "expr": m.expr}
    for key in ("family", "member", "test", "correction", "items", "ranked"):
        v = getattr(m, key, None)
        if v is not None:
            d[key] = v
    if getattr(m, "test", None) == "wald":
        from moraleval.language.exprjson import from_json
        from moraleval.language.formulas import FormulaError, decompose, r_code

        try:
            d["r"] = r_code(decompose(from_json(m.expr).obj))
        except (FormulaError, AttributeError, KeyError, ValueError):
            pass
    return d


def build_report(plan: Plan, measurement: Any, outcomes: Mapping[str, RequestOutcome],
                 identity: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The content of report.json (plain data; serialise with :func:`dumps_json`)."""
    conds = {t: list(c) for t, c in memoised(plan, "report.conditions", lambda: _condition_order(plan)).items()}
    tasks = list(plan.tasks) + sorted(memoised(plan, "report.tasks", lambda: {i.task for i in plan.items})
                                      - set(plan.tasks))
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

    answered: dict[str, int] = {}  # items answered per task
    for i in plan.items:
        if i.request in outcomes:
            answered[i.task] = answered.get(i.task, 0) + 1
    answered_items = sum(answered.values())
    n_items = memoised(plan, "report.items_per_task", lambda: collections.Counter(i.task for i in plan.items))
    task_info: dict[str, Any] = {}
    for t in tasks:
        info = plan.tasks.get(t, {})
        task_info[t] = {
            "dataset": info.get("dataset") if isinstance(info, Mapping) else None,
            "format": info.get("format") if isinstance(info, Mapping) else None,
            "conditions": conds.get(t, []),
            "items": n_items.get(t, 0),
            "items_answered": answered.get(t, 0),
            "unit": _unit_label(plan, t),
        }
    return {
        "format": REPORT_FORMAT,
        "study": plan.study,
        "spec": {"file": Path(plan.spec_path).name, "sha256": plan.spec_sha256,
                 "imports": dict(sorted((_relative_to_spec(plan, str(resolve_import(plan, p))), h)
                                        for p, h in plan.imports.items()))},
        "params": plan.params,
        "model": ({"key": model_key(dict(identity)), "identity": dict(identity)} if identity is not None else None),
        "tasks": task_info,
        "metrics": [_metric_entry(m) for m in plan.metrics],
        # one statement of the resampling unit per task, the same string as every estimate's `unit`
        "bootstrap": {**attrs.asdict(plan.bootstrap), "unit": {t: _unit_label(plan, t) for t in tasks}},
        "estimates": sorted(estimates, key=est_key),
        "comparisons": sorted(comparisons, key=cmp_key),
        "dropped": {"datasets": _dropped(plan), "measurement": jsonable(getattr(measurement, "dropped", None)),
                    **({"entries": _entries_dropped(plan)} if _entries_dropped(plan) else {})},
        "warnings": jsonable(list(getattr(measurement, "warnings", ()) or ())),
        "answer_distribution": sorted(jsonable(list(getattr(measurement, "answer_distribution", ()) or ())),
                                      key=lambda d: (_rank(tasks, d.get("task", "")),
                                                     _rank(conds.get(d.get("task", ""), []), d.get("condition", "")),
                                                     str(d.get("model") or ""))),
        "datasets": {name: {k: v for k, v in info.items() if k not in ("dropped", "entries_dropped")}
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
        if getattr(item, "rotation", None) is not None:
            rec["rotation"] = item.rotation
        if oc.score.top:
            rec["top"] = [list(t) for t in oc.score.top]
        if model_name is not None:
            rec["model"] = model_name
        out.append(rec)
    return out
