"""moraleval: declarative, spec-driven measurement of social bias and moral self-correction in language models.

The pipeline, one module a stage: parse -> check -> plan -> run -> measure -> report.  As a library:
``moraleval.run("specs/quickstart.me", models="small,int8", out="reports/q")`` (see ``moraleval.pipeline.run``).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "run"]


def run(spec: Any, **options: Any) -> Any:
    """Check, plan, run, measure and report ``spec``; returns a ``moraleval.pipeline.RunResult``."""
    from moraleval.pipeline import run as _run

    return _run(spec, **options)
