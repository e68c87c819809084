"""The report stage: a run's report directory and what is rendered from it.

``build`` (report.json, samples.jsonl), ``models`` (the several-model report and its across-model view),
``manifest`` (manifest.json and the directory's files), ``files`` (writing, re-rendering); the pages, rendered from
those files alone: ``page`` (what they say), ``answer_table`` (the answers by value and as shown), ``render``
(the templates), ``figures``/``forest``/``figures_models``,
``per_sample`` (a sample's value of a per-item formula, for the figures), ``labels`` (formulas as text);
``view`` (``moraleval view``: serving a big run's samples); ``folder`` and ``schema`` (reading a report folder, which
may come from anyone: bounded and schema-checked, for verify, diff, report and view).
"""

from moraleval.report.build import (REPORT_FORMAT, SIGNIFICANT_DIGITS, build_report, build_samples,
                                    default_report_dir, dumps_json, jsonable)
from moraleval.report.files import rerender, write_models_report, write_report
from moraleval.report.folder import DamagedReport, ReportFolder, diff_reports, load_report_folder
from moraleval.report.manifest import (MANIFEST_FORMAT, MANIFEST_JSON, REPORT_HTML, REPORT_JSON, REPORT_MD,
                                       SAMPLES_JSONL, TOP_FILES, foreign_files, verify_report)
from moraleval.report.models import build_models_report

__all__ = ["DamagedReport", "MANIFEST_FORMAT", "MANIFEST_JSON", "REPORT_FORMAT", "REPORT_HTML", "REPORT_JSON",
           "REPORT_MD", "ReportFolder", "SAMPLES_JSONL", "SIGNIFICANT_DIGITS", "TOP_FILES", "build_models_report",
           "build_report", "build_samples", "default_report_dir", "diff_reports", "dumps_json", "foreign_files",
           "jsonable", "load_report_folder", "rerender", "verify_report", "write_models_report", "write_report"]
