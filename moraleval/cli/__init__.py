"""`moraleval`: check, plan and run specs; fetch data; import models; verify, re-render, browse and diff reports;
explain diagnostic codes.  One module per subcommand; this one builds the parser and turns every failure into a
message and an exit code.

User errors are ``MoralevalError``s: printed like a compiler's diagnostics, with an exit code, never a traceback
(``--debug`` shows one).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import Sequence

from moraleval import __version__
from importlib.metadata import entry_points

from moraleval.cli import backends, check, data, diff, explain, plan, report, run, verify, view
from moraleval.errors import MoralevalError
from moraleval.util.text import for_terminal

__all__ = ["COMMANDS", "INTERNAL_ERROR", "PLUGIN_GROUP", "build_parser", "main"]

INTERNAL_ERROR = 70  # EX_SOFTWARE: a bug in moraleval (every user error is a MoralevalError with its own code)
RUN_INTERRUPTED = 130
SUBCOMMANDS = (check, plan, run, data, verify, report, view, backends, diff, explain)
#: entry points `name = "package:function"`, the function registering subcommand `name` on the subparsers (the
#: onnx backend adds `models import|list` this way); loaded only when the parser is built
PLUGIN_GROUP = "moraleval.commands"
COMMANDS = tuple(m.NAME for m in SUBCOMMANDS) + tuple(ep.name for ep in entry_points(group=PLUGIN_GROUP))

DESCRIPTION = """\
moraleval measures social bias and moral self-correction in language models from spec files (.me).

  moraleval specs/quickstart.me            run a spec on its default model and write a report
  moraleval check specs/*.me               find every problem in specs (names, templates, data, hashes)
  moraleval plan specs/bbq.me --show 2     see the exact prompts and request counts before running
  moraleval data fetch bbq                 download a dataset's pinned files and verify their hashes
  moraleval models import                  import the embedded default model (SmolLM2-135M-Instruct) once
  moraleval explain E143                   what a diagnostic code means, with an example and its fix

Data files are looked up in every data root, in this order: --data (repeatable; --data builtin:sample is the
shipped sample), the spec's `data` lines, $MORALEVAL_DATA (a path list), the user data directory (where
`data fetch` puts them).  A file is taken from the first root holding a copy that matches its pinned sha256.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moraleval", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"moraleval {__version__}")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    for ep in entry_points(group=PLUGIN_GROUP):
        _add_plugin(sub, ep)
    return parser


def _add_plugin(sub, ep) -> None:
    """A plugin's subcommand; one that cannot be loaded still answers, with why."""
    try:
        ep.load()(sub)
    except Exception as exc:  # noqa: BLE001 - a broken plugin must not break every other command
        reason = f"{type(exc).__name__}: {exc}"
        p = sub.add_parser(ep.name, help=f"(unavailable: {reason})")
        p.set_defaults(func=lambda args: _unavailable(ep.name, ep.value, reason))


def _unavailable(name: str, where: str, reason: str) -> int:
    raise MoralevalError(f"the '{name}' command ({where}) cannot be loaded: {reason}",
                         hint="reinstall moraleval and its backends (pip install -e .)")


def main(argv: Sequence[str] | None = None) -> int:
    as_program = argv is None
    with _interrupts():
        code = _main(argv)
    if as_program and code == RUN_INTERRUPTED:
        # everything is stored and said: do not make the user wait for the interpreter's teardown (a second or
        # more of garbage collection after a large plan)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code



@contextlib.contextmanager
def _interrupts():
    """Ctrl-C (SIGINT) and SIGTERM (kill, a scheduler's timeout) stop a command: what finished is stored, exit
    130.  Both handlers are installed here, SIGINT too: a process started with SIGINT ignored (a background job of
    a shell script; Python keeps an inherited SIG_IGN) would otherwise never act on it.  The handler remembers the
    request (``util.signals.interrupt_requested``), so a run stops even if the KeyboardInterrupt it raises is lost
    on the way."""
    from moraleval.util.signals import clear_interrupt, stop_handler

    clear_interrupt()
    previous = {}
    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            previous[s] = signal.signal(s, stop_handler)
    except (ValueError, OSError):  # not the main thread (library use, tests): leave signals alone
        for s, handler in previous.items():
            signal.signal(s, handler)
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        clear_interrupt()


def _main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("MORALEVAL_DEBUG") == "1"
    # `moraleval SPEC ...` is `moraleval run SPEC ...`
    first = next((a for a in argv if not a.startswith("-")), None)
    if first is not None and first not in COMMANDS and (first.endswith(".me") or _is_file(first)):
        argv.insert(argv.index(first), "run")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return int(args.func(args) or 0)
    except MoralevalError as exc:
        if debug:
            raise
        # names in a message may come from a file or a folder someone sent: control characters are escaped
        print(for_terminal(str(exc), keep_newlines=True), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted: everything already computed is in the cache; run the same command again to resume",
              file=sys.stderr)
        return RUN_INTERRUPTED
    except BrokenPipeError:  # e.g. `moraleval plan ... | head`
        return 0
    except Exception:  # noqa: BLE001 - not a user error: a bug in moraleval, shown as one
        if debug:
            raise
        import traceback

        traceback.print_exc()
        print(f"\ninternal error: this is a bug in moraleval {__version__}, not a problem with your input; please "
              "report it with the command line and the traceback above (run with --debug to see it unformatted)",
              file=sys.stderr)
        return INTERNAL_ERROR


def _is_file(path: str) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):  # a name too long, or with a NUL byte: not a spec we can run
        return False
