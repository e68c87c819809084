"""`moraleval data fetch NAME`: the dataset's pinned files from its origin at the pinned commit, every hash
verified — against a local HTTP server standing in for the origin (no test reaches the internet)."""

from __future__ import annotations

from pathlib import Path

import pytest

from _support import SPECS, shared_data_root
from moraleval.cli import main

WINOGENDER = {  # upstream path -> file in the data root
    "rudinger/winogender-schemas/1c7f8b481ad8a234b41e9f76a424d6e856e13f7f/data/templates.tsv":
        "winogender/templates.tsv",
    "rudinger/winogender-schemas/1c7f8b481ad8a234b41e9f76a424d6e856e13f7f/data/occupations-stats.tsv":
        "winogender/occupations-stats.tsv",
}


@pytest.fixture
def origin(httpserver, monkeypatch):
    source = shared_data_root() or (Path(__file__).resolve().parents[2] / "moraleval" / "data" / "sample")
    for upstream, local in WINOGENDER.items():
        httpserver.expect_request(f"/{upstream}").respond_with_data((source / local).read_bytes())
    monkeypatch.setenv("MORALEVAL_GITHUB_RAW_BASE", httpserver.url_for("/").rstrip("/"))
    return httpserver


def test_fetch_follows_imports_and_verifies_hashes(origin, tmp_path, capsys):
    dest = tmp_path / "data"
    code = main(["data", "fetch", "winogender", "--spec", str(SPECS / "winogender.me"), "--dest", str(dest)])
    out = capsys.readouterr().out
    assert code == 0, out
    for local in WINOGENDER.values():
        assert (dest / local).is_file()
    # the fetched root is a working data root for the spec
    assert main(["check", str(SPECS / "winogender.me"), "--data", str(dest)]) == 0
    # fetching again downloads nothing
    assert main(["data", "fetch", "winogender", "--spec", str(SPECS / "winogender.me"), "--dest", str(dest)]) == 0
    assert len(origin.log) == 2


def test_altered_upstream_file_is_refused(httpserver, monkeypatch, tmp_path, capsys):
    for upstream in WINOGENDER:
        httpserver.expect_request(f"/{upstream}").respond_with_data(b"not the pinned file\n")
    monkeypatch.setenv("MORALEVAL_GITHUB_RAW_BASE", httpserver.url_for("/").rstrip("/"))
    code = main(["data", "fetch", "winogender", "--spec", str(SPECS / "winogender.me"),
                 "--dest", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2
    assert "sha256" in err and "winogender/templates.tsv" in err and "Traceback" not in err
    assert not (tmp_path / "data" / "winogender" / "templates.tsv").exists()


def test_unknown_dataset_suggests_names(tmp_path, capsys):
    assert main(["data", "fetch", "winogendr", "--spec", str(SPECS / "winogender.me")]) == 1
    assert "did you mean 'winogender'" in capsys.readouterr().err


def _no_dns(monkeypatch):
    """Every request fails as it does without network: the host name cannot be resolved."""
    import socket

    import httpx

    import moraleval.data.fetch as datafetch

    calls = []

    def handler(request):
        calls.append(str(request.url))
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except socket.gaierror as exc:
            raise httpx.ConnectError("[Errno -2] Name or service not known", request=request) from exc

    real = httpx.Client

    def client(**kwargs):
        return real(transport=httpx.MockTransport(handler), **{k: v for k, v in kwargs.items() if k != "transport"})

    monkeypatch.setattr(datafetch.httpx, "Client", client)
    monkeypatch.setattr(datafetch.time, "sleep", lambda s: pytest.fail("a DNS failure must not be retried"))
    return calls


def test_fetch_without_network_fails_fast_with_one_summary(monkeypatch, tmp_path, capsys):
    calls = _no_dns(monkeypatch)
    code = main(["data", "fetch", "bbq", "--spec", str(SPECS / "bbq.me"), "--dest", str(tmp_path / "d")])
    captured = capsys.readouterr()
    assert code == 2
    assert len(calls) == 1  # no retries, and the other 11 files of that host are not tried
    assert "cannot resolve host raw.githubusercontent.com: 12 file(s) not fetched" in captured.err
    assert captured.err.count("raw.githubusercontent.com") == 1 and "Traceback" not in captured.err
    assert "needs internet access" in captured.err


def test_fetch_verbose_lists_every_file(monkeypatch, tmp_path, capsys):
    _no_dns(monkeypatch)
    code = main(["data", "fetch", "bbq", "--spec", str(SPECS / "bbq.me"), "--dest", str(tmp_path / "d"), "-v"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("url: https://raw.githubusercontent.com/") == 12
    assert "not tried: host raw.githubusercontent.com could not be resolved" in captured.err


# ------------------------------------------------------------- files declared `unpinned` (discrim-eval, sycophancy)

SAMPLE = Path(__file__).resolve().parents[2] / "moraleval" / "data" / "sample"
DISCRIM_COMMIT = "6986d6ea802e019d01e94dd59597e94fbd8f8c4a"
EVALS_COMMIT = "84fcc677e52e1902d696c32cd1a6b663e70d3993"


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_unpinned_files_are_fetched_from_hugging_face_and_the_lines_that_pin_them_printed(
        httpserver, monkeypatch, tmp_path, capsys):
    import shutil

    # the local server stands in for huggingface.co; it serves files in the dataset's format
    served = {}
    for fill in ("explicit", "implicit"):
        data = (SAMPLE / "synthetic" / "discrim-eval" / f"{fill}.jsonl").read_bytes()
        served[fill] = data
        httpserver.expect_request(f"/datasets/Anthropic/discrim-eval/resolve/{DISCRIM_COMMIT}/{fill}.jsonl"
                                  ).respond_with_data(data)
    monkeypatch.setenv("MORALEVAL_HF_BASE", httpserver.url_for("/").rstrip("/"))
    dest = tmp_path / "data"
    code = main(["data", "fetch", "discrim_eval", "--spec", str(SPECS / "discrim_eval.me"), "--dest", str(dest)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 file(s) of dataset 'discrim_eval' are declared `unpinned`" in out and "NOT verified" in out
    pins = {}
    for fill, data in served.items():
        assert (dest / "discrim-eval" / f"{fill}.jsonl").read_bytes() == data
        pins[fill] = f'file "discrim-eval/{fill}.jsonl" sha256 "{_sha(data)}" upstream "{fill}.jsonl"'
        assert pins[fill] in out, out
    assert len(httpserver.log) == 2

    # never a silent unpinned read: check refuses the fetched files and gives the same line to pin
    spec = tmp_path / "specs" / "discrim_eval.me"
    shutil.copytree(SPECS, spec.parent)
    assert main(["check", str(spec), "--set", "data=full", "--data", str(dest)]) == 2
    err = capsys.readouterr().err
    assert "error[E130]" in err and pins["explicit"] in err and "Traceback" not in err

    # the printed lines pasted over the `unpinned` ones: the spec reads the files
    text = spec.read_text(encoding="utf-8")
    for fill in served:
        text = text.replace(f'file "discrim-eval/{fill}.jsonl" unpinned upstream "{fill}.jsonl"', pins[fill])
    spec.write_text(text, encoding="utf-8")
    assert main(["check", str(spec), "--set", "data=full", "--data", str(dest)]) == 0, capsys.readouterr().err
    # a second fetch finds the files (pinned now) and downloads nothing
    assert main(["data", "fetch", "discrim_eval", "--spec", str(spec), "--dest", str(dest)]) == 0
    assert "2 already present" in capsys.readouterr().out and len(httpserver.log) == 2


def test_unpinned_sycophancy_files_come_from_github_at_the_pinned_commit(httpserver, monkeypatch, tmp_path, capsys):
    names = ("nlp_survey", "philpapers2020", "political_typology_quiz")
    for name in names:
        data = (SAMPLE / "synthetic" / "model-written-evals" / "sycophancy" / f"sycophancy_on_{name}.jsonl"
                ).read_bytes()
        httpserver.expect_request(f"/anthropics/evals/{EVALS_COMMIT}/sycophancy/sycophancy_on_{name}.jsonl"
                                  ).respond_with_data(data)
    monkeypatch.setenv("MORALEVAL_GITHUB_RAW_BASE", httpserver.url_for("/").rstrip("/"))
    dest = tmp_path / "data"
    code = main(["data", "fetch", "sycophancy", "--spec", str(SPECS / "model_written.me"), "--dest", str(dest)])
    out = capsys.readouterr().out
    assert code == 0, out
    for name in names:
        rel = f"model-written-evals/sycophancy/sycophancy_on_{name}.jsonl"
        assert f'file "{rel}" sha256 "{_sha((dest / rel).read_bytes())}" upstream "sycophancy/sycophancy_on_' in out


def test_a_pinned_model_written_file_with_other_content_is_refused(httpserver, monkeypatch, tmp_path, capsys):
    # the synthetic Winogenerated file is not the upstream one: its sha256 differs from the pinned one
    data = (SAMPLE / "synthetic" / "model-written-evals" / "winogenerated" / "winogenerated_examples.jsonl"
            ).read_bytes()
    httpserver.expect_request(f"/anthropics/evals/{EVALS_COMMIT}/winogenerated/winogenerated_examples.jsonl"
                              ).respond_with_data(data)
    monkeypatch.setenv("MORALEVAL_GITHUB_RAW_BASE", httpserver.url_for("/").rstrip("/"))
    code = main(["data", "fetch", "winogenerated", "--spec", str(SPECS / "winogenerated.me"),
                 "--dest", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2 and "sha256" in err and "winogenerated_examples.jsonl" in err and "Traceback" not in err
    assert not (tmp_path / "data" / "model-written-evals" / "winogenerated" / "winogenerated_examples.jsonl").exists()
