"""`moraleval verify DIR`: re-hash a report's inputs and outputs and say whether it still matches them."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

NAME = "verify"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(NAME, help="re-hash a report's inputs and outputs; say whether it still matches")
    p.add_argument("report_dir", metavar="DIR")
    p.add_argument("--data", metavar="DIR", help="data root to re-hash against (default: the one in the manifest)")
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    """Every name printed comes from the folder or its manifest and is escaped for the terminal
    (``util.text.for_terminal``): a file named with escape codes cannot rewrite the verdict."""
    from moraleval.report import foreign_files, verify_report
    from moraleval.util.text import for_terminal

    problems = verify_report(Path(args.report_dir), data_root=args.data)
    foreign = foreign_files(Path(args.report_dir))
    for name in foreign:  # a note, not a failure: the report's own files are what verify vouches for
        print(f"foreign file: {for_terminal(name)} (not in the manifest: not written by moraleval, not checked, "
              "never deleted)")
    shown = for_terminal(args.report_dir)
    if problems:
        for p in problems:
            print(f"MISMATCH: {for_terminal(p)}")
        print(f"{shown}: the report does NOT match its inputs ({len(problems)} problem(s))")
        return 1
    also = f"; {len(foreign)} foreign file(s) listed above are not part of it" if foreign else ""
    print(f"{shown}: the report matches its inputs (every hash checked){also}")
    return 0
