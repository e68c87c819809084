"""The plan stage: a checked spec -> ``Plan``, plain data (``moraleval plan --json`` writes it).

``compile_plan`` (in ``plan.compile``) is loaded on first use: the later stages read plans and need none of the
checker behind it.
"""

from typing import Any

from moraleval.plan.select import limit_items, select_requests
from moraleval.plan.types import (BootstrapPlan, ComparisonPlan, GenerateStep, ItemValuePlan, MetricPlan, Plan,
                                  PlanItem, PlanRequest, PlanTurn, RequestOutcome)

__all__ = ["BootstrapPlan", "ComparisonPlan", "GenerateStep", "ItemValuePlan", "MetricPlan", "Plan", "PlanItem",
           "PlanRequest", "PlanTurn", "RequestOutcome", "compile_plan", "limit_items", "select_requests"]


def __getattr__(name: str) -> Any:
    if name == "compile_plan":
        from moraleval.plan.compile import compile_plan

        return compile_plan
    raise AttributeError(f"module 'moraleval.plan' has no attribute {name!r}")
