"""The report of a run over several models: one report.json / samples.jsonl / manifest.json / report.md /
report.html for all of them.

report.json is the single-model report's content with the model as a dimension: every estimate and comparison
carries ``model``; ``models`` holds each model's identity, backend, ``about`` metadata and whether it completed;
``across`` holds the contrasts between models (``moraleval.compare.across``), keyed and ordered stably, so the
bytes are the same on rerun.  samples.jsonl holds every model's rows (each with ``model``), model by model in run
order.  The pages lead with the across-model view (:func:`across_view`, laid out by the templates; the figures of
:func:`across_figures`: the metric over the model axis, one line per condition), then the one-model page's
sections with a model column.  ``moraleval.report.files`` writes and re-renders it.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from moraleval.report.build import REPORT_FORMAT, jsonable
from moraleval.report.figures import is_flagged, model_difference_figure
from moraleval.report.figures_models import metric_vs_models
from moraleval.util import numbers

__all__ = ["ACROSS_HEADER", "across_figures", "across_view", "build_models_report"]

#: the columns of the table of contrasts between models
_HOLLOW = "; hollow = flagged (see the warnings)"
ACROSS_HEADER = ("task", "metric", "contrast", "effect [95% CI]", "test", "p", "p (adjusted)", "units", "flags")


def build_models_report(plan: Any, sel: Any, runs: Mapping[str, Any], across: Any,
                        missing: Sequence[str] = ()) -> dict[str, Any]:
    """The content of report.json for the models ``sel`` names (``runs``: each model's run, its report part
    and samples; ``across``: the contrasts between models; ``missing``: the models that did not complete)."""
    names = list(sel.names)
    complete = [n for n in names if runs[n].complete]
    first = runs[complete[0]].report_part if complete else None
    base = dict(first) if first is not None else {"format": REPORT_FORMAT, "study": plan.study}
    models = {}
    for n in names:
        mr = runs[n]
        part = mr.report_part or {}
        models[n] = {"backend": mr.backend, "about": mr.about, "complete": mr.complete, "error": mr.error,
                     "key": (part.get("model") or {}).get("key"), "identity": (part.get("model") or {}).get("identity"),
                     "counts": part.get("counts")}
    warnings = []
    for n in complete:
        warnings += [f"model {n}: {w}" for w in runs[n].report_part.get("warnings", [])]
    if missing:
        warnings.insert(0, f"PARTIAL report: model(s) {', '.join(missing)} did not complete and are missing")
    if across is not None:
        warnings += [f"across models: {w}" for w in across.warnings]
    out = {k: v for k, v in base.items() if k not in ("estimates", "comparisons", "warnings", "model")}
    counts, tasks = _totals(plan, names, runs, base.get("tasks"))
    out.update({
        "counts": counts,
        "tasks": tasks,
        "model": None,
        "models": models,
        "model_set": {"name": sel.set_name, "models": names, "axis": sel.axis, "scale": sel.scale},
        "missing_models": list(missing),
        "estimates": [e for n in complete for e in runs[n].report_part["estimates"]],
        "comparisons": [c for n in complete for c in runs[n].report_part["comparisons"]],
        "across": jsonable(across.to_json()) if across is not None else None,
        "dropped": {"datasets": (base.get("dropped") or {}).get("datasets"),
                    "measurement": {n: runs[n].report_part["dropped"]["measurement"] for n in complete}},
        "warnings": warnings,
    })
    return out


def _totals(plan: Any, names: Sequence[str], runs: Mapping[str, Any], base_tasks: Any
            ) -> tuple[dict[str, Any], Any]:
    """report.json's ``counts`` (and each task's item counts) over every model of the run: a model that did not
    complete counts its planned items and requests, none of them answered; ``per_model`` keeps each model's own."""
    planned = {"items": len(plan.items), "items_answered": 0, "requests": len(plan.requests),
               "requests_answered": 0}
    per_model = {n: dict((runs[n].report_part or {}).get("counts") or planned) if runs[n].complete else dict(planned)
                 for n in names}
    counts = {k: sum(int(c.get(k) or 0) for c in per_model.values()) for k in planned}
    counts["models"] = len(names)
    counts["per_model"] = per_model
    tasks = base_tasks
    if isinstance(base_tasks, Mapping):
        tasks = {}
        for t, info in base_tasks.items():
            info = dict(info)
            n_items = sum(1 for it in plan.items if it.task == t)
            answered = 0
            for n in names:
                part_tasks = (runs[n].report_part or {}).get("tasks") or {} if runs[n].complete else {}
                answered += int((part_tasks.get(t) or {}).get("items_answered") or 0)
            info["items"] = n_items * len(names)
            info["items_answered"] = answered
            tasks[t] = info
    return counts, tasks


# -- the across-model view ------------------------------------------------------------------------------------

def across_view(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the pages' across-model section says (None for a one-model report): the partial-report notice, the
    model set and its axis, one line per model, the contrasts between models as table rows."""
    if not report.get("models"):
        return None
    sel = report.get("model_set") or {}
    return {"missing": list(report.get("missing_models") or []), "set_name": sel.get("name") or "listed",
            "axis": sel.get("axis") or "–", "log": sel.get("scale") == "log",
            "models": [_model_line(n, report["models"][n]) for n in sel.get("models", [])],
            "header": list(ACROSS_HEADER), "rows": _across_rows(report)}


def across_figures(report: Mapping[str, Any]) -> list[dict[str, str]]:
    """Every across-model figure, {file, caption, svg}: per task, a forest of the differences between models (a
    family's members as rows, equivalence tests against their margin); per task × metric that is not a family
    member, the metric over the models (one line per condition), and the effect of each compared condition over
    the models."""
    sel = report.get("model_set") or {}
    names = [n for n in sel.get("models", []) if (report.get("models") or {}).get(n, {}).get("complete")]
    axis, scale = sel.get("axis"), sel.get("scale")
    about = {n: (report["models"][n].get("about") or {}) for n in names}
    xs = [about[n].get(axis) for n in names] if axis else None
    numeric = xs is not None and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
    figs = []
    for task in (report.get("tasks") or {}):  # the differences between models as a forest, families as rows
        f = model_difference_figure(report, task)
        if f is not None:
            figs.append({"file": f["file"], "caption": f["caption"], "svg": f["svg"]})
    ests = [e for e in report.get("estimates", []) if not e.get("group")]
    for m in report.get("metrics", []):
        if m.get("family"):  # a family's members: in the forest above and the estimates' figure, not one by one
            continue
        conds = list(dict.fromkeys(e["condition"] for e in ests if e["metric"] == m["name"] and e["task"] == m["task"]))
        if not conds:
            continue
        series = {}
        for c in conds:
            by = {e["model"]: e for e in ests if e["metric"] == m["name"] and e["task"] == m["task"]
                  and e["condition"] == c}
            series[c] = [(by[n]["value"], by[n]["ci_low"], by[n]["ci_high"], is_flagged(by[n])) if n in by
                         else (None, None, None, False) for n in names]
        svg = metric_vs_models(f"{m['task']}: {m['name']}", names, xs if numeric else None, series,
                               log=scale == "log", xlabel=axis or "model", ylabel=m["name"])
        figs.append({"file": f"models_{m['task']}_{m['name']}.svg",
                     "caption": f"{m['name']} ({m['task']}) over the models, one line per condition, 95% CI"
                                + (_HOLLOW if any(p[3] for v in series.values() for p in v) else ""),
                     "svg": svg})
        cmps = [c for c in report.get("comparisons", []) if not c.get("group") and c["metric"] == m["name"]
                and c["task"] == m["task"]]
        pairs = list(dict.fromkeys((c["treatment"], c["baseline"]) for c in cmps))
        if pairs:
            series = {}
            for t, b in pairs:
                by = {c["model"]: c for c in cmps if (c["treatment"], c["baseline"]) == (t, b)}
                series[f"{t} − {b}"] = [(by[n]["effect"], by[n]["ci_low"], by[n]["ci_high"], is_flagged(by[n]))
                                        if n in by else (None, None, None, False) for n in names]
            svg = metric_vs_models(f"{m['task']}: effect on {m['name']}", names, xs if numeric else None, series,
                                   log=scale == "log", xlabel=axis or "model", ylabel=f"Δ {m['name']}")
            figs.append({"file": f"models_{m['task']}_{m['name']}_effects.svg",
                         "caption": f"effect of each condition on {m['name']} ({m['task']}) over the models, "
                                    "95% CI" + (_HOLLOW if any(p[3] for v in series.values() for p in v) else ""),
                         "svg": svg})
    return figs


def _effect(r: Mapping[str, Any]) -> str:
    """The effect and its interval, with decimals enough for the interval (``moraleval.util.numbers``)."""
    if r.get("effect") is None:
        return "–"
    value, ci = numbers.fmt_estimate(r.get("effect"), r.get("ci_low"), r.get("ci_high"), signed=True)
    return value if r.get("ci_low") is None else f"{value} {ci}"


def _p(v: Any) -> str:
    return numbers.fmt_p(v)


def _across_rows(report: Mapping[str, Any]) -> list[list[str]]:
    # imported here: measure.flags loads scipy and statsmodels, which `import moraleval.report` (verify, the
    # report directory's name) does not need
    from moraleval.measurement.flags import p_method_label

    rows = []
    for r in (report.get("across") or {}).get("results", []):
        if r.get("group"):
            continue
        kind = r["kind"]
        if kind == "model_difference":
            what = f"{r['model']} − {r['baseline_model']} in {r['condition']}"
        elif kind == "difference_in_differences":
            what = f"({r['treatment']} − {r['baseline']}) in {r['model']} − in {r['baseline_model']}"
        elif kind == "trend":
            what = f"slope over {'log10 ' if r.get('scale') == 'log' else ''}{r['axis']} in {r['condition']}"
        else:
            what = (f"slope of {r['treatment']} − {r['baseline']} over "
                    f"{'log10 ' if r.get('scale') == 'log' else ''}{r['axis']}")
        flags = ", ".join(f["code"] for f in r.get("flags", []))
        test = r["test"] + (f" ({p_method_label(r['p_method'])})" if r.get("p_method") and
                            r["p_method"] != r["test"] else "")
        eq = r.get("equivalence")
        if isinstance(eq, Mapping):
            ok = r.get("p_adjusted") is not None and r["p_adjusted"] < 0.05
            test += f": {'equivalent' if ok else 'not shown equivalent'} within ±{eq.get('margin')}"
        rows.append([r["task"], r["metric"], what, _effect(r), test, _p(r["p_value"]),
                     _p(r["p_adjusted"]), str(r["n_units"]), flags])
    return rows


def _model_line(name: str, info: Mapping[str, Any]) -> str:
    about = ", ".join(f"{k}: {v}" for k, v in (info.get("about") or {}).items())
    state = "complete" if info.get("complete") else f"MISSING ({info.get('error') or 'incomplete'})"
    return f"{name} ({info.get('backend')}{'; ' + about if about else ''}) — {state}"
