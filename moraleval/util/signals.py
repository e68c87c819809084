"""Holding Ctrl-C (SIGINT), SIGTERM and SIGHUP back while a set of files is replaced, so that an interruption
lands before or after the set, never in the middle.

Why: the report stage replaces several files of one folder (report.json, samples.jsonl, the pages, the figures,
manifest.json last).  Each replacement is atomic, but an interruption between two of them would leave a folder
mixing the new files with the old: pages that do not describe the report.json beside them.  Everything is rendered
in memory first; only the renames (milliseconds) run under :func:`deferred_signals`, and the signal is acted on
as soon as they are done.  A SIGKILL or a power cut cannot be held back; ``moraleval verify`` names the files
such a kill left out of step (the manifest, written last, hashes every file).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator

__all__ = ["deferred_signals"]

_HELD = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None),
                          getattr(signal, "SIGHUP", None)) if s is not None)


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Run the block with SIGINT, SIGTERM and SIGHUP recorded instead of acted on, then act on the first one
    received exactly as it would have been (the previous handler runs; a default disposition is re-raised to this
    process).  Outside the main thread (where Python runs no signal handler) the block simply runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous: dict[int, object] = {}

    def hold(signum: int, _frame: object) -> None:
        received.append(signum)

    try:
        for s in _HELD:
            previous[s] = signal.signal(s, hold)
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
        if received:
            _act_on(received[0], previous.get(received[0]))


def _act_on(signum: int, handler: object) -> None:
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        os.kill(os.getpid(), signum)
    # SIG_IGN (or None: a handler not installed from Python): the signal was to be ignored
