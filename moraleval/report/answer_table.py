"""The report's answer table: how often each answer was read out per task × condition (× model), keyed both by
its value and by what the model was shown (the chosen option's text as presented, its place in the list), and
the flags those earn (``moraleval.measurement.flags.answer_flags``).

From report.json's ``answer_distribution`` when it has the presented options (``joint``), else counted from the
samples; a value is labelled with its option text ("(c) = 2") only where it was shown as that one text in every
item, so options that move between items (per-row option columns, ``rotate``) are never labelled with the first
row's letters.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

__all__ = ["answer_distribution", "answer_of", "answer_rows", "degenerate_by_cell", "fixed_labels"]


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    return None


def _ix(seq: Sequence[Any], v: Any) -> tuple[int, str]:
    return (seq.index(v), "") if v in seq else (len(seq), str(v))


def answer_of(sample: Mapping[str, Any]) -> Any:
    readout = sample.get("readout") or {}
    return readout.get(sample.get("choice")) if isinstance(readout, Mapping) else None


def _fl() -> Any:
    """moraleval.measurement.flags, imported when a page is rendered: importing it loads the measure stage (scipy,
    statsmodels), which ``import moraleval.report`` (verify, the report directory's name) does not need."""
    from moraleval.measurement import flags

    return flags


def _chosen_position(sample: Mapping[str, Any]) -> int | None:
    """Where in the list of options the read-out answer was (the first of tied maxima, as the read-out takes)."""
    lps = sample.get("logprobs")
    probs = (sample.get("readout") or {}).get("probs") if isinstance(sample.get("readout"), Mapping) else None
    scores = probs if isinstance(probs, list) and probs else lps
    if not isinstance(scores, list) or not scores:
        return None
    vals = [_num(v) for v in scores]
    if any(v is None for v in vals):
        return None
    best = max(vals)  # type: ignore[type-var]
    return vals.index(best)


def answer_distribution(report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]], *,
                        task_order: Sequence[str] = (), condition_order: Mapping[str, Sequence[str]] | None = None
                        ) -> list[dict[str, Any]]:
    """report.json's ``answer_distribution`` when it has one, else counted from the samples: per task ×
    condition (× model), how often each answer was read out, and through which option as shown (its text and
    its place in the list)."""
    given = [d for d in report.get("answer_distribution") or () if isinstance(d, Mapping)]
    # a report from before the presented options were counted (no ``joint``) is recounted from its samples
    if given and (not samples or all("joint" in d for d in given)):
        return [{"model": None, **dict(d)} for d in given]
    rows: dict[tuple, int] = {}
    rotated = set()
    key_of = _fl().answer_key
    for s in samples:
        if (s.get("readout") or {}).get("status", "ok") != "ok":
            continue
        a = answer_of(s)
        p = _chosen_position(s)
        choices = s.get("choices") or []
        option = str(choices[p]).strip() or str(choices[p]) if p is not None and p < len(choices) else None
        key = (s.get("task"), s.get("condition"), s.get("model"), key_of(a), option,
               p + 1 if p is not None else None)
        rows[key] = rows.get(key, 0) + 1
        if s.get("rotation") is not None:
            rotated.add((s.get("task"), s.get("condition")))
    condition_order = condition_order or {}
    cells = [{"model": None, **d} for d in _fl().answer_distribution(((*k, m) for k, m in rows.items()),
                                                                   rotated=rotated)]
    return sorted(cells, key=lambda d: (_ix(list(task_order), d["task"]),
                                        _ix(list(condition_order.get(d["task"], [])), d["condition"]),
                                        str(d["model"])))


def fixed_labels(samples: Sequence[Mapping[str, Any]]) -> dict[tuple, dict[str, str]]:
    """Per (task, condition): answer value -> its option text, only where that value was shown as that one text
    in every sample of the condition and that text always meant that value (a fixed list such as [" (a)", " (b)",
    " (c)"]); options that move between items (per-row columns, rotation) get no label: they are counted apart."""
    seen: dict[tuple, dict[str, set]] = {}
    back: dict[tuple, dict[str, set]] = {}
    key_of = _fl().answer_key
    done: set[tuple] = set()  # (task, condition, the options and their values) already counted: most rows repeat
    for s in samples:
        try:
            sig = (s.get("task"), s.get("condition"), tuple(map(str, s.get("choices") or ())),
                   tuple((type(v).__name__, v) for v in s.get("choice_values") or ()))
            if sig in done:
                continue
            done.add(sig)
        except TypeError:  # an unhashable value (a list, a record): counted every time
            pass
        for cell in ((s.get("task"), s.get("condition")), (s.get("task"), _ALL)):
            fwd, rev = seen.setdefault(cell, {}), back.setdefault(cell, {})
            for v, c in zip(s.get("choice_values") or [], s.get("choices") or []):
                k, text = key_of(v), str(c).strip() or str(c)
                fwd.setdefault(k, set()).add(text)
                rev.setdefault(text, set()).add(k)
    out: dict[tuple, dict[str, str]] = {}
    for cell, fwd in seen.items():
        if all(len(t) == 1 for t in fwd.values()) and all(len(v) == 1 for v in back[cell].values()):
            out[cell] = {k: next(iter(t)) for k, t in fwd.items()}
    return out


_ALL = "all conditions"  # the answer table's row that sums a task's conditions
_MAX_CELLS = 8  # answers (or options) listed per row of the answer table; the rest summed as "others"


def _ordinal(place: str) -> str:
    n = int(place) if str(place).isdigit() else 0
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}" if n else str(place)


def _cells(counts: Mapping[str, int], n: int, label: Any = None) -> list[dict[str, Any]]:
    """The most frequent entries of ``counts`` (then the rest as one "others"), each with its share of ``n``."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    top, rest = ranked[:_MAX_CELLS], ranked[_MAX_CELLS:]
    if len(ranked) <= _MAX_CELLS + 1:
        top, rest = ranked, []
    out = [{"answer": label(a) if label else a, "count": k, "share": f"{100 * k / n:.0f}%" if n else "–"}
           for a, k in top]
    if rest:
        k = sum(v for _a, v in rest)
        out.append({"answer": f"{len(rest)} others", "count": k, "share": f"{100 * k / n:.0f}%" if n else "–"})
    return out


def _relabels(joint: Sequence[Any], a: int, b: int) -> bool:
    """Whether column ``a`` and column ``b`` of the entry's joint counts are one-to-one (one names the other)."""
    fwd: dict[str, set] = {}
    rev: dict[str, set] = {}
    for row in joint:
        if not isinstance(row, (list, tuple)) or len(row) != 4:
            return False
        fwd.setdefault(str(row[a]), set()).add(str(row[b]))
        rev.setdefault(str(row[b]), set()).add(str(row[a]))
    return all(len(v) == 1 for v in fwd.values()) and all(len(v) == 1 for v in rev.values())


def _with_totals(dists: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The entries, and after each task (× model) with several conditions a row "all conditions" that sums them
    (a position preference read over the whole task: " (B)" in 72 of 72 items)."""
    out: list[dict[str, Any]] = []
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for d in dists:
        groups.setdefault((d.get("task"), d.get("model") or None), []).append(d)
    for (task, model), ds in groups.items():
        out.extend(dict(d) for d in ds)
        if len(ds) < 2:
            continue
        total: dict[str, Any] = {"task": task, "condition": _ALL, "model": model, "total": True,
                                 "n": sum(int(d.get("n") or 0) for d in ds)}
        for field in ("counts", "options", "positions"):
            acc: dict[str, int] = {}
            for d in ds:
                for k, v in (d.get(field) or (d.get("letters") if field == "options" else None) or {}).items():
                    acc[k] = acc.get(k, 0) + int(v)
            if acc:
                total[field] = acc
        joint: dict[tuple, int] = {}
        complete = all(d.get("joint") and not d.get("joint_left_out") for d in ds)
        for d in ds if complete else ():
            for a, o, p, k in d.get("joint"):
                joint[(a, o, p)] = joint.get((a, o, p), 0) + int(k)
        if complete:
            total["joint"] = [[a, o, p, k] for (a, o, p), k in joint.items()]
        out.append(total)
    return out


def answer_rows(dists: Sequence[Mapping[str, Any]], fixed: Mapping[tuple, Mapping[str, str]],
                 degenerate: Mapping[tuple, Sequence[Mapping[str, str]]]) -> list[dict[str, Any]]:
    """The answer table: per task × condition (× model), the answers by value (labelled with their option text
    where each value was always shown as one text), the options as shown and the places in the list where they
    say something the values do not, and the flags."""
    rows = []
    for d in _with_totals(dists):
        n = int(d.get("n") or 0)
        cell = (d.get("task"), d.get("condition"))
        joint = d.get("joint") or []
        options = d.get("options") or d.get("letters") or {}
        positions = d.get("positions") or {}
        labels = dict(fixed.get(cell) or {})
        if joint and not d.get("joint_left_out") and _relabels(joint, 0, 1):
            labels = {str(a): str(o) for a, o, _p, _k in joint if o is not None}
        same_options = bool(labels) or not options
        same_places = not positions or (bool(joint) and not d.get("joint_left_out")
                                        and (_relabels(joint, 0, 2) or (not same_options and _relabels(joint, 1, 2))))
        if not joint and positions:
            same_places = True  # a report from before ``joint``: nothing to relate the places to
        answer = (lambda a, lab=labels: f"{lab[a]} = {a}" if a in lab and lab[a] != a else a)
        flags = list(degenerate.get((d.get("task"), d.get("condition"), d.get("model") or None), ()))
        if d.get("total"):
            flags = [dict(f) for f in _fl().answer_flags(d)]
        rows.append({**d, "n": n, "cells": _cells(d.get("counts") or {}, n, answer),
                     "shown": None if same_options else _cells(options, n),
                     "places": None if same_places else _cells(positions, n, _ordinal),
                     "flags": flags, "degenerate": bool(flags),
                     "total": bool(d.get("total"))})
    return rows


def degenerate_by_cell(dists: Sequence[Mapping[str, Any]]) -> dict[tuple, list[dict[str, str]]]:
    """(task, condition, model) -> the flags its answers earn: as the measure stage judged them (the entry's
    ``flags``), or for a report from before them, judged now on what the entry holds."""
    out = {}
    for d in dists:
        flags = d.get("flags") if isinstance(d.get("flags"), list) else _fl().answer_flags(d)
        flags = [dict(f) for f in flags if isinstance(f, Mapping) and f.get("code") and f.get("message")]
        if flags:
            out[(d.get("task"), d.get("condition"), d.get("model") or None)] = flags
    return out


