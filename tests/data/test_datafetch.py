"""moraleval.data.fetch against a local HTTP server (pytest-httpserver on 127.0.0.1); nothing reaches the internet."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from pathlib import Path

import httpx
import pytest

from moraleval.data import fetch as datafetch
from moraleval.data.fetch import FetchError, FetchFile, ProgressEvent, default_data_root, fetch_files, github_raw_url
from moraleval.errors import DataError

ALPHA = b'{"example_id": 0, "context": "alpha"}\n'
BETA = b"occupation\tparticipant\nnurse\tpatient\n"
GAMMA = b"gamma " * 50_000  # ~300 KB: several chunks


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*.part"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data"


# ---------------------------------------------------------------------------------------------------------- URLs


def test_github_raw_url_default(monkeypatch):
    monkeypatch.delenv("MORALEVAL_GITHUB_RAW_BASE", raising=False)
    assert (
        github_raw_url("nyu-mll/BBQ", "bea11bd97d79217245b5871acd247b9d6eb24598", "data/Age.jsonl")
        == "https://raw.githubusercontent.com/nyu-mll/BBQ/bea11bd97d79217245b5871acd247b9d6eb24598/data/Age.jsonl"
    )


def test_github_raw_url_env_override(monkeypatch):
    monkeypatch.setenv("MORALEVAL_GITHUB_RAW_BASE", "http://127.0.0.1:9/raw/")
    assert github_raw_url("a/b", "abc123", "d/x y.tsv") == "http://127.0.0.1:9/raw/a/b/abc123/d/x%20y.tsv"


@pytest.mark.parametrize(
    "repo, commit, path",
    [("nyu-mll", "abc", "x"), ("a/b/c", "abc", "x"), ("a/b", "", "x"), ("a/b", "../x", "x"), ("a/b", "abc", "../x"),
     ("a/b", "abc", "/etc/passwd"), ("a/b", "abc", "")],
)
def test_github_raw_url_rejects_bad_parts(repo, commit, path):
    with pytest.raises(DataError):
        github_raw_url(repo, commit, path)


# ---------------------------------------------------------------------------------------------------- data root


def test_default_data_root_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("MORALEVAL_DATA_HOME", str(tmp_path / "elsewhere"))
    assert default_data_root() == tmp_path / "elsewhere"


def test_default_data_root_platformdirs(monkeypatch):
    import platformdirs

    monkeypatch.delenv("MORALEVAL_DATA_HOME", raising=False)
    assert default_data_root() == Path(platformdirs.user_data_dir("moraleval")) / "data"


def test_fetch_uses_default_root_from_env(monkeypatch, tmp_path, httpserver):
    monkeypatch.setenv("MORALEVAL_DATA_HOME", str(tmp_path / "home"))
    httpserver.expect_request("/a").respond_with_data(ALPHA)
    report = fetch_files([FetchFile("bbq/a.jsonl", httpserver.url_for("/a"), sha(ALPHA))], backoff=0)
    assert report.dest_root == tmp_path / "home"
    assert (tmp_path / "home" / "bbq" / "a.jsonl").read_bytes() == ALPHA


# ------------------------------------------------------------------------------------------------ FetchFile checks


@pytest.mark.parametrize("path", ["../x", "/abs/x", "a/../b", "a//b", "a\\b", "", "./a", "C:/x"])
def test_fetchfile_rejects_unsafe_paths(path):
    with pytest.raises(DataError, match="invalid data file path"):
        FetchFile(path, "http://127.0.0.1/x", "0" * 64)


@pytest.mark.parametrize("digest", ["abc", "g" * 64, "0" * 63, ""])
def test_fetchfile_rejects_bad_sha256(digest):
    with pytest.raises(DataError, match="invalid sha256"):
        FetchFile("a.txt", "http://127.0.0.1/x", digest)


def test_fetchfile_normalises_sha_and_rejects_other_schemes():
    assert FetchFile("a", "https://h/x", " " + "AB" * 32 + "\n").sha256 == "ab" * 32
    with pytest.raises(DataError, match="invalid URL"):
        FetchFile("a", "file:///etc/passwd", "0" * 64)


def test_conflicting_declarations_rejected(root):
    a = FetchFile("x.txt", "http://127.0.0.1/a", sha(ALPHA))
    b = FetchFile("x.txt", "http://127.0.0.1/b", sha(ALPHA))
    with pytest.raises(DataError, match="declared twice"):
        fetch_files([a, b], root)


# -------------------------------------------------------------------------------------------------- fetching


def test_fetch_ok_hashes_verified(httpserver, root):
    httpserver.expect_request("/a").respond_with_data(ALPHA)
    httpserver.expect_request("/b").respond_with_data(BETA)
    httpserver.expect_request("/c").respond_with_data(GAMMA)
    files = [
        FetchFile("bbq/a.jsonl", httpserver.url_for("/a"), sha(ALPHA)),
        FetchFile("winogender/b.tsv", httpserver.url_for("/b"), sha(BETA)),
        FetchFile("deep/er/c.bin", httpserver.url_for("/c"), sha(GAMMA)),
    ]
    events: list[ProgressEvent] = []
    report = fetch_files(files, root, backoff=0, progress=events.append)

    assert report.ok and not report.failed and not report.present
    assert [f.file.path for f in report.fetched] == ["bbq/a.jsonl", "winogender/b.tsv", "deep/er/c.bin"]
    assert [f.size for f in report.fetched] == [len(ALPHA), len(BETA), len(GAMMA)]
    for f, data in zip(files, (ALPHA, BETA, GAMMA)):
        assert (root / f.path).read_bytes() == data
        assert hashlib.sha256((root / f.path).read_bytes()).hexdigest() == f.sha256
    assert leftovers(root) == []
    kinds = [e.kind for e in events]
    assert kinds.count("start") == 3 and kinds.count("done") == 3
    last_c = [e for e in events if e.file.path == "deep/er/c.bin" and e.kind == "bytes"][-1]
    assert last_c.received == len(GAMMA) and last_c.total == len(GAMMA)
    assert "3 fetched, 0 already present, 0 failed" in report.summary()
    assert report.to_json()["fetched"][0] == {"path": "bbq/a.jsonl", "url": httpserver.url_for("/a"),
                                              "sha256": sha(ALPHA), "bytes": len(ALPHA), "replaced": False}


def test_wrong_content_is_refused_and_not_left_in_place(httpserver, root):
    httpserver.expect_request("/a").respond_with_data(b"tampered\n")
    f = FetchFile("bbq/a.jsonl", httpserver.url_for("/a"), sha(ALPHA))
    with pytest.raises(FetchError) as info:
        fetch_files([f], root, backoff=0)
    err = info.value
    assert isinstance(err, DataError)
    text = str(err)
    assert text.startswith("error: ")
    assert "bbq/a.jsonl" in text and f.url in text
    assert sha(ALPHA) in text and sha(b"tampered\n") in text  # expected and actual
    assert "deleted" in text and "what to do" in text
    failure = err.report.failed[0]
    assert failure.expected_sha256 == sha(ALPHA) and failure.actual_sha256 == sha(b"tampered\n")
    assert not (root / "bbq" / "a.jsonl").exists()
    assert leftovers(root) == []
    assert len(httpserver.log) == 1  # a hash mismatch is not retried


def test_mismatching_download_leaves_existing_file_untouched(httpserver, root):
    (root / "bbq").mkdir(parents=True)
    (root / "bbq" / "a.jsonl").write_bytes(b"old local copy\n")
    httpserver.expect_request("/a").respond_with_data(b"tampered\n")
    f = FetchFile("bbq/a.jsonl", httpserver.url_for("/a"), sha(ALPHA))
    report = fetch_files([f], root, backoff=0, raise_on_failure=False)
    assert not report.ok
    assert (root / "bbq" / "a.jsonl").read_bytes() == b"old local copy\n"
    assert leftovers(root) == []


def test_existing_file_with_wrong_hash_is_replaced(httpserver, root):
    root.mkdir()
    (root / "a.jsonl").write_bytes(b"corrupted")
    httpserver.expect_request("/a").respond_with_data(ALPHA)
    report = fetch_files([FetchFile("a.jsonl", httpserver.url_for("/a"), sha(ALPHA))], root, backoff=0)
    assert report.fetched[0].replaced
    assert (root / "a.jsonl").read_bytes() == ALPHA


def test_already_present_files_are_skipped(httpserver, root):
    (root / "bbq").mkdir(parents=True)
    (root / "bbq" / "a.jsonl").write_bytes(ALPHA)
    httpserver.expect_request("/b").respond_with_data(BETA)
    files = [
        FetchFile("bbq/a.jsonl", httpserver.url_for("/a"), sha(ALPHA)),
        FetchFile("b.tsv", httpserver.url_for("/b"), sha(BETA)),
    ]
    events: list[ProgressEvent] = []
    report = fetch_files(files, root, backoff=0, progress=events.append)
    assert [f.path for f in report.present] == ["bbq/a.jsonl"]
    assert [f.file.path for f in report.fetched] == ["b.tsv"]
    assert [r.path for r, _ in httpserver.log] == ["/b"]  # nothing asked for the present file
    assert ("present", "bbq/a.jsonl") in [(e.kind, e.file.path) for e in events]

    again = fetch_files(files, root, backoff=0)
    assert len(again.present) == 2 and not again.fetched
    assert len(httpserver.log) == 1


def test_500_then_success_is_retried(httpserver, root):
    httpserver.expect_ordered_request("/a").respond_with_data("boom", status=500)
    httpserver.expect_ordered_request("/a").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request("/a").respond_with_data(ALPHA)
    events: list[ProgressEvent] = []
    report = fetch_files([FetchFile("a.jsonl", httpserver.url_for("/a"), sha(ALPHA))], root,
                         retries=3, backoff=0, progress=events.append)
    assert report.ok and (root / "a.jsonl").read_bytes() == ALPHA
    assert len(httpserver.log) == 3
    retries = [e for e in events if e.kind == "retry"]
    assert len(retries) == 2 and "HTTP 500" in retries[0].message and "HTTP 503" in retries[1].message
    httpserver.check_assertions()
    assert leftovers(root) == []


def test_backoff_delays_grow(httpserver, root, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(datafetch.time, "sleep", sleeps.append)
    httpserver.expect_request("/a").respond_with_data("boom", status=502)
    report = fetch_files([FetchFile("a.jsonl", httpserver.url_for("/a"), sha(ALPHA))], root,
                         retries=3, backoff=0.5, raise_on_failure=False)
    assert sleeps == [0.5, 1.0, 2.0]
    failure = report.failed[0]
    assert failure.status_code == 502 and failure.attempts == 4
    assert "gave up after 4 attempt(s)" in failure.reason
    assert len(httpserver.log) == 4


def test_retry_after_is_honoured_but_capped(httpserver, root, monkeypatch):
    sleeps: list[float] = []
    monkeypatch.setattr(datafetch.time, "sleep", sleeps.append)
    httpserver.expect_ordered_request("/a").respond_with_data("slow down", status=429, headers={"Retry-After": "7"})
    httpserver.expect_ordered_request("/a").respond_with_data("slow down", status=429, headers={"Retry-After": "999"})
    httpserver.expect_ordered_request("/a").respond_with_data(ALPHA)
    fetch_files([FetchFile("a.jsonl", httpserver.url_for("/a"), sha(ALPHA))], root, retries=3, backoff=0.1)
    assert sleeps == [7.0, datafetch.MAX_RETRY_AFTER_S]


def test_404_gives_clear_data_error_naming_file_and_url(httpserver, root):
    httpserver.expect_request("/missing").respond_with_data("Not Found", status=404)
    f = FetchFile("bbq/Gender_identity.jsonl", httpserver.url_for("/missing"), sha(ALPHA))
    with pytest.raises(DataError) as info:
        fetch_files([f], root, retries=3, backoff=0)
    text = str(info.value)
    assert "bbq/Gender_identity.jsonl" in text
    assert httpserver.url_for("/missing") in text
    assert "HTTP 404" in text
    assert "commit and path" in text  # what to do
    assert "Traceback" not in text
    assert len(httpserver.log) == 1  # 404 is not retried
    assert info.value.report.failed[0].status_code == 404
    assert not (root / "bbq" / "Gender_identity.jsonl").exists()
    assert leftovers(root) == []


def test_partial_failure_keeps_files_already_fetched(httpserver, root):
    httpserver.expect_request("/a").respond_with_data(ALPHA)
    httpserver.expect_request("/b").respond_with_data("gone", status=404)
    httpserver.expect_request("/c").respond_with_data(GAMMA)
    files = [
        FetchFile("a.jsonl", httpserver.url_for("/a"), sha(ALPHA)),
        FetchFile("b.tsv", httpserver.url_for("/b"), sha(BETA)),
        FetchFile("c.bin", httpserver.url_for("/c"), sha(GAMMA)),
    ]
    with pytest.raises(FetchError) as info:
        fetch_files(files, root, backoff=0)
    report = info.value.report
    assert [f.file.path for f in report.fetched] == ["a.jsonl", "c.bin"]
    assert [f.file.path for f in report.failed] == ["b.tsv"]
    assert "could not fetch 1 of 3" in str(info.value)
    assert "2 file(s) already in place are kept" in str(info.value)
    assert (root / "a.jsonl").read_bytes() == ALPHA and (root / "c.bin").read_bytes() == GAMMA
    assert not (root / "b.tsv").exists()

    # once the server has the file, a rerun fetches only what is missing
    httpserver.clear()
    httpserver.expect_request("/b").respond_with_data(BETA)
    again = fetch_files(files, root, backoff=0)
    assert [f.file.path for f in again.fetched] == ["b.tsv"]
    assert sorted(f.path for f in again.present) == ["a.jsonl", "c.bin"]
    assert [r.path for r, _ in httpserver.log] == ["/b"]


def test_raise_on_failure_false_returns_report(httpserver, root):
    httpserver.expect_request("/a").respond_with_data("nope", status=403)
    report = fetch_files([FetchFile("a.jsonl", httpserver.url_for("/a"), sha(ALPHA))], root,
                         raise_on_failure=False)
    assert not report.ok and report.failed[0].status_code == 403
    assert report.to_json()["failed"][0]["expected_sha256"] == sha(ALPHA)
    with pytest.raises(FetchError):
        report.raise_for_failures()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_error_retried_then_reported(root):
    url = f"http://127.0.0.1:{_closed_port()}/a"
    events: list[ProgressEvent] = []
    report = fetch_files([FetchFile("a.jsonl", url, sha(ALPHA))], root, retries=2, backoff=0,
                         raise_on_failure=False, progress=events.append)
    failure = report.failed[0]
    assert failure.attempts == 3 and failure.status_code is None
    assert "ConnectError" in failure.reason and "network" in failure.hint
    assert [e.kind for e in events].count("retry") == 2
    assert not (root / "a.jsonl").exists() and leftovers(root) == []


class RawServer:
    """A one-thread HTTP/1.1 server on 127.0.0.1 that answers each connection with the next canned reply."""

    def __init__(self, replies: list[bytes]):
        self.replies = list(replies)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        for reply in self.replies:
            conn, _ = self.sock.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                self.requests += 1
                conn.sendall(reply)

    def close(self) -> None:
        self.sock.close()
        self.thread.join(timeout=5)


def test_truncated_body_is_retried(root):
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(ALPHA)}\r\nConnection: close\r\n\r\n".encode()
    server = RawServer([head + ALPHA[:5], head + ALPHA])  # first reply is cut short, then the full file
    try:
        events: list[ProgressEvent] = []
        report = fetch_files([FetchFile("a.jsonl", f"http://127.0.0.1:{server.port}/a", sha(ALPHA))], root,
                             backoff=0, progress=events.append)
    finally:
        server.close()
    assert report.ok and (root / "a.jsonl").read_bytes() == ALPHA
    assert server.requests == 2 and [e.kind for e in events].count("retry") == 1
    assert leftovers(root) == []


def test_caller_client_is_used_and_not_closed(httpserver, root):
    httpserver.expect_request("/a").respond_with_data(ALPHA)
    with httpx.Client(headers={"X-Test": "yes"}) as client:
        fetch_files([FetchFile("a.jsonl", httpserver.url_for("/a"), sha(ALPHA))], root, client=client)
        assert not client.is_closed
    assert httpserver.log[0][0].headers.get("X-Test") == "yes"


def test_github_raw_url_against_local_server(httpserver, root, monkeypatch):
    monkeypatch.setenv("MORALEVAL_GITHUB_RAW_BASE", httpserver.url_for("/raw"))
    commit = "bea11bd97d79217245b5871acd247b9d6eb24598"
    httpserver.expect_request(f"/raw/nyu-mll/BBQ/{commit}/data/Age.jsonl").respond_with_data(ALPHA)
    url = github_raw_url("nyu-mll/BBQ", commit, "data/Age.jsonl")
    report = fetch_files([FetchFile("bbq/Age.jsonl", url, sha(ALPHA))], root)
    assert report.ok and (root / "bbq" / "Age.jsonl").read_bytes() == ALPHA


def test_destination_directory_is_a_failure_not_a_crash(httpserver, root):
    (root / "a.jsonl").mkdir(parents=True)
    report = fetch_files([FetchFile("a.jsonl", httpserver.url_for("/a"), sha(ALPHA))], root,
                         raise_on_failure=False)
    assert "is a directory" in report.failed[0].reason
    assert httpserver.log == []


def test_symlink_escaping_root_is_refused(httpserver, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root.mkdir()
    (root / "bbq").symlink_to(outside, target_is_directory=True)
    report = fetch_files([FetchFile("bbq/a.jsonl", httpserver.url_for("/a"), sha(ALPHA))], root,
                         raise_on_failure=False)
    assert "outside the data root" in report.failed[0].reason
    assert list(outside.iterdir()) == [] and httpserver.log == []


def test_unwritable_root_is_a_data_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(DataError, match="cannot create the data root"):
        fetch_files([FetchFile("a", "http://127.0.0.1/a", sha(ALPHA))], blocker / "data")


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_fetched_files_honour_the_umask(httpserver, root, umask, mode):
    """A downloaded data file gets the permissions of any file the user creates, not mkstemp's 0600 (#24)."""
    httpserver.expect_request("/a").respond_with_data(ALPHA)
    old = os.umask(umask)
    try:
        report = fetch_files([FetchFile("bbq/a.jsonl", httpserver.url_for("/a"), sha(ALPHA))], root, backoff=0)
    finally:
        os.umask(old)
    assert report.ok and oct((root / "bbq" / "a.jsonl").stat().st_mode & 0o777) == oct(mode)
