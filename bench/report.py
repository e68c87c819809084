"""Benchmark of the report pages and `moraleval view` (run by hand: ``python bench/report.py``).

1. The quick start (specs/quickstart.me on the builtin sample, answered by the fake backend of tests/fakes.py):
   report.html size and the time to render report.md + report.html + figures (``rerender``).
2. A 20k-row synthetic BBQ-like run with chains of thought (tests/report_support.synthetic_run): the same.
3. `moraleval view` on a 200k-row samples.jsonl: time to start (read and check the folder, render the page,
   build the sample index), then first-page latency (HTTP GET of /api/rows, 50 rows, unfiltered and filtered to
   one condition × category), median of 5, and a text search over every row.

Prints one JSON object.  ``--rows-view N`` changes the size of the view run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from report_support import quickstart_report, synthetic_run  # noqa: E402

from moraleval.report import rerender  # noqa: E402
from moraleval.report.view import make_server  # noqa: E402


def _render(out: Path) -> dict:
    t = time.perf_counter()
    rerender(out)
    dt = time.perf_counter() - t
    return {"rows": sum(1 for _ in open(out / "samples.jsonl", "rb")), "render_s": round(dt, 2),
            "report_html_bytes": (out / "report.html").stat().st_size,
            "samples_jsonl_bytes": (out / "samples.jsonl").stat().st_size}


def _get_ms(port: int, path: str) -> float:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t = time.perf_counter()
    c.request("GET", path)
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
    return (time.perf_counter() - t) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows-big", type=int, default=20_000)
    ap.add_argument("--rows-view", type=int, default=200_000)
    args = ap.parse_args()
    res: dict = {"load_average": os.getloadavg()[0], "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        res["quickstart"] = _render(quickstart_report(tmp_p / "qs"))
        res["synthetic_20k"] = _render(synthetic_run(tmp_p / "big", args.rows_big))
        view = synthetic_run(tmp_p / "view", args.rows_view)
        t = time.perf_counter()
        server, index = make_server(view, 0)
        res_view = {"rows": len(index), "samples_jsonl_bytes": (view / "samples.jsonl").stat().st_size,
                    "index_s": round(time.perf_counter() - t, 2)}
        threading.Thread(target=server.serve_forever, daemon=True).start()
        port = server.server_address[1]
        api = server.url.split(str(port), 1)[1] + "api/rows"  # /<token>/api/rows
        try:
            res_view["first_page_ms"] = round(_get_ms(port, f"{api}?offset=0&limit=50"), 1)
            res_view["page_ms_median"] = round(statistics.median(
                _get_ms(port, f"{api}?offset={k * 50}&limit=50") for k in range(1, 6)), 1)
            res_view["filtered_first_page_ms"] = round(
                _get_ms(port, f"{api}?condition=Q_IF_CoT&g.category=Age&offset=0&limit=50"), 1)
            res_view["filtered_next_page_ms_median"] = round(statistics.median(
                _get_ms(port, f"{api}?condition=Q_IF_CoT&g.category=Age&offset={k * 50}&limit=50")
                for k in range(1, 6)), 1)
            res_view["search_all_rows_ms"] = round(_get_ms(port, f"{api}?q=no-such-text&offset=0&limit=50"), 1)
        finally:
            server.shutdown()
            server.server_close()
            index.close()
        res["view_200k"] = res_view
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
