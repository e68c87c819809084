"""Writing and showing reports when what they hold is hostile (issue #24): links planted in a report folder are
refused, never followed; a lock file is truncated only when it is moraleval's; files honour the umask; an
interruption never leaves a folder half old, half new; a full disk is named; `$`, markup, backticks and line
separators from data, prompts and generations come through run -> verify -> diff -> view as text."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import moraleval  # noqa: E402
from _models_support import backends, write_spec  # noqa: E402
from _support import run_cli  # noqa: E402
from fakes import FakeBackend  # noqa: E402
from report_support import quickstart_report  # noqa: E402

from moraleval.backend import GenerateResult  # noqa: E402
from moraleval.errors import OutputDirError  # noqa: E402
from moraleval.report import verify_report  # noqa: E402
from moraleval.util.locks import LOCK_NAME  # noqa: E402

REPO = HERE.parent


def _run(spec: Path, out: Path, tmp: Path, **kw):
    return moraleval.run(spec, models="a", out=out, cache=tmp / "cache", backends=backends("a"), log=None, **kw)


# ---------------------------------------------------------------------------- links in a report folder

@pytest.mark.parametrize("dangling", [False, True])
def test_a_lock_file_link_is_refused_and_its_target_left_alone(tmp_path, dangling) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    if not dangling:
        victim.write_text("precious")
    (out / LOCK_NAME).symlink_to(victim)
    with pytest.raises(OutputDirError) as info:
        _run(spec, out, tmp_path)
    assert f"{LOCK_NAME} is a symbolic link" in info.value.message and info.value.exit_code == 2
    assert (victim.read_text() == "precious") if not dangling else not victim.exists()  # not created either
    assert (out / LOCK_NAME).is_symlink() and not (out / "report.json").exists()
    code, _, err = run_cli(["report", str(quickstart_report(tmp_path / "q"))])  # `report DIR` takes the lock too
    assert code == 0
    (tmp_path / "q" / LOCK_NAME).symlink_to(victim)
    code, _, err = run_cli(["report", str(tmp_path / "q")])
    assert code == 2 and "is a symbolic link" in err and len(err.strip().splitlines()) == 2  # error + hint


@pytest.mark.parametrize("content, why", [
    (None, "has other names (a hard link to another file)"),
    (b"my notes, not a lock\n", "is not a moraleval lock file"),
])
def test_a_lock_file_that_is_not_moralevals_is_never_truncated(tmp_path, content, why) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    if content is None:
        os.link(victim, out / LOCK_NAME)
    else:
        (out / LOCK_NAME).write_bytes(content)
    with pytest.raises(OutputDirError) as info:
        _run(spec, out, tmp_path)
    assert why in info.value.message
    assert victim.read_bytes() == b"precious\n"
    if content is not None:
        assert (out / LOCK_NAME).read_bytes() == content
    # a lock file a killed run left (its holder record) is moraleval's: taken over as before
    (out / LOCK_NAME).unlink()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "h", "started": "s", "command": "c"}) + "\n")
    assert _run(spec, out, tmp_path).out == out and not (out / LOCK_NAME).exists()


@pytest.mark.parametrize("name", ["plots", "report.json", "report.html", "manifest.json"])
def test_a_link_where_the_report_writes_is_refused_before_anything_is_written(tmp_path, name) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("precious")
    (out / name).symlink_to(elsewhere if name == "plots" else elsewhere / "keep.txt")
    with pytest.raises(OutputDirError) as info:
        _run(spec, out, tmp_path)
    assert f"{name} is a symbolic link" in info.value.message
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"] and (elsewhere / "keep.txt").read_text() == \
        "precious"
    assert sorted(p.name for p in out.iterdir()) == [name]  # nothing written: refused before the first file


# ---------------------------------------------------------------------------- permissions and interruptions

@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_report_files_honour_the_umask(tmp_path, umask, file_mode, dir_mode) -> None:
    old = os.umask(umask)
    try:
        out = quickstart_report(tmp_path / "report")
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"report.json", "samples.jsonl", "manifest.json", "report.md", "report.html"}
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(file_mode)}
    assert oct((out / "plots").stat().st_mode & 0o777) == oct(dir_mode)


def _two_reports(tmp_path: Path) -> tuple[Path, bytes]:
    """A folder holding report A, and report A's report.json bytes (report B answers differently)."""
    out = quickstart_report(tmp_path / "report", backend=FakeBackend())
    return out, (out / "report.json").read_bytes()


def test_an_interruption_while_the_pages_render_leaves_the_old_folder_whole(tmp_path, monkeypatch) -> None:
    from moraleval.report import files

    out, old = _two_reports(tmp_path)
    real = files.render_pages

    def interrupted(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt  # Ctrl-C while figures are drawn: nothing of B is written yet

    monkeypatch.setattr(files, "render_pages", interrupted)
    with pytest.raises(KeyboardInterrupt):
        quickstart_report(out, backend=FakeBackend(prefer=" (c)"))
    assert (out / "report.json").read_bytes() == old and verify_report(out) == []


def test_ctrl_c_while_the_files_are_replaced_is_acted_on_after_the_last_one(tmp_path, monkeypatch) -> None:
    """SIGINT arriving after the first file of the set is written: the rest of the set and the manifest are
    written first, then the interruption happens, so the folder is wholly the new report."""
    from moraleval.util.files import Folder

    out, old = _two_reports(tmp_path)
    real = Folder.write
    sent: list[str] = []

    def write(self, name, data):
        real(self, name, data)
        if not sent:
            sent.append(name)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Folder, "write", write)
    with pytest.raises(KeyboardInterrupt):
        quickstart_report(out, backend=FakeBackend(prefer=" (c)"))
    assert sent == ["report.json"]
    assert (out / "report.json").read_bytes() != old  # B, entirely: every file matches B's manifest
    assert verify_report(out) == []
    assert not [p.name for p in out.iterdir() if p.name.startswith(".report")]  # no temporary file left


_FULL_OUT = textwrap.dedent("""
    import resource, sys
    sys.path[:0] = [{tests!r}, {repo!r}]
    from report_support import quickstart_report
    from moraleval.errors import MoralevalError
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
    try:
        quickstart_report(__import__("pathlib").Path({out!r}))
    except MoralevalError as exc:
        print(type(exc).__name__, exc.exit_code)
        print(str(exc))
""")


def test_a_report_folder_that_cannot_grow_is_named_not_a_traceback(tmp_path) -> None:
    out = tmp_path / "report"
    script = _FULL_OUT.format(tests=str(HERE), repo=str(REPO), limit=200 * 1024, out=str(out))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.startswith("OutputDirError 2"), proc.stdout + proc.stderr
    assert "the report cannot be written: the file would exceed this process's file-size limit (ulimit -f)" in \
        proc.stdout and "run the same command again (nothing is recomputed)" in proc.stdout
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_a_full_disk_under_the_report_folder_is_named(tmp_path) -> None:
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)],
                                           capture_output=True).returncode:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    try:
        with pytest.raises(OutputDirError) as info:
            quickstart_report(mount / "report")
        assert f"no space left on the disk mounted at {mount}" in info.value.message
        assert not [p for p in (mount / "report").iterdir() if p.name.startswith(".")]
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


# ---------------------------------------------------------------------------- hostile text, end to end

ROWS = [
    {"id": k, "tier": ["$$", "$\\sqrt{x}$", "income $50k–$75k"][k % 3], "label": k % 2,
     "context": f"Row {k}:\u2028a line separator,\x85a next-line, \u2029a paragraph. <img src=x onerror=alert({k})>",
     "question": "Which `option`? [link](javascript:alert(1)) ![t](https://tracker.example/p.png) | &amp;"}
    for k in range(12)
]
SPEC = """moraleval 1
study "<img src=x onerror=alert('study')> `tick` [x](javascript:alert(2))"
dataset items {{
    file "t/items.jsonl" sha256 "{sha}"
    read jsonl "t/items.jsonl"
}}
task answer on items {{
    format chat
    choose pick from [" (a)", " (b)"] values [0, 1] by logprob normalize softmax
    condition Q {{
        human "{{{{ context }}}} {{{{ question }}}}"
        assistant "The answer is"
    }}
    condition CoT {{
        human "{{{{ context }}}} {{{{ question }}}}"
        assistant "Let us think." then generate reasoning max_tokens 16 temperature 0 seed 1
        human "So?"
        assistant "The answer is"
    }}
}}
metric acc on answer = mean(pick == label)
bootstrap resamples 200 seed 0 level 0.95
report by tier
compare CoT vs Q on acc test bootstrap correct holm
model a = salted_test {{ salt: "a" }}
"""


class LineBreakingBackend(FakeBackend):
    """Chains of thought holding every kind of line break and markup."""

    def generate(self, requests, *, on_result=None):
        out = [GenerateResult(r.text + "\u2028second line\x85third\u2029<b>bold</b> `code`", r.n_tokens,
                              r.finish_reason) for r in super().generate(requests, on_result=None)]
        for i, r in enumerate(out):
            if on_result is not None:
                on_result(i, r)
        return out


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    import hashlib

    tmp = tmp_path_factory.mktemp("hostile")
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ROWS).encode("utf-8")
    assert "\u2028".encode() in data and "\x85".encode() in data  # raw, as a valid JSONL file may hold them
    (tmp / "data" / "t").mkdir(parents=True)
    (tmp / "data" / "t" / "items.jsonl").write_bytes(data)
    spec = tmp / "hostile.me"
    spec.write_text(SPEC.format(sha=hashlib.sha256(data).hexdigest()), encoding="utf-8")
    said: list[str] = []
    res = moraleval.run(spec, data=str(tmp / "data"), out=tmp / "A", cache=tmp / "cache",
                        backends={"a": LineBreakingBackend()}, log=said.append)
    return res.out, said


def test_line_separators_and_dollars_come_through_the_run(hostile_run) -> None:
    out, said = hostile_run
    assert not [m for m in said if "figure was left out" in m], said  # `$$` is text, not mathtext
    raw = (out / "samples.jsonl").read_bytes()
    for ch in ("\u2028", "\u2029", "\x85"):
        assert ch.encode("utf-8") not in raw  # written as \\u escapes ...
    text = raw.decode("utf-8")
    assert len(text.splitlines()) == len(text.split("\n")) - 1 == 24  # ... so every reader sees 24 lines
    rows = [json.loads(x) for x in text.splitlines()]
    assert "\u2028second line\x85third\u2029" in rows[-1]["generated"]["reasoning"]  # the same text, read back
    svg = (out / "plots" / "answer.svg").read_text(encoding="utf-8")
    assert "$$" in svg and "$\\sqrt{x}$" in svg and "income $50k–$75k" in svg  # the figure's description


def test_verify_diff_and_view_read_it_back(hostile_run) -> None:
    import http.client
    import threading
    from urllib.parse import quote, urlsplit

    from moraleval.report.view import make_server

    out, _ = hostile_run
    code, stdout, _ = run_cli(["verify", str(out)])
    assert code == 0 and "the report matches its inputs" in stdout
    code, stdout, _ = run_cli(["diff", str(out), str(out)])
    assert code == 0 and "items: 24 paired" in stdout
    server, index = make_server(out, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = urlsplit(server.url).path
        c = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
        c.request("GET", base + "api/rows?limit=all&q=" + quote("second line\u0085third"),
                  headers={"Host": "127.0.0.1"})
        r = c.getresponse()
        data = json.loads(r.read())
        assert r.status == 200 and data["total"] == 12  # the CoT rows, found by text across the separator
        assert all("\u2028second line" in row["generated"]["reasoning"] for row in data["rows"])
    finally:
        server.shutdown()
        server.server_close()
        index.close()


def test_report_md_shows_hostile_text_as_text(hostile_run) -> None:
    from markdown_it import MarkdownIt

    out, _ = hostile_run
    md = (out / "report.md").read_text(encoding="utf-8")
    tokens = MarkdownIt("commonmark", {"html": True}).enable("table").parse(md)

    def walk(ts):
        for t in ts:
            yield t
            yield from walk(t.children or [])

    every = list(walk(tokens))
    assert not [t for t in every if t.type in ("html_inline", "html_block")], "raw HTML from data reached report.md"
    links = [t.attrGet("href") for t in every if t.type == "link_open"]
    images = [t.attrGet("src") for t in every if t.type == "image"]
    # the template's own links go to headings of the same page (#provenance); none comes from the text
    assert all(href.startswith("#") for href in links) and all(src.startswith("plots/") for src in images), (
        links, images)
    html = MarkdownIt("commonmark", {"html": True}).enable("table").render(md)
    assert "&lt;img src=x onerror=alert('study')&gt;" in html and "`tick`" in html  # shown, as written
    assert "tier = \\$\\$" in md  # not math in a preview that renders $...$ (GitHub's)


def test_a_figure_that_cannot_be_drawn_is_left_out_with_a_warning(tmp_path, monkeypatch) -> None:
    from moraleval.report import figures, rerender

    out = quickstart_report(tmp_path / "report", backend=FakeBackend())
    said: list[str] = []

    def broken(report, task):
        raise ValueError("a label matplotlib cannot draw")

    monkeypatch.setattr(figures, "_estimate_figure", broken)
    written = rerender(out, log=said.append)
    assert any(p.name == "report.html" for p in written) and verify_report(out) == []
    assert said and all("a figure was left out of the report" in m and "cannot draw" in m for m in said)


def test_mathtext_is_off_for_every_label() -> None:
    from moraleval.report.figures import task_figures

    est = [{"task": "t", "metric": "$x$", "condition": c, "group": {"tier": g}, "value": 0.1 * i,
            "ci_low": 0.0, "ci_high": 0.5} for i, (c, g) in enumerate((c, g) for c in ("Q", "$$")
                                                                     for g in ("$$", "$\\sqrt{x}$", "$50k–$75k"))]
    report = {"tasks": {"t": {"conditions": ["Q", "$$"]}}, "metrics": [{"name": "$x$", "task": "t"}],
              "estimates": est}
    skipped: list[str] = []
    (fig,) = task_figures(report, [], skipped)
    assert skipped == [] and "$\\sqrt{x}$" in fig["svg"] and "$50k–$75k" in fig["svg"]


def test_a_lone_surrogate_in_a_data_file_is_a_data_error_at_check(tmp_path) -> None:
    import hashlib

    data = b'{"id": 1, "context": "a\\ud800b", "question": "q", "label": 0}\n'
    (tmp_path / "data" / "t").mkdir(parents=True)
    (tmp_path / "data" / "t" / "items.jsonl").write_bytes(data)
    spec = tmp_path / "s.me"
    spec.write_text(SPEC.format(sha=hashlib.sha256(data).hexdigest()), encoding="utf-8")
    for command in ("check", "plan"):
        code, out, err = run_cli([command, str(spec), "--data", str(tmp_path / "data")])
        assert code == 2, (command, out, err)
        assert "items.jsonl:1: a string holds the escape \\ud800, half of a surrogate pair" in err + out
