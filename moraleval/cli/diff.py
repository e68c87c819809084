"""`moraleval diff A B`: what changed between two reports, and paired statistics on the items both answered;
exit codes for CI gating."""

from __future__ import annotations

import argparse
from typing import Any

NAME = "diff"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(NAME, help="compare two reports: what changed, and paired statistics on the same items",
                       description="Compare report directories A and B (two models, two versions of one model, two "
                                   "prompt versions, two machines): the manifest change list, then every metric on "
                                   "the items both answered (paired by data-file hash + task + condition + row), "
                                   "B - A with a paired-bootstrap CI and p (McNemar for proportions), Holm-adjusted, "
                                   "and the answer transitions. Exit codes: 0 ok, 1 a gate failed, 2 the reports "
                                   "cannot be compared (e.g. unmatched items). See docs/models.md.")
    p.add_argument("a", metavar="A", help="baseline report directory")
    p.add_argument("b", metavar="B", help="report directory compared against A")
    p.add_argument("--model-a", help="the model of A to compare, when A holds several")
    p.add_argument("--model-b", help="the model of B to compare, when B holds several")
    p.add_argument("--json", action="store_true", help="print the result as JSON (report.json field names)")
    p.add_argument("--allow-partial", action="store_true", help="compare the matched items when some are unmatched")
    p.add_argument("--fail-if", action="append", default=[], metavar="GATE",
                   help="exit 1 when B's value meets it: 'METRIC[@COND] OP N', 'delta(METRIC) OP N' (B - A) or "
                        "'abs(METRIC) OP N' (repeatable)")
    p.add_argument("--fail-on-regression", action="store_true",
                   help="exit 1 on any significant (Holm p < --alpha) change for the worse")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level for --fail-on-regression")
    p.add_argument("--higher-is-better", action="append", default=[], metavar="METRIC",
                   help="metrics where lower is worse (default: names containing 'acc'); others: |value| "
                        "further from 0 is worse")
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from moraleval.compare.diff import render_text
    from moraleval.report import diff_reports

    res = diff_reports(args.a, args.b, model_a=args.model_a, model_b=args.model_b, allow_partial=args.allow_partial,
                       gates=args.fail_if, fail_on_regression=args.fail_on_regression, alpha=args.alpha,
                       higher_is_better=args.higher_is_better)
    if args.json:
        from moraleval.report import dumps_json, jsonable

        from moraleval.util.text import json_for_terminal

        # JSON escapes C0 controls itself; C1 controls and line separators would reach the terminal raw
        print(json_for_terminal(dumps_json(jsonable(res.to_json()))))
    else:
        print(render_text(res))
    return res.exit_code
