"""The report stage: report.json / samples.jsonl / manifest.json (``_build``) and what is rendered from them."""

from moraleval.report._build import *  # noqa: F401,F403
from moraleval.report._build import __all__, __doc__ as _build_doc  # noqa: F401
from moraleval.report._build import (  # noqa: F401 - used by other modules and tests
    MANIFEST_JSON, REPORT_JSON, SAMPLES_JSONL, build_report, build_samples, default_report_dir, dumps_json,
    foreign_files, jsonable, rerender, verify_report, write_report)
