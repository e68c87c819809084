"""Reports made for the report/browser tests and the report benchmark: the quick start's plan answered by the
fake backend (optionally with a hostile answer injected), written with the real report stage."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from fakes import FakeBackend  # noqa: E402

from moraleval.backend import GenerateResult  # noqa: E402

HOSTILE = ' <script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> & "quotes"'


class HostileBackend(FakeBackend):
    """The fake backend, but every chain of thought contains markup that would run if rendered as HTML."""

    def generate(self, requests: Sequence[Any], *, on_result=None) -> list[GenerateResult]:
        out = [GenerateResult(r.text + HOSTILE, r.n_tokens, r.finish_reason)
               for r in super().generate(requests, on_result=None)]
        if on_result is not None:
            for i, r in enumerate(out):
                on_result(i, r)
        return out


def quickstart_report(out: Path, *, backend: Any = None, spec: str | None = None,
                      overrides: Sequence[str] = ()) -> Path:
    """Plan ``specs/quickstart.me`` (builtin sample data), answer it with ``backend`` (default the hostile fake),
    measure and write the report into ``out``."""
    import contextlib
    import io

    from moraleval import cli
    from moraleval.cache import ResponseCache
    from moraleval.measure import measure
    from moraleval.report import write_report
    from moraleval.runner import run_plan

    backend = backend or HostileBackend()
    with contextlib.redirect_stderr(io.StringIO()):
        _checked, plan = cli.load_plan(spec or str(REPO / "specs" / "quickstart.me"), None, list(overrides))
    outcomes = run_plan(plan, backend, cache=ResponseCache(":memory:"), progress=False)
    return write_report(plan, measure(plan, outcomes), outcomes, out_dir=out, backend=backend,
                        run_stats=outcomes.stats)
