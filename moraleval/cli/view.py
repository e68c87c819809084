"""`moraleval view DIR`: serve a report's page and sample browser on 127.0.0.1 (for runs too big to embed)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from moraleval.cli.options import count

NAME = "view"


def add_parser(sub: Any) -> None:
    p = sub.add_parser(NAME, help="serve a report's page and sample browser on 127.0.0.1 (for big runs)",
                       description="Serve DIR/report.html from a local HTTP server on 127.0.0.1 whose sample "
                                   "browser pages through DIR/samples.jsonl; open the printed address.")
    p.add_argument("report_dir", metavar="DIR")
    p.add_argument("--port", type=count(0, 65_535), default=8765,
                   help="port on 127.0.0.1, 0 to 65535 (default 8765; 0: any free port)")
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    from moraleval.cli.options import to_stderr
    from moraleval.report.view import serve

    return serve(Path(args.report_dir), port=args.port, log=to_stderr)
