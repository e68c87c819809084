"""Importing onnxruntime without leaving anything in the user's home.

On import, onnxruntime creates ``$XDG_CACHE_HOME/Microsoft/DeveloperTools/.onnxruntime/`` (``~/.cache/...`` when
XDG_CACHE_HOME is unset) holding ``deviceid``, its telemetry id, and a small database.  moraleval points
XDG_CACHE_HOME at its own cache for the import (``<moraleval cache>/onnxruntime``) and switches the telemetry
events off, so nothing is written outside moraleval's cache and nothing is reported.
"""

from __future__ import annotations

import os
import sys
import threading

_LOCK = threading.Lock()


def ort_home():
    from backends.onnx._store import cache_dir

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
