"""What the checker resolves: conditions with their inheritance applied, tasks, metrics inlined to item columns,
and ``CheckedSpec``, everything the planner compiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import jinja2
from jinja2.sandbox import SandboxedEnvironment

from moraleval.checker.dataset_pipeline import DatasetResult
from moraleval.data.roots import DataRoot
from moraleval.errors import Diagnostic
from moraleval.errors.source import Source
from moraleval.language import nodes as n

__all__ = ["CheckedSpec", "ResolvedCondition", "ResolvedMetric", "ResolvedTask"]


@attrs.frozen
class ResolvedCondition:
    name: str
    task: str
    lets: dict[str, Any]
    turns: tuple[n.Turn, ...]
    choose: n.Choose
    chain: tuple[str, ...]  # itself, then what it extends


@attrs.frozen
class ResolvedTask:
    name: str
    dataset: str
    format: str
    conditions: tuple[ResolvedCondition, ...]
    node: n.Task


@attrs.frozen
class ResolvedMetric:
    """A reported metric; a member of a family (``metric NAME for ...``, a regression's coefficients) carries the
    family's name, the level it stands for, how the family is tested and corrected, and (a contrast) its two
    sides; ``items``: the per-item definitions it uses, as written."""

    name: str
    task: str
    expr: n.Expr  # inlined: only item columns, choose outputs and literals
    formula: str  # as written
    node: n.Metric
    family: str | None = None
    member: dict[str, Any] | None = None
    test: str | None = None  # "sign_flip" | "wald"
    correction: str | None = None
    parts: tuple[n.Expr, n.Expr] | None = None
    items: dict[str, str] | None = None
    ranked: bool | None = None  # `for ... ranked`: each member's rank among the family


@attrs.frozen
class ResolvedItem:
    """A per-item definition (``item NAME = ...``, no parameters) that a task's metrics use: its value for every
    item is written beside the item's answer in ``samples.jsonl``, so a reader sees, item by item, the quantity
    the metrics aggregate (a logit, a probability mass) and which items a boolean definition flags."""

    name: str
    task: str
    expr: n.Expr  # inlined like a metric's: only item columns, choose outputs and literals
    formula: str  # as written


@attrs.define
class CheckedSpec:
    source: Source
    spec: n.Spec
    study: str
    params: dict[str, Any]
    consts: dict[str, Any]  # params + global lets
    data_root: Path | None
    data_root_reason: str
    data_roots: list[DataRoot]  # the search path, in lookup order
    data_paths: dict[str, Path]  # relative data path -> the file it was read from
    datasets: dict[str, DatasetResult]
    templates: dict[str, jinja2.Template]
    template_sources: dict[str, str]
    tasks: dict[str, ResolvedTask]
    metrics: list[ResolvedMetric]
    bootstrap: n.Bootstrap
    task_units: dict[str, tuple[str, ...]]  # task -> resampling unit columns (empty: the dataset row)
    comparisons: list[n.Comparison]
    report_by: tuple[str, ...]
    models: dict[str, dict[str, Any]]
    default_model: str
    run_settings: dict[str, Any]  # executor, address, workers, batch_size
    imports: dict[str, str]  # path -> sha256
    warnings: list[Diagnostic]
    environment: SandboxedEnvironment
    spec_sha256: str
    model_sets: dict[str, dict[str, Any]] = attrs.field(factory=dict)  # name -> {models, axis, scale, default}
    item_values: list[ResolvedItem] = attrs.field(factory=list)  # per task, the item definitions its metrics use
