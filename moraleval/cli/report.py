"""`moraleval report DIR`: re-render report.md / report.html from the report's data files (no re-run)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

NAME = "report"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(NAME, help="re-render report.md/report.html from report.json (no re-run)")
    p.add_argument("report_dir", metavar="DIR")
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from moraleval.cli.options import to_stderr
    from moraleval.report import rerender  # one- and several-model reports
    from moraleval.util.text import for_terminal

    written = rerender(Path(args.report_dir), log=to_stderr)
    if written:
        print("re-rendered: " + ", ".join(for_terminal(w) for w in written))
    return 0
