"""A report folder is untrusted input (issue #24): every damaged shape of a folder, run through every command
that reads one (`verify`, `diff` both ways, `report`, `view`), ends in a one-line error naming the file (or a
verdict), with a documented exit code, never a traceback; nothing outside the folder is read, followed or written.

``SHAPES`` is also what ``docs/security.md``'s tally counts (run this file on a checkout to measure it)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report_support import quickstart_report  # noqa: E402

from moraleval.cli import main  # noqa: E402

COMMANDS = ("verify", "diff-a", "diff-b", "report", "view")


# -- the shapes: each damages a copy of a good folder and says which file it damaged ----------------------------

def _json(d: Path, name: str) -> dict:
    return json.loads((d / name).read_text(encoding="utf-8"))


def _put(d: Path, name: str, value: object) -> None:
    (d / name).write_text(json.dumps(value), encoding="utf-8")


def _edit(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        data = _json(d, name)
        change(data)
        _put(d, name, data)
    return apply


def _raw(name: str, data: bytes) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        (d / name).unlink()
        (d / name).write_bytes(data)
    return apply


def _replace(name: str, make: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(d: Path) -> None:
        (d / name).unlink()
        make(d / name)
    return apply


def _samples_line(change: Callable[[dict], object]) -> Callable[[Path], None]:
    """The first row of samples.jsonl replaced by ``change(row)`` (bytes, or a value written as JSON)."""
    def apply(d: Path) -> None:
        lines = (d / "samples.jsonl").read_bytes().split(b"\n")
        row = json.loads(lines[0])
        new = change(row)
        lines[0] = new if isinstance(new, bytes) else json.dumps(new).encode("utf-8")
        (d / "samples.jsonl").write_bytes(b"\n".join(lines))
    return apply


def _set(path: str, value: object) -> Callable[[dict], None]:
    keys = path.split(".")

    def change(data: dict) -> None:
        obj = data
        for k in keys[:-1]:
            obj = obj[int(k)] if isinstance(obj, list) else obj[k]
        if isinstance(obj, list):
            obj[int(keys[-1])] = value
        else:
            obj[keys[-1]] = value
    return change


def _drop(key: str) -> Callable[[dict], None]:
    return lambda data: data.pop(key)


def _nested(depth: int) -> object:
    v: object = 1
    for _ in range(depth):
        v = {"x": v}
    return v


def _victim(d: Path) -> Path:
    return d.parent / "victim.txt"


def _lock_link(d: Path) -> None:
    _victim(d).write_text("precious")
    (d / ".moraleval.lock").symlink_to("../victim.txt")


def _plots_link(d: Path) -> None:
    elsewhere = d.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.svg").write_text("precious")
    shutil.rmtree(d / "plots")
    (d / "plots").symlink_to(elsewhere)


def _several_models_with_nan(d: Path) -> None:
    """A valid several-model report whose across-model contrast is undefined ("nan", as report.json writes it)."""
    report = _json(d, "report.json")
    for e in report["estimates"] + report["comparisons"]:
        e["model"] = "a"
    report.update(models={"a": {"backend": "fake", "complete": True}}, model_set={"name": "s", "models": ["a"]},
                  across={"results": [{"kind": "model_difference", "task": "bbq_answer", "metric": "bias_ambiguous",
                                       "model": "a", "baseline_model": "a", "condition": "Q", "treatment": "",
                                       "baseline": "", "effect": "nan", "ci_low": "nan", "ci_high": "inf",
                                       "test": "bootstrap", "p_value": "nan", "p_adjusted": "nan", "n_units": 3,
                                       "group": {}}]})
    _put(d, "report.json", report)


def _escape_name(d: Path) -> None:
    (d / "\x1b[2K\x1b[1A\rthe report matches its inputs \x1b[8m").write_text("x")


#: (id, the file it damages or None, what it does to the folder; may return another path to pass instead)
SHAPES: list[tuple[str, str | None, Callable[[Path], object]]] = [
    # report.json
    ("report.json missing", "report.json", lambda d: (d / "report.json").unlink()),
    ("report.json empty", "report.json", _raw("report.json", b"")),
    ("report.json invalid UTF-8", "report.json", _raw("report.json", b'{"format": "\xff\xfe"}')),
    ("report.json truncated", "report.json", lambda d: (d / "report.json").write_bytes(
        (d / "report.json").read_bytes()[:500])),
    ("report.json a list", "report.json", _raw("report.json", b"[]")),
    ("report.json a string", "report.json", _raw("report.json", b'"report"')),
    ("report.json nested 100,000 deep", "report.json", _raw("report.json", b"[" * 100_000 + b"]" * 100_000)),
    ("report.json nested 300 deep in a group", "report.json", _edit("report.json", _set("estimates.0.group",
                                                                                         _nested(300)))),
    ("report.json 1e309", "report.json", lambda d: (d / "report.json").write_text(
        (d / "report.json").read_text().replace('"value": ', '"value": 1e309, "v": ', 1))),
    ("report.json NaN", "report.json", lambda d: (d / "report.json").write_text(
        (d / "report.json").read_text().replace('"value": ', '"value": NaN, "v": ', 1))),
    ("report.json lone surrogate", "report.json", lambda d: (d / "report.json").write_text(
        (d / "report.json").read_text().replace('"study": "', '"study": "\\ud800', 1))),
    ("report.json without tasks", "report.json", _edit("report.json", _drop("tasks"))),
    ("report.json without bootstrap", "report.json", _edit("report.json", _drop("bootstrap"))),
    ("tasks a list", "report.json", _edit("report.json", _set("tasks", ["bbq_answer"]))),
    ("conditions a string", "report.json", _edit("report.json", _set("tasks.bbq_answer.conditions", "Q"))),
    ("estimates an object", "report.json", _edit("report.json", _set("estimates", {"a": 1}))),
    ("an estimate a string", "report.json", _edit("report.json", _set("estimates.0", "est"))),
    ("an estimate value a list", "report.json", _edit("report.json", _set("estimates.0.value", [1]))),
    ("an estimate group a list", "report.json", _edit("report.json", _set("estimates.0.group", ["a"]))),
    ("an estimate without metric", "report.json", _edit("report.json", lambda r: r["estimates"][0].pop("metric"))),
    ("a metric name a number", "report.json", _edit("report.json", _set("metrics.0.name", 7))),
    ("a metric formula JSON a string", "report.json", _edit("report.json", _set("metrics.0.expr", "x + 1"))),
    ("resamples many", "report.json", _edit("report.json", _set("bootstrap.resamples", "many"))),
    ("resamples 5,000,000", "report.json", _edit("report.json", _set("bootstrap.resamples", 5_000_000))),
    ("resamples -1", "report.json", _edit("report.json", _set("bootstrap.resamples", -1))),
    ("level 7", "report.json", _edit("report.json", _set("bootstrap.level", 7))),
    ("another format", "report.json", _edit("report.json", _set("format", "other-tool/3"))),
    ("counts a string", "report.json", _edit("report.json", _set("counts", "many"))),
    ("a comparison p-value a list", "report.json", _edit("report.json", _set("comparisons.0.p_value", [0.1]))),
    ("answer counts a list", "report.json", _edit("report.json", _set("answer_distribution.0.counts", [1, 2]))),
    ("a model set naming an unknown model", "report.json", _edit("report.json", lambda r: r.update(
        models={"a": {"complete": True}}, model_set={"models": ["a", "b"]}))),
    ("an across result without kind", "report.json", _edit("report.json", _set("across", {"results": [{}]}))),
    ("report.json a directory", "report.json", _replace("report.json", lambda p: p.mkdir())),
    ("report.json a link to /etc/passwd", "report.json", _replace("report.json",
                                                                  lambda p: p.symlink_to("/etc/passwd"))),
    ("report.json a FIFO", "report.json", _replace("report.json", lambda p: os.mkfifo(p))),
    ("report.json of 300 MB", "report.json", lambda d: os.truncate(d / "report.json", 300 * 1024 * 1024)),
    # samples.jsonl
    ("samples.jsonl missing", "samples.jsonl", lambda d: (d / "samples.jsonl").unlink()),
    ("a sample with invalid UTF-8", "samples.jsonl", _samples_line(lambda r: b'{"task": "\xff"}')),
    ("a sample not JSON", "samples.jsonl", _samples_line(lambda r: b'{"task": ')),
    ("a sample a list", "samples.jsonl", _samples_line(lambda r: [r])),
    ("a sample's values a list", "samples.jsonl", _samples_line(lambda r: dict(r, values=[1, 2]))),
    ("a sample's choices a string", "samples.jsonl", _samples_line(lambda r: dict(r, choices="(a)"))),
    ("a sample's task a number", "samples.jsonl", _samples_line(lambda r: dict(r, task=3))),
    ("a sample's log-probs text", "samples.jsonl", _samples_line(lambda r: dict(r, logprobs=["x"]))),
    ("a sample nested 100,000 deep", "samples.jsonl", _samples_line(lambda r: b"[" * 100_000 + b"]" * 100_000)),
    ("a sample with a lone surrogate", "samples.jsonl", _samples_line(
        lambda r: json.dumps(dict(r, task="a\ud800")).encode("utf-8", "surrogatepass").replace(
            "a\ud800".encode("utf-8", "surrogatepass"), b"a\\ud800"))),
    ("a sample line of 70 MB", "samples.jsonl", lambda d: os.truncate(d / "samples.jsonl", 70 * 1024 * 1024)),
    ("samples.jsonl a directory", "samples.jsonl", _replace("samples.jsonl", lambda p: p.mkdir())),
    ("samples.jsonl a link to /etc/passwd", "samples.jsonl", _replace("samples.jsonl",
                                                                      lambda p: p.symlink_to("/etc/passwd"))),
    # manifest.json
    ("manifest.json a list", "manifest.json", _raw("manifest.json", b"[]")),
    ("manifest.json invalid UTF-8", "manifest.json", _raw("manifest.json", b'{"format": "\xc3\x28"}')),
    ("manifest.json nested 100,000 deep", "manifest.json", _raw("manifest.json", b"{\"a\":" * 50_000 + b"1"
                                                                + b"}" * 50_000)),
    ("manifest outputs a list", "manifest.json", _edit("manifest.json", _set("outputs", ["report.json"]))),
    ("manifest outputs ../../etc/passwd", "manifest.json", _edit("manifest.json", lambda m: m["outputs"].update(
        {"../../etc/passwd": "0" * 64}))),
    ("manifest spec /etc/passwd", "manifest.json", _edit("manifest.json", _set("spec.path", "/etc/passwd"))),
    ("manifest data file ../../etc/passwd", "manifest.json", _edit("manifest.json", lambda m: m["data_files"].update(
        {"../../../../../../etc/passwd": "0" * 64}))),
    ("manifest model file /dev/zero", "manifest.json", _edit("manifest.json", _set("model_files",
                                                                                   {"/dev/zero": "0" * 64}))),
    ("manifest imports strings", "manifest.json", _edit("manifest.json", _set("imports", ["lib/bbq.me"]))),
    ("manifest.json missing", "manifest.json", lambda d: (d / "manifest.json").unlink()),
    ("manifest.json a FIFO", "manifest.json", _replace("manifest.json", lambda p: os.mkfifo(p))),
    # the folder
    ("DIR is /etc/passwd", None, lambda d: Path("/etc/passwd")),
    ("DIR does not exist", None, lambda d: d / "nope"),
    ("plots a link out of the folder", None, _plots_link),
    ("the lock file a link to another file", None, _lock_link),
    ("a file named with escape codes", None, _escape_name),
    ("several models, an undefined contrast", None, _several_models_with_nan),
    ("U+2028 and U+0085 raw in a sample", None, _samples_line(
        lambda r: dict(r, generated={"reasoning": "a\u2028b\u2029c\x85d"}))),
]


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return quickstart_report(tmp_path_factory.mktemp("good") / "report")


def _cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


def run_shape(good: Path, tmp: Path, shape: Callable[[Path], object], command: str, monkeypatch) -> tuple[int, str]:
    """Copy ``good``, damage it with ``shape``, run ``command`` on it: (exit code, stdout + stderr)."""
    from moraleval.report import view

    d = tmp / "report"
    shutil.copytree(good, d, symlinks=True)
    target = shape(d)
    folder = str(target) if isinstance(target, Path) else str(d)
    if command == "verify":
        code, out, err = _cli(["verify", folder])
    elif command == "diff-a":
        code, out, err = _cli(["diff", folder, str(good)])
    elif command == "diff-b":
        code, out, err = _cli(["diff", str(good), folder])
    elif command == "report":
        code, out, err = _cli(["report", folder])
    else:  # view: the command up to serving, then one request for the page and one for rows
        from http.server import ThreadingHTTPServer

        said: list[str] = []
        server_class = getattr(view, "_Server", ThreadingHTTPServer)  # (an older moraleval, for the tally below)
        monkeypatch.setattr(server_class, "serve_forever", lambda self, *a, **k: said.append(_requests(self)))
        code, out, err = _cli(["view", folder, "--port", "0"])
        out += "\n".join(said)
    return code, out + err


def _requests(server) -> str:
    import http.client
    import socketserver
    import threading
    from urllib.parse import urlsplit

    threading.Thread(target=socketserver.BaseServer.serve_forever, args=(server,), daemon=True).start()
    port = server.server_address[1]
    base = urlsplit(getattr(server, "url", f"http://127.0.0.1:{port}/")).path
    said = []
    try:
        for path in (base, base + "api/rows?limit=5", base + "api/rows?q=the&limit=all&fields=metric"):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            c.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
            r = c.getresponse()
            body = r.read()
            assert r.status in (200, 503), (path, r.status, body[:300])
            said.append(f"{path}: {r.status}")
    finally:
        server.shutdown()
    return "\n".join(said)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("name, damaged, shape", SHAPES, ids=[s[0] for s in SHAPES])
def test_a_damaged_folder_is_one_clear_error_in_every_command(good, tmp_path, monkeypatch, command, name, damaged,
                                                              shape) -> None:
    code, text = run_shape(good, tmp_path, shape, command, monkeypatch)
    assert "Traceback" not in text and "internal error" not in text, text[-3000:]
    assert code in (0, 1, 2), (code, text[-2000:])  # 0 ok, 1 verify's mismatch, 2 a report folder problem
    assert "\x1b" not in text and "\r" not in text, "control characters from the folder reached the terminal"
    if code == 2 and damaged is not None and command != "verify":
        assert damaged in text, text  # the message names the file
    if code == 2:
        assert len([line for line in text.splitlines() if line.startswith("error")]) == 1, text
    if name.startswith(("the lock file", "plots a link")):
        victim = tmp_path / ("victim.txt" if name.startswith("the lock") else "elsewhere/keep.svg")
        assert victim.read_text() == "precious" and not (tmp_path / "elsewhere" / "bbq_answer.svg").exists()
        if command == "report":
            assert code == 2 and ("symbolic link" in text or "is not a moraleval lock file" in text), text


def test_what_the_shapes_give(good, tmp_path, monkeypatch) -> None:
    """A few exact answers (the rest above only: one line, no traceback)."""
    cases = {
        "resamples 5,000,000": ("report", "report.json: bootstrap.resamples is 5,000,000, expected a whole number "
                                          "from 100 to 100,000"),
        "report.json nested 100,000 deep": ("report", "report.json is nested too deeply to read"),
        "report.json 1e309": ("report", "report.json holds a number too large to represent"),
        "a sample's values a list": ("diff-a", "samples.jsonl: line 1: values is a list, expected an object"),
        "DIR is /etc/passwd": ("diff-b", "/etc/passwd is a file, not a report folder"),
        "report.json a FIFO": ("view", "report.json is not a regular file"),
        "manifest outputs ../../etc/passwd": ("verify", "names an output ../../etc/passwd that is not a report file "
                                                        "inside the folder: not checked"),
        "manifest data file ../../etc/passwd": ("verify", "leaves the data root ('..'): not checked"),
        "manifest model file /dev/zero": ("verify", "/dev/zero is not a regular file"),
        "a file named with escape codes": ("verify", "foreign file: \\x1b[2K\\x1b[1A\\x0dthe report matches"),
    }
    by_name = {s[0]: s[2] for s in SHAPES}
    for i, (name, (command, want)) in enumerate(cases.items()):
        code, text = run_shape(good, tmp_path / str(i), by_name[name], command, monkeypatch)
        assert want in text, (name, text)


def test_the_fast_sample_check_agrees_with_the_schema(good) -> None:
    """``schema.sample_ok`` (the check of a valid row without messages) says yes exactly when SAMPLE does."""
    from moraleval.report.schema import SAMPLE, sample_ok

    rows = [json.loads(x) for x in (good / "samples.jsonl").read_text().splitlines()]
    variants = [r for r in rows[:20]]
    base = rows[0]
    for key in list(base):
        for value in (None, 1, 1.5, "x", True, [1], {"a": 1}, ["x"], [1.5, "nan"], [None]):
            variants.append(dict(base, **{key: value}))
        variants.append({k: v for k, v in base.items() if k != key})
    variants += [[], "row", 3, None]
    for v in variants:
        assert sample_ok(v) == SAMPLE.accepts(v), v


def test_view_rejects_a_port_out_of_range(capsys) -> None:
    for port in ("70000", "-1", "http"):
        with pytest.raises(SystemExit) as exit_:
            main(["view", ".", "--port", port])
        assert exit_.value.code == 2
        assert "--port" in capsys.readouterr().err


def _tally() -> None:
    """``python tests/test_report_folders.py``: every shape through every command against the moraleval on
    PYTHONPATH (an older checkout too), counting tracebacks and hangs instead of asserting (docs/security.md's
    before/after figures)."""
    import signal
    import tempfile

    def hung(*_args: object) -> None:
        raise TimeoutError("hung for 60 s")

    class Patch:  # monkeypatch's setattr, outside pytest
        def setattr(self, obj: object, name: str, value: object) -> None:
            setattr(obj, name, value)

    signal.signal(signal.SIGALRM, hung)
    good = quickstart_report(Path(tempfile.mkdtemp()) / "good")
    runs = tracebacks = hangs = 0
    bad_shapes = set()
    for name, _damaged, shape in SHAPES:
        for command in COMMANDS:
            import http.server

            saved = http.server.ThreadingHTTPServer.serve_forever
            signal.alarm(60)
            try:
                code, text = run_shape(good, Path(tempfile.mkdtemp()), shape, command, Patch())
            except BaseException as exc:  # noqa: BLE001 - a tally, not a test
                code, text = 70, f"Traceback {type(exc).__name__}: {exc}"
            finally:
                signal.alarm(0)
                http.server.ThreadingHTTPServer.serve_forever = saved
            runs += 1
            failed = "Traceback" in text or "internal error" in text
            tracebacks += failed
            hangs += "hung for 60 s" in text
            if failed:
                bad_shapes.add(name)
            first = next((line for line in text.splitlines() if line.strip()), "")
            print(f"{name[:40]:<40} {command:<7} {code!s:<4} {'TRACEBACK' if failed else '':<9} "
                  f"{repr(first)[1:111]}", flush=True)
    print(f"runs: {runs}, ending in a traceback: {tracebacks} (of which hangs stopped after 60 s: {hangs}); "
          f"shapes: {len(SHAPES)}, with a traceback in some command: {len(bad_shapes)}")


if __name__ == "__main__":
    _tally()
