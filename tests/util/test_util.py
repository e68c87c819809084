"""The utilities every stage and the backends share: reading user-named files, hashing, secrets in URLs,
messages about names and paths, and what the operating system says."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pytest

from moraleval.util import FileProblem, read_text, redact_url, sha256_file, url_secret_problem
from moraleval.util.files import sha256_bytes, write_atomic
from moraleval.util.outdir import os_error_reason
from moraleval.util.text import did_you_mean, shorten


def test_sha256_of_a_file_and_of_bytes_agree_with_hashlib(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # more than one read chunk
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest() == sha256_bytes(data)


def test_write_atomic_replaces_the_whole_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("old")
    write_atomic(path, b"new contents")
    assert path.read_bytes() == b"new contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_read_text_names_every_problem_in_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(FileProblem) as missing:
        read_text(tmp_path / "nope.me")
    assert missing.value.missing and missing.value.reason == "not found"
    with pytest.raises(FileProblem) as a_dir:
        read_text(tmp_path)
    assert "directory" in a_dir.value.reason
    bad = tmp_path / "latin1.me"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(FileProblem) as not_utf8:
        read_text(bad)
    assert "not UTF-8" in not_utf8.value.reason and "line 1" in not_utf8.value.reason


def test_credentials_in_urls_are_found_and_redacted() -> None:
    assert url_secret_problem("http://127.0.0.1:8000/v1") is None
    assert "credentials" in url_secret_problem("https://me:hunter2@example.org/v1")
    assert "api_key" in url_secret_problem("https://example.org/v1?api_key=sk-123")
    shown = redact_url("https://me:hunter2@example.org/v1?api_key=sk-123&x=1")
    assert "hunter2" not in shown and "sk-123" not in shown and "example.org/v1" in shown


def test_did_you_mean_and_shorten() -> None:
    assert did_you_mean("acurracy", ["accuracy", "bias", "n"]) == "did you mean 'accuracy'?"
    assert did_you_mean("zzz", ["accuracy"]) is None
    long = "/very/" + "x" * 300 + "/file.jsonl"
    cut = shorten(long)
    assert len(cut) == 80 and cut.startswith("/very/") and cut.endswith("/file.jsonl"[-40:]) and "…" in cut
    assert shorten("short") == "short"


def test_os_errors_are_said_as_a_person_would() -> None:
    assert os_error_reason(OSError(errno.EACCES, "Permission denied")) == "permission denied"
    assert os_error_reason(OSError(errno.EROFS, "Read-only file system")) == "the file system is read-only"
    assert "too long" in os_error_reason(OSError(errno.ENAMETOOLONG, "File name too long"))


# -- issue #24: terminals, links, the umask, signals --------------------------------------------------------

def test_for_terminal_escapes_what_a_terminal_would_act_on() -> None:
    from moraleval.util.text import for_terminal, json_for_terminal

    assert for_terminal("a\x1b[2K\rb\nc\x9b\u2028\u202e\x7f") == "a\\x1b[2K\\x0db\\x0ac\\x9b\\u2028\\u202e\\x7f"
    assert for_terminal("line 1\n\tline 2\x1b", keep_newlines=True) == "line 1\n\tline 2\\x1b"
    import json

    text = json.dumps({"k": "\x9b\u2028\x1b"}, ensure_ascii=False)
    assert json_for_terminal(text) == '{"k": "\\u009b\\u2028\\u001b"}' and json.loads(json_for_terminal(text)) == \
        json.loads(text)


def test_a_folder_refuses_links_and_writes_with_the_umask(tmp_path: Path) -> None:
    import os

    from moraleval.util.files import Folder, NotWritable, current_umask

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("precious")
    d = tmp_path / "d"
    d.mkdir()
    (d / "link").symlink_to(outside / "victim")
    (d / "plots").symlink_to(outside)
    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        with Folder(d) as folder:
            with pytest.raises(NotWritable, match="is a symbolic link"):
                folder.write("link", b"x")
            with pytest.raises(NotWritable, match="is a symbolic link"):
                folder.subfolder("plots")
            folder.write("new", b"data")
            sub = folder.subfolder("real")
            sub.write("f.svg", b"<svg/>")
            sub.close()
        write_atomic(d / "other", b"x")
    finally:
        os.umask(old)
    assert (outside / "victim").read_text() == "precious" and sorted(p.name for p in outside.iterdir()) == ["victim"]
    assert oct((d / "new").stat().st_mode & 0o777) == oct(0o640) == oct((d / "other").stat().st_mode & 0o777)
    assert oct((d / "real").stat().st_mode & 0o777) == oct(0o750)


def test_signals_in_a_deferred_block_are_acted_on_after_it() -> None:
    import os
    import signal

    from moraleval.util.signals import deferred_signals

    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("the rest of the block ran")
    assert done == ["the rest of the block ran"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


def test_the_cli_handler_remembers_an_interrupt(monkeypatch) -> None:
    from moraleval.util import signals

    signals.clear_interrupt()
    written = []
    monkeypatch.setattr(signals.os, "write", lambda fd, data: written.append((fd, data)))
    with pytest.raises(KeyboardInterrupt):
        signals.stop_handler(2, None)
    assert signals.interrupt_requested() and written == [(2, b"moraleval: SIGINT received, stopping (what is "
                                                             b"answered is kept)\n")]
    signals.clear_interrupt()
    assert not signals.interrupt_requested()
