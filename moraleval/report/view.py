"""`moraleval view DIR`: serve a report's page and its samples from a local HTTP server on 127.0.0.1.

For runs whose samples are too many to embed in report.html, the page's browser asks this server for one page
of rows at a time.  On start the server reads samples.jsonl once and keeps, per row, its byte offset and the
few fields the filters use (task, condition, model, answer, correctness, disagreement, group columns); a
request filters those in memory and reads only the rows it returns from the file.  The filter semantics are the
page's own (``browser.js``), so a filter gives the same rows embedded or served.

Only report.html and ``/api/rows`` are served, only to a Host of 127.0.0.1/localhost (no DNS rebinding), and
the server binds 127.0.0.1 only.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

from moraleval.errors import ReportError

__all__ = ["SampleIndex", "make_server", "serve", "js_str"]

FILTERS = ("task", "model", "condition", "answer", "correct", "disagree", "q")
MAX_PAGE = 1000
METRIC_FIELDS = ("index", "task", "condition", "model", "row", "variant", "unit", "choice", "choices",
                 "choice_values", "logprobs", "readout", "values")


def js_str(v: Any) -> str:
    """A value as the page's ``strv``/``String`` writes it (so group filters match on both sides)."""
    if isinstance(v, str):
        return v
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and math.isfinite(v) and v == int(v):
        return str(int(v))
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


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


class SampleIndex:
    """Byte offsets and filter fields of every row of one samples.jsonl."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.offsets: list[int] = []
        self.lengths: list[int] = []
        self.task: list[str] = []
        self.condition: list[str] = []
        self.model: list[str] = []
        self.answer: list[str] = []
        self.correct: list[bool | None] = []
        self.values: list[dict[str, str]] = []
        self.dc: list[bool] = []
        self.dm: list[bool] = []
        intern: dict[str, str] = {}

        def s(x: str) -> str:
            return intern.setdefault(x, x)

        by_cond: dict[tuple, set] = {}
        by_model: dict[tuple, set] = {}
        keys_c: list[tuple] = []
        keys_m: list[tuple] = []
        with open(self.path, "rb") as f:
            pos = 0
            for line in f:
                n = len(line)
                if line.strip():
                    rec = json.loads(line)
                    readout = rec.get("readout") or {}
                    a = readout.get(rec.get("choice")) if isinstance(readout, Mapping) else None
                    lab = s(_label(rec, a))
                    vals = rec.get("values") or {}
                    label = vals.get("label", _MISSING)
                    self.offsets.append(pos)
                    self.lengths.append(n)
                    self.task.append(s(str(rec.get("task"))))
                    self.condition.append(s(str(rec.get("condition"))))
                    self.model.append(s(str(rec.get("model") or "")))
                    self.answer.append(lab)
                    self.correct.append(None if label is _MISSING or a is None else _eqv(a, label))
                    self.values.append({s(k): s(v) if type(v) is str else (str(v) if type(v) is int else js_str(v))
                                        for k, v in vals.items()})
                    kc = (self.task[-1], self.model[-1], rec.get("row"), rec.get("variant"))
                    km = (self.task[-1], self.condition[-1], rec.get("row"), rec.get("variant"))
                    by_cond.setdefault(kc, set()).add(lab)
                    by_model.setdefault(km, set()).add(lab)
                    keys_c.append(kc)
                    keys_m.append(km)
                pos += n
        self.dc = [len(by_cond[k]) > 1 for k in keys_c]
        self.dm = [len(by_model[k]) > 1 for k in keys_m]
        self._file = open(self.path, "rb")
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) if pos else None
        self._lock = threading.Lock()
        self._last: tuple[str, list[int]] | None = None

    def __len__(self) -> int:
        return len(self.offsets)

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        self._file.close()

    def line(self, k: int) -> bytes:
        assert self._map is not None
        return self._map[self.offsets[k]:self.offsets[k] + self.lengths[k]]

    def filter(self, f: Mapping[str, str], groups: Mapping[str, str]) -> list[int]:
        """Row numbers matching the page's filters (see ``matches`` in browser.js)."""
        key = json.dumps([sorted(f.items()), sorted(groups.items())])
        with self._lock:
            if self._last is not None and self._last[0] == key:
                return self._last[1]
        conds = set(f["condition"].split(",")) if f.get("condition") else None
        q = f.get("q", "").lower().encode("utf-8") if f.get("q") else None
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
            if groups and any(v and self.values[k].get(c) != v for c, v in groups.items()):
                continue
            if q is not None and q not in self.line(k).lower():
                continue
            out.append(k)
        with self._lock:
            self._last = (key, out)
        return out

    def rows(self, ks: Iterable[int], fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
        out = []
        for k in ks:
            rec = json.loads(self.line(k))
            if fields is not None:
                rec = {f: rec[f] for f in fields if f in rec}
            rec.update(_answer=self.answer[k], _correct=self.correct[k], _dc=self.dc[k], _dm=self.dm[k])
            out.append(rec)
        return out


_MISSING = object()


def _handler(report_dir: Path, index: SampleIndex, port_ref: list[int]) -> type[BaseHTTPRequestHandler]:
    html_path = report_dir / "report.html"

    class Handler(BaseHTTPRequestHandler):
        server_version = "moraleval-view"

        def log_message(self, fmt: str, *args: Any) -> None:  # quiet: one line per request is noise here
            pass

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            if host not in ("127.0.0.1", "localhost", "[::1]"):
                self._send(403, b"only local requests are served\n", "text/plain; charset=utf-8")
                return
            url = urlsplit(self.path)
            if url.path in ("/", "/report.html"):
                try:
                    self._send(200, html_path.read_bytes(), "text/html; charset=utf-8")
                except FileNotFoundError:
                    self._send(404, b"report.html is missing: run `moraleval report DIR` first\n",
                               "text/plain; charset=utf-8")
                return
            if url.path == "/api/rows":
                qs = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                f = {k: qs[k] for k in FILTERS if qs.get(k)}
                groups = {k[2:]: v for k, v in qs.items() if k.startswith("g.") and v}
                ks = index.filter(f, groups)
                try:
                    offset = max(0, int(qs.get("offset", "0")))
                    limit = len(ks) if qs.get("limit") == "all" else max(0, min(MAX_PAGE, int(qs.get("limit", "50"))))
                except ValueError:
                    self._send(400, b"offset and limit are integers\n", "text/plain; charset=utf-8")
                    return
                fields = METRIC_FIELDS if qs.get("fields") == "metric" else None
                body = json.dumps({"total": len(ks), "offset": offset,
                                   "rows": index.rows(ks[offset:offset + limit], fields)},
                                  ensure_ascii=False, separators=(",", ":")).encode("utf-8")
                self._send(200, body, "application/json; charset=utf-8")
                return
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    return Handler


def make_server(report_dir: str | os.PathLike[str], port: int = 0) -> tuple[ThreadingHTTPServer, SampleIndex]:
    """A server on 127.0.0.1:``port`` (0: any free port) for ``report_dir``; call ``serve_forever``."""
    out = Path(report_dir)
    if not out.is_dir():
        raise ReportError(f"{out} does not exist (or is not a directory)",
                          hint="pass the directory `moraleval run` wrote, e.g. reports/<spec name>/")
    samples = out / "samples.jsonl"
    if not samples.is_file():
        raise ReportError(f"{out} has no samples.jsonl: it is not a moraleval report directory")
    index = SampleIndex(samples)
    port_ref = [port]
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(out, index, port_ref))
    server.daemon_threads = True
    port_ref[0] = server.server_address[1]
    return server, index


def serve(report_dir: str | os.PathLike[str], port: int = 8765) -> int:
    """Serve until interrupted; prints the address to open."""
    try:
        server, index = make_server(report_dir, port)
    except OSError as exc:
        raise ReportError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}",
                          hint="choose another port with --port, or --port 0 for any free one") from None
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    print(f"serving {report_dir} ({len(index)} sample rows) at {url}  (Ctrl-C to stop)", file=sys.stderr)
    print(url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        index.close()
    return 0
