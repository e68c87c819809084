"""`moraleval SPEC`: the whole pipeline in order — check, plan, run (cached, resumable), measure, report.

Only orchestration lives here; each stage is its own module and is called exactly once.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from moraleval.errors import MoralevalError


def select_model(plan, name: str | None) -> tuple[str, dict[str, Any]]:
    if name is None:
        name = next((k for k, v in plan.models.items() if v.get("default")), None) or next(iter(plan.models))
    if name not in plan.models:
        from moraleval.checker import did_you_mean

        raise MoralevalError(f"--model {name}: the spec declares no such model",
                             hint=did_you_mean(name, plan.models) or "models: " + ", ".join(plan.models))
    return name, plan.models[name]


def run_spec(args) -> int:
    from moraleval.cache import ResponseCache
    from moraleval.cli import load_plan
    from moraleval.measure import measure
    from moraleval.ray_executor import make_executor_backend, runner_batch_size
    from moraleval.report import write_report
    from moraleval.runner import DEFAULT_BATCH_SIZE, run_plan

    checked, plan = load_plan(args.spec, args.data, args.overrides)
    model_name, model = select_model(plan, args.model)
    if not args.dry_run:  # a bad --out is found before any request runs, not after all of them
        from moraleval.outdir import prepare_out_dir
        from moraleval.report import default_report_dir

        args.out = str(prepare_out_dir(args.out if args.out is not None else default_report_dir(plan)))
    print(f"{plan.study}: {len(plan.items)} items, {len(plan.requests)} unique requests; "
          f"model '{model_name}' ({model['backend']})", file=sys.stderr)
    # command-line flags override the spec's `run { ... }` settings
    run = dict(plan.run)
    executor = args.executor or run.get("executor", "local")
    batch_size = args.batch_size or run.get("batch_size") or DEFAULT_BATCH_SIZE
    backend = make_executor_backend(model["backend"], model["settings"], executor=executor,
                                    address=args.address or run.get("address"),
                                    workers=args.workers or run.get("workers"), batch_size=batch_size)
    try:
        cache = ResponseCache(args.cache) if args.cache else ResponseCache()
        try:
            started = datetime.now(timezone.utc)
            outcomes = run_plan(plan, backend, cache=cache, batch_size=runner_batch_size(backend, batch_size),
                                limit=args.limit, progress=not args.no_progress and sys.stderr.isatty(),
                                dry_run=args.dry_run)
            if args.dry_run:
                print(outcomes.stats.summary())
                from moraleval.projection import print_projection
                print_projection(plan, model, cache.directory, outcomes, backend=backend, limit=args.limit)
                return 0
            from moraleval.projection import store_run_rates
            store_run_rates(plan, model, cache.directory, outcomes.stats)
            measurement = measure(plan, outcomes)
            out = write_report(plan, measurement, outcomes, out_dir=args.out, backend=backend,
                               run_stats=outcomes.stats, started=started,
                               finished=datetime.now(timezone.utc))
            for problem in cache.problems:
                print(f"warning: cache: {problem}", file=sys.stderr)
        finally:
            cache.close()
    finally:
        backend.close()
    print(outcomes.stats.summary(), file=sys.stderr)
    print(summary_table(measurement))
    for w in measurement.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"report: {Path(out) / 'report.md'} (also report.html, report.json, samples.jsonl, manifest.json)")
    return 0


def summary_table(measurement) -> str:
    """Every ungrouped estimate, one line each: the headline numbers of the run."""
    lines = [f"{'task':<16} {'metric':<24} {'condition':<16} {'value':>8}  {'95% CI':<20} {'n':>6}"]
    for e in measurement.estimates:
        if e.group:
            continue
        value = "undefined" if e.value is None else f"{e.value:+.3f}"
        ci = "" if e.ci_low is None or e.ci_high is None else f"[{e.ci_low:+.3f}, {e.ci_high:+.3f}]"
        lines.append(f"{e.task:<16} {e.metric:<24} {e.condition:<16} {value:>8}  {ci:<20} {e.n:>6}"
                     + flag_note(e))
    return "\n".join(lines)


def flag_note(e) -> str:
    """The flags beside a number in the terminal: codes, and the reason of an undefined value."""
    flags = list(getattr(e, "flags", ()) or ())
    codes = [f["code"] for f in flags if f.get("code") != "undefined"]
    why = next((f["message"] for f in flags if f.get("code") == "undefined"), None)
    note = f"  ⚠ {', '.join(dict.fromkeys(codes))}" if codes else ""
    return note + (f"  undefined: {why}" if why else "")
