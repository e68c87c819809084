"""`moraleval view DIR`: serve a report's page and its samples from a local HTTP server on 127.0.0.1.

For runs whose samples are too many to embed in report.html, the page's browser asks this server for one page
of rows at a time.  On start the server reads samples.jsonl once (through the report folder loader: every row
bounded and schema-checked) and keeps, per row, its byte offset and the few fields the filters use (task,
condition, model, answer, correctness, disagreement, group columns); a request filters those in memory and reads
only the rows it returns, with ``pread`` (never a memory map: a file truncated or replaced while being served
must be an error message, not a SIGBUS).  The filter semantics, text search included, are the page's own
(``browser.js``), so a filter gives the same rows embedded or served.

What a report folder holds is untrusted, so the server:

- serves a page it renders from moraleval's own template and the folder's data, never the folder's report.html,
  with a Content-Security-Policy header that lets only that page's one script run (by its sha256);
- answers only under a random token in the URL (``http://127.0.0.1:PORT/<token>/``, as notebook servers do), so
  another local program or a web page cannot read the rows; anything else is 403 or 404;
- binds 127.0.0.1 only and answers only a Host of 127.0.0.1/localhost (no DNS rebinding);
- caps every answer (1,000 rows a page, 100,000 rows or 64 MB for ``limit=all``), handles at most
  :data:`MAX_THREADS` requests at once and drops idle connections after :data:`IDLE_TIMEOUT` s;
- notices samples.jsonl being replaced or rewritten (re-indexes it) or deleted (says so) between requests.
"""

from __future__ import annotations

import errno
import hmac
import json
import math
import os
import secrets
import socket
import stat
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

from moraleval.errors import ReportError
from moraleval.report.folder import (DamagedReport, check_samples_file, folder_path, iter_lines, parse_sample_line,
                                     read_manifest, read_report_json)
from moraleval.util.text import for_terminal

__all__ = ["SampleIndex", "make_server", "serve", "js_json", "js_str"]

FILTERS = ("task", "model", "condition", "answer", "correct", "disagree", "flag", "q")
MAX_PAGE = 1000
MAX_ALL_ROWS = 100_000  # `limit=all` (the page's recount): more is refused with a message
MAX_BODY = 64 * 1024 * 1024
MAX_THREADS = 16
IDLE_TIMEOUT = 15.0
METRIC_FIELDS = ("index", "task", "condition", "model", "row", "variant", "unit", "choice", "choices",
                 "choice_values", "logprobs", "readout", "values")
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


# -- the page's JavaScript values, in Python ------------------------------------------------------------------

def js_str(v: Any) -> str:
    """A value as the page's ``strv``/``String`` writes it (so group filters match on both sides)."""
    if type(v) is str:
        return v
    if type(v) is int:
        return str(v)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        return str(int(v))
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def _js_number(x: float) -> str:
    """``Number.prototype.toString`` (ECMAScript's Number::toString): the same shortest digits as Python's repr,
    placed the way JavaScript places them (``1e-7``, ``0.000001``, ``100000000000000000000``, ``1e+21``)."""
    if x != x or x in (math.inf, -math.inf):
        return "null"
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    full = whole + (frac if frac != "0" else "")
    lead = len(full) - len(full.lstrip("0"))
    digits = full.strip("0")
    n = len(whole) + (int(exp) if exp else 0) - lead
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    return sign + digits[0] + ("." + digits[1:] if k > 1 else "") + ("e+" if e > 0 else "e-") + str(abs(e))


def _is_array_index(key: str) -> bool:
    return key.isdigit() and key.isascii() and (key == "0" or not key.startswith("0")) and int(key) < 2 ** 32 - 1


def js_json(v: Any) -> str:
    """``JSON.stringify(v)`` as the page computes it: JavaScript's number formatting, and an object's
    integer-like keys first in ascending order (JavaScript's own key order), then the others as written."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v) if abs(v) <= 2 ** 53 else _js_number(float(v))
    if isinstance(v, float):
        return _js_number(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ",".join(js_json(x) for x in v) + "]"
    if isinstance(v, dict):
        keys = sorted((k for k in v if _is_array_index(k)), key=int) + [k for k in v if not _is_array_index(k)]
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + js_json(v[k]) for k in keys) + "}"
    return json.dumps(v, ensure_ascii=False)


def search_text(rec: Mapping[str, Any]) -> str:
    """What the page's text search looks in: ``JSON.stringify([r.prompts, r.generated, r.values])``, lower-cased."""
    return js_json([rec.get("prompts"), rec.get("generated"), rec.get("values")]).lower()


_NOT_IN_PLAIN_QUERIES = set('{}[],:"\\') | {chr(c) for c in range(0x20)} | {"\u2028", "\u2029", "\x85"}


def _raw_line_decides(q: str) -> bool:
    """Whether a row whose raw JSON line (lower-cased) lacks ``q`` cannot match the page's search either, so the
    row need not be parsed.  True for a query with no JSON structure, quote, backslash, control character or
    line separator (it can then lie only inside one string of the search text, which the line holds with the same
    escapes), no digit and something besides ``.eE+-`` (so it cannot lie inside a number, which JavaScript writes
    differently: ``1e-7`` for ``1e-07``)."""
    return (not any(c in _NOT_IN_PLAIN_QUERIES or c.isdigit() for c in q)
            and any(c not in ".eE+-" for c in q))


def _eqv(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    if type(a) is type(b) and type(a) in (int, str):
        return a == b
    na, nb = isinstance(a, (int, float)), isinstance(b, (int, float))
    if na and nb:
        return float(a) == float(b)
    if na != nb:
        return False
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _label(s: Mapping[str, Any], v: Any) -> str:
    for cv, ch in zip(s.get("choice_values") or [], s.get("choices") or []):
        if _eqv(cv, v):
            return str(ch).strip()
    return "(none)" if v is None else (v if isinstance(v, str) else json.dumps(v))


# -- the index ------------------------------------------------------------------------------------------------

class SamplesChanged(Exception):
    """samples.jsonl is not what was indexed (rewritten, truncated, replaced or deleted): ``message`` says which."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


_MISSING = object()


class SampleIndex:
    """Byte offsets and filter fields of every row of one samples.jsonl, read with ``pread``.

    :meth:`refresh` compares the file at the path with the one indexed (device, inode, size, modification time)
    and re-indexes a rewritten or replaced file; a row read back that is not what was indexed (the file was
    truncated or rewritten since) raises :class:`SamplesChanged` instead of serving something else."""

    def __init__(self, path: str | os.PathLike[str], *, keep_rows: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._fd = -1
        self._last: tuple[str, list[int]] | None = None
        #: with ``keep_rows``: every row without its prompts and generations (what the page is rendered from),
        #: read in the same pass as the index; the caller drops it once the page is rendered
        self.rows_read: list[dict[str, Any]] | None = [] if keep_rows else None
        self._build()

    def _open(self) -> tuple[int, os.stat_result]:
        try:
            fd = os.open(self.path, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC)
        except FileNotFoundError:
            raise SamplesChanged(f"{for_terminal(self.path)} was deleted while being served; the rows cannot be "
                                 "read (restore it and reload the page, or restart `moraleval view`)") from None
        except OSError as exc:
            raise SamplesChanged(f"{for_terminal(self.path)} cannot be read: "
                                 f"{'it is a symbolic link' if exc.errno == errno.ELOOP else exc.strerror}"
                                 ) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise SamplesChanged(f"{for_terminal(self.path)} is not a regular file")
        return fd, st

    def _build(self) -> None:
        import gc

        fd, st = self._open()
        collecting = gc.isenabled()
        gc.disable()  # millions of new objects, none of them garbage: the collector's passes would double the time
        try:
            fields = self._read(fd)
        except BaseException:
            os.close(fd)
            raise
        finally:
            if collecting:
                gc.enable()
        with self._lock:
            old, self._fd = self._fd, fd
            self._stamp = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            (self.offsets, self.lengths, self.task, self.condition, self.model, self.answer, self.correct,
             self.values, self.dc, self.dm, self.flags) = fields
            self._last = None
        if old >= 0:
            os.close(old)

    def _read(self, fd: int) -> tuple:
        offsets: list[int] = []
        lengths: list[int] = []
        task: list[str] = []
        condition: list[str] = []
        model: list[str] = []
        answer: list[str] = []
        correct: list[bool | None] = []
        values: list[dict[str, str]] = []
        flags: list[tuple[str, ...]] = []  # the per-item definitions true on the row (see flagsOf in browser.js)
        intern: dict[str, str] = {}
        intern_flags: dict[tuple[str, ...], tuple[str, ...]] = {}

        def s(x: str) -> str:
            return intern.setdefault(x, x)

        by_cond: dict[tuple, set] = {}
        by_model: dict[tuple, set] = {}
        keys_c: list[tuple] = []
        keys_m: list[tuple] = []
        keep = self.rows_read
        for lineno, offset, line in iter_lines(fd, self.path):
            rec = parse_sample_line(line, self.path, lineno)
            if keep is not None:
                keep.append({f: rec[f] for f in METRIC_FIELDS if f in rec})
            readout = rec.get("readout") or {}
            a = readout.get(rec["choice"])
            lab = s(_label(rec, a))
            vals = rec.get("values") or {}
            label = vals.get("label", _MISSING)
            offsets.append(offset)
            lengths.append(len(line))
            task.append(s(rec["task"]))
            condition.append(s(rec["condition"]))
            model.append(s(str(rec.get("model") or "")))
            answer.append(lab)
            correct.append(None if label is _MISSING or a is None else _eqv(a, label))
            values.append({s(k): s(v) if type(v) is str else (str(v) if type(v) is int else js_str(v))
                           for k, v in vals.items()})
            iv = readout.get("items")
            on = tuple(k for k, v in iv.items() if v is True) if isinstance(iv, dict) else ()
            flags.append(intern_flags.setdefault(on, on))
            kc = (task[-1], model[-1], js_str(rec["row"]), js_str(rec["variant"]))  # as the page joins them
            km = (task[-1], condition[-1], kc[2], kc[3])
            by_cond.setdefault(kc, set()).add(lab)
            by_model.setdefault(km, set()).add(lab)
            keys_c.append(kc)
            keys_m.append(km)
        dc = [len(by_cond[k]) > 1 for k in keys_c]
        dm = [len(by_model[k]) > 1 for k in keys_m]
        return offsets, lengths, task, condition, model, answer, correct, values, dc, dm, flags

    def __len__(self) -> int:
        return len(self.offsets)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def refresh(self) -> bool:
        """Re-index when the file at the path is not the one indexed (replaced, rewritten, truncated); True when
        it did.  Raises SamplesChanged when it is gone or cannot be read, DamagedReport when the new file is
        damaged."""
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            raise SamplesChanged(f"{for_terminal(self.path)} was deleted while being served; the rows cannot be "
                                 "read (restore it and reload the page, or restart `moraleval view`)") from None
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == self._stamp:
            return False
        with self._lock:
            self.rows_read = None
            self._build()
        return True

    def line(self, k: int) -> bytes:
        """Row ``k``'s bytes; SamplesChanged when the file no longer holds them (truncated or rewritten)."""
        with self._lock:
            fd, offset, length = self._fd, self.offsets[k], self.lengths[k]
            try:
                data = os.pread(fd, length + 1, offset)
            except OSError as exc:
                raise SamplesChanged(f"{for_terminal(self.path)} cannot be read: {exc.strerror or exc}") from None
        if len(data) < length or (len(data) > length and data[length:] != b"\n"):
            raise SamplesChanged(f"{for_terminal(self.path)} changed while being served (it is shorter, or rewritten)"
                                 ": reload the page")
        return data[:length]

    def record(self, k: int) -> dict[str, Any]:
        try:
            rec = json.loads(self.line(k))
        except ValueError:
            raise SamplesChanged(f"{for_terminal(self.path)} changed while being served (a row is no longer the "
                                 "one indexed): reload the page") from None
        if not isinstance(rec, dict):
            raise SamplesChanged(f"{for_terminal(self.path)} changed while being served: reload the page")
        return rec

    def filter(self, f: Mapping[str, str], groups: Mapping[str, str]) -> list[int]:
        """Row numbers matching the page's filters (see ``matches`` in browser.js)."""
        key = json.dumps([sorted(f.items()), sorted(groups.items())])
        with self._lock:
            if self._last is not None and self._last[0] == key:
                return self._last[1]
        conds = set(f["condition"].split(",")) if f.get("condition") else None
        q = f.get("q", "").lower() if f.get("q") else None
        quick = q is not None and _raw_line_decides(q)
        out = []
        for k in range(len(self.offsets)):
            if f.get("task") and self.task[k] != f["task"]:
                continue
            if f.get("model") and self.model[k] != f["model"]:
                continue
            if conds is not None and self.condition[k] not in conds:
                continue
            if f.get("answer") and self.answer[k] != f["answer"]:
                continue
            if f.get("correct") == "yes" and self.correct[k] is not True:
                continue
            if f.get("correct") == "no" and self.correct[k] is not False:
                continue
            if f.get("disagree") == "conditions" and not self.dc[k]:
                continue
            if f.get("disagree") == "models" and not self.dm[k]:
                continue
            if f.get("flag") and f["flag"] not in self.flags[k]:
                continue
            if groups and any(v and self.values[k].get(c) != v for c, v in groups.items()):
                continue
            if q is not None:
                if quick and q not in self.line(k).decode("utf-8", "replace").lower():
                    continue  # cannot be in the page's search text either (see _raw_line_decides)
                if q not in search_text(self.record(k)):
                    continue
            out.append(k)
        with self._lock:
            self._last = (key, out)
        return out

    def respond(self, f: Mapping[str, str], groups: Mapping[str, str], offset: int, limit: int | None,
                fields: Sequence[str] | None) -> tuple[int, bytes]:
        """(HTTP status, body) of one ``/api/rows`` request (``limit`` None: every match, ``limit=all``), the
        file re-indexed first when it was replaced or rewritten.  One request at a time holds the index, so a
        re-index never swaps it under another request."""
        with self._lock:
            for attempt in (1, 2):  # a file that changes under us is re-indexed once more, then refused
                try:
                    self.refresh()
                    ks = self.filter(f, groups)
                    if limit is None and len(ks) > MAX_ALL_ROWS:
                        return 413, (f"{len(ks):,} rows match: more than {MAX_ALL_ROWS:,} are not sent at once "
                                     "(narrow the filters, or recount with `moraleval diff`/Python)").encode()
                    chosen = ks[offset:] if limit is None else ks[offset:offset + limit]
                    body = json.dumps({"total": len(ks), "offset": offset, "rows": self.rows(chosen, fields)},
                                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")
                    if len(body) > MAX_BODY:
                        return 413, (f"the rows asked for are more than {MAX_BODY // (1024 * 1024)} MB: ask for "
                                     "fewer").encode()
                    return 200, body
                except SamplesChanged as exc:
                    if attempt == 2:
                        return 503, exc.message.encode("utf-8")
                except DamagedReport as exc:
                    return 503, f"{exc.message} (samples.jsonl changed while being served, and is now damaged)"\
                        .encode("utf-8")
        return 503, b"samples.jsonl keeps changing"  # pragma: no cover - the loop returns

    def rows(self, ks: Iterable[int], fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
        out = []
        for k in ks:
            rec = self.record(k)
            if fields is not None:
                rec = {f: rec[f] for f in fields if f in rec}
            rec.update(_answer=self.answer[k], _correct=self.correct[k], _dc=self.dc[k], _dm=self.dm[k])
            out.append(rec)
        return out


# -- the server -----------------------------------------------------------------------------------------------

class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with at most MAX_THREADS requests in flight, a longer listen backlog, and no traceback
    for a client that went away."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_THREADS)
        self.url = ""

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(timeout=IDLE_TIMEOUT):  # every slot busy that long: drop this connection
            self.shutdown_request(request)
            return

        def run() -> None:
            try:
                self.process_request_thread(request, client_address)
            finally:
                self._slots.release()

        threading.Thread(target=run, daemon=True).start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            return  # the browser closed the tab or the connection idled out
        print(f"moraleval view: a request failed: {type(exc).__name__}: {for_terminal(exc)}", file=sys.stderr)


def _handler(page: bytes, csp_script: str, index: SampleIndex, token: str) -> type[BaseHTTPRequestHandler]:
    csp = (f"default-src 'none'; script-src {csp_script}; style-src 'unsafe-inline'; img-src data:; "
           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    prefix = f"/{token}/"

    class Handler(BaseHTTPRequestHandler):
        server_version = "moraleval-view"
        timeout = IDLE_TIMEOUT  # an idle connection gives its thread back

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: one line per request is noise here
            pass

        def _send(self, code: int, body: bytes, ctype: str, *, is_page: bool = False) -> None:
            try:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                self.send_header("Referrer-Policy", "no-referrer")
                self.send_header("Cross-Origin-Resource-Policy", "same-origin")
                self.send_header("X-Frame-Options", "DENY")
                self.send_header("Content-Security-Policy", csp if is_page else "default-src 'none'")
                self.end_headers()
                self.wfile.write(body)
            except (ConnectionError, TimeoutError, socket.timeout):
                self.close_connection = True

        def _text(self, code: int, message: str) -> None:
            self._send(code, (message + "\n").encode("utf-8"), "text/plain; charset=utf-8")

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            if host not in ("127.0.0.1", "localhost", "[::1]"):
                self._text(403, "only local requests are served")
                return
            url = urlsplit(self.path)
            if not hmac.compare_digest(url.path[:len(prefix)].encode("utf-8", "replace"), prefix.encode("ascii")):
                self._text(403, "this address needs the token that `moraleval view` printed "
                                "(http://127.0.0.1:PORT/TOKEN/)")
                return
            rest = url.path[len(prefix):]
            if rest in ("", "report.html"):
                self._send(200, page, "text/html; charset=utf-8", is_page=True)
            elif rest == "api/rows":
                self._rows(url.query)
            else:
                self._text(404, "not found")

        def _rows(self, query: str) -> None:
            try:
                qs = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True, max_num_fields=200).items()}
                offset = max(0, int(qs.get("offset", "0")))
                everything = qs.get("limit") == "all"
                limit = 0 if everything else max(0, min(MAX_PAGE, int(qs.get("limit", "50"))))
            except ValueError:
                self._text(400, "offset and limit are whole numbers (limit at most 1000, or 'all')")
                return
            f = {k: qs[k] for k in FILTERS if qs.get(k)}
            groups = {k[2:]: v for k, v in qs.items() if k.startswith("g.") and v}
            fields = METRIC_FIELDS if qs.get("fields") == "metric" else None
            status, answer = index.respond(f, groups, offset, None if everything else limit, fields)
            if status != 200:
                self._text(status, answer.decode("utf-8"))
                return
            self._send(200, answer, "application/json; charset=utf-8")

    return Handler


def _listen_problem(exc: OSError, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is already in use by another program"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"port {port} needs administrator rights (ports below 1024 do)" if port < 1024 else \
            f"listening on port {port} is not permitted here"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "127.0.0.1 is not available on this machine"
    return exc.strerror or str(exc)


def make_server(report_dir: str | os.PathLike[str], port: int = 0, *, log: Callable[[str], None] | None = None
                ) -> tuple[ThreadingHTTPServer, SampleIndex]:
    """A server on 127.0.0.1:``port`` (0: any free port) for ``report_dir``; call ``serve_forever``.  Its
    address, token included, is ``server.url``.  A damaged folder is a ReportError naming the file; a port that
    cannot be listened on is one naming the cause."""
    out = folder_path(report_dir)
    report = read_report_json(out)
    manifest = read_manifest(out)
    check_samples_file(out)  # present, a plain file, within bounds: the loader's own errors
    try:
        index = SampleIndex(out / "samples.jsonl", keep_rows=True)  # one pass: the index and the page's rows
    except SamplesChanged as exc:
        raise ReportError(exc.message) from None
    from moraleval.report.render import render_served_page

    try:
        page, csp_script = render_served_page(report, index.rows_read or [], manifest, log=log)
    except BaseException:
        index.close()
        raise
    index.rows_read = None  # the index keeps what the filters need; rows are read back from the file
    token = secrets.token_urlsafe(24)
    try:
        server = _Server(("127.0.0.1", port), _handler(page, csp_script, index, token))
    except OSError as exc:
        index.close()
        raise ReportError(f"cannot listen on 127.0.0.1:{port}: {_listen_problem(exc, port)}",
                          hint="choose another port with --port, or --port 0 for any free one") from None
    except OverflowError:
        index.close()
        raise ReportError(f"cannot listen on 127.0.0.1:{port}: a port is a number from 0 to 65535") from None
    server.url = f"http://127.0.0.1:{server.server_address[1]}/{token}/"  # type: ignore[attr-defined]
    return server, index


def serve(report_dir: str | os.PathLike[str], port: int = 8765, *, log: Callable[[str], None] | None = None) -> int:
    """Serve until interrupted; prints the address to open (with its token)."""
    try:
        server, index = make_server(report_dir, port, log=log)
    except SamplesChanged as exc:
        raise ReportError(exc.message) from None
    url = server.url  # type: ignore[attr-defined]
    print(f"serving {for_terminal(report_dir)} ({len(index)} sample rows) at {url}  (Ctrl-C to stop)",
          file=sys.stderr)
    print(url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        index.close()
    return 0
