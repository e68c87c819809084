#!/usr/bin/env python3
"""Print a report's families, comparisons and differences between models as Markdown tables, for
``docs/results-smollm2-135m.md`` and ``docs/studies.md``, so that their numbers can be regenerated from a run
rather than copied by hand.

    python scripts/study_tables.py reports/global_opinions            # every family, comparison, contrast
    python scripts/study_tables.py reports/ccai --only bias_ambiguous_by,bias_disambiguated_by,accuracy_disambiguated

Reads ``report.json`` only (standard library).  Each cell is ``value [CI low, CI high]`` with three decimals; a
ranked family adds each member's rank and its interval, ``*`` marks a number with a flag (few resampling units,
degenerate answers, ...; the report says which).  Rows of a ranked family are in the order of their rank in the
first condition.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _num(x) -> str:
    return "–" if x is None else f"{x:+.3f}"


def _p(p) -> str:
    return "–" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}")


def _cell(value, lo, hi, flags) -> str:
    star = "*" if flags else ""
    if value is None:
        return "undefined" + star
    ci = f" [{_num(lo)}, {_num(hi)}]" if lo is not None and hi is not None else " (no interval)"
    return f"{_num(value)}{ci}{star}"


def _wanted(name: str, only: set[str] | None) -> bool:
    return only is None or name in only or name.split("[", 1)[0] in only


def families(report: dict, only: set[str] | None) -> list[str]:
    out = []
    ests = [e for e in report["estimates"] if not e.get("group")]
    models = list(dict.fromkeys(e.get("model") for e in ests))
    for model in models:
        mine = [e for e in ests if e.get("model") == model]
        fams: dict[tuple[str, str], list[dict]] = {}
        for e in mine:
            key = (e["task"], e.get("family") or e["metric"])
            if _wanted(e["metric"], only):
                fams.setdefault(key, []).append(e)
        for (task, fam), es in fams.items():
            conds = list(dict.fromkeys(e["condition"] for e in es))
            rows = list(dict.fromkeys(e["metric"] for e in es))
            ranked = any(e.get("rank") for e in es)
            if ranked:
                first = {e["metric"]: (e.get("rank") or {}).get("rank") or 10 ** 6 for e in es
                         if e["condition"] == conds[0]}
                rows.sort(key=lambda m: first.get(m, 10 ** 6))
            by = {(e["metric"], e["condition"]): e for e in es}
            title = f"{task} · {fam}" + (f" · model {model}" if model else "")
            out.append(f"**{title}**\n")
            out.append("| member | " + " | ".join(conds) + " |")
            out.append("|---|" + "---|" * len(conds))
            for m in rows:
                cells = []
                for c in conds:
                    e = by.get((m, c))
                    if e is None:
                        cells.append("")
                        continue
                    text = _cell(e["value"], e.get("ci_low"), e.get("ci_high"), e.get("flags"))
                    r = e.get("rank")
                    if r:
                        iv = f"[{r['ci_low']}, {r['ci_high']}]" if r.get("ci_low") is not None else "(no interval)"
                        text += f", rank {r['rank']} {iv}"
                    cells.append(text)
                label = m.split("[", 1)[1][:-1] if "[" in m else m
                out.append(f"| {label} | " + " | ".join(cells) + " |")
            out.append("")
    return out


def comparisons(report: dict, only: set[str] | None) -> list[str]:
    cmps = [c for c in report["comparisons"] if not c.get("group") and _wanted(c["metric"], only)]
    if not cmps:
        return []
    out = ["**comparisons (treatment − baseline, paired)**\n",
           "| task | metric | comparison | effect [95% CI] | p (adjusted) |", "|---|---|---|---|---|"]
    for c in cmps:
        p = c.get("p_adjusted")
        out.append(f"| {c['task']} | {c['metric']} | {c['treatment']} − {c['baseline']} | "
                   f"{_cell(c.get('effect'), c.get('ci_low'), c.get('ci_high'), c.get('flags'))} | "
                   f"{_p(p)} |")
    return out + [""]


def model_differences(report: dict, only: set[str] | None) -> list[str]:
    res = [r for r in ((report.get("across") or {}).get("results") or [])
           if r["kind"] == "model_difference" and not r.get("group") and _wanted(r["metric"], only)]
    if not res:
        return []
    out = ["**differences between models (paired)**\n",
           "| task | metric | contrast | effect [95% CI] | test | p (adjusted) |", "|---|---|---|---|---|---|"]
    for r in res:
        p = r.get("p_adjusted")
        test = r["test"]
        eq = r.get("equivalence")
        if eq:
            verdict = "equivalent" if eq.get("equivalent") else "not shown equivalent"
            lo, hi = eq.get("interval") or [None, None]
            test += f": {verdict} within ±{eq['margin']} ({round(100 * eq['interval_level'])}% interval " \
                    f"[{_num(lo)}, {_num(hi)}])"
        out.append(f"| {r['task']} | {r['metric']} | {r['model']} − {r['baseline_model']} in {r['condition']} | "
                   f"{_cell(r.get('effect'), r.get('ci_low'), r.get('ci_high'), r.get('flags'))} | {test} | "
                   f"{_p(p)} |")
    return out + [""]


def dropped(report: dict) -> list[str]:
    d = report.get("dropped") or {}
    lines = []
    for name, reasons in (d.get("datasets") or {}).items():
        for reason, n in reasons.items():
            lines.append(f"| dataset {name} | {reason} | {n} |")
    for name, cols in (d.get("entries") or {}).items():
        for col, reasons in cols.items():
            for reason, n in reasons.items():
                lines.append(f"| dataset {name}, entries of {col} | {reason} | {n} |")
    return (["**dropped**\n", "| where | reason | n |", "|---|---|---|"] + lines + [""]) if lines else []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="a report directory (or its report.json)")
    ap.add_argument("--only", help="comma-separated metric or family names (default: all)")
    args = ap.parse_args(argv)
    path = args.report / "report.json" if args.report.is_dir() else args.report
    report = json.loads(path.read_text(encoding="utf-8"))
    only = set(args.only.split(",")) if args.only else None
    print("\n".join(families(report, only) + comparisons(report, only) + model_differences(report, only)
                    + dropped(report)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
