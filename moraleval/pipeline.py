"""The whole pipeline as a library call: check, plan, run (cached, resumable), measure, report.

``moraleval.run(spec, models=..., out=...)`` returns a :class:`RunResult`; ``moraleval SPEC`` (``cli/run.py``)
only turns its flags into this call's :class:`RunOptions` and prints.  Data flows one way: ``cli`` -> ``pipeline`` ->
the stage packages.  Nothing here prints: what a run has to say goes to the ``log`` callback (the CLI's is stderr).

Several models: each model's requests go through the same response cache (keyed by the backend's identity), one
model after the other, each measured with the plan's own bootstrap seed, so every model's estimates equal a
single-model run of it and the resampled units are the same for all (``moraleval.compare.across`` pairs them).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import attrs

from moraleval.errors import MoralevalError, RunError, RunInterrupted
from moraleval.execute.ray import EXECUTORS
from moraleval.language.vocabulary import RUN_COUNT_LIMITS

__all__ = ["ModelRun", "RunOptions", "RunResult", "load_plan", "parse_overrides", "run", "select_model",
           "tag_model"]

Log = Callable[[str], None]


def parse_overrides(items: Sequence[str] | Mapping[str, Any] | None) -> dict[str, str]:
    """``["name=value", ...]`` (the CLI's ``--set``) or a mapping -> ``{name: value}``."""
    if items is None:
        return {}
    if isinstance(items, Mapping):
        return {str(k): str(v) if not isinstance(v, str) else v for k, v in items.items()}
    out = {}
    for item in items:
        if "=" not in item:
            raise MoralevalError(f"--set {item}: expected NAME=VALUE", hint="e.g. --set categories=Age,Religion")
        name, value = item.split("=", 1)
        out[name.strip()] = value.strip()
    return out


def load_plan(spec: str, data: str | Sequence[str] | None = None,
              overrides: Sequence[str] | Mapping[str, Any] | None = None, *, log: Log | None = None):
    """Check ``spec`` (its warnings go to ``log``) and compile its plan: ``(CheckedSpec, Plan)``."""
    from moraleval.checker.passes import check
    from moraleval.plan.compile import compile_plan

    checked = check(str(spec), overrides=parse_overrides(overrides), data_root=data, mode="plan")
    if log is not None:
        for w in checked.warnings:
            log(w.render() + "\n")
    return checked, compile_plan(checked)


def select_model(plan, name: str | None) -> tuple[str, dict[str, Any]]:
    """One model of the plan by name (default: the spec's default model)."""
    from moraleval.checker.models import select_models

    sel = select_models(plan.models, plan.model_sets, name)
    return sel.names[0], plan.models[sel.names[0]]


def _model_names(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TypeError(f"models must be a name, 'a,b' or a list of names, got {value!r}")


def _out_dir(value: Any) -> Path | None:
    if value is None:
        return None
    if isinstance(value, (str, Path)) and str(value).strip():
        return Path(value)
    raise ValueError(f"out must be a directory path, got {value!r}" + (" (an empty path would write into the current "
                                                                          "directory)" if value == "" else ""))


def _count_within(name: str):
    low, high, _ = RUN_COUNT_LIMITS[name]

    def check(_instance: Any, _attribute: Any, value: Any) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be a whole number, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"{name} must be from {low} to {high:,}, got {value:,}")
    return check


def _optional(kind: type | tuple[type, ...], what: str):
    def check(_instance: Any, attribute: Any, value: Any) -> None:
        if value is not None and not isinstance(value, kind):
            raise TypeError(f"{attribute.name} must be {what}, got {value!r}")
    return check


def _flag(_instance: Any, attribute: Any, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{attribute.name} must be True or False, got {value!r}")


def _limit(_instance: Any, _attribute: Any, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"limit must be a whole number, got {value!r}")
    if value < 0:
        raise ValueError(f"limit must be at least 0, got {value}")


def _progress_mode(value: Any) -> str:
    from moraleval.execute.progress import progress_mode

    return progress_mode(value)
def _data_roots(_instance: Any, _attribute: Any, value: Any) -> None:
    roots = (value,) if isinstance(value, (str, os.PathLike)) else value
    if value is not None and (not isinstance(roots, tuple) or not all(isinstance(r, (str, os.PathLike))
                                                                      for r in roots)):
        raise TypeError(f"data must be a data root or a list of them (paths), got {value!r}")


def _overrides(value: Any) -> dict[str, str]:
    if value is not None and not isinstance(value, (Mapping, list, tuple)):
        raise TypeError(f"overrides must be a mapping {{name: value}} or a list of 'NAME=VALUE', got {value!r}")
    if isinstance(value, (list, tuple)) and not all(isinstance(v, str) for v in value):
        raise TypeError(f"overrides must be a mapping {{name: value}} or a list of 'NAME=VALUE', got {value!r}")
    return parse_overrides(value)


def _cache(_instance: Any, _attribute: Any, value: Any) -> None:
    if value is not None and not isinstance(value, (str, os.PathLike)) and not hasattr(value, "get_many"):
        raise TypeError(f"cache must be a directory or a ResponseCache, got {value!r}")


def _executor(_instance: Any, _attribute: Any, value: Any) -> None:
    if value is not None and value not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, got {value!r}")


@attrs.frozen(kw_only=True)
class RunOptions:
    """How one run goes: the CLI's flags as one record, checked with the CLI's bounds before anything runs (a
    library call gets the same refusals as ``moraleval SPEC``, not a TypeError from deep inside)."""

    models: tuple[str, ...] | None = attrs.field(default=None, converter=_model_names)
    model_set: str | None = attrs.field(default=None, validator=_optional(str, "a model set's name"))
    out: Path | None = attrs.field(default=None, converter=_out_dir)
    data: str | tuple[str, ...] | None = attrs.field(
        default=None, converter=lambda v: tuple(v) if isinstance(v, list) else v, validator=_data_roots)
    overrides: dict[str, str] = attrs.field(factory=dict, converter=_overrides)
    cache: Any = attrs.field(default=None, validator=_cache)  # a ResponseCache or a directory (default: user cache)
    limit: int | None = attrs.field(default=None, validator=_limit)
    batch_size: int | None = attrs.field(default=None, validator=_count_within("batch_size"))
    executor: str | None = attrs.field(default=None, validator=_executor)
    address: str | None = attrs.field(default=None, validator=_optional(str, "a Ray address"))
    workers: int | None = attrs.field(default=None, validator=_count_within("workers"))
    # "auto" (a bar on a terminal, plain lines elsewhere), "bar", "plain" or "none"; True/False mean auto/none
    progress: str = attrs.field(default="none", converter=_progress_mode)
    dry_run: bool = attrs.field(default=False, validator=_flag)
    partial: bool = attrs.field(default=False, validator=_flag)
    write: bool = attrs.field(default=True, validator=_flag)

    @classmethod
    def of(cls, **options: Any) -> "RunOptions":
        """``RunOptions(**options)``, every refusal one MoralevalError naming the argument."""
        return cls._checked(lambda: cls(**options))

    def evolved(self, **options: Any) -> "RunOptions":
        """These options with some changed, checked like :meth:`of`."""
        return self._checked(lambda: attrs.evolve(self, **options))

    @classmethod
    def _checked(cls, make: Callable[[], "RunOptions"]) -> "RunOptions":
        try:
            return make()
        except TypeError as exc:
            text = str(exc)
            if "unexpected keyword argument" in text:
                known = ", ".join(a.name for a in attrs.fields(cls))
                raise MoralevalError(f"moraleval.run(): {text.split('__init__() ', 1)[-1]}",
                                     hint=f"the options are: {known}") from None
            raise MoralevalError(f"moraleval.run(): {text}") from None
        except ValueError as exc:
            raise MoralevalError(f"moraleval.run(): {exc}") from None


@attrs.frozen(eq=False)
class ModelRun:
    """One model of a run: its outcomes and measurement, or why it is missing."""

    name: str
    about: dict[str, Any]
    backend: str
    measurement: Any = None  # moraleval.measurement.core.Measurement (estimates carry `model`)
    outcomes: Any = None  # RunOutcomes
    identity: dict[str, Any] | None = None
    replicates: dict | None = None  # measure(..., keep=) output, for moraleval.compare.across
    report_part: dict[str, Any] | None = None  # report.json content of this model alone
    samples: list[dict[str, Any]] | None = None  # its samples.jsonl rows (with "model")
    error: str | None = None
    out_dir: Path | None = None  # a single-model run: where its report was written
    model_dir: Any = None  # a local backend's model folder (the manifest lists its files with their paths)
    projection: str | None = None  # a dry run: the expected wall time of what is left to compute

    @property
    def complete(self) -> bool:
        return self.error is None and self.measurement is not None


@attrs.frozen(eq=False)
class RunResult:
    """What :func:`run` returns: the plan, each model's run, the across-model statistics, where the report is."""

    plan: Any
    models: tuple[str, ...]
    runs: dict[str, ModelRun]
    across: Any = None  # moraleval.compare.across.Across, when two or more models are complete
    out: Path | None = None
    missing: tuple[str, ...] = ()
    dry_run: bool = False
    axis: str | None = None

    @property
    def measurement(self):
        """The measurement of the first model (a single-model run's measurement)."""
        return self.runs[self.models[0]].measurement

    @property
    def estimates(self) -> list:
        return [e for name in self.models if self.runs[name].complete
                for e in self.runs[name].measurement.estimates]


def tag_model(measurement, model: str):
    """The measurement with ``model`` set on every estimate and comparison."""
    return attrs.evolve(measurement, estimates=[attrs.evolve(e, model=model) for e in measurement.estimates],
                        comparisons=[attrs.evolve(c, model=model) for c in measurement.comparisons])


def run(spec: str | Path, options: RunOptions | None = None, *, backends: Mapping[str, Any] | None = None,
        log: Log | None = None, **option_values: Any) -> RunResult:
    """Run ``spec`` on one or several of its models and write one report.

    ``options`` (or the same fields as keywords: ``run(spec, models="a,b", out="reports/x")``): see
    :class:`RunOptions`.  ``models``: a name, ``"a,b"`` or a list; ``model_set``: a `models NAME = [...]` set;
    neither: the spec's default set, else its default model.  ``cache``: a ResponseCache or a directory (default:
    the user cache).  ``backends``: ready backend objects by model name (tests, notebooks), used instead of
    creating them.  ``log``: where progress messages and warnings go (nothing is printed without one).
    A model whose backend fails is reported and the others go on; the report is written only when every model
    is complete, unless ``partial`` (then every output names the missing models).  Raises RunError otherwise.
    A second run into the same ``out`` while this one is running is refused (OutputDirBusy, moraleval.util.locks).
    """
    from moraleval.checker.models import select_models

    if not isinstance(spec, (str, os.PathLike)):
        raise MoralevalError(f"moraleval.run(): spec must be the path of a .me file, got {spec!r}")
    if options is None:
        options = RunOptions.of(**option_values)
    elif not isinstance(options, RunOptions):
        raise MoralevalError(f"moraleval.run(): options must be a RunOptions, got {options!r}",
                             hint="pass the options as keywords: moraleval.run(spec, models='a', out='reports/x')")
    elif option_values:
        options = options.evolved(**option_values)
    if log is not None and not callable(log):
        raise MoralevalError(f"moraleval.run(): log must be a function taking one string (e.g. print), got {log!r}")
    if backends is not None and not isinstance(backends, Mapping):
        raise MoralevalError(f"moraleval.run(): backends must be a mapping {{model name: backend}}, got {backends!r}")
    say = log or (lambda _m: None)
    checked, plan = load_plan(str(spec), options.data, options.overrides, log=log)
    sel = select_models(plan.models, plan.model_sets, options.models, options.model_set)
    multi = len(sel.names) > 1
    k = len(sel.names)
    say(f"{plan.study}: " + (f"{len(plan.items)} items, {len(plan.requests)} unique requests; "
                             f"model '{sel.names[0]}' ({plan.models[sel.names[0]]['backend']})" if not multi else
                             f"{len(plan.items)} items and {len(plan.requests)} unique requests per model, "
                             f"{k * len(plan.items)} items in total; {k} models: "
                             + ", ".join(f"{m} ({plan.models[m]['backend']})" for m in sel.names)))
    lock = None
    out = options.out
    if options.write and not options.dry_run:  # a bad --out is found before any request runs, not after all
        from moraleval.report import default_report_dir
        from moraleval.util.locks import lock_dir
        from moraleval.util.outdir import prepare_out_dir

        out = prepare_out_dir(out if out is not None else default_report_dir(plan))
        # one writer per report directory, held until its report is written: a second run into it is refused
        lock = lock_dir(out, label=f"--out {out}")
        if not lock.locked and lock.why_not:
            say(f"warning: --out {out}: not locked ({lock.why_not}); do not start a second run into it meanwhile")
    try:
        return _run_selected(plan, sel, attrs.evolve(options, out=out), backends=backends, say=say)
    finally:
        if lock is not None:
            lock.release()


def _run_selected(plan, sel, options: RunOptions, *, backends, say: Log) -> RunResult:
    from moraleval.execute.cache import ResponseCache

    cache, out = options.cache, options.out
    multi = len(sel.names) > 1
    store = cache if isinstance(cache, ResponseCache) else (ResponseCache(cache) if cache else ResponseCache())
    own_cache = not isinstance(cache, ResponseCache)
    runs: dict[str, ModelRun] = {}
    try:
        for k, name in enumerate(sel.names):
            if multi:
                say(f"[model {k + 1}/{len(sel.names)}] {name} ({plan.models[name]['backend']})")
            try:
                runs[name] = _run_model(plan, name, store, options, backends=backends, multi=multi, say=say)
            except MoralevalError as exc:
                if not multi or isinstance(exc, RunInterrupted):
                    raise
                msg = f"model '{name}': {exc.message}"
                say(f"error: {msg}")
                m = plan.models[name]
                runs[name] = ModelRun(name, dict(m.get("about") or {}), m["backend"], error=msg)
        for problem in store.problems:
            say(f"warning: cache: {problem}")
    finally:
        if own_cache:
            store.close()
    if options.dry_run:
        return RunResult(plan, sel.names, runs, dry_run=True, axis=sel.axis)
    missing = tuple(n for n in sel.names if not runs[n].complete)
    if missing and not options.partial:
        done = [n for n in sel.names if runs[n].complete]
        errors = "; ".join(runs[n].error or f"model '{n}' incomplete" for n in missing)
        raise RunError(f"{len(missing)} of {len(sel.names)} models did not complete ({errors}). "
                       f"The results of {', '.join(done) or 'no model'} are kept in the cache; no report was "
                       "written", hint="fix the failing model and run the same command again (only what is missing "
                                       "is computed), or pass --partial for a report that names the missing models")
    across = None
    complete = [n for n in sel.names if runs[n].complete]
    if multi and complete:
        from moraleval.compare.across import measure_across

        across = measure_across(plan, {n: runs[n] for n in complete}, axis=sel.axis, scale=sel.scale)
    out_dir = runs[sel.names[0]].out_dir if not multi else None
    if options.write and multi:
        from moraleval.report import write_models_report

        out_dir = write_models_report(plan, sel, runs, across, out_dir=out, missing=missing, log=say)
    return RunResult(plan, sel.names, runs, across, out_dir, missing, False, sel.axis)


def _run_model(plan, name: str, store, options: RunOptions, *, backends, multi: bool, say: Log | None = None
               ) -> ModelRun:
    """Run one model: its backend, the cached run, the measurement, and (while the backend is open, since the
    samples show prompts rendered by it) its report, or for several models its part of the joint report."""
    from moraleval import report as rep
    from moraleval.measurement import measure
    from moraleval.execute.ray import make_executor_backend, runner_batch_size
    from moraleval.execute.eta import projection_text, store_run_rates
    from moraleval.execute.runner import DEFAULT_BATCH_SIZE, run_plan

    model = plan.models[name]
    about = dict(model.get("about") or {})
    settings = dict(plan.run)
    executor = options.executor or settings.get("executor", "local")
    batch = options.batch_size or settings.get("batch_size") or DEFAULT_BATCH_SIZE
    given = backends.get(name) if backends else None
    backend = given if given is not None else make_executor_backend(
        model["backend"], model["settings"], executor=executor, address=options.address or settings.get("address"),
        workers=options.workers or settings.get("workers"), batch_size=batch)
    limit, dry_run = options.limit, options.dry_run
    try:
        mplan = _model_plan(plan)
        started = datetime.now(timezone.utc)
        outcomes = run_plan(mplan, backend, cache=store, batch_size=runner_batch_size(backend, batch),
                            limit=limit, progress=options.progress, dry_run=dry_run)
        if dry_run:
            projection = projection_text(plan, model, store.directory, outcomes, backend=backend, limit=limit)
            return ModelRun(name, about, model["backend"], outcomes=outcomes, projection=projection)
        store_run_rates(plan, model, store.directory, outcomes.stats)
        replicates: dict | None = {} if multi else None
        measurement = tag_model(measure(mplan, outcomes, keep=replicates), name)
        identity = backend.identity()
        if not multi:
            out_dir = rep.write_report(mplan, measurement, outcomes, out_dir=options.out, backend=backend,
                                       run_stats=outcomes.stats, started=started,
                                       finished=datetime.now(timezone.utc), model_name=name,
                                       log=say) if options.write else None
            return ModelRun(name, about, model["backend"], measurement, outcomes, identity, out_dir=out_dir)
        part = rep.build_report(mplan, measurement, outcomes, identity)
        samples = rep.build_samples(mplan, outcomes, measurement, backend, model_name=name)
        return ModelRun(name, about, model["backend"], measurement, outcomes, identity, replicates, part, samples,
                        model_dir=getattr(backend, "model_dir", None))
    finally:
        if given is None:
            backend.close()


def _model_plan(plan):
    """The plan one model runs: the comparisons between its own conditions (model comparisons are across)."""
    cmps = tuple(c for c in plan.comparisons if not getattr(c, "models", False))
    return plan if len(cmps) == len(plan.comparisons) else attrs.evolve(plan, comparisons=cmps)
