"""Plan: a checked spec -> ``Plan``, the flat, deterministic list of model requests and the items that use them.

Every prompt is rendered here, once, so ``moraleval plan --show`` displays exactly what the model will get,
and the run stage only sends what the plan says.
"""

from __future__ import annotations

from typing import Any

import attrs
import jinja2
import jinja2.meta

from moraleval.language import nodes as n
from moraleval.language import templating
from moraleval.checker import CheckedSpec, ResolvedCondition, RowEnv, gc_paused
from moraleval.language.nodes import ROW_ID, VARIANT
from moraleval.errors import PlanError
from moraleval.language.exprjson import to_json
from moraleval.plan.types import (BootstrapPlan, ComparisonPlan, GenerateStep, ItemValuePlan, MetricPlan, Plan,
                                  PlanItem, PlanRequest, PlanTurn)
from moraleval.language.rowexpr import EvalError, compile_expr
from moraleval.language.vocabulary import CHOICE, FUNCTIONS


def _names(e: Any, out: set[str]) -> set[str]:
    """The item columns a formula reads (a choice function's first argument is the choice, not a column; a
    regression's random-effect group is one)."""
    if isinstance(e, n.Name):
        out.add(e.name)
    elif isinstance(e, n.RandomGroup):
        out.add(e.group)
        _names(e.terms, out)
    elif isinstance(e, n.Call):
        f = FUNCTIONS.get(e.func)
        for i, a in enumerate(e.args):
            if f is not None and f.kind == CHOICE and i == 0:
                continue
            _names(a, out)
        if e.where is not None:
            _names(e.where, out)
    elif attrs.has(type(e)):
        for a in attrs.fields(type(e)):
            v = getattr(e, a.name)
            if isinstance(v, tuple):
                for x in v:
                    _names(x, out)
            elif attrs.has(type(v)):
                _names(v, out)
    return out


def _json_value(v: Any) -> Any:
    """Item values must be plain JSON (the plan and samples.jsonl are JSON)."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    return str(v)


class _ConditionRenderer:
    """Renders one condition's turns for a row; a template's text is shared across conditions with equal lets."""

    def __init__(self, checked: CheckedSpec, cond: ResolvedCondition, shared_cache: dict) -> None:
        self.cond = cond
        self.base = {**checked.consts, **cond.lets}
        self.options = compile_expr(cond.choose.options)
        self.values = compile_expr(cond.choose.values) if cond.choose.values is not None else None
        env = checked.environment
        lets_key = repr(sorted(cond.lets.items()))
        self.turns: list[tuple[str, _Render | None, str, n.GenerateSpec | None, tuple]] = []
        for turn in cond.turns:
            if isinstance(turn.content, n.Name):
                name = turn.content.name
                render = shared_cache.get(("template", name))
                if render is None:
                    render = shared_cache[("template", name)] = _Render(
                        env, checked.templates[name], checked.template_sources[name])
                text = None
                key = (name, lets_key)
            else:
                text = turn.content.value
                render = None
                if "{" in text:
                    render = shared_cache.get(("inline", text))
                    if render is None:
                        render = shared_cache[("inline", text)] = _Render(env, templating.compile_template(env, text),
                                                                          text)
                key = (text, lets_key)
            self.turns.append((turn.role, render, text, turn.generate, key))

    def render(self, row: dict[str, Any], row_cache: dict) -> list[PlanTurn]:
        out = []
        for role, render, text, gen, key in self.turns:
            if render is not None:
                rendered = row_cache.get(key)
                if rendered is None:
                    rendered = row_cache[key] = render(row, self.base, self.cond.lets)
            else:
                rendered = text
            step = None
            if gen is not None:
                step = GenerateStep(gen.name, gen.max_tokens, gen.temperature, gen.top_p, gen.seed, gen.stop)
            out.append(PlanTurn(role, rendered, step))
        return out


_Render = templating.Renderer  # a compiled template handed only the variables it uses, under the render limits


def _presentations(row: dict[str, Any], rotate: tuple[str, ...], row_cache: dict):
    """``(rotation, row as shown, render cache)`` per presentation of the row: the row itself once, or, for
    ``choose ... rotate c0, c1, ..., c(k-1)``, each of the k cyclic rotations, where rotation r shows column
    c((i + r) mod k) in the place of c(i); for ``rotate c`` with one column holding a list of k elements, rotation
    r shows element (i + r) mod k in place i (k may differ from row to row).  Rotation 0 is the row as written (its
    prompts equal the uncounterbalanced ones, so they share cached answers)."""
    if not rotate:
        yield None, row, row_cache
        return
    listed = row.get(rotate[0]) if len(rotate) == 1 else None
    k = len(listed) if isinstance(listed, list) else len(rotate)
    for r in range(k):
        if r == 0:
            yield 0, row, row_cache
            continue
        shown = dict(row)
        if isinstance(listed, list):
            shown[rotate[0]] = [listed[(i + r) % k] for i in range(k)]
        else:
            for i, col in enumerate(rotate):
                shown[col] = row.get(rotate[(i + r) % k])
        yield r, shown, row_cache.setdefault(("\0rotation", r), {})


def _rotated_count(row: dict[str, Any], rotate: tuple[str, ...]) -> int:
    """How many places a row's rotation moves: the rotated columns, or the elements of one rotated list."""
    listed = row.get(rotate[0]) if len(rotate) == 1 else None
    return len(listed) if isinstance(listed, list) else len(rotate)


def compile_plan(checked: CheckedSpec) -> Plan:
    """Expand every task × condition × dataset row into items and unique requests (first-seen order)."""
    with gc_paused():
        return _compile_plan(checked)


def _compile_plan(checked: CheckedSpec) -> Plan:
    requests: dict[str, PlanRequest] = {}
    items: list[PlanItem] = []
    tasks_info: dict[str, dict[str, Any]] = {}
    metric_columns: dict[str, set[str]] = {}
    for m in checked.metrics:
        metric_columns.setdefault(m.task, set()).update(_names(m.expr, set()))
    inline_cache: dict = {}
    for task in checked.tasks.values():
        unit_cols = checked.task_units[task.name]
        ds = checked.datasets[task.dataset]
        chooses = {c.choose.name for c in task.conditions}
        wanted = sorted((metric_columns.get(task.name, set()) | set(checked.report_by) | set(unit_cols)
                         | {ROW_ID}) - chooses)
        missing = [c for c in wanted if ds.columns and c not in ds.columns]
        if missing:
            raise PlanError(f"task '{task.name}': columns {missing} are not in dataset '{ds.name}'")
        renderers = [_ConditionRenderer(checked, c, inline_cache) for c in task.conditions]
        per_condition = {c.name: {"items": 0, "new_requests": 0, "prompt_chars": 0} for c in task.conditions}
        for row in ds.rows:
            row_cache: dict = {}
            values = {c: _json_value(row.get(c)) for c in wanted}
            unit = "|".join(str(row.get(c)) for c in unit_cols) if unit_cols else str(row[ROW_ID])
            for renderer in renderers:
                cond = renderer.cond
                for rotation, shown, cache in _presentations(row, cond.choose.rotate, row_cache):
                    try:
                        turns = renderer.render(shown, cache)
                    except jinja2.TemplateError as exc:
                        raise templating.row_failure(exc, task.name, cond.name, row, ds) from None
                    try:
                        # the options as shown (they may be the rotated columns themselves); the values of the
                        # original row, rotated with them, so that an answer keeps its meaning in every rotation
                        options = renderer.options(RowEnv(shown, renderer.base))
                        env = RowEnv(row, renderer.base)
                        option_values = list(renderer.values(env) if renderer.values is not None
                                             else range(len(options)))
                    except EvalError as exc:
                        raise PlanError(f"task '{task.name}', condition '{cond.name}', row {row[ROW_ID]}: "
                                        f"choose failed: {exc}") from None
                    if len(option_values) != len(options):
                        raise PlanError(f"task '{task.name}', condition '{cond.name}', row {row[ROW_ID]}: "
                                        f"{len(options)} options but {len(option_values)} values")
                    if rotation is not None:
                        if len(options) != _rotated_count(row, cond.choose.rotate):
                            raise PlanError(f"task '{task.name}', condition '{cond.name}', row {row[ROW_ID]}: "
                                            f"{len(options)} options but {_rotated_count(row, cond.choose.rotate)} "
                                            f"rotated places")
                        option_values = option_values[rotation:] + option_values[:rotation]
                    req = PlanRequest(task.format, tuple(turns), tuple(options))
                    stats = per_condition[cond.name]
                    if req.key not in requests:
                        requests[req.key] = req
                        stats["new_requests"] += 1
                        stats["prompt_chars"] += sum(len(t.text) for t in turns)
                    stats["items"] += 1
                    items.append(PlanItem(task.name, cond.name, row[ROW_ID], row[VARIANT], unit, req.key,
                                          cond.choose.name, tuple(_json_value(v) for v in option_values), values,
                                          rotation))
        tasks_info[task.name] = {
            "dataset": task.dataset,
            "format": task.format,
            "unit": list(unit_cols) or [ROW_ID],
            "conditions": [{"name": c.name, "extends": list(c.chain[1:]), "lets": _json_value(c.lets),
                            "choose": c.choose.name, "normalize": c.choose.normalize,
                            "generate_steps": [t.generate.name for t in c.turns if t.generate is not None],
                            **({"rotate": list(c.choose.rotate)} if c.choose.rotate else {}),
                            **per_condition[c.name]}
                           for c in task.conditions],
        }
    metrics = tuple(MetricPlan(m.name, m.task, to_json(m.expr), m.formula, family=m.family, member=m.member,
                               test=m.test, correction=m.correction,
                               parts=tuple(to_json(x) for x in m.parts) if m.parts else None, items=m.items,
                               ranked=m.ranked)
                    for m in checked.metrics)
    item_values = tuple(ItemValuePlan(i.name, i.task, to_json(i.expr), i.formula) for i in checked.item_values)
    comparisons = []
    for family, cmp in enumerate(checked.comparisons):
        combos = getattr(cmp, "combos", ()) or [(t, b, m) for m in cmp.metrics for t, b in cmp.pairs]
        for treatment, baseline, metric in combos:
            comparisons.append(ComparisonPlan(treatment, baseline, metric, cmp.test, cmp.correction, family,
                                              models=getattr(cmp, "models", False),
                                              margin=getattr(cmp, "margin", None)))
    b = checked.bootstrap
    datasets = {}
    for name, ds in checked.datasets.items():
        datasets[name] = {"rows_read": ds.rows_read, "rows": len(ds.rows), "dropped": dict(sorted(ds.dropped.items())),
                          **({"entries_dropped": {c: dict(sorted(r.items())) for c, r in ds.entries_dropped.items()}}
                             if ds.entries_dropped else {}),
                          "files": sorted(ds.files_read), "joins": ds.joins,
                          **({"expanded_from": ds.expanded_from, "expansions": [dict(e) for e in ds.expansions]}
                             if ds.expanded_from is not None else {})}
    data_files = {}
    for ds in checked.datasets.values():
        data_files.update(ds.files_read)
    return Plan(
        spec_path=checked.source.path, spec_sha256=checked.spec_sha256, study=checked.study,
        params=_json_value(checked.params), data_root=str(checked.data_root) if checked.data_root else "",
        data_files=data_files, datasets=datasets, tasks=tasks_info, requests=tuple(requests.values()),
        items=tuple(items), metrics=metrics,
        bootstrap=BootstrapPlan(b.resamples, b.seed, b.unit, b.method, b.level),
        comparisons=tuple(comparisons), report_by=checked.report_by,
        models={k: {**v, "settings": _json_value(v["settings"])} for k, v in checked.models.items()},
        run=_json_value(checked.run_settings),
        imports=checked.imports,
        model_sets=_json_value(getattr(checked, "model_sets", {})),
        item_values=item_values,
    )
