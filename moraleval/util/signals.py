"""Interrupts: what the command line does with Ctrl-C (SIGINT) and SIGTERM, and holding them back while a set of
files is replaced.

**A request to stop is remembered, not only raised.**  The command line's handler (``cli``: :func:`stop_handler`)
sets a flag before it raises KeyboardInterrupt.  Python raises that exception wherever the main thread happens to
be, and code that is not ours can lose it (a finalizer or weakref callback running at that moment prints
"Exception ignored" and goes on; a library's ``except BaseException`` may retry).  The runner checks
:func:`interrupt_requested` after every stored answer and before every batch, and the ONNX backend while it waits
for a forward pass, so a lost KeyboardInterrupt still stops the run at the next answer.  ``cli`` installs the
handler itself, also when the process started with SIGINT ignored (a background job of a shell script, some CI
runners pass SIG_IGN down): Python leaves an inherited SIG_IGN in place, and such a run ran to its end on
``kill -INT``.

**Held back while files are replaced.**
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

__all__ = ["clear_interrupt", "deferred_signals", "interrupt_requested", "stop_handler"]

_requested: list[int] = []  # signal numbers received by stop_handler since clear_interrupt()


def interrupt_requested() -> bool:
    """Whether the command line received Ctrl-C or SIGTERM: a run stops at the next answer even if the
    KeyboardInterrupt raised for it was lost."""
    return bool(_requested)


def clear_interrupt() -> None:
    _requested.clear()


def stop_handler(signum: int, _frame: object) -> None:
    """The command line's SIGINT and SIGTERM handler: remember the request, say at once that it was received
    (one raw write, safe whatever the main thread was printing), and raise KeyboardInterrupt."""
    first = not _requested
    _requested.append(signum)
    if first:
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        with contextlib.suppress(OSError):
            os.write(2, f"moraleval: {name} received, stopping (what is answered is kept)\n".encode())
    raise KeyboardInterrupt

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
