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


# -- a folder that changes, and a server that stays up (issue #24) --------------------------------------------

@pytest.fixture
def served_copy(quickstart, tmp_path):
    """A copy of the quick start report, served; yields (folder, get(path) -> (status, body))."""
    import shutil

    d = tmp_path / "report"
    shutil.copytree(quickstart, d)
    srv, index = make_server(d, 0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    base, port = urlsplit(srv.url).path, srv.server_address[1]
    yield d, (lambda path: _get(port, base + path)), srv
    srv.shutdown()
    srv.server_close()
    index.close()


def test_rows_are_read_with_pread_never_a_memory_map() -> None:
    import moraleval.report.view as view

    assert "mmap" not in view.__dict__  # a file truncated under a map is SIGBUS (exit 135), not an error


def test_a_file_truncated_in_place_while_served_is_a_message_not_a_crash(served_copy) -> None:
    d, get, _srv = served_copy
    assert get("api/rows?limit=5")[0] == 200
    with open(d / "samples.jsonl", "r+b") as f:  # `> file`, `cp` over it, `rsync --inplace`
        f.truncate(1000)
    status, body = get("api/rows?limit=5")
    assert status == 503 and b"samples.jsonl is not valid JSON" in body and b"line 2" in body  # the cut row
    (d / "samples.jsonl").write_bytes(b"")  # emptied: a valid file with no rows
    status, body = get("api/rows?limit=5")
    assert status == 200 and json.loads(body)["total"] == 0


def test_a_row_read_after_the_file_shrank_raises_instead_of_serving_garbage(quickstart, tmp_path) -> None:
    import shutil

    from moraleval.report.view import SamplesChanged

    d = tmp_path / "report"
    shutil.copytree(quickstart, d)
    idx = SampleIndex(d / "samples.jsonl")
    try:
        with open(d / "samples.jsonl", "r+b") as f:
            f.truncate(idx.offsets[-1] + 10)
        with pytest.raises(SamplesChanged, match="changed while being served"):
            idx.rows([len(idx) - 1])
        assert idx.rows([0])[0]["index"] == 0  # what is still there is still served
    finally:
        idx.close()


def test_an_atomic_replace_is_reindexed_and_a_deletion_is_said(served_copy) -> None:
    d, get, _srv = served_copy
    rows = _samples(d)
    tmp = d / "samples.jsonl.new"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows[:10]))
    os.replace(tmp, d / "samples.jsonl")  # a rerun's atomic replace: a new inode
    status, body = get("api/rows?limit=50")
    assert status == 200 and json.loads(body)["total"] == 10
    (d / "samples.jsonl").unlink()
    status, body = get("api/rows?limit=5")
    assert status == 503 and b"was deleted while being served" in body
    assert get("")[0] == 200  # the page is still there, and says why rows do not load


def test_answers_are_capped(served_copy, monkeypatch) -> None:
    import moraleval.report.view as view

    _d, get, _srv = served_copy
    monkeypatch.setattr(view, "MAX_PAGE", 7)
    assert len(json.loads(get("api/rows?limit=100000")[1])["rows"]) == 7
    monkeypatch.setattr(view, "MAX_ALL_ROWS", 10)
    status, body = get("api/rows?limit=all&fields=metric")
    assert status == 413 and b"more than 10 are not sent at once" in body
    status, body = get("api/rows?task=winogender_fill&limit=all&fields=metric")
    assert status == 413
    monkeypatch.setattr(view, "MAX_BODY", 1000)
    status, body = get("api/rows?limit=5")
    assert status == 413 and b"ask for fewer" in body


def test_idle_connections_hold_at_most_the_thread_cap_and_a_closed_tab_is_quiet(served_copy, capfd) -> None:
    import socket
    import time

    import moraleval.report.view as view

    _d, get, srv = served_copy
    before = threading.active_count()
    idle = [socket.create_connection(srv.server_address) for _ in range(3 * view.MAX_THREADS)]
    try:
        time.sleep(1.0)
        assert threading.active_count() - before <= view.MAX_THREADS and srv.request_queue_size >= 64
    finally:
        for s in idle:
            s.close()
    for _ in range(20):  # clients that go away mid-answer (a closed tab): no BrokenPipe traceback
        s = socket.create_connection(srv.server_address)
        s.sendall(f"GET {urlsplit(srv.url).path}api/rows?limit=1000 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    time.sleep(1.0)
    assert get("api/rows?limit=1")[0] == 200
    err = capfd.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_a_port_in_use_is_said_plainly(quickstart) -> None:
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        with pytest.raises(ReportError, match=f"port {taken.getsockname()[1]} is already in use by another program"):
            make_server(quickstart, taken.getsockname()[1])
    finally:
        taken.close()


def test_the_served_search_is_the_pages_search() -> None:
    """What the server searches is ``JSON.stringify([r.prompts, r.generated, r.values]).toLowerCase()`` as
    browser.js computes it: JavaScript's number formatting and key order (checked against chromium in
    test_report_browser)."""
    from moraleval.report.view import js_json, search_text

    cases = [(0.1, "0.1"), (1.0, "1"), (-0.0, "0"), (1e21, "1e+21"), (1e20, "100000000000000000000"),
             (1e-7, "1e-7"), (1e-6, "0.000001"), (123.456, "123.456"), (1.5e300, "1.5e+300"), (-2.5e-9, "-2.5e-9"),
             (2 ** 60, "1152921504606847000"), (12, "12"), (True, "true"), (None, "null")]
    for value, js in cases:
        assert js_json(value) == js, value
    assert js_json({"b": 1, "10": 2, "2": 3, "01": 4}) == '{"2":3,"10":2,"b":1,"01":4}'
    assert js_json("a\u2028b\x1b\"") == '"a\u2028b\\u001b\\""'
    rec = {"prompts": {"score": "Ünïcode ÀB"}, "generated": {}, "values": {"x": 2.0}}
    assert search_text(rec) == '[{"score":"ünïcode àb"},{},{"x":2}]'
