"""What the measurement produces: per-metric estimates and comparisons, per-item readouts.

Plain data shared by ``measure`` (outcomes -> estimates), ``compare`` and ``report`` (estimates -> files).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from moraleval.plan.types import PlanItem


def finite_or_none(x: Any) -> float | None:
    """JSON-friendly float: None for NaN/inf/None (report.json has no NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


@attrs.frozen
class Estimate:
    """A metric's value on one task × condition (× group), with its bootstrap interval."""

    metric: str
    task: str
    condition: str
    group: dict[str, Any]  # {} for the whole condition, else {"category": "Age", ...}
    value: float | None  # None when undefined (see warnings)
    ci_low: float | None
    ci_high: float | None
    n: int  # items that entered the metric
    n_units: int  # resampling units
    method: str  # "percentile" | "bca"
    resamples: int
    unit: str  # e.g. "category,question_index" or "row"
    level: float = 0.95
    analytic: dict[str, Any] | None = None  # e.g. {"method": "wilson", "ci_low": .., "ci_high": ..} for proportions
    warnings: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    # what a reader must know before trusting the number: [{"code": "few_units", "message": ...}, ...]
    flags: tuple[dict[str, str], ...] = attrs.field(default=(), converter=tuple)
    model: str = ""  # the model's name in the spec (set by the pipeline; "" when measured outside a run)
    # a member of a family (`metric NAME for VAR in LIST`, a regression's coefficients): the family's name and the
    # level this member stands for, e.g. {"country": "Belgium"}, {"term": "race=Black"}; absent from report.json
    # otherwise
    family: str | None = None
    member: dict[str, Any] | None = None
    # a tested member (a contrast against the reference level, a coefficient): H0 "the value is 0"
    p_value: float | None = None
    p_adjusted: float | None = None
    correction: str | None = None
    p_method: str | None = None  # "sign_flip_exact" | "sign_flip_monte_carlo" | "wald"
    interval: str | None = None  # which interval ci_low/ci_high is, in words (a regression coefficient)
    # a ranked family's member (`for ... ranked`): {"rank": 1 = the largest, "ci_low", "ci_high": the percentile
    # interval of its rank over the resamples (None, with a "reason", where the member is undefined in more than 10 %
    # of them), "of": the members ranked, "top": the share of all resamples in which it ranks first}
    rank: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        d = attrs.asdict(self, recurse=True,
                         value_serializer=lambda _i, _a, v: list(v) if isinstance(v, tuple) else v)
        for k in OPTIONAL_ESTIMATE_FIELDS:
            if d.get(k) is None:
                d.pop(k, None)
        return d


#: Estimate fields written to report.json only when set (a plain metric's estimate is what it always was)
OPTIONAL_ESTIMATE_FIELDS = ("family", "member", "p_value", "p_adjusted", "correction", "p_method", "interval",
                            "rank")


@attrs.frozen
class ComparisonResult:
    """treatment − baseline for one metric, paired over the same items and resamples."""

    metric: str
    task: str
    treatment: str
    baseline: str
    group: dict[str, Any]
    effect: float | None
    ci_low: float | None
    ci_high: float | None
    test: str  # a name of language.vocabulary.TESTS: "bootstrap" | "mcnemar" | "paired_t" | "wilcoxon"
    statistic: float | None
    p_value: float | None
    p_adjusted: float | None
    correction: str
    n: int
    warnings: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    n_units: int = 0  # resampling units the pairs fall in (what the sign-flip test and the bootstrap resample)
    flags: tuple[dict[str, str], ...] = attrs.field(default=(), converter=tuple)
    p_method: str = ""  # how p_value was computed, e.g. "sign_flip_exact", "sign_flip_monte_carlo", "mcnemar"
    model: str = ""  # the model's name in the spec (set by the pipeline)
    # `test tost margin D`: {"margin", "alpha", "p_lower", "p_upper", "interval", "interval_level", "equivalent"}
    equivalence: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        d = attrs.asdict(self, recurse=True,
                         value_serializer=lambda _i, _a, v: list(v) if isinstance(v, tuple) else v)
        if d.get("equivalence") is None:
            d.pop("equivalence", None)
        return d


class Readouts(Sequence):
    """Per-item readouts aligned with ``plan.items``: a dict per item (built on access).

    ``{"status": "ok", <choice name>: answer, "probs": [...]}``; ``status`` "no_outcome" / "invalid_outcome"
    (answer and probs None) where the item could not be read out.  With the values of the task's per-item
    definitions (:meth:`with_item_values`), an ok item's dict also has ``"items": {name: value}`` (None where the
    definition has no value for that item).
    """

    def __init__(self, items: Sequence[PlanItem], status: np.ndarray, answer_pos: np.ndarray, probs: np.ndarray,
                 n_options: np.ndarray, item_values: Sequence[tuple[str, np.ndarray, np.ndarray]] = ()) -> None:
        self._items, self._status, self._pos, self._probs, self._nopt = items, status, answer_pos, probs, n_options
        # (name, position of each plan item in the values or -1, the values as JSON-able objects)
        self._values = tuple(item_values)

    def with_item_values(self, item_values: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> "Readouts":
        return Readouts(self._items, self._status, self._pos, self._probs, self._nopt, item_values)

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        item = self._items[i]
        status = str(self._status[i])
        if status != "ok":
            return {"status": status, item.choice: None, "probs": None}
        k = int(self._nopt[i])
        out = {"status": "ok", item.choice: item.choice_values[int(self._pos[i])],
               "probs": [float(p) for p in self._probs[i, :k]]}
        values = {name: values[int(where[i])] for name, where, values in self._values if where[i] >= 0}
        if values:
            out["items"] = values
        return out

    def answer(self, i: int) -> Any:
        return self[i][self._items[i].choice]


@attrs.frozen(eq=False)
class Measurement:
    """What ``measure`` returns: estimates, comparisons, what was dropped, and per-item readouts."""

    estimates: tuple[Estimate, ...] = attrs.field(converter=tuple)
    comparisons: tuple[ComparisonResult, ...] = attrs.field(converter=tuple)
    # task -> {"no_outcome": n, "invalid_outcome": n, "undefined_values": n[, "not_run_limit": n (--limit)]}
    dropped: dict[str, dict[str, int]]
    readouts: Readouts
    warnings: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    # per task × condition (× model): {"task", "condition", "n", "counts": {answer: n}[, "letters": {..}]}
    answer_distribution: tuple[dict[str, Any], ...] = attrs.field(default=(), converter=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"estimates": [e.to_json() for e in self.estimates],
                "comparisons": [c.to_json() for c in self.comparisons],
                "dropped": self.dropped, "warnings": list(self.warnings),
                "answer_distribution": list(self.answer_distribution)}
