"""Importing onnxruntime without leaving anything in the user's home.

On import, onnxruntime creates ``$XDG_CACHE_HOME/Microsoft/DeveloperTools/.onnxruntime/`` (``~/.cache/...`` when
XDG_CACHE_HOME is unset) holding ``deviceid``, its telemetry id, and a small database.  moraleval points
XDG_CACHE_HOME at its own cache for the import (``<moraleval cache>/onnxruntime``) and switches the telemetry
events off, so nothing is written outside moraleval's cache and nothing is reported.
"""

from __future__ import annotations

import os
import queue
import sys
import threading

from moraleval.util.signals import interrupt_requested

_LOCK = threading.Lock()


def ort_home():
    from backends.onnx.store import cache_dir

    return cache_dir() / "onnxruntime"


def import_onnxruntime():
    """``onnxruntime``, imported with XDG_CACHE_HOME inside moraleval's cache, telemetry events off."""
    with _LOCK:
        module = sys.modules.get("onnxruntime")
        if module is None:
            home = ort_home()
            home.mkdir(parents=True, exist_ok=True)
            before = os.environ.get("XDG_CACHE_HOME")
            os.environ["XDG_CACHE_HOME"] = str(home)
            try:
                import onnxruntime as module
            finally:
                if before is None:
                    os.environ.pop("XDG_CACHE_HOME", None)
                else:
                    os.environ["XDG_CACHE_HOME"] = before
        try:
            module.disable_telemetry_events()
        except AttributeError:  # pragma: no cover - builds without telemetry
            pass
        return module


#: how often the main thread wakes while a forward pass runs, to act on Ctrl-C / SIGTERM
_POLL_S = 0.05
_jobs: "queue.SimpleQueue | None" = None
_worker: threading.Thread | None = None


def run_interruptibly(call):
    """``call(run_options)`` (a ``session.run`` / ``run_with_iobinding``), stoppable by Ctrl-C or SIGTERM within
    about a tenth of a second instead of after the whole forward pass (seconds for a scoring batch on a busy CPU).

    Python acts on a signal only in the main thread and only between bytecodes, never inside onnxruntime's C++
    ``Run``.  So, in the main thread, the pass runs on a helper thread (one per process, kept; onnxruntime
    releases the GIL while it computes) while the main thread waits in short, interruptible steps; on
    KeyboardInterrupt it sets ``RunOptions.terminate`` (onnxruntime checks it between graph nodes), waits for the
    pass to end and re-raises.  The numbers are the same: the same session computes them, on its own thread pool,
    whichever thread asks.  Outside the main thread (a Ray worker's actor thread, a library caller's thread) it is
    a plain call.  Cost: the hand-off, 0.03-0.3 ms per pass on a loaded 2-core machine, against tens of
    milliseconds for one decoding step of the default model."""
    global _jobs, _worker
    ort = sys.modules.get("onnxruntime") or import_onnxruntime()  # imported by then: the session exists
    options = ort.RunOptions()
    if threading.current_thread() is not threading.main_thread():
        return call(options)
    if _worker is None or not _worker.is_alive():  # first use, or a forked child (threads do not survive fork)
        _jobs = queue.SimpleQueue()
        _worker = threading.Thread(target=_serve, args=(_jobs,), name="onnxruntime-run", daemon=True)
        _worker.start()
    box: dict[str, object] = {}
    done = threading.Event()
    _jobs.put((call, options, box, done))
    try:
        while not done.wait(_POLL_S):
            if interrupt_requested():  # the CLI got Ctrl-C but its KeyboardInterrupt was lost (util.signals)
                raise KeyboardInterrupt
    except BaseException:
        options.terminate = True  # the pass stops at its next node; its (partial) result is discarded
        done.wait(30)
        raise
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]


def _serve(jobs: "queue.SimpleQueue") -> None:
    while True:
        call, options, box, done = jobs.get()
        try:
            box["result"] = call(options)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = exc
        finally:
            done.set()
