"""Check: resolve imports and names, load and verify the data, compile every template, type-check metrics.

The checker is a sequence of passes (``PASSES``), each a function of one ``CheckContext`` that reads what the
passes before it resolved and records what it resolves; every problem is collected as a located
``Diagnostic``.  ``check`` runs them in order and raises one ``SpecCheckError`` holding all the problems
(warnings ride along on the result).  The result, ``CheckedSpec``, is what the planner compiles.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable

from moraleval.checker.bootstrap import check_bootstrap
from moraleval.checker.comparisons import check_comparisons
from moraleval.checker.context import CheckContext
from moraleval.checker.datasets import load_datasets
from moraleval.checker.definitions import check_definitions
from moraleval.checker.imports import check_requires, resolve_imports
from moraleval.checker.metrics import resolve_metrics
from moraleval.checker.models import check_models
from moraleval.checker.params import evaluate_params
from moraleval.checker.report_by import check_report
from moraleval.checker.resolved import CheckedSpec
from moraleval.checker.run_settings import check_run_settings
from moraleval.checker.tasks import resolve_tasks
from moraleval.checker.templates import compile_templates
from moraleval.errors import MoralevalError, SpecCheckError
from moraleval.errors.source import Source
from moraleval.util import safeio
from moraleval.util.text import shorten

#: the checker's passes, in the order they run; each reads the context fields the passes before it filled
PASSES: tuple[Callable[[CheckContext], None], ...] = (
    resolve_imports,     # parse; splice in imported files -> spec, body, sources
    check_definitions,   # version line, study title, one definition per name -> study
    evaluate_params,     # params with --set overrides, global lets -> params, consts
    load_datasets,       # data search path; files located, verified, piped -> data_roots, datasets, data_root
    compile_templates,   # -> templates
    resolve_tasks,       # conditions resolved, turns and choose lines checked on the first row -> tasks
    resolve_metrics,     # formulas inlined, names, functions and levels checked -> metrics
    check_bootstrap,     # interval settings, resampling units -> bootstrap, task_units
    check_comparisons,   # compare lines between conditions -> comparisons
    check_report,        # report by -> report_by
    check_models,        # models, model sets, compare model -> models, default_model, model_sets
    check_run_settings,  # run { ... } -> run_settings
    check_requires,      # libraries' contracts; last: folds the errors a missing name causes
)


def check(path: str | Path | Source, *, overrides: dict[str, str] | None = None,
          data_root: str | Path | list[str] | None = None,
          mode: str = "check") -> CheckedSpec:
    """Parse and check a spec file; raise SpecCheckError with every problem, or return the checked spec.

    ``mode``: "check" reports absent data files as warnings; "plan" makes an absent file the plan needs an
    error.  ``data_root``: the ``--data`` roots, searched first.
    """
    source = path if isinstance(path, Source) else _read_source(path)
    if isinstance(data_root, (str, os.PathLike)):
        data_root = [data_root]
    ctx = CheckContext(source, dict(overrides or {}), [str(d) for d in (data_root or [])], mode)
    for run_pass in PASSES:
        run_pass(ctx)
    diagnostics = ctx.merged()
    if any(d.severity == "error" for d in diagnostics):
        raise SpecCheckError(diagnostics)
    return CheckedSpec(
        source=ctx.source, spec=ctx.spec, study=ctx.study, params=ctx.params, consts=ctx.consts,
        data_root=ctx.data_root, data_root_reason=ctx.data_root_reason, data_roots=ctx.data_roots,
        data_paths=dict(ctx.data_paths), datasets=ctx.datasets, templates=ctx.templates,
        template_sources=ctx.template_sources, tasks=ctx.tasks, metrics=ctx.metrics, bootstrap=ctx.bootstrap,
        task_units=ctx.task_units, comparisons=ctx.comparisons + ctx.model_comparisons,
        item_values=list(ctx.item_values.values()),
        model_sets=ctx.model_sets, report_by=ctx.report_by, models=ctx.models, default_model=ctx.default_model,
        run_settings=ctx.run_settings, imports=ctx.imports, warnings=diagnostics, environment=ctx.environment,
        spec_sha256=hashlib.sha256(ctx.source.text.encode("utf-8")).hexdigest())


def _read_source(path: str | Path) -> Source:
    try:
        return Source(safeio.read_text(Path(path)), str(path))
    except safeio.FileProblem as exc:
        hint = exc.hint or "give the path of a .me file, e.g. specs/quickstart.me"
        if exc.reason.startswith("is a directory"):
            hint = f"give the spec files in it, e.g. {shorten(str(path))}/*.me"
        raise MoralevalError(f"spec file '{shorten(str(path))}' {exc.reason}", hint=hint) from None
