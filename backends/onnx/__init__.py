"""ONNX Runtime backend and the embedded default model (SmolLM2-135M-Instruct, imported from its GGUF).

Public API: :class:`OnnxBackend`, :func:`import_default_model`, :func:`list_models`, :func:`render_prompt`,
:func:`add_models_cli`, and the model store (``backends.onnx.store``: where imported models live, their manifests
and hashes), which the backend, its command line and the tests share.  onnxruntime is imported only when an
``OnnxBackend`` is created.
"""

from __future__ import annotations

from ._backend import OnnxBackend, render_prompt
from ._cli import add_models_cli
from .store import import_default_model, list_models

__all__ = ["OnnxBackend", "import_default_model", "list_models", "render_prompt", "add_models_cli"]
