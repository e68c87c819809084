"""`moraleval data fetch NAME`: download a dataset's pinned files from its origin and verify every hash."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from moraleval.errors import MoralevalError

NAME = "data"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("data", help="datasets: fetch pinned files")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    f = dsub.add_parser("fetch", help="download a dataset's pinned files from its origin and verify every hash",
                        description="Download the files a spec's dataset declares (file ... sha256 ... upstream ...) "
                                    "from its origin at the pinned commit into the user data directory (or "
                                    "--dest), verifying every sha256.")
    f.add_argument("name", help="dataset name, e.g. bbq, winogender, law")
    f.add_argument("--spec", action="append", default=[], help="spec(s) declaring the dataset "
                                                               "(default: specs/*.me)")
    f.add_argument("--dest", help="data root to write into (default: the user data directory)")
    f.add_argument("--only", action="append", default=[], metavar="PATH",
                   help="fetch only these declared files (repeatable)")
    f.add_argument("-v", "--verbose", action="store_true", help="on failure, one block per file")
    f.set_defaults(func=command)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def command(args: argparse.Namespace) -> int:
    from moraleval.language import nodes as n
    from moraleval.data.fetch import FetchFile, default_data_root, fetch_files, origin_url
    from moraleval.language.parser import parse_file

    specs = args.spec or sorted(str(p) for p in Path("specs").rglob("*.me"))
    if not specs:
        raise MoralevalError(f"no spec declares dataset '{args.name}' (no specs given, none in ./specs)",
                             hint="give the spec: moraleval data fetch NAME --spec FILE.me")
    found = None
    names = []
    for spec in _with_imports(specs):
        parsed = parse_file(spec)
        for ds in parsed.of(n.Dataset):
            names.append(ds.name)
            if ds.name == args.name and found is None:
                found = (spec, ds)
    if found is None:
        from moraleval.util.text import did_you_mean

        raise MoralevalError(f"no dataset '{args.name}' in {', '.join(specs)}",
                             hint=did_you_mean(args.name, names) or "datasets: " + ", ".join(sorted(set(names))))
    spec, ds = found
    origin = next((s for s in ds.body if isinstance(s, n.Origin)), None)
    if origin is None:
        raise MoralevalError(f"dataset '{ds.name}' in {spec} has no 'origin' line, so there is nowhere to fetch from",
                             hint='add e.g.: origin github "owner/repo" commit "<40 hex digits>" (or origin '
                                  'huggingface "owner/name" commit "..." for a Hugging Face dataset repository)')
    files = []
    upstream_of = {}
    for f in (s for s in ds.body if isinstance(s, n.FileDecl)):
        if args.only and f.path not in args.only:
            continue
        if f.upstream is None:
            print(f"skipping {f.path}: it has no 'upstream' path (a local file, e.g. a shipped sample)")
            continue
        url = origin_url(origin.kind, origin.location, origin.commit, f.upstream)
        upstream_of[f.path] = f.upstream
        files.append(FetchFile(f.path, url, f.sha256))
    if not files:
        raise MoralevalError(f"nothing to fetch for dataset '{ds.name}'",
                             hint="it declares no files" if not args.only else "--only matched no declared file")
    dest = Path(args.dest) if args.dest else default_data_root()
    print(f"fetching {len(files)} file(s) of dataset '{ds.name}' into {dest}")
    from moraleval.data.fetch import FetchError

    report = fetch_files(files, dest, raise_on_failure=False)
    if report.ok or args.verbose:
        print(report.summary())
    if report.unpinned:
        _print_pins(report, ds.name, spec, upstream_of)
    if not report.ok:
        raise FetchError(report, verbose=args.verbose)
    print(f"done: use --data {dest} (or nothing: moraleval looks there by default)")
    return 0


def _print_pins(report, dataset: str, spec: str, upstream_of: dict) -> None:
    """Files declared `unpinned` were fetched without verification: say so, and print the exact lines that pin
    them (moraleval refuses to read them until the spec holds these lines)."""
    print(f"\nWARNING: {len(report.unpinned)} file(s) of dataset '{dataset}' are declared `unpinned` in {spec}: "
          f"their content was NOT verified, and check/plan/run will not read them until they are pinned.")
    print("Check each file (compare the sha256 below with the one its origin publishes, e.g. on the Hugging Face "
          "file page, or with a second download), then replace its `unpinned` line with:")
    for f, actual in report.unpinned:
        upstream = upstream_of.get(f.path)
        print(f'    file "{f.path}" sha256 "{actual}"' + (f' upstream "{upstream}"' if upstream else "")
              + f"    # from {f.url}")


def _with_imports(specs: list[str]) -> list[str]:
    """The given spec files and, recursively, the files they import (a dataset often lives in a library)."""
    from moraleval.language import nodes as n
    from moraleval.language.parser import parse_file

    out: list[str] = []
    todo = list(specs)
    while todo:
        spec = todo.pop(0)
        key = str(Path(spec).resolve())
        if key in {str(Path(o).resolve()) for o in out}:
            continue
        if not Path(spec).is_file():
            raise MoralevalError(f"spec file '{spec}' not found")
        out.append(spec)
        todo += [str(Path(spec).parent / imp.path) for imp in parse_file(spec).of(n.Import)]
    return out
