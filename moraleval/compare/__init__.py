"""The compare stage: statistics across models (``across``: every contrast between the models of one run) and
between two reports (``diff``), both from the contrast statistics of ``contrasts``."""

from moraleval.compare.across import Across, measure_across, summary_lines
from moraleval.compare.contrasts import (FEW_UNITS, MAX_PERMUTATION_MODELS, AcrossResult, difference,
                                         difference_in_differences, ols_slope, permutation_trend_test, swap_test,
                                         trend)
from moraleval.compare.diff import (EXIT_GATE_FAILED, DiffError, DiffResult, Gate, diff_folders, parse_gate,
                                    render_text)

__all__ = ["Across", "AcrossResult", "DiffError", "DiffResult", "EXIT_GATE_FAILED", "FEW_UNITS", "Gate",
           "MAX_PERMUTATION_MODELS", "difference", "difference_in_differences", "diff_folders", "measure_across",
           "ols_slope", "parse_gate", "permutation_trend_test", "render_text", "summary_lines", "swap_test", "trend"]
