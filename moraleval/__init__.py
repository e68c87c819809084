"""moraleval: declarative, spec-driven measurement of social bias and moral self-correction in language models.

The pipeline, one module a stage: parse -> check -> plan -> run -> measure -> report.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
