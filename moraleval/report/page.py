"""What the report pages say, computed from report.json, samples.jsonl and the manifest (pure functions).

The Markdown and HTML templates only lay this out, so both say the same things: the run context, the headline
sentences, the per-estimate flags and the warnings, the answer distributions, the tables and the formulas.
Everything here reads report.json with ``.get`` and defaults, so a report written before the ``model``,
``flags``, ``n_units`` and ``answer_distribution`` fields existed still renders.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Mapping, Sequence

from moraleval.report.answer_table import (answer_distribution, answer_of, answer_rows, degenerate_by_cell,
                                           fixed_labels)
from moraleval.report.families import families, formula_notes
from moraleval.report.labels import expr_source
from moraleval.util import numbers
from moraleval.report.models import across_view

__all__ = ["ALPHA", "DEGENERATE_SHARE", "FEW_UNITS", "EMBED_MAX_ROWS", "EMBED_MAX_BYTES", "page_model",
           "fmt", "fmt_signed", "fmt_p", "fmt_est", "group_label", "answer_of", "models_of", "unit_label",
           "shown_path"]

ALPHA = 0.05  # a comparison is called a change only when its adjusted p is below this and its CI excludes 0
DEGENERATE_SHARE = 0.9  # one answer in more than this share of a cell's items: degenerate (measurement.flags)
FEW_UNITS = 30  # fewer resampling units than this: flagged (the measure stage's stats.MIN_UNITS; see statistics.md)
EMBED_MAX_ROWS = 25_000  # samples embedded in report.html up to this many rows ...
EMBED_MAX_BYTES = 48 * 1024 * 1024  # ... and this size of samples.jsonl; above, `moraleval view DIR` serves them


# -- formatting -----------------------------------------------------------------------------------------------

def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if v in ("nan", "inf", "-inf"):
        return float(v)
    return None


def fmt(v: Any, digits: int = 3) -> str:
    x = _num(v)
    if x is None:
        return "–" if v is None else str(v)
    if isinstance(v, int):
        return str(v)
    if math.isnan(x):
        return "undefined"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return numbers.fmt_number(x, max(digits, numbers.decimals_for(x)))


def fmt_signed(v: Any, digits: int = 3) -> str:
    x = _num(v)
    if x is None or not math.isfinite(x):
        return fmt(v, digits)
    return numbers.fmt_number(x, max(digits, numbers.decimals_for(x)), signed=True)


def fmt_p(v: Any) -> str:
    """A p-value in a table cell ("< 0.001", "0.012"); in a sentence use ``p_phrase``."""
    return numbers.fmt_p(_num(v))


def fmt_ci(lo: Any, hi: Any, signed: bool = False) -> str:
    f = fmt_signed if signed else fmt
    if _num(lo) is None or _num(hi) is None:
        return "[no interval]"
    return f"[{f(lo)}, {f(hi)}]"


def fmt_est(value: Any, lo: Any, hi: Any, signed: bool = False) -> tuple[str, str]:
    """(value, "[low, high]") with decimals enough for the interval (``moraleval.util.numbers``): never
    "−0.000 [−0.002, −0.000]"."""
    return numbers.fmt_estimate(_num(value), _num(lo), _num(hi), signed=signed)


def fmt_bytes(n: Any) -> str:
    if not isinstance(n, int):
        return "–"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)  # pragma: no cover


def group_label(group: Mapping[str, Any] | None) -> str:
    if not group:
        return "all items"
    return ", ".join(f"{k} = {v}" for k, v in sorted(group.items()))


def unit_label(cols: Any) -> str:
    """The resampling unit as the estimates state it: ``a,b`` (``row`` when every item is its own unit)."""
    if isinstance(cols, str):
        return cols or "row"
    return ",".join(str(c) for c in (cols or []) if c != "row_id") or "row"


def models_of(report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    names: list[str] = []
    for e in list(report.get("estimates", [])) + list(report.get("comparisons", [])):
        m = e.get("model")
        if m is not None and m not in names:
            names.append(m)
    for s in samples:
        m = s.get("model")
        if m is not None and m not in names:
            names.append(m)
    return names


# -- the run context ------------------------------------------------------------------------------------------

def _identities(report: Mapping[str, Any], manifest: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """One entry per model: name, backend, the identity's scalar settings, its files (with sizes)."""
    out = []
    models = report.get("models")
    if isinstance(models, Mapping):  # several models (the multi-model report)
        entries = [(name, m) for name, m in models.items()]
    else:
        m = report.get("model")
        settings = ((manifest or {}).get("backend") or {}).get("settings") or {}
        declared = [k for k, v in settings.items() if isinstance(v, Mapping) and v.get("default")] or list(settings)
        name = (models_of(report) or [None])[0] or (m or {}).get("name") or (declared[0] if declared else "model")
        entries = [(name, m)] if m else []
    man_files = (manifest or {}).get("model_files") or {}
    for name, m in entries:
        m = m or {}
        ident = m.get("identity") if isinstance(m.get("identity"), Mapping) else m
        ident = ident if isinstance(ident, Mapping) else {}
        settings = {}
        for k, v in sorted(ident.items()):  # scalars, and one level of nested settings (e.g. model.name)
            if isinstance(v, (str, int, float, bool)) and k != "backend":
                settings[k] = v
            elif isinstance(v, Mapping):
                settings.update({(kk if k == "settings" else f"{k}.{kk}"): vv for kk, vv in sorted(v.items())
                                 if isinstance(vv, (str, int, float, bool))})
        files = []

        def walk(obj: Any) -> None:
            if isinstance(obj, Mapping):
                fs = obj.get("files")
                if isinstance(fs, Mapping):
                    for p, sha in fs.items():
                        if isinstance(sha, str):
                            full = next((k for k in man_files if k == p or k.endswith(os.sep + str(p))), p)
                            try:
                                size = os.path.getsize(full) if os.path.isabs(full) else None
                            except OSError:
                                size = None
                            files.append({"path": shown_path(p), "sha256": sha,
                                          "size": fmt_bytes(size) if size is not None else "not recorded"})
                for k, v in obj.items():
                    if k != "files":
                        walk(v)
        walk(ident)
        out.append({"name": name, "backend": ident.get("backend") or m.get("backend") or "–",
                    "key": str(m.get("key") or "")[:12], "settings": settings, "files": files})
    return out


def _named_roots(environ: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """(name, directory) of the roots a path is shown against, most specific first: the sample shipped with
    moraleval, each ``$MORALEVAL_DATA`` entry, the user data directory, the home folder."""
    from moraleval.data.roots import BUILTIN_SAMPLE, ENV_DATA, sample_data_dir, user_data_dir

    env = os.environ if environ is None else environ
    roots = [(BUILTIN_SAMPLE, str(sample_data_dir()))]
    roots += [(f"${ENV_DATA}", os.path.expanduser(part.strip()))
              for part in (env.get(ENV_DATA) or "").split(os.pathsep) if part.strip()]
    try:
        roots.append(("the user data directory", str(user_data_dir())))
    except Exception:  # noqa: BLE001 - no platformdirs answer: that root is not named
        pass
    home = env.get("HOME") or os.path.expanduser("~")
    if home and home != "~" and os.path.isabs(home):
        roots.append(("~", home))
    return roots


def shown_path(path: Any, environ: Mapping[str, str] | None = None) -> str:
    """A path as a report shows it: relative to a named root (``builtin:sample``, ``$MORALEVAL_DATA``, the user
    data directory, ``~``) rather than as an absolute path that names the user's home folder (a report is often
    shared).  A path under none of them is shown as given."""
    if not path:
        return "–"
    text = str(path)
    if not os.path.isabs(text):
        return text
    norm = os.path.normpath(text)
    for name, root in _named_roots(environ):
        root = os.path.normpath(root)
        if norm == root:
            return name
        if norm.startswith(root.rstrip(os.sep) + os.sep):
            rest = norm[len(root.rstrip(os.sep)) + 1:]
            return f"{name}/{rest}" if name.startswith(("$", "~", "builtin:")) else f"{rest} (in {name})"
    return text


def _context(report: Mapping[str, Any], manifest: Mapping[str, Any] | None) -> dict[str, Any]:
    man = manifest or {}
    nh = man.get("not_hashed") or {}
    versions = man.get("versions") or {}
    spec = report.get("spec") or {}
    data_files = sorted((man.get("data_files") or {}).items())
    datasets = report.get("datasets") or {}
    return {
        "spec": spec.get("file"), "spec_sha": str(spec.get("sha256") or "")[:16],
        "imports": sorted((spec.get("imports") or {}).keys()),
        "date": (nh.get("finished") or "")[:19].replace("T", " ") + (" UTC" if nh.get("finished") else ""),
        "started": (nh.get("started") or "")[:19].replace("T", " "),
        "versions": [(k, v) for k, v in versions.items() if v],
        "data_root": shown_path(man.get("data_root")) if man.get("data_root") else None,
        "data_files": [{"path": p, "sha256": h[:16]} for p, h in data_files],
        "datasets": [{"name": k, "rows": v.get("rows"), "rows_read": v.get("rows_read"),
                      "files": ", ".join(v.get("files") or [])} for k, v in datasets.items()
                     if isinstance(v, Mapping)],
        "models": _identities(report, manifest),
        "params": report.get("params") or {},
    }


def _undefined_text(e: Mapping[str, Any]) -> str:
    """"undefined (why)": the reason travels with the word, in every table."""
    why = next((str(f.get("message")) for f in (e.get("flags") or [])
                if isinstance(f, Mapping) and f.get("code") == "undefined" and f.get("message")), "")
    why = why or "; ".join(e.get("warnings") or [])
    return f"undefined ({why})" if why else "undefined"


def _ix(seq: Sequence[Any], v: Any) -> tuple[int, str]:
    return (seq.index(v), "") if v in seq else (len(seq), str(v))


def _cond_order(report: Mapping[str, Any]) -> dict[str, list[str]]:
    return {t: list(info.get("conditions", [])) for t, info in (report.get("tasks") or {}).items()}


# -- flags and warnings ---------------------------------------------------------------------------------------

def _flag(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def _badges(flags: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    """One badge per flag code beside a number, its messages joined (a comparison carries the same flag from
    both of its conditions; the warnings list each message)."""
    out: dict[str, list[str]] = {}
    for f in flags:
        msgs = out.setdefault(str(f.get("code")), [])
        if f.get("message") and f["message"] not in msgs:
            msgs.append(str(f["message"]))
    return [{"code": code, "message": " | ".join(msgs)} for code, msgs in out.items()]


def estimate_flags(e: Mapping[str, Any], degenerate: Mapping[tuple, Sequence[Mapping[str, str]]]
                   ) -> list[dict[str, str]]:
    """The estimate's own ``flags`` (from the measure stage) plus the report's checks, one per code."""
    flags = [dict(f) for f in (e.get("flags") or []) if isinstance(f, Mapping)]
    have = {f.get("code") for f in flags}

    def add(code: str, msg: str) -> None:
        if code not in have:
            flags.append(_flag(code, msg))
            have.add(code)

    value = e.get("value", e.get("effect"))
    if value is None or _num(value) is None or math.isnan(_num(value) or 0.0):
        reason = "; ".join(e.get("warnings") or []) or "no reason recorded"
        add("undefined", f"undefined: {reason}")
    lo, hi = _num(e.get("ci_low")), _num(e.get("ci_high"))
    if lo is not None and hi is not None and lo == hi and _num(value) is not None:
        add("zero_width", "zero-width interval: every resample gave the same value, which says the items do not "
                          "vary, not that the value is known precisely")
    n_units = e.get("n_units")
    if isinstance(n_units, int) and n_units < FEW_UNITS:
        add("few_units", f"only {n_units} resampling unit(s): the bootstrap interval is unreliable")
    if "condition" in e:
        for f in degenerate.get((e.get("task"), e.get("condition"), e.get("model") or None), ()):
            add(f["code"], f["message"])
    for w in e.get("warnings") or []:
        if not any(w in f.get("message", "") for f in flags):
            flags.append(_flag("warning", str(w)))
    return flags


def _fallback_warnings(report: Mapping[str, Any]) -> list[str]:
    out = []
    for name, info in (report.get("datasets") or {}).items():
        for jname, j in ((info or {}).get("joins") or {}).items() if isinstance(info, Mapping) else []:
            if isinstance(j, Mapping) and j.get("present") is False:
                f = str(j.get("file", ""))
                extra = (" The BBQ bias targets were therefore derived with the fallback rule (from the answer "
                         "groups), not from additional_metadata.csv.") if "additional_metadata" in f else ""
                out.append(f"dataset {name}: the optional file {f} (join '{jname}') was absent, so columns "
                           f"that depend on it came from the spec's fallback.{extra}")
            elif isinstance(j, Mapping) and j.get("unmatched"):
                out.append(f"dataset {name}: {j['unmatched']} row(s) had no match in {j.get('file')} "
                           f"(join '{jname}')")
    return out


# -- headline sentences ---------------------------------------------------------------------------------------

def _est_index(report: Mapping[str, Any]) -> dict[tuple, int]:
    return {(e.get("task"), e.get("metric"), e.get("condition"), json.dumps(e.get("group") or {}, sort_keys=True),
             e.get("model")): i for i, e in enumerate(report.get("estimates", []))}


#: how the pages say each verdict
VERDICT_TEXT = {"change": "change", "none": "no detectable change", "undefined": "undefined",
                "equivalent": "equivalent", "not_equivalent": "not shown equivalent"}


def comparison_verdict(c: Mapping[str, Any], alpha: float = ALPHA) -> str:
    """"change" only when the interval excludes 0 and the (adjusted) p is below alpha; else "none".  An
    equivalence test: "equivalent" when its (adjusted) TOST p is below alpha, else "not_equivalent"."""
    eff, lo, hi = _num(c.get("effect")), _num(c.get("ci_low")), _num(c.get("ci_high"))
    p = _num(c.get("p_adjusted", c.get("p_value")))
    if eff is None or math.isnan(eff):
        return "undefined"
    if isinstance(c.get("equivalence"), Mapping) or c.get("test") == "tost":
        return "equivalent" if p is not None and p < alpha else "not_equivalent"
    excl = lo is not None and hi is not None and (lo > 0 or hi < 0)
    if p is None:
        return "change" if excl else "none"
    return "change" if excl and p < alpha else "none"


def _headlines(report: Mapping[str, Any], flags_by_est: Sequence[list[dict[str, str]]]) -> list[dict[str, Any]]:
    ests = report.get("estimates", [])
    idx = _est_index(report)
    lines = []
    for ci, c in enumerate(report.get("comparisons", [])):
        g = json.dumps(c.get("group") or {}, sort_keys=True)
        kt = idx.get((c.get("task"), c.get("metric"), c.get("treatment"), g, c.get("model")))
        kb = idx.get((c.get("task"), c.get("metric"), c.get("baseline"), g, c.get("model")))
        et, eb = (ests[kt] if kt is not None else {}), (ests[kb] if kb is not None else {})
        who = f" for {c['model']}" if c.get("model") else ""
        where = f" ({group_label(c.get('group'))})" if c.get("group") else ""
        metric = f"{c.get('metric')}{where}"
        vt = " ".join(fmt_est(et.get("value"), et.get("ci_low"), et.get("ci_high"), True)) if et else "?"
        vb = " ".join(fmt_est(eb.get("value"), eb.get("ci_low"), eb.get("ci_high"), True)) if eb else "?"
        d = " ".join(fmt_est(c.get("effect"), c.get("ci_low"), c.get("ci_high"), True))
        corr = c.get("correction") or "no"
        p = numbers.p_phrase(_num(c.get("p_adjusted", c.get("p_value"))))
        verdict = comparison_verdict(c)
        eq = c.get("equivalence") if isinstance(c.get("equivalence"), Mapping) else None
        caveat = ""
        bad = {f["code"] for k in (kt, kb) if k is not None for f in flags_by_est[k]} & {
            "degenerate_answers", "position_preference", "zero_width", "few_units", "undefined"}
        if bad:
            caveat = " Caveat: " + ", ".join(sorted(b.replace("_", " ") for b in bad)) + " (see the warnings)."
        if eq is not None and verdict in ("equivalent", "not_equivalent"):
            lo_eq, hi_eq = (eq.get("interval") or [None, None])[:2]
            lvl = round(100 * (_num(eq.get("interval_level")) or 0.9))
            margin = fmt(eq.get("margin"))
            inside = (f"its {lvl}% interval {fmt_ci(lo_eq, hi_eq, True)} lies inside ±{margin}"
                      if verdict == "equivalent" else
                      f"its {lvl}% interval {fmt_ci(lo_eq, hi_eq, True)} is not inside ±{margin}")
            text = (f"{c.get('treatment')} is {'equivalent' if verdict == 'equivalent' else 'not shown equivalent'} "
                    f"to {c.get('baseline')} on {metric}{who} within ±{margin}: difference {d}; {inside} "
                    f"({corr}-adjusted TOST p = {p}).")
        elif verdict == "change":
            verb = "raises" if (_num(c.get("effect")) or 0) > 0 else "lowers"
            text = (f"{c.get('treatment')} {verb} {metric}{who} from {vb} under {c.get('baseline')} to {vt}; "
                    f"the difference, {d}, holds after {corr} correction ({p}).")
        elif verdict == "none":
            text = (f"No detectable change in {metric}{who} from {c.get('baseline')} to {c.get('treatment')}: "
                    f"{vb} vs {vt}, difference {d}, {corr}-adjusted {p}.")
        else:
            text = (f"The change in {metric}{who} from {c.get('baseline')} to {c.get('treatment')} is undefined "
                    f"({'; '.join(c.get('warnings') or []) or 'see the warnings'}).")
        lines.append({"text": text + caveat, "verdict": verdict, "task": c.get("task"), "comparison": ci,
                      "grouped": bool(c.get("group"))})
    # the whole study's findings first, then each report group's (in report order within each)
    return sorted(lines, key=lambda h: h["grouped"])


# -- tables ---------------------------------------------------------------------------------------------------

def _tables(report: Mapping[str, Any], flags_by_est: Sequence[list[dict[str, str]]]) -> list[dict[str, Any]]:
    """Per task: rows metric × group (× model), columns the conditions; each cell knows its estimate index."""
    models = models_of(report)
    out = []
    for task, info in (report.get("tasks") or {}).items():
        conds = list(info.get("conditions", []))
        rows: dict[tuple, dict[str, Any]] = {}
        unit = None
        n_note = set()
        for i, e in enumerate(report.get("estimates", [])):
            if e.get("task") != task:
                continue
            if e.get("condition") not in conds:
                conds.append(e.get("condition"))
            unit = unit or e.get("unit")
            row = rows.setdefault((e.get("metric"), group_label(e.get("group")), e.get("model")), {})
            value, ci = fmt_est(e.get("value"), e.get("ci_low"), e.get("ci_high"))
            row[e.get("condition")] = {"i": i, "value": value if e.get("value") is not None
                                       else _undefined_text(e), "ci": ci,
                                       "n": e.get("n"), "n_units": e.get("n_units"), "flags": flags_by_est[i],
                                       "badges": _badges(flags_by_est[i])}
            n_note.add((e.get("n"), e.get("n_units")))
        body = [{"metric": k[0], "group": k[1], "model": k[2], "cells": [v.get(c) for c in conds]}
                for k, v in rows.items()]
        e0 = next((e for e in report.get("estimates", []) if e.get("task") == task), {})
        out.append({"task": task, "conditions": conds, "rows": body, "show_model": len(models) > 1,
                    "unit": unit or unit_label(info.get("unit")), "method": e0.get("method"),
                    "resamples": e0.get("resamples"), "level": e0.get("level") or 0.95,
                    "dataset": info.get("dataset"), "n_items": info.get("items"),
                    "items_answered": info.get("items_answered")})
    return out


def _comparisons(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for i, c in enumerate(report.get("comparisons", [])):
        effect, ci = fmt_est(c.get("effect"), c.get("ci_low"), c.get("ci_high"), signed=True)
        out.append({"i": i, "task": c.get("task"), "metric": c.get("metric"), "model": c.get("model"),
                    "group": group_label(c.get("group")), "treatment": c.get("treatment"),
                    "baseline": c.get("baseline"),
                    "effect": "undefined" if c.get("effect") is None else effect,
                    "ci": ci, "test": c.get("test"),
                    "p": fmt_p(c.get("p_value")), "p_adj": fmt_p(c.get("p_adjusted")),
                    "correction": c.get("correction"), "n": c.get("n"), "n_units": c.get("n_units"),
                    "verdict": comparison_verdict(c), "verdict_text": VERDICT_TEXT[comparison_verdict(c)],
                    "margin": (c.get("equivalence") or {}).get("margin") if isinstance(c.get("equivalence"), Mapping)
                    else None, "flags": [dict(f) for f in c.get("flags") or []]
                    + [_flag("warning", w) for w in c.get("warnings") or []]})
        out[-1]["badges"] = _badges(out[-1]["flags"])
    return out


_DROP_REASONS = {"not_run_limit": "not run (--limit)", "no_outcome": "no outcome",
                 "invalid_outcome": "unusable scores", "undefined_values": "undefined values"}


def _dropped(report: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    dropped = report.get("dropped") or {}
    for name, reasons in (dropped.get("datasets") or {}).items():
        for reason, n in (reasons or {}).items() if isinstance(reasons, Mapping) else []:
            rows.append([f"dataset {name}", str(reason), str(n)])
    for name, columns in (dropped.get("entries") or {}).items():
        for column, reasons in (columns or {}).items() if isinstance(columns, Mapping) else []:
            for reason, n in (reasons or {}).items() if isinstance(reasons, Mapping) else []:
                rows.append([f"dataset {name}, entries of {column}", str(reason), str(n)])
    meas = dropped.get("measurement")
    if isinstance(meas, Mapping):
        def walk(prefix: str, obj: Any) -> None:
            if isinstance(obj, Mapping):
                for k, v in obj.items():
                    walk(f"{prefix} / {k}" if prefix else str(k), v)
            else:
                where, _, reason = prefix.rpartition(" / ")
                if obj == 0:
                    return
                rows.append([f"measurement {where}".strip(), _DROP_REASONS.get(reason, reason.replace("_", " ")),
                             str(obj)])
        walk("", meas)
    elif isinstance(meas, list):
        for entry in meas:
            rows.append(["measurement", json.dumps(entry, sort_keys=True, ensure_ascii=False), ""])
    return rows


def _formulas(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each metric as written and expanded; a family's members share its written formula, so a family is shown
    once (its first member), with the notes its text does not say (per-item definitions, logarithm bases, the R
    code that refits a regression)."""
    out = []
    shown: set[tuple] = set()
    for m in report.get("metrics", []):
        fam = m.get("family")
        if fam is not None:
            if (m.get("task"), fam) in shown:
                continue
            shown.add((m.get("task"), fam))
        expanded = expr_source(m.get("expr") or {})
        out.append({"task": m.get("task"), "name": fam or m.get("name"), "formula": m.get("formula", ""),
                    "doc": m.get("doc"), "expanded": expanded if expanded != m.get("formula") else None,
                    "family": fam is not None, "member": m.get("name") if fam is not None else None,
                    "notes": formula_notes(m), "r": m.get("r")})
    return out


def _answer_readers(report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]]) -> set[str] | None:
    """The metrics whose formula reads a choice's chosen answer (only they are judged by the answer
    distribution); None when the samples do not say which names are choices."""
    from moraleval.measurement.families import reads_answer

    choices: dict[str, set[str]] = {}
    for s in samples:
        if s.get("choice"):
            choices.setdefault(s.get("task"), set()).add(s["choice"])
    if not choices:
        return None
    return {m.get("name") for m in report.get("metrics", [])
            if reads_answer(m.get("expr") or {}, choices.get(m.get("task"), set()))}


# -- the whole page -------------------------------------------------------------------------------------------

def page_model(report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]],
               manifest: Mapping[str, Any] | None = None, *, samples_bytes: int | None = None) -> dict[str, Any]:
    """Everything the Markdown and HTML pages show, as plain data."""
    dists = answer_distribution(report, samples, task_order=list(report.get("tasks", {})),
                                condition_order=_cond_order(report))
    degenerate = degenerate_by_cell(dists)
    readers = _answer_readers(report, samples)  # metrics that read the chosen answer (None: not recorded)
    flags_by_est = [estimate_flags(e, degenerate if readers is None or e.get("metric") in readers else {})
                    for e in report.get("estimates", [])]
    warnings: list[dict[str, Any]] = []
    for i, (e, flags) in enumerate(zip(report.get("estimates", []), flags_by_est)):
        for f in flags:
            who = f" [{e['model']}]" if e.get("model") else ""
            warnings.append({"where": f"{e.get('task')} / {e.get('metric')} / {e.get('condition')} / "
                                      f"{group_label(e.get('group'))}{who}", "code": f["code"],
                             "message": f["message"], "est": i})
    for i, c in enumerate(_comparisons(report)):
        for f in c["flags"]:
            who = f" [{c['model']}]" if c.get("model") else ""
            warnings.append({"where": f"{c['task']} / {c['metric']} / {c['treatment']} − {c['baseline']} / "
                                      f"{c['group']}{who}", "code": f["code"], "message": f["message"], "cmp": i})
    general = [str(w) for w in report.get("warnings") or []] + _fallback_warnings(report)
    for (task, _cond, model), flags in degenerate.items():
        for f in flags:
            msg = f"task '{task}'" + (f" ({model})" if model else "") + f": {f['message']}"
            if msg not in general:
                general.append(msg)
    n_rows = len(samples)
    embed = n_rows <= EMBED_MAX_ROWS and (samples_bytes is None or samples_bytes <= EMBED_MAX_BYTES)
    boot = report.get("bootstrap") or {}
    units = {t: unit_label(u) for t, u in (boot.get("unit") or {}).items()} if isinstance(boot.get("unit"), Mapping) \
        else {t: next((e.get("unit") for e in report.get("estimates", []) if e.get("task") == t), None)
              or unit_label(boot.get("unit")) for t in report.get("tasks", {})}
    dist_rows = [dict(r, badges=_badges(r["flags"])) for r in answer_rows(dists, fixed_labels(samples), degenerate)]
    return {
        "title": report.get("study") or "moraleval report",
        "context": _context(report, manifest),
        "across": across_view(report),  # several models: the across-model section that leads the pages
        "bootstrap": {"resamples": boot.get("resamples"), "method": boot.get("method"),
                      "level": boot.get("level"), "seed": boot.get("seed"), "units": units},
        "counts": report.get("counts") or {},
        "models": models_of(report, samples),
        "headlines": _headlines(report, flags_by_est),
        "group_columns": sorted({str(k) for e in report.get("estimates", []) for k in (e.get("group") or {})}),
        "tables": _tables(report, flags_by_est),
        "comparisons": _comparisons(report),
        "families": families(report),
        "formulas": _formulas(report),
        "warnings": warnings,
        "general_warnings": general,
        "dropped": _dropped(report),
        "answer_distribution": dist_rows,
        "answer_columns": {"shown": any(r["shown"] for r in dist_rows), "places": any(r["places"] for r in dist_rows)},
        "flags_by_est": flags_by_est,
        "n_samples": n_rows,
        "embed": embed,
        "embed_limits": {"rows": EMBED_MAX_ROWS, "mb": EMBED_MAX_BYTES // (1024 * 1024)},
    }


def iter_group_columns(samples: Iterable[Mapping[str, Any]], limit: int = 25) -> dict[str, list[str]]:
    """Per task, the columns worth filtering on: text-valued columns with 2..``limit`` distinct values."""
    seen: dict[str, dict[str, set]] = {}
    for s in samples:
        cols = seen.setdefault(s.get("task"), {})
        for k, v in (s.get("values") or {}).items():
            if isinstance(v, str) and k != "row_id":
                vals = cols.setdefault(k, set())
                if len(vals) <= limit:
                    vals.add(v)
    return {t: sorted(k for k, v in cols.items() if 2 <= len(v) <= limit) for t, cols in seen.items()}
