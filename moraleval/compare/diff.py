"""`moraleval diff A B`: what changed between two reports, and whether the measured difference is real.

1. The manifest change list: spec and imports, data files, model files and backend settings/identity,
   parameters, seeds, package versions, and how many items' rendered prompts differ.
2. Items paired by their stable key (``moraleval.plan.itemkey``: data-file hash + task + condition + row + variant),
   never by list position.  Items on one side only are an error naming how many and why (different data files,
   or a different selection such as ``--limit``), unless ``allow_partial``.
3. Every metric of A's report recomputed on both sides from samples.jsonl with the report's own bootstrap
   (``moraleval.measurement`` with the same seed on the same paired items, so the resampled units are the same on
   both sides): B − A with its percentile interval, a p-value (paired bootstrap; McNemar for a proportion metric
   such as accuracy), Holm across the family (all metrics × conditions, per report group).
4. An answer transition table per task × condition (answer in A -> answer in B; BBQ-like rows with ``target``
   and ``unknown`` columns also as stereotyped / anti-stereotyped / unknown).
5. Gates for CI (``--fail-if``, ``--fail-on-regression``): the exit code.
"""

from __future__ import annotations

import json
import operator
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import attrs

from moraleval.errors import MoralevalError
from moraleval.util import numbers
from moraleval.util.text import for_terminal

__all__ = ["DiffResult", "Gate", "diff_folders", "parse_gate", "render_text", "EXIT_GATE_FAILED"]

#: exit code of `moraleval diff` when a --fail-if / --fail-on-regression gate fails.
EXIT_GATE_FAILED = 1

_OPS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq,
        "!=": operator.ne}
_GATE = re.compile(r"^\s*(?:(?P<delta>delta)\s*\(\s*(?P<dm>[A-Za-z_][A-Za-z_0-9]*)(?:@(?P<dc>[A-Za-z_][A-Za-z_0-9]*))?"
                   r"\s*\)|(?:abs\s*\(\s*(?P<am>[A-Za-z_][A-Za-z_0-9]*)(?:@(?P<ac>[A-Za-z_][A-Za-z_0-9]*))?\s*\))|"
                   r"(?P<m>[A-Za-z_][A-Za-z_0-9]*)(?:@(?P<c>[A-Za-z_][A-Za-z_0-9]*))?)"
                   r"\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<num>[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")


class DiffError(MoralevalError):
    """The two reports cannot be compared as asked (unmatched items, unknown model)."""

    exit_code = 2


@attrs.frozen
class Gate:
    """`--fail-if 'METRIC[@CONDITION] OP NUMBER'` (B's value), `delta(METRIC[@COND]) OP N` (B − A) or
    `abs(METRIC[@COND]) OP N` (|B|)."""

    text: str
    metric: str
    condition: str | None
    op: str
    threshold: float
    on: str  # "value" | "delta" | "abs"


def parse_gate(text: str) -> Gate:
    m = _GATE.match(text)
    if m is None:
        raise MoralevalError(f"--fail-if {text!r}: expected METRIC[@CONDITION] OP NUMBER",
                             hint="e.g. --fail-if 'bias_ambiguous > 0.05', 'delta(accuracy_ambiguous@Q) < -0.02' "
                                  "or 'abs(bias_disambiguated) > 0.1'")
    if m.group("delta"):
        metric, cond, on = m.group("dm"), m.group("dc"), "delta"
    elif m.group("am"):
        metric, cond, on = m.group("am"), m.group("ac"), "abs"
    else:
        metric, cond, on = m.group("m"), m.group("c"), "value"
    return Gate(text, metric, cond, m.group("op"), float(m.group("num")), on)


@attrs.frozen(eq=False)
class DiffResult:
    a: str
    b: str
    model_a: str | None
    model_b: str | None
    changes: tuple[dict[str, Any], ...] = attrs.field(converter=tuple)
    items: dict[str, Any]
    comparisons: tuple[dict[str, Any], ...] = attrs.field(converter=tuple)
    transitions: tuple[dict[str, Any], ...] = attrs.field(converter=tuple)
    gates: tuple[dict[str, Any], ...] = attrs.field(converter=tuple)
    warnings: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    @property
    def exit_code(self) -> int:
        return EXIT_GATE_FAILED if any(g["failed"] for g in self.gates) else 0

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "model_a": self.model_a, "model_b": self.model_b,
                "changes": list(self.changes), "items": self.items, "comparisons": list(self.comparisons),
                "transitions": list(self.transitions), "gates": list(self.gates), "warnings": list(self.warnings),
                "exit_code": self.exit_code}


# --------------------------------------------------------------------------- loading

def _pick_model(report: Mapping[str, Any], samples: list[dict[str, Any]], want: str | None, side: str
                ) -> tuple[str | None, list[dict[str, Any]]]:
    models = list((report.get("models") or {}).keys())
    if not models:
        name = want or next((s.get("model") for s in samples if s.get("model")), None)
        if want is not None and any(s.get("model") not in (None, want) for s in samples):
            raise DiffError(f"report {side} holds no model '{want}'")
        return name, samples
    if want is None:
        if len(models) > 1:
            raise DiffError(f"report {side} holds {len(models)} models ({', '.join(models)}): say which",
                            hint=f"--model-{side.lower()} NAME")
        want = models[0]
    if want not in models:
        raise DiffError(f"report {side} holds no model '{want}'", hint="models: " + ", ".join(models))
    return want, [s for s in samples if s.get("model") == want]


def _keys(report: Mapping[str, Any], manifest: Mapping[str, Any], samples: list[dict[str, Any]]) -> list[str]:
    """Each sample's item key (its own ``item`` when present, else recomputed the same way)."""
    from moraleval.plan.itemkey import item_key, task_data_hashes

    hashes = task_data_hashes(report.get("tasks") or {}, report.get("datasets") or {},
                              manifest.get("data_files") or {})
    return [s.get("item") or item_key(hashes.get(s["task"], ""), s["task"], s["condition"], s["row"], s["variant"])
            for s in samples]


# --------------------------------------------------------------------------- the change list

def _change(what: str, a: Any, b: Any) -> dict[str, Any]:
    return {"what": what, "a": a, "b": b}


def manifest_changes(ma: Mapping[str, Any], mb: Mapping[str, Any], ra: Mapping[str, Any], rb: Mapping[str, Any],
                     model_a: str | None, model_b: str | None) -> list[dict[str, Any]]:
    """What differs between two reports' inputs (hashes, settings, versions), one entry per difference."""
    out = []
    sa, sb = ma.get("spec") or {}, mb.get("spec") or {}
    if sa.get("sha256") != sb.get("sha256"):
        out.append(_change("spec", {"path": sa.get("path"), "sha256": sa.get("sha256")},
                           {"path": sb.get("path"), "sha256": sb.get("sha256")}))
    ia = {Path(i["path"]).name if False else i["path"]: i.get("sha256") for i in ma.get("imports") or []}
    ib = {i["path"]: i.get("sha256") for i in mb.get("imports") or []}
    for p in sorted(set(ia) | set(ib)):
        if ia.get(p) != ib.get(p):
            out.append(_change(f"import {p}", ia.get(p), ib.get(p)))
    da, db = ma.get("data_files") or {}, mb.get("data_files") or {}
    for p in sorted(set(da) | set(db)):
        if da.get(p) != db.get(p):
            out.append(_change(f"data file {p}", da.get(p), db.get(p)))
    fa, fb = ma.get("model_files") or {}, mb.get("model_files") or {}
    if sorted(fa.values()) != sorted(fb.values()):
        out.append(_change("model files", fa, fb))
    ba, bb = _backend(ma, model_a), _backend(mb, model_b)
    for key in ("name", "identity", "settings", "model_key"):
        if (ba or {}).get(key) != (bb or {}).get(key):
            out.append(_change(f"model {key}", (ba or {}).get(key), (bb or {}).get(key)))
    for key in ("params", "seeds"):
        if ma.get(key) != mb.get(key):
            out.append(_change(key, ma.get(key), mb.get(key)))
    if ra.get("bootstrap") != rb.get("bootstrap"):
        out.append(_change("bootstrap", ra.get("bootstrap"), rb.get("bootstrap")))
    va, vb = ma.get("versions") or {}, mb.get("versions") or {}
    for p in sorted(set(va) | set(vb)):
        if va.get(p) != vb.get(p):
            out.append(_change(f"version {p}", va.get(p), vb.get(p)))
    return out


def _backend(manifest: Mapping[str, Any], model: str | None) -> dict[str, Any] | None:
    if manifest.get("backends"):
        return (manifest["backends"] or {}).get(model)
    b = dict(manifest.get("backend") or {})
    settings = b.get("settings")
    if isinstance(settings, Mapping) and model in settings:  # a single-model report lists every model's settings
        b["settings"] = settings[model]
    return b


# --------------------------------------------------------------------------- recomputing the metrics

def _plan_of(report: Mapping[str, Any], samples: list[dict[str, Any]], report_by: tuple[str, ...]):
    """A Plan rebuilt from a report's samples: the items, their outcomes and the report's metrics/bootstrap."""
    from moraleval.backend import ScoreResult
    from moraleval.plan.types import BootstrapPlan, MetricPlan, Plan, PlanItem
    from moraleval.plan.types import RequestOutcome

    items, outcomes = [], {}
    raw: dict[tuple[str, str], bool] = {}
    for s in samples:
        key = s["request"]
        items.append(PlanItem(s["task"], s["condition"], s["row"], s["variant"], s["unit"], key, s["choice"],
                              tuple(s["choice_values"]), s.get("values") or {}))
        # non-finite log-probs are stored as "-inf"/"nan" strings (report.build): floats again here
        outcomes[key] = RequestOutcome(key, s.get("generated") or {},
                                       ScoreResult(tuple(float(v) for v in s["logprobs"]),
                                                   tuple(s.get("n_tokens") or ())))
        probs = (s.get("readout") or {}).get("probs")
        if probs:
            raw[(s["task"], s["condition"])] = raw.get((s["task"], s["condition"]), False) or \
                abs(sum(probs) - 1.0) > 1e-6
    tasks: dict[str, Any] = {}
    for t, info in (report.get("tasks") or {}).items():
        conds = [c if isinstance(c, str) else c.get("name") for c in info.get("conditions", [])]
        tasks[t] = {"dataset": info.get("dataset"), "format": info.get("format"),
                    "conditions": [{"name": c, "normalize": "none" if raw.get((t, c)) else "softmax"}
                                   for c in conds]}
    b = report.get("bootstrap") or {}
    boot = BootstrapPlan(int(b.get("resamples", 2000)), int(b.get("seed", 0)), tuple(b.get("unit") or ()),
                         "percentile", float(b.get("level", 0.95)))
    metrics = tuple(MetricPlan(m["name"], m["task"], m["expr"], m.get("formula", ""), m.get("doc"))
                    for m in report.get("metrics") or [])
    return Plan(spec_path=str((report.get("spec") or {}).get("file", "")), spec_sha256="", study="",
                params={}, data_root="", data_files={}, datasets={}, tasks=tasks, requests=(), items=tuple(items),
                metrics=metrics, bootstrap=boot, comparisons=(), report_by=report_by), outcomes


def _regression(metric: str, va: float | None, vb: float | None, higher_is_better: Sequence[str]) -> bool:
    if va is None or vb is None:
        return False
    if metric in higher_is_better or (not higher_is_better and "acc" in metric):
        return vb < va
    return abs(vb) > abs(va)


def diff_folders(a: Any, b: Any, *, model_a: str | None = None, model_b: str | None = None,
                 allow_partial: bool = False, gates: Sequence[str | Gate] = (), fail_on_regression: bool = False,
                 alpha: float = 0.05, higher_is_better: Sequence[str] = ()) -> DiffResult:
    """Compare two report folders already read (``a``, ``b``: a ``moraleval.report.folder.ReportFolder`` each, with
    ``path``, ``report``, ``samples`` and ``manifest``).  Reading them is the report stage's
    (``moraleval.report.diff_reports`` reads two folders and calls this): this stage computes only."""
    from moraleval.compare.contrasts import difference
    from moraleval.measurement import measure, stats

    da, db = Path(a.path), Path(b.path)
    ra, sa_all, ma = a.report, list(a.samples or []), a.manifest or {}
    rb, sb_all, mb = b.report, list(b.samples or []), b.manifest or {}
    name_a, sa = _pick_model(ra, sa_all, model_a, "A")
    name_b, sb = _pick_model(rb, sb_all, model_b, "B")
    changes = manifest_changes(ma, mb, ra, rb, name_a, name_b)
    warnings: list[str] = []
    ka, kb = _keys(ra, ma, sa), _keys(rb, mb, sb)
    index_b = {k: i for i, k in enumerate(kb)}
    set_a = set(ka)
    only_a = [k for k in ka if k not in index_b]
    only_b = [k for k in kb if k not in set_a]
    matched = [(i, index_b[k]) for i, k in enumerate(ka) if k in index_b]
    if only_a or only_b:
        data_changed = any(c["what"].startswith("data file") for c in changes)
        why = ("the data files differ (see the change list), so no item can be the same item" if data_changed
               else "the reports answered different items (e.g. --limit, a sample size, a filter, or a task or "
                    "condition present on one side only)")
        msg = (f"{len(only_a)} item(s) of A and {len(only_b)} of B have no partner in the other report "
               f"({len(matched)} matched): {why}")
        if not matched or not allow_partial:
            raise DiffError(msg, hint="--allow-partial compares the matched items only" if matched and not
                            data_changed else "diff reports made from the same data files")
        warnings.append(msg + "; only the matched items are compared")
    prompt_changed = sum(1 for i, j in matched if sa[i].get("prompts") != sb[j].get("prompts"))
    if prompt_changed:
        changes.append(_change("rendered prompts", None, f"{prompt_changed} of {len(matched)} matched items' "
                                                         "prompts differ"))
    # both sides in A's order of the matched items: the same units in the same order, so paired resamples
    pa = [sa[i] for i, _ in matched]
    pb = [dict(sb[j], unit=sa[i]["unit"]) for i, j in matched]
    groups = sorted({k for e in ra.get("estimates", []) for k in (e.get("group") or {})})
    report_by = tuple(g for g in groups if pa and g in (pa[0].get("values") or {}))
    plan_a, out_a = _plan_of(ra, pa, report_by)
    plan_b, out_b = _plan_of(ra, pb, report_by)  # A's metrics and bootstrap on both sides
    keep_a: dict = {}
    keep_b: dict = {}
    meas_a = measure(plan_a, out_a, keep=keep_a)
    meas_b = measure(plan_b, out_b, keep=keep_b)
    level = plan_a.bootstrap.level
    rows = []
    for key in keep_a:
        if key not in keep_b:
            continue
        # McNemar for a proportion metric (accuracy: per-item yes/no), the paired bootstrap for any other
        test = "mcnemar" if keep_a[key]["prop"] is not None and keep_b[key]["prop"] is not None else "bootstrap"
        rows.append(difference(key, "B", "A", keep_b[key], keep_a[key], test, "holm", level,
                               seed=plan_a.bootstrap.seed, n_flips=plan_a.bootstrap.resamples))
    families: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        families.setdefault(json.dumps(r.group, sort_keys=True), []).append(i)
    adjusted: list[float | None] = [None] * len(rows)
    for members in families.values():
        for i, p in zip(members, stats.adjust_pvalues([rows[i].p_value for i in members], "holm")):
            adjusted[i] = p
    comparisons = []
    for r, p_adj in zip(rows, adjusted):
        comparisons.append({
            "metric": r.metric, "task": r.task, "condition": r.condition, "group": r.group, "effect": r.effect,
            "ci_low": r.ci_low, "ci_high": r.ci_high, "test": r.test, "statistic": r.statistic,
            "p_value": r.p_value, "p_method": r.p_method, "p_adjusted": p_adj, "correction": "holm",
            "value_a": r.baseline_value,
            "value_b": r.treatment_value, "n": r.n, "n_units": r.n_units, "detail": r.detail,
            "flags": [dict(f) for f in r.flags], "warnings": list(r.warnings),
            "regression": _regression(r.metric, r.baseline_value, r.treatment_value, higher_is_better)})
    transitions = _transitions(pa, pb, [meas_a.readouts.answer(i) for i in range(len(pa))],
                               [meas_b.readouts.answer(i) for i in range(len(pb))])
    gate_rows = _gates(comparisons, [g if isinstance(g, Gate) else parse_gate(g) for g in gates],
                       fail_on_regression, alpha)
    items = {"a": len(sa), "b": len(sb), "matched": len(matched), "only_a": len(only_a), "only_b": len(only_b)}
    return DiffResult(str(da), str(db), name_a, name_b, changes, items, comparisons, transitions, gate_rows,
                      warnings)


def _label(s: Mapping[str, Any], ans: Any) -> Any:
    v = s.get("values") or {}
    if "target" in v and "unknown" in v and ans is not None:
        if ans == v["unknown"]:
            return "unknown"
        return "stereotyped" if ans == v["target"] else "anti-stereotyped"
    return None


def _transitions(pa: list[dict[str, Any]], pb: list[dict[str, Any]], answers_a: list[Any], answers_b: list[Any]
                 ) -> list[dict[str, Any]]:
    """Per task × condition: how many paired items moved from each answer in A to each answer in B (the answers
    as re-read from the log-probs; None where an item has no usable outcome)."""
    tables: dict[tuple[str, str], dict[str, dict]] = {}
    for x, y, ax, ay in zip(pa, pb, answers_a, answers_b):
        t = tables.setdefault((x["task"], x["condition"]), {"answers": {}, "labels": {}})
        k = (json.dumps(ax), json.dumps(ay))
        t["answers"][k] = t["answers"].get(k, 0) + 1
        lx, ly = _label(x, ax), _label(y, ay)
        if lx is not None and ly is not None:
            t["labels"][(lx, ly)] = t["labels"].get((lx, ly), 0) + 1
    out = []
    for (task, cond), t in tables.items():
        entry = {"task": task, "condition": cond,
                 "answers": [{"a": json.loads(a), "b": json.loads(b), "n": n}
                             for (a, b), n in sorted(t["answers"].items())]}
        if t["labels"]:
            entry["labels"] = [{"a": a, "b": b, "n": n} for (a, b), n in sorted(t["labels"].items())]
        out.append(entry)
    return out


def _gates(comparisons: list[dict[str, Any]], gates: list[Gate], fail_on_regression: bool, alpha: float
           ) -> list[dict[str, Any]]:
    out = []
    top = [c for c in comparisons if not c["group"]]
    for g in gates:
        hits = [c for c in top if c["metric"] == g.metric and (g.condition is None or c["condition"] == g.condition)]
        if not hits:
            raise MoralevalError(f"--fail-if {g.text!r}: no metric '{g.metric}'"
                                 + (f" in condition '{g.condition}'" if g.condition else ""),
                                 hint="metrics: " + ", ".join(sorted({c['metric'] for c in top})))
        failed = []
        for c in hits:
            v = c["effect"] if g.on == "delta" else c["value_b"]
            if v is None:
                continue
            if g.on == "abs":
                v = abs(v)
            if _OPS[g.op](v, g.threshold):
                failed.append({"task": c["task"], "condition": c["condition"], "value": v})
        out.append({"gate": g.text, "failed": bool(failed), "where": failed})
    if fail_on_regression:
        bad = [{"task": c["task"], "metric": c["metric"], "condition": c["condition"], "effect": c["effect"],
                "p_adjusted": c["p_adjusted"]}
               for c in top if c["regression"] and c["p_adjusted"] is not None and c["p_adjusted"] < alpha]
        out.append({"gate": f"significant regression (Holm-adjusted p < {alpha})", "failed": bool(bad),
                    "where": bad})
    return out


# --------------------------------------------------------------------------- text output

def _v(x: Any, decimals: int = numbers.MIN_DECIMALS) -> str:
    return "–" if x is None else numbers.fmt_number(x, decimals, signed=True, minus="-")


def _row_numbers(c: dict[str, Any]) -> tuple[str, str, str, str]:
    """A, B, B − A and its CI with one number of decimals, enough for the interval and for each value."""
    d = max(numbers.decimals_for(c["effect"], c["ci_low"], c["ci_high"]), numbers.decimals_for(c["value_a"]),
            numbers.decimals_for(c["value_b"]))
    ci = "" if c["ci_low"] is None or c["ci_high"] is None else \
        f"[{_v(c['ci_low'], d)}, {_v(c['ci_high'], d)}]"
    return _v(c["value_a"], d), _v(c["value_b"], d), _v(c["effect"], d), ci


def render_text(res: DiffResult) -> str:
    lines = [f"diff A={res.a}" + (f" [{res.model_a}]" if res.model_a else "") + f"  B={res.b}"
             + (f" [{res.model_b}]" if res.model_b else ""), "", "what changed:"]
    if not res.changes:
        lines.append("  nothing: same spec, imports, data, model, settings and versions")
    for c in res.changes:
        a, b = (json.dumps(x, sort_keys=True, default=str) if not isinstance(x, str) else x for x in (c["a"], c["b"]))
        lines.append(f"  {c['what']}: {a[:80]} -> {b[:80]}")
    it = res.items
    rows = [(c, *_row_numbers(c)) for c in res.comparisons if not c["group"]]
    w = max([8, *(len(x) for r in rows for x in r[1:4])])
    wc = max([20, *(len(r[4]) for r in rows)])
    lines += ["", f"items: {it['matched']} paired (A {it['a']}, B {it['b']}; unmatched A {it['only_a']}, "
                  f"B {it['only_b']})", "",
              f"{'task':<14} {'metric':<24} {'condition':<12} {'A':>{w}} {'B':>{w}} {'B − A':>{w}}  {'95% CI':<{wc}} "
              f"{'test':<9} {'p':>7} {'p_holm':>7}"]
    for c, va, vb, eff, ci in rows:
        p, pa = numbers.fmt_p(c["p_value"]), numbers.fmt_p(c["p_adjusted"])
        codes = [f["code"] for f in c["flags"]]
        flag = (" few units" if "few_units" in codes else "") + (" no test" if "no_test" in codes else "")
        test = {"sign_flip_exact": "flip-ex", "sign_flip_monte_carlo": "flip-mc"}.get(c.get("p_method"), c["test"])
        lines.append(f"{c['task']:<14} {c['metric']:<24} {c['condition']:<12} {va:>{w}} "
                     f"{vb:>{w}} {eff:>{w}}  {ci:<{wc}} {test:<9} {p:>7} {pa:>7}{flag}")
    for t in res.transitions:
        moved = sum(x["n"] for x in t["answers"] if x["a"] != x["b"])
        total = sum(x["n"] for x in t["answers"])
        lines += ["", f"answers {t['task']} / {t['condition']}: {moved} of {total} changed"]
        for x in t.get("labels") or t["answers"]:
            if x["a"] != x["b"]:
                lines.append(f"  {x['a']} -> {x['b']}: {x['n']}")
    if any(c.get("p_method", "").startswith("sign_flip") for c in res.comparisons):
        lines.append("(flip-ex / flip-mc: the p-value of a sign-flip test over the resampling units, exact or "
                     "Monte Carlo; valid with few units)")
    for g in res.gates:
        lines.append(f"gate {g['gate']}: {'FAILED' if g['failed'] else 'ok'}"
                     + (f" ({len(g['where'])} case(s))" if g["failed"] else ""))
    lines += [f"warning: {w}" for w in res.warnings]
    # every name above comes from the two folders: a newline or an escape code in one stays on its line, as text
    return "\n".join(for_terminal(line) for line in lines)
