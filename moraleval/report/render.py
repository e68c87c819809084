"""report.md, report.html (with the sample browser) and plots/*.svg, rendered from report.json, samples.jsonl
and manifest.json only, so ``moraleval report DIR`` re-renders them without running anything.

The pages are Jinja2 templates over :func:`moraleval.report.page.page_model`; the HTML is self-contained (inline
CSS, SVG, JS and data; a Content-Security-Policy that forbids any network request except to the page's own
origin, which only ``moraleval view`` uses).  Model and data text reaches the page only as JSON inside a
``<script type="application/json">`` block (``<`` escaped) and is put into the DOM with ``textContent``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from moraleval.language.vocabulary import browser_names
from moraleval.report import page as pg
from moraleval.report.figures import task_figures, why_not_drawn
from moraleval.report.labels import code_for_markdown, expr_source, text_for_markdown
from moraleval.report.models import across_figures

__all__ = ["browser_data", "render_html", "render_markdown", "render_pages", "render_served_page"]

PAGE_SIZE = 50


@lru_cache(maxsize=None)
def _static(name: str) -> str:
    return resources.files("moraleval.report").joinpath("static", name).read_text(encoding="utf-8")


@lru_cache(maxsize=None)
def _env(kind: str) -> Any:
    import jinja2

    loader = jinja2.FunctionLoader(
        lambda name: resources.files("moraleval.report").joinpath("templates", name).read_text(encoding="utf-8"))
    if kind == "html":
        return jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined,
                                  keep_trailing_newline=True)
    # Markdown: every interpolated value is one table cell or one line, and text from data, the spec or
    # report.json must stay text (no raw HTML, links or code spans): labels.text_for_markdown; `| code` for a
    # code span
    env = jinja2.Environment(loader=loader, autoescape=False, keep_trailing_newline=True, finalize=text_for_markdown)
    env.filters["code"] = code_for_markdown
    return env


MAX_ITEM_FLAGS = 50  # per task: a received folder cannot grow the filter without end


def _script_json(obj: Any) -> str:
    """JSON that is safe inside <script type="application/json">: no `<` can end the element."""
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def browser_data(report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]], *, embed: bool,
                 flags: Sequence[Sequence[Mapping[str, str]]] = ()) -> dict[str, Any]:
    """What the sample browser needs: estimates/comparisons with their formulas (as expression JSON), the
    filter choices, the functions the browser recounts (names and arities, from the vocabulary: ``browser.js``
    implements exactly these), and (when embedded) the sample rows themselves."""
    tasks = {t: list(info.get("conditions", [])) for t, info in (report.get("tasks") or {}).items()}
    group_cols = pg.iter_group_columns(samples)
    group_values: dict[str, dict[str, list[str]]] = {}
    answers: list[str] = []
    item_flags: dict[str, list[str]] = {}  # per task, the boolean per-item definitions (the "flagged" filter)
    for s in samples:
        iv = (s.get("readout") or {}).get("items")
        if isinstance(iv, dict):
            names = item_flags.setdefault(str(s.get("task")), [])
            for k, v in iv.items():
                if type(v) is bool and k not in names and len(names) < MAX_ITEM_FLAGS:
                    names.append(k)
        for c in group_cols.get(s.get("task"), []):
            v = (s.get("values") or {}).get(c)
            if isinstance(v, str):
                lst = group_values.setdefault(s["task"], {}).setdefault(c, [])
                if v not in lst:
                    lst.append(v)
        a = pg.answer_of(s)
        lab = next((str(ch).strip() for ch, cv in zip(s.get("choices") or [], s.get("choice_values") or [])
                    if cv == a and type(cv) is type(a)), None)
        lab = lab if lab is not None else ("(none)" if a is None else a if isinstance(a, str) else json.dumps(a))
        if lab not in answers:
            answers.append(lab)
    for t in group_values.values():
        for c in t:
            t[c].sort()
    # estimates can also be grouped by a column that the browser does not offer as a filter: offer it too
    for e in report.get("estimates", []):
        for k, v in (e.get("group") or {}).items():
            if k in ("condition", "task"):
                continue
            cols = group_cols.setdefault(e.get("task"), [])
            if k not in cols:
                cols.append(k)
            vals = group_values.setdefault(e.get("task"), {}).setdefault(k, [])
            if str(v) not in vals:
                vals.append(str(v))
    keep = ("task", "metric", "condition", "group", "model", "value", "ci_low", "ci_high", "n", "n_units")
    keep_c = ("task", "metric", "treatment", "baseline", "group", "model", "effect", "ci_low", "ci_high", "n")
    metrics: dict[str, dict[str, Any]] = {}
    formulas: dict[str, dict[str, str]] = {}
    for m in report.get("metrics", []):
        metrics.setdefault(m.get("task"), {})[m.get("name")] = m.get("expr")
        formulas.setdefault(m.get("task"), {})[m.get("name")] = expr_source(m.get("expr") or {})
    return {
        "n_rows": len(samples), "page_size": PAGE_SIZE, "embedded": embed,
        "tasks": tasks, "models": pg.models_of(report, samples), "answers": answers,
        "group_columns": group_cols, "group_values": group_values,
        "item_flags": {t: sorted(v) for t, v in item_flags.items() if v},
        "estimates": [dict({k: e.get(k) for k in keep if k in e}, flags=list(flags[i]) if i < len(flags) else [])
                      for i, e in enumerate(report.get("estimates", []))],
        "comparisons": [{k: c.get(k) for k in keep_c if k in c} for c in report.get("comparisons", [])],
        "metrics": metrics, "formulas": formulas, "functions": browser_names(),
        "rows": [dict(s) for s in samples] if embed else None,
    }


def render_markdown(page: Mapping[str, Any], figs: Sequence[Mapping[str, Any]],
                    across_figs: Sequence[Mapping[str, Any]] = ()) -> str:
    return _env("md").get_template("report.md.j2").render(page=page, figs=figs, across_figs=across_figs,
                                                          alpha=pg.ALPHA)


def render_html(page: Mapping[str, Any], figs: Sequence[Mapping[str, Any]], data: Mapping[str, Any],
                across_figs: Sequence[Mapping[str, Any]] = ()) -> str:
    return _env("html").get_template("report.html.j2").render(
        page=page, figs=figs, across_figs=across_figs, alpha=pg.ALPHA, css=_static("report.css"),
        js=_static("browser.js"), data=_script_json(data))


def _figures(report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]], several: bool,
             log: Callable[[str], None] | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(task figures, across-model figures); a figure that cannot be drawn is left out with a warning to ``log``
    ("a figure was left out ..."), never the page."""
    skipped: list[str] = []
    figs = task_figures(report, samples, skipped)
    across_figs = []
    if several:
        try:
            across_figs = across_figures(report)
        except Exception as exc:  # noqa: BLE001 - figures illustrate; the across-model table has the numbers
            skipped.append(f"across models: {why_not_drawn(exc)}")
    for what in skipped:
        if log is not None:
            log(f"warning: a figure was left out of the report ({what})")
    return figs, across_figs


def render_pages(report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]],
                 manifest: Mapping[str, Any] | None = None, *, samples_bytes: int | None = None,
                 log: Callable[[str], None] | None = None) -> dict[str, bytes]:
    """{relative file name: bytes} for report.md, report.html and plots/*.svg, of a one-model report or, led by
    the across-model view and its figures, of a several-model one.  A figure that cannot be drawn is left out with
    a warning to ``log``; the pages are still written."""
    page = pg.page_model(report, samples, manifest, samples_bytes=samples_bytes)
    figs, across_figs = _figures(report, samples, page["across"] is not None, log)
    files: dict[str, bytes] = {}
    for f in [*figs, *across_figs]:
        files[str(Path("plots") / f["file"])] = f["svg"].encode("utf-8")
    files["report.md"] = render_markdown(page, figs, across_figs).encode("utf-8")
    files["report.html"] = render_html(page, figs, browser_data(report, samples, embed=page["embed"],
                                                                  flags=page["flags_by_est"]),
                                       across_figs).encode("utf-8")
    return files


def render_served_page(report: Mapping[str, Any], samples: Sequence[Mapping[str, Any]],
                       manifest: Mapping[str, Any] | None = None, *, log: Callable[[str], None] | None = None
                       ) -> tuple[bytes, str]:
    """report.html as ``moraleval view`` serves it: rendered here from the folder's data (never the folder's own
    report.html), its sample browser asking the server for rows instead of embedding them; with the
    Content-Security-Policy source of its one script (``'sha256-...'``), for the server's header."""
    import base64
    import hashlib

    page = dict(pg.page_model(report, samples, manifest), embed=False)
    figs, across_figs = _figures(report, samples, page["across"] is not None, log)
    html = render_html(page, figs, browser_data(report, samples, embed=False, flags=page["flags_by_est"]),
                       across_figs)
    digest = base64.b64encode(hashlib.sha256(_static("browser.js").encode("utf-8")).digest()).decode("ascii")
    return html.encode("utf-8"), f"'sha256-{digest}'"
