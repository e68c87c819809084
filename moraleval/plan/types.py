"""The evaluation plan: plain, JSON-serialisable data compiled from a checked spec.

The plan is everything the run needs and nothing it must guess: unique model requests (each with a stable
content hash), the items that use them (task × condition × dataset row) with the row values the metrics read,
the metric formulas, the bootstrap and comparison settings.  ``moraleval plan --json`` writes it.
"""

from __future__ import annotations

from typing import Any

import attrs

import hashlib

from moraleval.backend import GenerateRequest, Message, Prompt, ScoreRequest, ScoreResult

TEXT_ROLES = {"system": "System", "user": "Human", "assistant": "Assistant"}


@attrs.frozen
class GenerateStep:
    """The model continues the turn it belongs to; its text is appended to that turn before the next one."""

    name: str
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "max_tokens": self.max_tokens, "temperature": self.temperature,
                "top_p": self.top_p, "seed": self.seed, "stop": list(self.stop)}


@attrs.frozen
class PlanTurn:
    role: str  # "system" | "user" | "assistant"
    text: str
    generate: GenerateStep | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role, "text": self.text}
        if self.generate is not None:
            d["generate"] = self.generate.to_json()
        return d


@attrs.frozen
class PlanRequest:
    """One unique dialogue to send: zero or more generate steps, then the listed choices are scored.

    ``format`` "raw" concatenates the turns' texts exactly (no labels, no chat template); "text" renders turns as
    the paper's ``\\n\\nHuman: …\\n\\nAssistant: …``; "chat" hands them to the
    backend as messages (rendered with the model's own chat template).
    """

    format: str
    turns: tuple[PlanTurn, ...] = attrs.field(converter=tuple)
    choices: tuple[str, ...] = attrs.field(converter=tuple)
    top_k: int = 0
    key: str = attrs.field(default="", eq=False)

    def __attrs_post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", self.content_key())

    def content_key(self) -> str:
        """sha256 over a length-prefixed encoding of the content: canonical, unambiguous, and cheap enough for
        hundreds of thousands of requests."""
        parts = [self.format, str(self.top_k), str(len(self.turns))]
        for t in self.turns:
            parts += [t.role, t.text]
            g = t.generate
            parts.append("" if g is None else repr((g.name, g.max_tokens, float(g.temperature), float(g.top_p),
                                                     g.seed, tuple(g.stop))))
        parts.append(str(len(self.choices)))
        parts += self.choices
        # each part as "<length>:<text>": unambiguous whatever the texts contain
        return hashlib.sha256("\x00".join([f"{len(p)}:{p}" for p in parts]).encode("utf-8")).hexdigest()

    def content_json(self) -> dict[str, Any]:
        return {"format": self.format, "turns": [t.to_json() for t in self.turns],
                "choices": list(self.choices), "top_k": self.top_k}

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, **self.content_json()}

    @property
    def generate_steps(self) -> list[tuple[int, GenerateStep]]:
        return [(i, t.generate) for i, t in enumerate(self.turns) if t.generate is not None]

    def prompt(self, upto: int | None = None, generated: dict[str, str] | None = None) -> Prompt:
        """The prompt made of turns[0..upto] (inclusive; default all), generated texts filled in after their turn.

        The last turn, if it is the assistant's, is left open: the model continues it.
        """
        generated = generated or {}
        turns = self.turns if upto is None else self.turns[: upto + 1]
        texts: list[tuple[str, str]] = []
        for i, turn in enumerate(turns):
            text = turn.text
            if turn.generate is not None and (upto is None or i < upto):
                if turn.generate.name not in generated:
                    raise KeyError(f"generate step '{turn.generate.name}' has not run yet")
                text = text + generated[turn.generate.name]
            texts.append((turn.role, text))
        if self.format == "chat":
            return Prompt(messages=tuple(Message(role, text) for role, text in texts))
        if self.format == "raw":  # the exact model input: the turns' texts as written, nothing added
            return Prompt(text="".join(text for _, text in texts))
        return Prompt(text=render_text_dialogue(texts))

    def generate_request(self, step_index: int, generated: dict[str, str]) -> GenerateRequest:
        turn_index, step = self.generate_steps[step_index]
        stop = step.stop if step.stop or self.format != "text" else ("\n\nHuman:",)
        return GenerateRequest(self.prompt(turn_index, generated), step.max_tokens, step.temperature, step.top_p,
                               step.seed, stop)

    def score_request(self, generated: dict[str, str]) -> ScoreRequest:
        return ScoreRequest(self.prompt(None, generated), self.choices, self.top_k)


def render_text_dialogue(turns: list[tuple[str, str]]) -> str:
    """The paper's raw-LM format: ``\\n\\nHuman: …\\n\\nAssistant: …`` (an assistant turn is continued)."""
    return "".join(f"\n\n{TEXT_ROLES[role]}: {text}" if text else f"\n\n{TEXT_ROLES[role]}:"
                   for role, text in turns)


@attrs.frozen
class RequestOutcome:
    """The answer to one PlanRequest: texts of its generate steps, then the choice scores."""

    key: str
    generated: dict[str, str]  # generate step name -> text
    score: ScoreResult

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "generated": dict(sorted(self.generated.items())), "score": self.score.to_json()}


@attrs.frozen
class PlanItem:
    """One (task, condition, dataset row): which request answers it and the row values metrics read."""

    task: str
    condition: str
    row: int  # position in the dataset after filter/sample (counterfactual copies share it)
    variant: int  # 0.. for counterfactual copies of the row, else 0
    unit: str  # bootstrap resampling unit (cluster) this item belongs to
    request: str  # PlanRequest.key
    choice: str  # name of the choice output (e.g. "answer")
    choice_values: tuple[Any, ...] = attrs.field(converter=tuple)  # meaning of each scored option
    values: dict[str, Any] = attrs.field(factory=dict)  # columns the metrics read (JSON scalars)
    # `choose ... rotate`: which cyclic rotation of the options this item presents (None: not counterbalanced)
    rotation: int | None = None

    def to_json(self) -> dict[str, Any]:
        d = {"task": self.task, "condition": self.condition, "row": self.row, "variant": self.variant,
             "unit": self.unit, "request": self.request, "choice": self.choice,
             "choice_values": list(self.choice_values), "values": self.values}
        if self.rotation is not None:
            d["rotation"] = self.rotation
        return d


@attrs.frozen
class MetricPlan:
    """One reported metric.  A member of a family (``metric NAME for VAR in LIST``, a regression's coefficients)
    has its own name (``similarity[Belgium]``, ``discrimination[race=Black]``), the ``family``'s name and the
    level it stands for, ``member`` ({"country": "Belgium"}, {"term": "race=Black"}); ``test``: how the
    family's members are tested ("sign_flip" for a contrast against a reference, whose two sides are ``parts``;
    "wald" for a coefficient) and corrected (``correction``); ``ranked``: each member ranked among the family.
    ``items``: the per-item definitions the formula uses, as written."""

    name: str
    task: str
    expr: dict[str, Any]  # the formula as a JSON expression tree (see moraleval.language.exprjson)
    formula: str  # the formula as written in the spec, for the report
    doc: str | None = None
    family: str | None = None
    member: dict[str, Any] | None = None
    test: str | None = None
    correction: str | None = None
    parts: tuple[dict[str, Any], dict[str, Any]] | None = None
    items: dict[str, str] | None = None
    ranked: bool | None = None  # `for ... ranked`: each member's rank among the family, with its interval

    def to_json(self) -> dict[str, Any]:
        """The fields that are set (a plain metric's JSON is what it always was)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in attrs.asdict(self).items()
                if v is not None or k == "doc"}


@attrs.frozen
class ItemValuePlan:
    """A per-item definition its task's metrics use (``item mass on decide = ...``): the report writes its value
    for every item into ``samples.jsonl`` (``readout.items``), where the sample browser shows it and filters on it."""

    name: str
    task: str
    expr: dict[str, Any]  # the definition inlined, as a JSON expression tree
    formula: str  # as written in the spec

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class BootstrapPlan:
    resamples: int = 2000
    seed: int = 0
    unit: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    method: str = "percentile"
    level: float = 0.95


@attrs.frozen
class ComparisonPlan:
    treatment: str
    baseline: str
    metric: str
    test: str
    correction: str
    family: int  # comparisons with the same family number are corrected together
    models: bool = False  # treatment/baseline name models (`compare model b vs a`), measured across models
    margin: float | None = None  # `test tost margin D`: the equivalence margin, in the metric's units


@attrs.frozen
class Plan:
    spec_path: str
    spec_sha256: str
    study: str
    params: dict[str, Any]
    data_root: str
    data_files: dict[str, str]  # relative path -> sha256 of the files actually read
    datasets: dict[str, dict[str, Any]]  # name -> {rows_read, rows_kept, dropped: {reason: n}, ...}
    tasks: dict[str, dict[str, Any]]  # name -> {dataset, format, conditions: [...]}
    requests: tuple[PlanRequest, ...] = attrs.field(converter=tuple)
    items: tuple[PlanItem, ...] = attrs.field(converter=tuple)
    metrics: tuple[MetricPlan, ...] = attrs.field(converter=tuple)
    bootstrap: BootstrapPlan = BootstrapPlan()
    comparisons: tuple[ComparisonPlan, ...] = attrs.field(default=(), converter=tuple)
    report_by: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    models: dict[str, dict[str, Any]] = attrs.field(factory=dict)  # name -> {backend, settings, default}
    run: dict[str, Any] = attrs.field(factory=dict)  # the spec's run settings (executor, workers, batch_size)
    imports: dict[str, str] = attrs.field(factory=dict)  # imported spec path -> sha256
    model_sets: dict[str, dict[str, Any]] = attrs.field(factory=dict)  # name -> {models, axis, scale, default}
    item_values: tuple[ItemValuePlan, ...] = attrs.field(default=(), converter=tuple)

    def request_by_key(self) -> dict[str, PlanRequest]:
        return {r.key: r for r in self.requests}

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "spec": {"path": self.spec_path, "sha256": self.spec_sha256, "study": self.study,
                     "imports": dict(sorted(self.imports.items()))},
            "params": self.params,
            "data_root": self.data_root,
            "data_files": dict(sorted(self.data_files.items())),
            "datasets": self.datasets,
            "tasks": self.tasks,
            "models": self.models,
            "model_sets": self.model_sets,
            "run": self.run,
            "metrics": [m.to_json() for m in self.metrics],
            # only where a metric uses a per-item definition (other plans are unchanged)
            **({"item_values": [i.to_json() for i in self.item_values]} if self.item_values else {}),
            "bootstrap": attrs.asdict(self.bootstrap),
            # "models": true only on `compare model` comparisons (plans without them are unchanged)
            "comparisons": [{k: v for k, v in attrs.asdict(c).items() if k not in ("models", "margin") or v}
                            for c in self.comparisons],
            "report_by": list(self.report_by),
            "requests": [r.to_json() for r in self.requests],
            "items": [i.to_json() for i in self.items],
        }
