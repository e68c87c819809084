"""The one object the checker's passes share: the spec being checked, the diagnostics found so far, and what each
pass resolved for the passes after it (as explicit fields, each filled by one pass).

Every problem is recorded with ``error``/``warn`` as a located ``Diagnostic``; ``merged`` turns them into the
list the user sees: each distinct problem once, listing every place it affects, in file order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import attrs
import jinja2
from jinja2.sandbox import SandboxedEnvironment

from moraleval.checker.dataset_pipeline import DatasetResult
from moraleval.checker.resolved import ResolvedItem, ResolvedMetric, ResolvedTask
from moraleval.data.roots import DataRoot
from moraleval.errors import Diagnostic
from moraleval.errors.source import Source, Span
from moraleval.language import nodes as n
from moraleval.language import templating

__all__ = ["CheckContext"]

S = TypeVar("S")


@attrs.define(eq=False)
class CheckContext:
    """The checker's state.  The inputs come first; each group after them is filled by the pass named."""

    source: Source
    overrides: dict[str, str]  # --set name=value
    cli_data_roots: list[str]  # --data, first on the search path
    mode: str  # "check": absent files are warnings; "plan": an absent file the plan needs is an error
    # what was found so far (see error, warn, merged)
    diagnostics: list[Diagnostic] = attrs.Factory(list)
    places: dict[int, tuple[str, str]] = attrs.Factory(dict)  # id(diagnostic) -> (kind, name) it affects
    # templates compile and render in one sandboxed environment (see moraleval.language.templating)
    environment: SandboxedEnvironment = attrs.Factory(templating.make_environment)
    # imports
    spec: n.Spec | None = None  # the file checked, as parsed
    body: list[Any] = attrs.Factory(list)  # its statements and those of every file it imports, in order
    sources: dict[int, Source] = attrs.Factory(dict)  # id(statement) -> its file
    import_sites: dict[str, tuple[n.Import, Source]] = attrs.Factory(dict)  # imported file -> (import line, its file)
    imports: dict[str, str] = attrs.Factory(dict)  # imported file -> sha256
    # definitions
    study: str = ""
    # params
    params: dict[str, Any] = attrs.Factory(dict)
    consts: dict[str, Any] = attrs.Factory(dict)  # params + global lets
    # datasets
    data_roots: list[DataRoot] = attrs.Factory(list)  # the search path, in lookup order
    data_paths: dict[str, Path] = attrs.Factory(dict)  # relative data path -> the file it was read from
    used_roots: dict[Path, DataRoot] = attrs.Factory(dict)  # the roots files were read from, in order
    datasets: dict[str, DatasetResult] = attrs.Factory(dict)
    data_root: Path | None = None
    data_root_reason: str = ""
    # templates
    templates: dict[str, jinja2.Template] = attrs.Factory(dict)  # the ones that compile
    template_sources: dict[str, str] = attrs.Factory(dict)
    # tasks
    tasks: dict[str, ResolvedTask] = attrs.Factory(dict)  # the ones whose dataset is known
    condition_families: dict[str, dict[str, list[str]]] = attrs.Factory(dict)  # task -> family -> member conditions
    # metrics
    metrics: list[ResolvedMetric] = attrs.Factory(list)  # the ones that check
    metric_families: dict[str, list[str]] = attrs.Factory(dict)  # family -> its members' metric names
    item_values: dict[tuple[str, str], ResolvedItem] = attrs.Factory(dict)  # (task, item) -> its definition
    # bootstrap
    bootstrap: n.Bootstrap = attrs.Factory(n.Bootstrap)
    task_units: dict[str, tuple[str, ...]] = attrs.Factory(dict)
    # comparisons
    comparisons: list[n.Comparison] = attrs.Factory(list)  # between conditions
    # report
    report_by: tuple[str, ...] = ()
    # models
    models: dict[str, dict[str, Any]] = attrs.Factory(dict)
    default_model: str = ""
    model_sets: dict[str, dict[str, Any]] = attrs.Factory(dict)
    model_comparisons: list[n.Comparison] = attrs.Factory(list)
    # run settings
    run_settings: dict[str, Any] = attrs.Factory(dict)

    # ------------------------------------------------------------------ the spec
    def statements(self, kind: type[S]) -> list[S]:
        """The statements of one kind, from the spec and its imports, in order."""
        return [s for s in self.body if isinstance(s, kind)]

    def source_of(self, node: Any) -> Source:
        """The file a statement was written in (an imported one, or the spec checked)."""
        return self.sources.get(id(node), self.source)

    # ------------------------------------------------------------------ reporting
    def error(self, message: str, node: Any, hint: str | None = None, source: Source | None = None,
              code: str = "E100", span: Span | None = None, place: tuple[str, str] | None = None) -> None:
        self.add("error", message, node, hint, source, code, span, place)

    def warn(self, message: str, node: Any, hint: str | None = None, source: Source | None = None,
             code: str = "W100", span: Span | None = None, place: tuple[str, str] | None = None) -> None:
        self.add("warning", message, node, hint, source, code, span, place)

    def add(self, severity: str, message: str, node: Any, hint: str | None, source: Source | None, code: str,
            span: Span | None, place: tuple[str, str] | None = None) -> None:
        """A problem at ``span`` (default: the node's) in ``source`` (default: the spec checked).  ``place``
        (kind, name), e.g. ("condition", "Q"): what the problem affects.  One problem found from several places
        (a template shared by conditions, a formula inlined into metrics) is reported once, listing them (see
        ``merged``); a message may say where the list goes with ``{places}``."""
        if span is None:
            span = getattr(node, "span", None)
        d = Diagnostic(message, span, source or self.source, hint, severity, code)
        self.diagnostics.append(d)
        if place is not None:
            self.places.setdefault(id(d), place)

    def merged(self) -> list[Diagnostic]:
        """Each distinct problem once: same severity, code, file, position and message are one diagnostic,
        whose message lists every place it affects."""
        groups: dict[tuple, tuple[Diagnostic, list[tuple[str, str]]]] = {}
        for d in self.diagnostics:
            key = (d.severity, d.code, d.source.path if d.source else None, d.span, d.message)
            first, places = groups.setdefault(key, (d, []))
            place = self.places.get(id(d))
            if place is not None and place not in places:
                places.append(place)
        out = []
        for d, places in groups.values():
            if "{places}" in d.message:
                d = attrs.evolve(d, message=d.message.replace("{places}", _places_text(places) if places else ""))
            elif places:
                d = attrs.evolve(d, message=f"{d.message} ({_places_text(places)})")
            out.append(d)
        return sorted(out, key=_diag_order)


def _places_text(places: list[tuple[str, str]]) -> str:
    """[("condition", "Q"), ("condition", "Q_IF")] -> "in conditions 'Q' and 'Q_IF'"."""
    by_kind: dict[str, list[str]] = {}
    for kind, name in places:
        by_kind.setdefault(kind, []).append(name)
    parts = []
    for kind, names in by_kind.items():
        quoted = [f"'{x}'" for x in names]
        listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
        parts.append(f"{kind}{'s' if len(names) > 1 else ''} {listed}")
    return "in " + "; ".join(parts)


def _diag_order(d: Diagnostic) -> tuple:
    return (d.source.path if d.source else "", d.span.line if d.span else 0, d.span.column if d.span else 0)
