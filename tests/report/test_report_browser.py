"""report.html in a real browser (Debian's chromium driven by Playwright): the quick start's report made with the
fake backend (whose chains of thought carry injected markup), and `moraleval view` on a big synthetic run.

Skipped with the reason when Playwright or chromium is missing, except under CI=true, where that is a failure.
Screenshots go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from report_support import every_function_report, item_values_report, quickstart_report, synthetic_run  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CHROMIUM_CANDIDATES = (os.environ.get("MORALEVAL_CHROMIUM", ""), "/usr/bin/chromium", "/usr/bin/chromium-browser",
                       "/usr/bin/google-chrome")


def _browser_or_skip():
    reason = None
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        reason = "the playwright package is not installed (pip install 'moraleval[dev]')"
    exe = next((c for c in CHROMIUM_CANDIDATES if c and shutil.which(c)), None)
    if reason is None and exe is None:
        reason = "no chromium found (apt-get install -y chromium, or set MORALEVAL_CHROMIUM)"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run under CI: {reason}")
        pytest.skip(reason)
    return exe


@pytest.fixture(scope="module")
def browser():
    exe = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> Path:
    return quickstart_report(tmp_path_factory.mktemp("qs") / "report")


class Page:
    """A page with every request, console message and page error recorded."""

    def __init__(self, browser, width: int = 1280) -> None:
        self.ctx = browser.new_context(viewport={"width": width, "height": 900})
        self.page = self.ctx.new_page()
        self.requests: list[str] = []
        self.console: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def goto(self, url: str) -> None:
        self.page.goto(url)
        self.page.wait_for_selector("#row-count[data-total]")

    def wait_text(self, selector: str, attr: str | None, want: str, timeout: float = 60.0) -> None:
        """Poll from Python (the page's Content-Security-Policy forbids the eval of wait_for_function)."""
        import time

        end = time.monotonic() + timeout
        while True:
            got = self.page.get_attribute(selector, attr) if attr else self.page.inner_text(selector)
            if got is not None and (got == want if attr else want in got):
                return
            if time.monotonic() > end:
                raise AssertionError(f"{selector}: {got!r}, wanted {want!r}")
            self.page.wait_for_timeout(50)

    def wait_total(self, n: int) -> None:
        self.wait_text("#row-count", "data-total", str(n))

    def total(self) -> int:
        return int(self.page.get_attribute("#row-count", "data-total"))

    def close(self) -> None:
        self.ctx.close()


@pytest.fixture
def page(browser):
    p = Page(browser)
    yield p
    p.close()


def _samples(report_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (report_dir / "samples.jsonl").read_text().splitlines()]


def test_loads_offline_without_errors(page, quickstart) -> None:
    url = (quickstart / "report.html").as_uri()
    page.goto(url)
    assert page.requests == [url]  # the page itself, nothing else: no CDN, font, image or XHR
    assert page.console == []
    assert page.total() == len(_samples(quickstart)) == 324
    ARTIFACTS.mkdir(exist_ok=True)
    page.page.screenshot(path=str(ARTIFACTS / "quickstart-report.png"), full_page=True)
    # figures are inline SVG with an accessible title
    assert page.page.locator("figure svg[role=img] title").count() >= 2


def test_filter_condition_and_category(page, quickstart) -> None:
    samples = _samples(quickstart)
    page.goto((quickstart / "report.html").as_uri())
    page.page.select_option("select[name=task]", "bbq_answer")
    page.wait_total(144)
    page.page.select_option("select[name=condition]", "Q_IF")
    page.wait_total(48)
    page.page.select_option("select[name='g.context_condition']", "ambig")
    want = sum(1 for s in samples if s["task"] == "bbq_answer" and s["condition"] == "Q_IF"
               and s["values"]["context_condition"] == "ambig")
    page.wait_total(want)
    assert want == 24 and page.page.locator("#rows tbody tr").count() == want
    assert "condition=Q_IF" in page.page.url and "g.context_condition=ambig" in page.page.url
    # answer + correctness filters agree with the samples
    page.page.select_option("select[name=correct]", "yes")
    want_ok = sum(1 for s in samples if s["task"] == "bbq_answer" and s["condition"] == "Q_IF"
                  and s["values"]["context_condition"] == "ambig" and s["readout"]["answer"] == s["values"]["label"])
    page.wait_total(want_ok)


def test_every_estimate_and_comparison_recounts_to_report_json(page, quickstart) -> None:
    report = json.loads((quickstart / "report.json").read_text())
    page.goto((quickstart / "report.html").as_uri())
    for i, e in enumerate(report["estimates"]):
        r = page.page.evaluate(f"window.moralevalRecount('est', {i})")
        assert r["same"] and r["value"] == pytest.approx(e["value"], rel=1e-9, abs=1e-12), (i, e, r)
    for i, c in enumerate(report["comparisons"]):
        r = page.page.evaluate(f"window.moralevalRecount('cmp', {i})")
        assert r["same"] and r["value"] == pytest.approx(c["effect"], rel=1e-9, abs=1e-12), (i, c, r)
    assert page.console == []


@pytest.fixture(scope="module")
def every_function(tmp_path_factory) -> Path:
    return every_function_report(tmp_path_factory.mktemp("functions") / "report")


def test_every_function_of_the_vocabulary_recounts_to_the_measure_stage(page, every_function) -> None:
    """Each function the browser recounts (its JavaScript twin) gives the measure stage's value: metrics that
    call every one of them (tests/report/test_report_vocabulary.py checks that they do), per item and on numbers."""
    report = json.loads((every_function / "report.json").read_text())
    page.goto((every_function / "report.html").as_uri())
    for i, e in enumerate(report["estimates"]):
        r = page.page.evaluate(f"window.moralevalRecount('est', {i})")
        assert r["same"] and r["value"] == pytest.approx(e["value"], rel=1e-9, abs=1e-12), (i, e, r)
    for i, c in enumerate(report["comparisons"]):
        r = page.page.evaluate(f"window.moralevalRecount('cmp', {i})")
        assert r["same"] and r["value"] == pytest.approx(c["effect"], rel=1e-9, abs=1e-12), (i, c, r)
    assert page.console == []


def test_the_recount_knows_only_the_functions_the_page_embeds(browser, every_function, tmp_path) -> None:
    """The browser dispatches through the vocabulary's list embedded in the page: a function missing from it is
    named as unknown instead of being recounted."""
    html = (every_function / "report.html").read_text(encoding="utf-8")
    assert html.count('"sqrt":[1,1],') == 1
    (tmp_path / "report.html").write_text(html.replace('"sqrt":[1,1],', ""), encoding="utf-8")
    report = json.loads((every_function / "report.json").read_text())
    k = next(i for i, e in enumerate(report["estimates"]) if e["metric"] == "f_sqrt")
    p = Page(browser)
    try:
        p.goto((tmp_path / "report.html").as_uri() + f"#est={k}")
        p.wait_text("#recount-value", None, "recount failed: unknown function sqrt()")
        p.page.goto((tmp_path / "report.html").as_uri() + "#est=0")  # a formula without sqrt still recounts
        p.page.wait_for_selector("#recount-value[data-same]")
        assert p.page.get_attribute("#recount-value", "data-same") == "true"
    finally:
        p.close()


def test_clicking_an_estimate_shows_its_items_and_recount(page, quickstart) -> None:
    report = json.loads((quickstart / "report.json").read_text())
    samples = _samples(quickstart)
    page.goto((quickstart / "report.html").as_uri())
    k = next(i for i, e in enumerate(report["estimates"]) if e["metric"] == "bias_ambiguous" and e["condition"] == "Q")
    e = report["estimates"][k]
    page.page.click(f"a.est-link[data-est='{k}']")
    page.page.wait_for_selector("#recount-value[data-same]")
    assert page.page.get_attribute("#recount-value", "data-same") == "true"
    assert float(page.page.get_attribute("#recount-value", "data-value")) == pytest.approx(e["value"], rel=1e-9)
    cell = [s for s in samples if s["task"] == e["task"] and s["condition"] == e["condition"]]
    assert page.total() == len(cell) == 48
    assert "est=" in page.page.url
    # open the first row: the exact prompt, the option table, the metric inputs
    page.page.click("#rows tbody tr[data-index]")
    detail = page.page.locator("tr.detail-row").inner_text()
    first = next(s for s in cell)
    assert first["prompts"]["score"][:60] in detail and "log-prob" in detail and "context_condition" in detail
    ARTIFACTS.mkdir(exist_ok=True)
    page.page.locator("#samples").screenshot(path=str(ARTIFACTS / "quickstart-browser.png"))


def test_shared_url_restores_the_view(browser, quickstart) -> None:
    a = Page(browser)
    try:
        a.goto((quickstart / "report.html").as_uri())
        a.page.select_option("select[name=task]", "winogender_fill")
        a.page.select_option("select[name=condition]", "Q_IF")
        a.page.select_option("select[name=answer]", "she")
        a.page.wait_for_timeout(200)
        a.page.click("#rows tbody tr[data-index]")
        url, total = a.page.url, a.total()
        opened = a.page.locator("tr.open").get_attribute("data-index")
    finally:
        a.close()
    b = Page(browser)
    try:
        b.goto(url)
        assert b.total() == total > 0
        assert b.page.input_value("select[name=condition]") == "Q_IF"
        assert b.page.input_value("select[name=answer]") == "she"
        assert b.page.locator("tr.open").get_attribute("data-index") == opened
        assert b.page.locator("tr.detail-row").count() == 1
    finally:
        b.close()


def test_injected_markup_in_a_model_answer_is_text(page, quickstart) -> None:
    page.goto((quickstart / "report.html").as_uri())
    page.page.select_option("select[name=condition]", "Q_IF_CoT")
    page.page.wait_for_timeout(200)
    page.page.click("#rows tbody tr[data-index]")
    gen = page.page.locator("pre.generated").first
    assert "<script>window.__pwned = 1</script>" in gen.inner_text()
    assert '<img src=x onerror="window.__pwned = 2">' in gen.inner_text()
    assert page.page.locator("#browser script, #browser img").count() == 0
    assert page.page.evaluate("window.__pwned === undefined")
    assert page.console == []


def test_narrow_screen_still_readable(browser, quickstart) -> None:
    p = Page(browser, width=820)
    try:
        p.goto((quickstart / "report.html").as_uri())
        widths = p.page.evaluate("[...document.querySelectorAll('figure svg')].map(s => s.getBoundingClientRect().width)")
        assert widths and max(widths) <= 820
    finally:
        p.close()


@pytest.mark.slow
def test_view_serves_a_big_run_and_pages_through_it(browser, tmp_path) -> None:
    from moraleval.report.view import make_server

    out = synthetic_run(tmp_path / "big", 200_000)
    html = (out / "report.html").read_text()
    assert "moraleval view" in html and '"rows":null' in html  # too big to embed: the page says how to open it
    server, index = make_server(out, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    p = Page(browser)
    try:
        base = server.url  # with the token `moraleval view` prints
        p.goto(base)
        assert p.total() == len(index) == 200_000
        assert p.page.locator("#rows tbody tr").count() == 50
        p.page.click("#next-page")
        p.wait_text("#row-count", None, "51–100")
        assert p.page.locator("#rows tbody tr").first.get_attribute("data-index") == "50"
        p.page.select_option("select[name=task]", "bbq_answer")  # a task's group columns appear once it is chosen
        p.wait_text("#row-count", None, "of 200000 rows match; showing 1–50")
        p.page.select_option("select[name=condition]", "Q_IF_CoT")
        p.wait_total(50000)
        p.page.select_option("select[name='g.category']", "Age")
        want = sum(1 for k in range(len(index)) if index.condition[k] == "Q_IF_CoT" and
                   index.values[k]["category"] == "Age")
        p.wait_total(want)
        p.page.click("#rows tbody tr[data-index]")
        assert "generated (reasoning)" in p.page.locator("tr.detail-row").inner_text()
        r = p.page.evaluate("window.moralevalRecount('est', 2)")
        report = json.loads((out / "report.json").read_text())
        assert r["same"] and r["value"] == pytest.approx(report["estimates"][2]["value"], rel=1e-9)
        assert all(u.startswith(base) for u in p.requests) and p.console == []
        ARTIFACTS.mkdir(exist_ok=True)
        p.page.screenshot(path=str(ARTIFACTS / "view-200k.png"))
    finally:
        p.close()
        server.shutdown()
        server.server_close()
        index.close()


def test_several_models_filter_and_disagree(browser, quickstart, tmp_path) -> None:
    """A report with a model dimension (#11's `model` keys): the model filter, "models disagree", and the
    recount restricted to one model's items."""
    from moraleval.report import dumps_json, rerender

    out = tmp_path / "models"
    shutil.copytree(quickstart, out)
    report = json.loads((out / "report.json").read_text())
    report["estimates"] = [dict(e, model="smollm2") for e in report["estimates"]]
    report["comparisons"] = [dict(c, model="smollm2") for c in report["comparisons"]]
    (out / "report.json").write_text(dumps_json(report) + "\n")
    rows = _samples(quickstart)
    other = []
    for s in rows:  # a second model that answers the next option whenever the row number is odd
        t = json.loads(json.dumps(s))
        if s["row"] % 2:
            t["readout"]["probs"] = t["readout"]["probs"][-1:] + t["readout"]["probs"][:-1]
            k = t["choice_values"].index(s["readout"][s["choice"]])
            t["readout"][s["choice"]] = t["choice_values"][(k + 1) % len(t["choice_values"])]
        other.append(dict(t, model="other"))
    all_rows = [dict(s, model="smollm2") for s in rows] + other
    (out / "samples.jsonl").write_text("".join(dumps_json(s, indent=None) + "\n" for s in all_rows))
    rerender(out)
    p = Page(browser)
    try:
        p.goto((out / "report.html").as_uri())
        assert p.total() == 2 * len(rows)
        p.page.select_option("select[name=model]", "other")
        p.wait_total(len(rows))
        p.page.select_option("select[name=model]", "")
        p.page.select_option("select[name=disagree]", "models")
        want = 2 * sum(1 for s in rows if s["row"] % 2)
        p.wait_total(want)
        r = p.page.evaluate("window.moralevalRecount('est', 0)")
        assert r["same"] and r["n"] == report["tasks"]["bbq_answer"]["items"] // 3
        p.page.goto((out / "report.html").as_uri() + "#est=0")
        p.page.wait_for_selector("#recount-value[data-same]")
        assert p.page.input_value("select[name=model]") == "smollm2"
        ARTIFACTS.mkdir(exist_ok=True)
        p.page.screenshot(path=str(ARTIFACTS / "two-models-report.png"), full_page=True)
        assert p.console == []
    finally:
        p.close()


# -- names from the URL and the data are only names (issue #24) -----------------------------------------------

@pytest.mark.parametrize("fragment", ["#task=constructor", "#task=__proto__", "#task=toString&g.constructor=x",
                                      "#est=constructor", "#g.__proto__=x&condition=hasOwnProperty",
                                      "#answer=constructor&model=__proto__&open=valueOf"])
def test_prototype_names_in_the_url_are_just_names(browser, quickstart, fragment) -> None:
    """`report.html#task=constructor` once broke the page (a `D.tasks[...]` lookup found Object's constructor):
    every lookup by a name from the URL or the data is an own-property lookup."""
    p = Page(browser)
    try:
        p.goto((quickstart / "report.html").as_uri() + fragment)
        total = p.total()
        assert p.console == [], p.console
        assert total == (len(_samples(quickstart)) if fragment.startswith("#est") else 0)
    finally:
        p.close()


def test_a_task_named_constructor_is_a_task(browser, quickstart, tmp_path) -> None:
    from moraleval.report import dumps_json, rerender

    out = tmp_path / "proto"
    shutil.copytree(quickstart, out)
    text = (out / "report.json").read_text().replace('"bbq_answer"', '"constructor"').replace(
        '"category"', '"__proto__"')
    (out / "report.json").write_text(text)
    rows = [dict(s, task="constructor" if s["task"] == "bbq_answer" else s["task"],
                 values={("__proto__" if k == "category" else k): v for k, v in s["values"].items()})
            for s in _samples(quickstart)]
    (out / "samples.jsonl").write_text("".join(dumps_json(s, indent=None) + "\n" for s in rows))
    rerender(out)
    p = Page(browser)
    try:
        p.goto((out / "report.html").as_uri() + "#task=constructor")
        assert p.total() == sum(1 for s in rows if s["task"] == "constructor")
        p.page.goto((out / "report.html").as_uri() + "#task=constructor&g.__proto__=sample")
        p.wait_total(sum(1 for s in rows if s["task"] == "constructor" and s["values"].get("__proto__") == "sample"))
        r = p.page.evaluate("window.moralevalRecount('est', 0)")
        assert r["same"], r
        assert p.console == [], p.console
    finally:
        p.close()


def test_the_served_search_is_the_embedded_search(browser, quickstart, tmp_path) -> None:
    """The text search of `moraleval view` (Python) and of the embedded page (JavaScript) look in the same text:
    checked row by row against chromium's own JSON.stringify, and query by query."""
    import http.client
    from urllib.parse import quote, urlsplit

    from moraleval.report import dumps_json, rerender
    from moraleval.report.view import make_server, search_text

    out = tmp_path / "search"
    shutil.copytree(quickstart, out)
    rows = [dict(s, values=dict(s["values"], f=1e-7 * (k + 1), g=2.0, h=1e21, **{"10": "ten", "2": "two"},
                                u="ÜNÏ Straße \u2028 x"))
            for k, s in enumerate(_samples(quickstart))]
    (out / "samples.jsonl").write_text("".join(dumps_json(s, indent=None) + "\n" for s in rows))
    rerender(out)
    p = Page(browser)
    server, index = make_server(out, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        p.goto((out / "report.html").as_uri())
        js = p.page.evaluate("JSON.parse(document.getElementById('moraleval-data').textContent).rows"
                             ".map(r => JSON.stringify([r.prompts, r.generated, r.values]).toLowerCase())")
        py = [search_text(json.loads(line)) for line in (out / "samples.jsonl").read_text().splitlines()]
        assert js == py
        base = urlsplit(server.url).path
        seen = set()
        for q in ("1e-7", '"10":"ten","2":"two"', "straße", "\u2028", '"g":2,', "window.__pwned", "(b)", "zzz"):
            c = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
            c.request("GET", base + "api/rows?limit=1&q=" + quote(q), headers={"Host": "127.0.0.1"})
            served = json.loads(c.getresponse().read())["total"]
            seen.add(served)
            p.page.goto((out / "report.html").as_uri() + "#q=" + quote(q))
            p.wait_total(served)  # the embedded page finds exactly as many
        assert len(seen) >= 3  # the queries find different things (0, some, all)
    finally:
        p.close()
        server.shutdown()
        server.server_close()
        index.close()


def test_the_served_page_works_under_its_strict_policy(browser, quickstart) -> None:
    """`moraleval view`'s own page (not the folder's report.html), under its CSP header and URL token: the
    browser loads its rows from the API, recounts, and nothing is blocked or fails."""
    from moraleval.report.view import make_server

    server, index = make_server(quickstart, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    p = Page(browser)
    try:
        p.goto(server.url)
        assert p.total() == len(_samples(quickstart))
        p.page.select_option("select[name=task]", "bbq_answer")
        p.wait_total(sum(1 for s in _samples(quickstart) if s["task"] == "bbq_answer"))
        r = p.page.evaluate("window.moralevalRecount('est', 0)")
        assert r["same"], r
        assert p.console == [] and all(u.startswith(server.url) for u in p.requests), (p.console, p.requests)
        p.page.goto(server.url.rsplit("/", 2)[0] + "/wrong-token/")
        assert "needs the token" in p.page.inner_text("body")
    finally:
        p.close()
        server.shutdown()
        server.server_close()
        index.close()


def test_a_boolean_item_definition_flags_its_rows_embedded_and_served(browser, tmp_path) -> None:
    """`item unsure = p_first < 0.5`: the "flagged" filter keeps the rows it is true on, in the page's own rows
    and through `moraleval view`; the rows say which flags they carry and the detail lists every definition."""
    from moraleval.report.view import make_server

    run = item_values_report(tmp_path)
    samples = _samples(run)
    want = sum(1 for s in samples if s["readout"]["items"]["unsure"])
    assert 0 < want < len(samples)
    p = Page(browser)
    server, index = make_server(run, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for url in ((run / "report.html").as_uri(), server.url):
            p.goto(url)
            assert p.page.locator("select[name=flag] option").all_inner_texts() == ["(any)", "unsure"]
            p.page.select_option("select[name=flag]", "unsure")
            p.wait_total(want)
            assert "flag=unsure" in p.page.url
            cells = p.page.locator("#rows tbody td.flagged").all_inner_texts()
            assert cells and set(cells) == {"unsure"}
            p.page.locator("#rows tbody tr").first.click()
            shown = json.loads(p.page.inner_text("pre.item-values"))
            assert set(shown) == {"p_first", "unsure"} and shown["unsure"] is True
        assert p.console == [], p.console
    finally:
        p.close()
        server.shutdown()
        server.server_close()
        index.close()


HOSTILE_COUNTRY = '<img src=x onerror="window.__pwned = 3">Atlantis'


@pytest.fixture(scope="module")
def opinions(tmp_path_factory) -> Path:
    """A GlobalOpinionQA-shaped report (each item's answer shares per country, a hostile country name among
    them), answered by the fake backend."""
    import csv
    import hashlib
    import io

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from fakes import FakeBackend

    import moraleval

    base = tmp_path_factory.mktemp("opinions")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["question", "selections", "options"], lineterminator="\n")
    w.writeheader()
    for q in range(6):
        shares = {"Belgium": [0.1 + 0.1 * q, 0.6 - 0.1 * q, 0.3], HOSTILE_COUNTRY: [0.3, 0.3, 0.4],
                  "Japan": [0.2, 0.2]}  # Japan's shares are too short: not shown beside the model's
        w.writerow({"question": f"Question {q}?", "options": "['Yes', 'No', 'Maybe']",
                    "selections": "defaultdict(<class 'list'>, {" + ", ".join(f"{k!r}: {v!r}" for k, v in
                                                                          shares.items()) + "})"})
    data = buf.getvalue().encode("utf-8")
    (base / "goqa.csv").write_bytes(data)
    spec = base / "goqa.me"
    spec.write_text(f'''moraleval 1
data "{base.as_posix()}"
dataset goqa {{
    file "goqa.csv" sha256 "{hashlib.sha256(data).hexdigest()}"
    read csv "goqa.csv"
    derive shares = parse_literal(selections, "record")
}}
task opinion on goqa {{
    choose answer from ["A", "B", "C"]
    condition default {{ human "{{{{ question }}}}" assistant "(" }}
}}
metric similarity for country in levels(shares) =
    mean(1 - jsd(dist(answer), shares[country]) where country in shares)
bootstrap resamples 200 seed 0
''', encoding="utf-8")
    moraleval.run(str(spec), out=str(base / "report"), backends={"default": FakeBackend()},
                  cache=str(base / "cache"), log=None)
    return base / "report"


def test_each_sample_shows_the_models_distribution_beside_each_countrys(page, opinions) -> None:
    from scipy.spatial.distance import jensenshannon

    samples = _samples(opinions)
    report = json.loads((opinions / "report.json").read_text())
    page.goto((opinions / "report.html").as_uri() + "#open=2")
    table = page.page.locator("table.dists")
    assert table.count() == 1 and table.get_attribute("data-column") == "shares"
    rows = table.locator("tbody tr")
    cells = [[c.inner_text() for c in rows.nth(i).locator("th, td").all()] for i in range(rows.count())]
    s = samples[2]
    probs = s["readout"]["probs"]
    assert cells[0][0] == "the model (answer)" and cells[0][2:] == [f"{p:.3f}" for p in probs]
    want = {k: 1 - jensenshannon(probs, v, base=2) for k, v in s["values"]["shares"].items() if len(v) == 3}
    assert {r[0] for r in cells[1:]} == set(want) == {"Belgium", HOSTILE_COUNTRY}  # Japan: shares too short
    for r in cells[1:]:
        assert float(r[1]) == pytest.approx(want[r[0]], abs=5e-4)
    assert [r[0] for r in cells[1:]] == sorted(want, key=lambda k: -want[k])  # the most similar first
    assert page.page.locator("#browser img, #browser script").count() == 0
    assert page.page.evaluate("window.__pwned === undefined")
    # the estimates of the family recount in the page (dist, jsd and `in` over a record)
    for i, e in enumerate(report["estimates"]):
        r = page.page.evaluate(f"window.moralevalRecount('est', {i})")
        assert r["same"], (e["metric"], r)
    assert page.console == []
    ARTIFACTS.mkdir(exist_ok=True)
    page.page.locator("#browser").screenshot(path=str(ARTIFACTS / "opinions-distributions.png"))
