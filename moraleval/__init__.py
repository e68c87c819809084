"""moraleval: declarative, spec-driven measurement of social bias and moral self-correction in language models.

The pipeline, one subpackage a stage: ``language`` (parse) -> ``check`` -> ``plan`` -> ``execute`` -> ``measure``
-> ``compare`` -> ``report``, chained by ``pipeline``.  As a library::

    import moraleval
    result = moraleval.run("specs/quickstart.me", out="reports/q")      # the whole pipeline
    checked = moraleval.checker("specs/bbq.me")                              # or stage by stage
    plan = moraleval.compile_plan(checked)

The public names below are loaded on first use (a table, as pydantic does), so ``import moraleval`` stays cheap:
it imports neither numpy nor onnxruntime.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> (module, attribute)
_LAZY: dict[str, tuple[str, str]] = {
    "run": ("moraleval.pipeline", "run"),
    "RunResult": ("moraleval.pipeline", "RunResult"),
    "check": ("moraleval.checker", "check"),
    "CheckedSpec": ("moraleval.checker", "CheckedSpec"),
    "compile_plan": ("moraleval.plan.compile", "compile_plan"),
    "Plan": ("moraleval.plan", "Plan"),
    "measure": ("moraleval.measurement", "measure"),
    "Measurement": ("moraleval.measurement", "Measurement"),
    "Estimate": ("moraleval.measurement", "Estimate"),
    "ComparisonResult": ("moraleval.measurement", "ComparisonResult"),
    "diff": ("moraleval.report.folder", "diff_reports"),
    "MoralevalError": ("moraleval.errors", "MoralevalError"),
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'moraleval' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return list(__all__)
