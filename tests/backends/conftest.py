"""Fixtures for the ONNX backend tests: a tiny random Llama (fast) and the real default model (slow)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for _onnx_ref (tests/backends has no __init__.py)

from _onnx_ref import TINY, random_weights, write_tiny_gguf  # noqa: E402


@pytest.fixture(scope="session")
def tiny_weights():
    return random_weights(TINY, seed=0)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory, tiny_weights) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    write_tiny_gguf(path, tiny_weights, TINY)
    return path


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory, tiny_gguf) -> Path:
    """The tiny GGUF imported with fp32 weights (for exact comparisons with the numpy reference)."""
    from backends.onnx.store import write_model_dir

    dest = tmp_path_factory.mktemp("models") / "tiny-fp32"
    write_model_dir(dest, tiny_gguf, dtype="float32")
    return dest


@pytest.fixture(scope="session")
def tiny_backend(tiny_dir):
    from backends.onnx import OnnxBackend

    be = OnnxBackend(model=str(tiny_dir), batch_size=4)
    yield be
    be.close()


@pytest.fixture(scope="session")
def default_model_dir(tmp_path_factory) -> Path:
    """The real default model, imported once per session into a temporary cache."""
    from backends.onnx import import_default_model

    cache = tmp_path_factory.mktemp("moraleval-cache")
    old = os.environ.get("MORALEVAL_CACHE")
    os.environ["MORALEVAL_CACHE"] = str(cache)
    try:
        yield import_default_model()
    finally:
        if old is None:
            os.environ.pop("MORALEVAL_CACHE", None)
        else:
            os.environ["MORALEVAL_CACHE"] = old


@pytest.fixture(scope="session")
def default_backend(default_model_dir):
    from backends.onnx import OnnxBackend

    be = OnnxBackend(model=str(default_model_dir))
    yield be
    be.close()
