"""`moraleval plan SPEC`: the evaluation plan before anything runs: counts per task and condition, the exact
prompts (``--show N``), the expected wall time, the plan as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from moraleval.cli.options import add_data_options, count, to_stderr
from moraleval.errors import MoralevalError

NAME = "plan"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(NAME, help="compile a spec into its evaluation plan and summarise it",
                       description="Compile a spec into the flat list of model requests: counts per condition "
                                   "and task, unique requests, estimated prompt tokens, dropped rows. "
                                   "--show N prints N fully rendered prompts; --json FILE writes the plan.")
    p.add_argument("spec", metavar="SPEC")
    add_data_options(p)
    p.add_argument("--show", type=count(0), default=0, metavar="N", help="print N rendered prompts per condition")
    p.add_argument("--json", dest="json_out", metavar="FILE", help="write the plan as JSON ('-' for stdout)")
    p.add_argument("--model", help="model to render chat prompts with (default: the spec's default model)")
    p.set_defaults(func=command)


def estimate_tokens(chars: int) -> int:
    """≈ 4 characters per token for English BPE vocabularies; the run reports exact counts."""
    return (chars + 3) // 4


def command(args: argparse.Namespace) -> int:
    from moraleval.pipeline import load_plan

    checked, plan = load_plan(args.spec, args.data, args.overrides, log=to_stderr)
    if args.json_out:
        text = json.dumps(plan.to_json(), indent=1, ensure_ascii=False, sort_keys=False)
        if args.json_out == "-":
            print(text)
            return 0
        Path(args.json_out).write_text(text + "\n", encoding="utf-8")
    print(summarise_plan(plan, checked))
    if plan.models:  # the expected wall time, from the rates the default model's last run recorded
        from moraleval.execute.cache import default_cache_dir
        from moraleval.execute.eta import projection_text
        from moraleval.pipeline import select_model

        print(projection_text(plan, select_model(plan, getattr(args, "model", None))[1], default_cache_dir()))
    if args.show:
        print(show_prompts(plan, args.show, args.model))
    if args.json_out:
        print(f"plan written to {args.json_out}")
    return 0


def summarise_plan(plan, checked) -> str:
    lines = [f"study: {plan.study}", f"spec: {plan.spec_path} (sha256 {plan.spec_sha256[:12]}…)"]
    if plan.params:
        lines.append("params: " + ", ".join(f"{k}={json.dumps(v)}" for k, v in plan.params.items()))
    lines.append(f"data root: {plan.data_root or '(none)'} ({checked.data_root_reason})")
    for name, ds in plan.datasets.items():
        dropped = ", ".join(f"{n} {reason}" for reason, n in ds["dropped"].items()) or "none"
        lines.append(f"dataset {name}: {ds['rows_read']} rows read from {len(ds['files'])} file(s), "
                     f"{ds['rows']} kept; dropped: {dropped}")
        for column, reasons in (ds.get("entries_dropped") or {}).items():  # entries removed inside the cells
            lines.append(f"  entries of {column} dropped: "
                         + ", ".join(f"{n} {reason}" for reason, n in reasons.items()))
        for jname, j in ds["joins"].items():
            state = "present" if j["present"] else "absent (its columns are none)"
            extra = f", {j['unmatched']} rows without a match" if j.get("unmatched") else ""
            lines.append(f"  join {jname}: {j['file']} {state}{extra}")
        for e in ds.get("expansions") or ():  # one line per expand, in order: the rows before and after each
            lines.append(f"  expand {e['column']} ({e['values']} value{'s' if e['values'] != 1 else ''}): "
                         f"{e['rows_before']} rows -> {e['rows_after']}")
        if "expanded_from" in ds and not ds.get("expansions"):
            lines.append(f"  counterfactual expansion: {ds['expanded_from']} rows -> {ds['rows']}")
    header = f"{'task':<16} {'condition':<18} {'items':>8} {'new requests':>13} {'≈ prompt tokens':>16} steps"
    lines += ["", header, "-" * len(header)]
    total_tokens = 0
    for tname, task in plan.tasks.items():
        for c in task["conditions"]:
            tokens = estimate_tokens(c["prompt_chars"])
            total_tokens += tokens
            steps = " + ".join([f"generate {s}" for s in c["generate_steps"]] + [f"score {c['choose']}"])
            lines.append(f"{tname:<16} {c['name']:<18} {c['items']:>8} {c['new_requests']:>13} {tokens:>16,} {steps}")
    lines.append("-" * len(header))
    n_gen = sum(len(r.generate_steps) for r in plan.requests)
    lines.append(f"{'total':<35} {len(plan.items):>8} {len(plan.requests):>13} {total_tokens:>16,}")
    lines.append(f"unique requests: {len(plan.requests)} ({len(plan.items) - len(plan.requests)} duplicates merged); "
                 f"generate steps: {n_gen}; scoring calls: {len(plan.requests)}")
    lines.append("metrics: " + ", ".join(f"{m.name} [{m.task}]" for m in plan.metrics))
    if plan.item_values:  # written per item into samples.jsonl (readout.items)
        lines.append("per-item values in samples.jsonl: "
                     + ", ".join(f"{i.name} = {i.formula} [{i.task}]" for i in plan.item_values))
    b = plan.bootstrap
    units = "; ".join(f"{t}: {','.join(info.get('unit') or ['row'])}" for t, info in plan.tasks.items())
    lines.append(f"bootstrap: {b.resamples} resamples, {b.method}, level {b.level}, seed {b.seed}; "
                 f"resampling unit per task: {units}")
    if plan.comparisons:
        lines.append(f"comparisons: {len(plan.comparisons)} "
                     f"({', '.join(sorted({f'{c.test}/{c.correction}' for c in plan.comparisons}))})")
    default = next((k for k, v in plan.models.items() if v.get("default")), next(iter(plan.models), ""))
    lines.append("models: " + ", ".join(f"{k} ({v['backend']}){' [default]' if k == default else ''}"
                                         for k, v in plan.models.items()))
    return "\n".join(lines)


def _renderer(plan, model: str | None):
    """A function Prompt -> exact text, from the model's backend where it can render chat templates."""
    from moraleval.backend.registry import backend_factory

    name = model or next((k for k, v in plan.models.items() if v.get("default")), None)
    if name is None or name not in plan.models:
        return None, None
    m = plan.models[name]
    try:
        factory = backend_factory(m["backend"])
    except MoralevalError:
        return None, name
    import inspect

    # a backend may offer a cheap `render_prompt(prompt, **settings)` (class or module level) that applies the
    # model's chat template without loading the model
    render = getattr(factory, "render_prompt", None) or getattr(inspect.getmodule(factory), "render_prompt", None)
    if render is None:
        return None, name
    accepted = inspect.signature(render).parameters
    settings = {k: v for k, v in m["settings"].items() if k in accepted}
    return (lambda prompt: render(prompt, **settings)), name


def show_prompts(plan, per_condition: int, model: str | None) -> str:
    render, name = _renderer(plan, model)
    out = []
    by_key = plan.request_by_key()
    for tname, task in plan.tasks.items():
        for c in task["conditions"]:
            shown = 0
            for item in plan.items:
                if item.task != tname or item.condition != c["name"]:
                    continue
                req = by_key[item.request]
                out.append(f"\n=== {tname} / {c['name']} / row {item.row}"
                           + (f" variant {item.variant}" if item.variant else "") + f" / request {req.key[:12]}")
                placeholders = {s.name: f"<{s.name}: generated by the model at run time>"
                                for _, s in req.generate_steps}
                for i, (turn_index, step) in enumerate(req.generate_steps):
                    gen = req.generate_request(i, placeholders)
                    out.append(f"--- step {i + 1}: generate '{step.name}' (max_tokens {step.max_tokens}, "
                               f"temperature {step.temperature}, seed {step.seed}) from:")
                    out.append(_prompt_text(gen.prompt, render))
                sr = req.score_request(placeholders)
                out.append(f"--- score {item.choice}: options {list(req.choices)} "
                           f"(values {list(item.choice_values)}) after:")
                out.append(_prompt_text(sr.prompt, render))
                shown += 1
                if shown >= per_condition:
                    break
    chat = any(task["format"] == "chat" for task in plan.tasks.values())
    if chat and render is None:
        out.append("\n(chat prompts are shown as turns; the model's chat template renders them"
                   + (f" — model '{name}' cannot render them here)" if name else ")"))
    elif chat:
        out.append(f"\n(chat prompts rendered exactly as model '{name}' sees them)")
    return "\n".join(out)


def _prompt_text(prompt, render) -> str:
    if prompt.text is not None:
        return prompt.text
    if render is not None:
        try:
            return render(prompt)
        except MoralevalError as exc:
            return f"(cannot render with the model's chat template: {exc.message})\n" + _turns(prompt)
    return _turns(prompt)


def _turns(prompt) -> str:
    return "\n".join(f"[{m.role}] {m.content}" for m in prompt.messages)
