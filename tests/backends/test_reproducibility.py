"""The same spec, data, model and seed give byte-identical report.json and samples.jsonl, whatever the batch
size — on the real embedded model, chain of thought included (the fake-backend runner tests cover resume and
kill -9)."""

from __future__ import annotations

from pathlib import Path

import pytest

from moraleval.checker import check
from moraleval.measure import measure
from moraleval.planner import compile_plan
from moraleval.report import write_report
from moraleval.runner import run_plan

pytestmark = pytest.mark.slow

SPEC = Path(__file__).resolve().parents[2] / "specs" / "quickstart.me"


def test_batch_size_does_not_change_a_byte(tmp_path, default_backend):
    plan = compile_plan(check(SPEC, mode="plan"))
    outputs = []
    for batch_size in (8, 3):
        outcomes = run_plan(plan, default_backend, cache=tmp_path / f"cache{batch_size}",
                            batch_size=batch_size, limit=24, progress=False)
        assert any(o.generated for o in outcomes.values())  # the chain-of-thought condition ran too
        out = write_report(plan, measure(plan, outcomes), outcomes, out_dir=tmp_path / f"out{batch_size}",
                           backend=default_backend)
        outputs.append(((out / "report.json").read_bytes(), (out / "samples.jsonl").read_bytes()))
    assert outputs[0] == outputs[1]
