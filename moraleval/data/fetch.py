"""Download pinned data files into the data root: the core of ``moraleval data fetch NAME``.

Independent of spec parsing: the caller turns a spec's dataset declarations into ``FetchFile``\\ s (a path
relative to the data root, a URL, and the sha256 the file must have) and calls ``fetch_files``.

Guarantees:

* a file is only ever put in place after its sha256 was checked: it is streamed into a temporary file in the
  destination folder and renamed over the destination (atomic on one filesystem); a download with the wrong
  hash is deleted and reported, and whatever was at the destination before is left untouched;
* files already present with the right hash are not downloaded again;
* 5xx answers, 408/429 and connection/timeout errors are retried (``retries`` times, exponential backoff);
  other HTTP errors (404, 403, ...) fail at once;
* one file failing does not stop the others (except a host name that cannot be resolved: no network; the other
  files from that host are not tried); the files fetched so far stay in place.

``fetch_files`` returns a ``FetchReport`` (fetched / already present / failed).  By default it then raises a
``FetchError`` (a ``DataError``; its ``report`` attribute holds the report) if any file failed; pass
``raise_on_failure=False`` to get the report back either way.

A file declared without a sha256 (``unpinned``: a public file whose hash could not be established when the spec was
written) is downloaded without verification and its actual sha256 is reported (``FetchReport.unpinned``), so the
caller can print the line that pins it; the checker refuses to read it until then.

``MORALEVAL_DATA_HOME`` overrides the default data root; ``MORALEVAL_GITHUB_RAW_BASE`` overrides
``https://raw.githubusercontent.com`` in ``github_raw_url`` and ``MORALEVAL_HF_BASE`` ``https://huggingface.co`` in
``huggingface_url`` (tests point them at a local server).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable
from urllib.parse import quote, urlsplit

import attrs
import httpx

from moraleval.errors import DataError
from moraleval.util.files import current_umask, sha256_file

ENV_DATA_HOME = "MORALEVAL_DATA_HOME"
ENV_GITHUB_RAW_BASE = "MORALEVAL_GITHUB_RAW_BASE"
DEFAULT_GITHUB_RAW_BASE = "https://raw.githubusercontent.com"
ENV_HF_BASE = "MORALEVAL_HF_BASE"
DEFAULT_HF_BASE = "https://huggingface.co"

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})  # plus any other 5xx
MAX_RETRY_AFTER_S = 30.0
CHUNK_SIZE = 1 << 16

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
_REF_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")


# --------------------------------------------------------------------------------------------------------------
# locations


def default_data_root() -> Path:
    """``$MORALEVAL_DATA_HOME`` if set, else ``platformdirs.user_data_dir("moraleval") / "data"``."""
    env = os.environ.get(ENV_DATA_HOME)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("moraleval")) / "data"


def sample_data_root() -> Path:
    """The sample data shipped inside the package (``moraleval/data/sample``; see its ATTRIBUTION.md)."""
    return Path(__file__).resolve().parent / "sample"


def github_raw_url(repo: str, commit: str, path: str) -> str:
    """``https://raw.githubusercontent.com/{repo}/{commit}/{path}``; the base is overridable by
    ``$MORALEVAL_GITHUB_RAW_BASE``.  ``commit`` should be a full commit SHA so the file cannot change."""
    if not _REPO_RE.match(repo or ""):
        raise DataError(f"invalid GitHub repository {repo!r}", hint='write it as "owner/name", e.g. "nyu-mll/BBQ"')
    if not _REF_RE.match(commit or "") or ".." in commit:
        raise DataError(f"invalid commit {commit!r} for {repo}", hint="pin the full 40-character commit SHA")
    _check_rel_path(path, what="upstream path")
    base = os.environ.get(ENV_GITHUB_RAW_BASE) or DEFAULT_GITHUB_RAW_BASE
    return f"{base.rstrip('/')}/{repo}/{commit}/{quote(path, safe='/')}"


def huggingface_url(repo: str, commit: str, path: str) -> str:
    """``https://huggingface.co/datasets/{repo}/resolve/{commit}/{path}``: a file of a Hugging Face *dataset*
    repository at a revision (a full commit SHA pins it); the base is overridable by ``$MORALEVAL_HF_BASE``."""
    if not _REPO_RE.match(repo or ""):
        raise DataError(f"invalid Hugging Face dataset repository {repo!r}",
                        hint='write it as "owner/name", e.g. "Anthropic/discrim-eval"')
    if not _REF_RE.match(commit or "") or ".." in commit:
        raise DataError(f"invalid revision {commit!r} for {repo}", hint="pin the full 40-character commit SHA")
    _check_rel_path(path, what="upstream path")
    base = os.environ.get(ENV_HF_BASE) or DEFAULT_HF_BASE
    return f"{base.rstrip('/')}/datasets/{repo}/resolve/{commit}/{quote(path, safe='/')}"


def origin_url(kind: str, location: str, commit: str | None, path: str) -> str:
    """The URL of one upstream file of an ``origin`` line: a GitHub or Hugging Face repository at a commit (which
    is required: a branch name would let the file change), or ``<base url>/<path>``."""
    if kind in ("github", "huggingface"):
        if not commit:
            raise DataError(f"a {kind} origin needs a pinned commit ({location})",
                            hint=f'add it: origin {kind} "{location}" commit "<40 hex digits>"')
        return (github_raw_url if kind == "github" else huggingface_url)(location, commit, path)
    if kind == "url":
        _check_rel_path(path, what="upstream path")
        return location.rstrip("/") + "/" + quote(path, safe="/")
    raise DataError(f"unknown origin kind {kind!r}", hint="use github, huggingface or url")


def _check_rel_path(path: str, *, what: str) -> PurePosixPath:
    p = PurePosixPath(path) if isinstance(path, str) else None
    if (
        p is None
        or not path
        or "\\" in path
        or "\x00" in path
        or p.is_absolute()
        or re.match(r"^[A-Za-z]:", path)
        or any(part in ("", ".", "..") for part in path.split("/"))
    ):
        raise DataError(
            f"invalid {what} {path!r}",
            hint="use a relative path with '/' separators and no '.' or '..' parts, e.g. \"bbq/Age.jsonl\"",
        )
    return p


# --------------------------------------------------------------------------------------------------------------
# data


def _norm_sha(value: str | None) -> str | None:
    return value.strip().lower() if isinstance(value, str) else value


@attrs.frozen
class FetchFile:
    """One file to fetch: ``path`` relative to the data root, the ``url`` to get it from, its pinned ``sha256``
    (None: declared unpinned; downloaded unverified and its actual hash reported)."""

    path: str
    url: str
    sha256: str | None = attrs.field(converter=_norm_sha)

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None

    def __attrs_post_init__(self) -> None:
        _check_rel_path(self.path, what="data file path")
        if self.sha256 is not None and (not isinstance(self.sha256, str) or not _SHA256_RE.match(self.sha256)):
            raise DataError(
                f"invalid sha256 {self.sha256!r} for {self.path}",
                hint="a sha256 is 64 hexadecimal characters (the output of `sha256sum FILE`)",
            )
        scheme = urlsplit(self.url).scheme if isinstance(self.url, str) else ""
        if scheme not in ("http", "https"):
            raise DataError(f"invalid URL {self.url!r} for {self.path}", hint="only http:// and https:// URLs are fetched")


@attrs.frozen
class FetchFailure:
    """Why one file could not be fetched, and what to do about it."""

    file: FetchFile
    reason: str
    hint: str
    status_code: int | None = None  # the HTTP status, when the server answered
    actual_sha256: str | None = None  # set for a hash mismatch
    attempts: int = 1
    host_unresolved: str | None = None  # the origin's host name could not be resolved (no network?)

    @property
    def expected_sha256(self) -> str:
        return self.file.sha256

    def describe(self) -> str:
        return f"{self.file.path}: {self.reason}\n    url: {self.file.url}\n    what to do: {self.hint}"


@attrs.frozen
class FetchedFile:
    file: FetchFile
    size: int
    replaced: bool = False  # a file with the wrong hash was there before and was replaced


@attrs.frozen
class FetchReport:
    dest_root: Path
    fetched: tuple[FetchedFile, ...] = attrs.field(converter=tuple)
    present: tuple[FetchFile, ...] = attrs.field(converter=tuple)  # already there with the right hash
    failed: tuple[FetchFailure, ...] = attrs.field(converter=tuple)
    # files declared without a sha256 (fetched now or already there): (file, actual sha256), never verified
    unpinned: tuple[tuple[FetchFile, str], ...] = attrs.field(converter=tuple, default=())

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        n_total = len(self.fetched) + len(self.present) + len(self.failed)
        text = (
            f"{n_total} file(s) in {self.dest_root}: {len(self.fetched)} fetched, "
            f"{len(self.present)} already present, {len(self.failed)} failed"
        )
        if self.unpinned:
            text += f" ({len(self.unpinned)} without a pinned sha256: NOT verified)"
        for line in self.failure_lines(verbose=True):
            text += "\n  " + line.replace("\n", "\n  ")
        return text

    def failure_lines(self, verbose: bool = False) -> list[str]:
        """One line per failed file (``verbose``), or failures with one cause (a host that cannot be resolved)
        summarised in one line."""
        if verbose:
            return [f.describe() for f in self.failed]
        lines, hosts = [], {}
        for f in self.failed:
            if f.host_unresolved:
                hosts.setdefault(f.host_unresolved, []).append(f)
            else:
                lines.append(f.describe())
        for host, fs in hosts.items():
            lines.append(f"cannot resolve host {host}: {len(fs)} file(s) not fetched (no network or DNS?); "
                         f"what to do: {fs[0].hint}")
        return lines

    def raise_for_failures(self) -> None:
        if self.failed:
            raise FetchError(self)

    def to_json(self) -> dict:
        return {
            "dest_root": str(self.dest_root),
            "fetched": [{"path": f.file.path, "url": f.file.url, "sha256": f.file.sha256, "bytes": f.size,
                         "replaced": f.replaced} for f in self.fetched],
            "present": [{"path": f.path, "sha256": f.sha256} for f in self.present],
            "unpinned": [{"path": f.path, "url": f.url, "actual_sha256": actual} for f, actual in self.unpinned],
            "failed": [{"path": f.file.path, "url": f.file.url, "reason": f.reason, "hint": f.hint,
                        "status_code": f.status_code, "expected_sha256": f.expected_sha256,
                        "actual_sha256": f.actual_sha256, "attempts": f.attempts} for f in self.failed],
        }


class FetchError(DataError):
    """One or more files could not be fetched; ``report`` says which, why, and what was fetched anyway."""

    def __init__(self, report: FetchReport, verbose: bool = True) -> None:
        self.report = report
        n = len(report.failed)
        lines = [f"could not fetch {n} of {n + len(report.fetched) + len(report.present)} data file(s) "
                 f"into {report.dest_root}:"]
        lines += ["  " + line.replace("\n", "\n  ") for line in report.failure_lines(verbose)]
        done = len(report.fetched) + len(report.present)
        hint = (
            f"the {done} file(s) already in place are kept; rerun the same command to retry only the failed ones"
            if done else "rerun the same command to retry"
        )
        super().__init__("\n".join(lines), hint=hint)


@attrs.frozen
class ProgressEvent:
    """Passed to the ``progress`` callback.  ``kind``: "present" (skipped), "start", "bytes", "retry" (with
    ``message``), "done", "failed" (with ``message``).  ``total`` is the Content-Length when the server sent one."""

    kind: str
    file: FetchFile
    received: int = 0
    total: int | None = None
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]


# --------------------------------------------------------------------------------------------------------------
# fetching


class _Retryable(Exception):
    def __init__(self, message: str, status_code: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


class _Fatal(Exception):
    def __init__(self, failure_kwargs: dict):
        super().__init__(failure_kwargs["reason"])
        self.kwargs = failure_kwargs


def fetch_files(
    files: Iterable[FetchFile],
    dest_root: str | os.PathLike | None = None,
    *,
    client: httpx.Client | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    progress: ProgressCallback | None = None,
    raise_on_failure: bool = True,
    timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
) -> FetchReport:
    """Download ``files`` into ``dest_root`` (default ``default_data_root()``), verifying every sha256.

    ``retries``: extra attempts per file after a retryable failure (5xx, 408, 429, connection or timeout
    error), waiting ``backoff * 2**n`` seconds (or the server's Retry-After, at most 30 s) before retry n.
    ``client``: an ``httpx.Client`` to use (not closed here); by default one is made with ``timeout``.
    Raises ``DataError`` for invalid input (duplicate or conflicting paths, an unusable data root) and, unless
    ``raise_on_failure`` is false, ``FetchError`` after trying every file if any failed.
    """
    files = list(files)
    if retries < 0:
        raise ValueError("retries must be >= 0")
    root = Path(dest_root).expanduser() if dest_root is not None else default_data_root()
    by_path: dict[str, FetchFile] = {}
    for f in files:
        if not isinstance(f, FetchFile):
            raise TypeError(f"expected FetchFile, got {type(f).__name__}")
        prev = by_path.get(f.path)
        if prev is not None and prev != f:
            raise DataError(
                f"data file {f.path} is declared twice with different sources or hashes",
                hint=f"{prev.url} (sha256 {prev.sha256}) vs {f.url} (sha256 {f.sha256}); keep one declaration",
            )
        by_path[f.path] = f
    files = list(by_path.values())

    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the data root {root}: {exc.strerror or exc}",
                        hint=f"choose a writable folder with --data-root or ${ENV_DATA_HOME}") from exc
    root_resolved = root.resolve()

    emit = progress or (lambda event: None)
    fetched: list[FetchedFile] = []
    present: list[FetchFile] = []
    failed: list[FetchFailure] = []
    unpinned: list[tuple[FetchFile, str]] = []

    own_client = client is None
    if own_client:
        client = httpx.Client(timeout=timeout, follow_redirects=True,
                              headers={"User-Agent": "moraleval-data-fetch"})
    unresolved: set[str] = set()
    try:
        for f in files:
            dest = root / f.path
            host = urlsplit(f.url).hostname
            try:
                if host in unresolved:
                    raise _Fatal(dict(reason=f"not tried: host {host} could not be resolved", hint=_NO_NETWORK_HINT,
                                      host_unresolved=host, attempts=0))
                if not dest.resolve().is_relative_to(root_resolved):
                    raise _Fatal(dict(reason=f"{f.path} resolves outside the data root {root}",
                                      hint="remove the symbolic link that points outside the data root"))
                replaced = False
                if dest.is_dir():
                    raise _Fatal(dict(reason=f"{dest} is a directory, not a file",
                                      hint="move it away and rerun"))
                if dest.exists():
                    actual = sha256_file(dest)
                    if not f.pinned:  # nothing to verify it against: keep it, report its hash to be pinned
                        present.append(f)
                        unpinned.append((f, actual))
                        emit(ProgressEvent("present", f))
                        continue
                    if actual == f.sha256:
                        present.append(f)
                        emit(ProgressEvent("present", f))
                        continue
                    replaced = True  # wrong content (changed or corrupted): download and replace it atomically
                size = _download_with_retries(client, f, dest, retries=retries, backoff=backoff, emit=emit)
                fetched.append(FetchedFile(f, size, replaced))
                if not f.pinned:
                    unpinned.append((f, sha256_file(dest)))
                emit(ProgressEvent("done", f, received=size, total=size))
            except _Fatal as exc:
                failure = FetchFailure(file=f, **exc.kwargs)
                if failure.host_unresolved:
                    unresolved.add(failure.host_unresolved)
                failed.append(failure)
                emit(ProgressEvent("failed", f, message=failure.reason))
            except OSError as exc:
                failure = FetchFailure(file=f, reason=f"cannot write {dest}: {exc.strerror or exc}",
                                       hint="check the permissions and free space of the data root")
                failed.append(failure)
                emit(ProgressEvent("failed", f, message=failure.reason))
    finally:
        if own_client:
            client.close()

    report = FetchReport(root, fetched, present, failed, unpinned)
    if raise_on_failure:
        report.raise_for_failures()
    return report


def _download_with_retries(client: httpx.Client, f: FetchFile, dest: Path, *, retries: int, backoff: float,
                           emit: ProgressCallback) -> int:
    attempt = 0
    while True:
        attempt += 1
        try:
            return _download_once(client, f, dest, emit)
        except _Retryable as exc:
            if attempt > retries:
                if exc.status_code is not None:
                    hint = ("the server is failing; try again later (files already fetched are kept), "
                            "or check whether the upstream host is down")
                else:
                    hint = ("check your network connection (and proxy settings: HTTPS_PROXY), then rerun; "
                            "files already fetched are kept")
                raise _Fatal(dict(reason=f"{exc} (gave up after {attempt} attempt(s))", hint=hint,
                                  status_code=exc.status_code, attempts=attempt)) from None
            delay = backoff * (2 ** (attempt - 1))
            if exc.retry_after is not None:
                delay = max(delay, min(exc.retry_after, MAX_RETRY_AFTER_S))
            emit(ProgressEvent("retry", f, message=f"{exc}; retrying in {delay:.1f}s"))
            if delay > 0:
                time.sleep(delay)
        except _Fatal as exc:
            exc.kwargs.setdefault("attempts", attempt)
            raise


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _download_once(client: httpx.Client, f: FetchFile, dest: Path, emit: ProgressCallback) -> int:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.fchmod(fd, 0o666 & ~current_umask())  # a data file like any other, not mkstemp's 0600
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            try:
                with client.stream("GET", f.url) as response:
                    status = response.status_code
                    if status >= 500 or status in RETRY_STATUS:
                        raise _Retryable(f"HTTP {status} {response.reason_phrase} from {f.url}", status,
                                         _retry_after(response))
                    if status >= 400:
                        raise _Fatal(_http_error(f, status, response.reason_phrase))
                    if status >= 300:  # a redirect we were not allowed to follow
                        raise _Fatal(dict(reason=f"HTTP {status} redirect from {f.url} was not followed",
                                          hint="use the final URL, or a client with follow_redirects=True",
                                          status_code=status))
                    total = _content_length(response)
                    emit(ProgressEvent("start", f, received=0, total=total))
                    for chunk in response.iter_bytes(CHUNK_SIZE):
                        out.write(chunk)
                        h.update(chunk)
                        size += len(chunk)
                        emit(ProgressEvent("bytes", f, received=size, total=total))
                    if total is not None and size != total:
                        raise _Retryable(f"incomplete download from {f.url}: got {size} of {total} bytes")
            except (httpx.TooManyRedirects, httpx.UnsupportedProtocol) as exc:
                raise _Fatal(dict(reason=f"{type(exc).__name__} for {f.url}: {exc}",
                                  hint="check the URL declared for this file")) from exc
            except httpx.ConnectError as exc:
                if _name_not_resolved(exc):  # no network or no DNS: retrying will not help, nor will other files
                    host = urlsplit(f.url).hostname or f.url
                    raise _Fatal(dict(reason=f"cannot resolve host {host} ({exc})", hint=_NO_NETWORK_HINT,
                                      host_unresolved=host)) from exc
                raise _Retryable(f"{type(exc).__name__} while downloading {f.url}: {exc or 'no details'}") from exc
            except httpx.RequestError as exc:  # connect/read timeouts, refused, reset, truncated or bad body
                raise _Retryable(f"{type(exc).__name__} while downloading {f.url}: {exc or 'no details'}") from exc
            out.flush()
            os.fsync(out.fileno())
        actual = h.hexdigest()
        if f.pinned and actual != f.sha256:
            raise _Fatal(dict(
                reason=(f"downloaded content does not match the pinned sha256 (expected {f.sha256}, "
                        f"got {actual}, {size} bytes); the download was deleted"),
                hint=("the upstream file changed, or something between you and the server altered it; "
                      "rerun once, and if it still differs check that the URL points at the pinned commit. "
                      "Do not just replace the pinned hash unless you have verified the new file"),
                actual_sha256=actual,
            ))
        os.replace(tmp, dest)
        return size
    finally:
        tmp.unlink(missing_ok=True)


_NO_NETWORK_HINT = ("'moraleval data fetch' needs internet access to the dataset's origin; check the network "
                    "connection, DNS and proxy settings (HTTPS_PROXY), then rerun (files already fetched are kept)")
_DNS_TEXTS = ("name or service not known", "temporary failure in name resolution", "nodename nor servname",
              "getaddrinfo failed", "no address associated with hostname", "name resolution")


def _name_not_resolved(exc: BaseException) -> bool:
    """A DNS failure (socket.gaierror somewhere in the chain, or its message) rather than a refused connection."""
    import socket

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, socket.gaierror) or any(t in str(exc).lower() for t in _DNS_TEXTS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _content_length(response: httpx.Response) -> int | None:
    if "Content-Encoding" in response.headers:
        return None  # Content-Length counts the encoded bytes
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return None


def _http_error(f: FetchFile, status: int, phrase: str) -> dict:
    reason = f"HTTP {status} {phrase} from {f.url}"
    if status == 404:
        hint = ("the file is not at that URL: check the repository, commit and path declared for it "
                "(a force-pushed or deleted commit, a renamed file, or a private repository all give 404)")
    elif status in (401, 403):
        hint = "the server refused access; the repository may be private or you may be rate-limited—try later"
    else:
        hint = "check the URL declared for this file"
    return dict(reason=reason, hint=hint, status_code=status)
