"""`moraleval view`: the sample index's filters and the local HTTP API (no browser needed)."""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from report_support import quickstart_report, synthetic_run  # noqa: E402

from moraleval.errors import ReportError  # noqa: E402
from moraleval.report.view import SampleIndex, js_str, make_server  # noqa: E402


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> Path:
    return quickstart_report(tmp_path_factory.mktemp("qs") / "report")


@pytest.fixture(scope="module")
def server(quickstart):
    srv, index = make_server(quickstart, 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1], index, urlsplit(srv.url).path
    srv.shutdown()
    srv.server_close()
    index.close()


def _get(port: int, path: str, host: str = "127.0.0.1", *, headers: bool = False):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("GET", path, headers={"Host": f"{host}:{port}"})
    r = c.getresponse()
    return (r.status, r.read(), dict(r.getheaders())) if headers else (r.status, r.read())


def _samples(d: Path) -> list[dict]:
    return [json.loads(x) for x in (d / "samples.jsonl").read_text().splitlines()]


def test_index_filters_match_the_samples(quickstart) -> None:
    samples = _samples(quickstart)
    idx = SampleIndex(quickstart / "samples.jsonl")
    try:
        assert len(idx) == len(samples)
        for k, s in enumerate(samples):  # byte offsets give back exactly each line
            assert json.loads(idx.line(k)) == s
        got = idx.filter({"task": "bbq_answer", "condition": "Q,Q_IF"}, {"category": "Age"})
        want = [k for k, s in enumerate(samples) if s["task"] == "bbq_answer" and s["condition"] in ("Q", "Q_IF")
                and s["values"]["category"] == "Age"]
        assert got == want and want
        right = [k for k, s in enumerate(samples) if s["task"] == "bbq_answer"
                 and s["readout"]["answer"] == s["values"]["label"]]
        assert idx.filter({"correct": "yes"}, {}) == right
        a = [k for k, s in enumerate(samples) if s["task"] == "bbq_answer" and s["readout"]["answer"] == 0]
        assert idx.filter({"task": "bbq_answer", "answer": "(a)"}, {}) == a
        # disagreement: the same row (task, model, row, variant) answered differently across conditions
        rows: dict[tuple, set] = {}
        for s in samples:
            rows.setdefault((s["task"], s["row"], s["variant"]), set()).add(json.dumps(s["readout"][s["choice"]]))
        dis = [k for k, s in enumerate(samples) if len(rows[(s["task"], s["row"], s["variant"])]) > 1]
        assert idx.filter({"disagree": "conditions"}, {}) == dis and 0 < len(dis) < len(samples)
        assert len(idx.filter({"q": "window.__pwned"}, {})) == sum(1 for s in samples if s["generated"])
    finally:
        idx.close()


def test_api_pages_and_filters(server, quickstart) -> None:
    port, index, base = server
    status, body = _get(port, base + "api/rows?task=winogender_fill&offset=50&limit=20")
    data = json.loads(body)
    assert status == 200 and data["total"] == 180 and len(data["rows"]) == 20
    assert [r["index"] for r in data["rows"]] == [s["index"] for s in _samples(quickstart)
                                                  if s["task"] == "winogender_fill"][50:70]
    assert {"_answer", "_correct", "_dc", "_dm", "prompts"} <= set(data["rows"][0])
    status, body = _get(port, base + "api/rows?condition=Q&limit=all&fields=metric")
    data = json.loads(body)
    assert data["total"] == len(data["rows"]) == 108 and "prompts" not in data["rows"][0]
    assert _get(port, base + "api/rows?limit=x")[0] == 400
    assert _get(port, base + "api/rows?offset=" + "9" * 5000)[0] == 400


def test_the_page_is_rendered_from_moralevals_template_with_a_strict_policy(server, quickstart) -> None:
    """Not the folder's report.html (which anyone could have edited): the package's template, rows served, and
    a Content-Security-Policy header that lets only that page's own script run."""
    import base64
    import hashlib

    from moraleval.report.render import _static

    port, _, base = server
    status, page, headers = _get(port, base, headers=True)
    assert status == 200 and page != (quickstart / "report.html").read_bytes()
    assert b'"rows":null' in page and b"window.__pwned" not in page  # rows come from the API
    js_hash = base64.b64encode(hashlib.sha256(_static("browser.js").encode()).digest()).decode()
    csp = headers["Content-Security-Policy"]
    assert f"script-src 'sha256-{js_hash}'" in csp and "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "connect-src 'self'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "no-referrer"
    original = (quickstart / "report.html").read_bytes()
    (quickstart / "report.html").write_text("<script>window.evil = 1</script>")  # a tampered folder file ...
    try:
        assert b"window.evil" not in _get(port, base)[1]  # ... is never served
    finally:
        (quickstart / "report.html").write_bytes(original)


def test_only_the_page_and_api_are_served_only_locally_and_only_with_the_token(server) -> None:
    port, _, base = server
    for path in ("report.json", "samples.jsonl", "manifest.json", "../../etc/passwd", "plots/x.svg"):
        assert _get(port, base + path)[0] == 404, path
    for path in ("/", "/report.html", "/api/rows", "/api/rows?limit=all", "/" + "x" * 32 + "/api/rows",
                 base[:-2] + "/api/rows", base.upper() + "api/rows"):
        assert _get(port, path)[0] == 403, path  # the token printed by `moraleval view` is needed
    assert _get(port, base, host="evil.example")[0] == 403  # DNS rebinding


def test_missing_folder_is_a_user_error(tmp_path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        make_server(tmp_path / "nope")
    with pytest.raises(ReportError, match="report.json is missing"):
        make_server(tmp_path)


def test_js_str_matches_the_page() -> None:
    assert [js_str(v) for v in ("a", 1, 2.0, 2.5, True, None, [1, "x"])] == \
        ["a", "1", "2", "2.5", "true", "null", '[1,"x"]']


def test_big_runs_are_not_embedded(tmp_path, monkeypatch) -> None:
    from moraleval.report import page as pg

    assert pg.EMBED_MAX_ROWS == 25_000
    monkeypatch.setattr(pg, "EMBED_MAX_ROWS", 300)
    out = synthetic_run(tmp_path / "big", 400)
    html = (out / "report.html").read_text()
    assert '"rows":null' in html and "moraleval view" in html and "This run has 400 item" in html
    small = synthetic_run(tmp_path / "small", 200)
    assert '"rows":null' not in (small / "report.html").read_text()
