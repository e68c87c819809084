"""A scriptable fake OpenAI-compatible server on 127.0.0.1 for fast tests (and the bench's instant stub).

A tiny deterministic "language model" stands behind ``/v1/completions`` (echo + logprobs, standard or
llama-cpp-python-style shifted alignment) and ``/v1/chat/completions`` (a configurable top-logprobs list).
``server.fault`` is a hook ``(n, path, body) -> action | None`` that injects failures: ``("status", code,
headers, text)``, ``("drop",)``, ``("sleep", seconds)``, ``("raw", bytes_body)``, ``("json", obj)``.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

TOKEN_RE = re.compile(r"\s?\w+|\s?[^\w\s]|\s+")


def tokenize(text: str) -> list[str]:
    return TOKEN_RE.findall(text)


def lp(prefix: list[str], tok: str) -> float:
    """log p(tok | prefix) of the fake model: copying earlier text is near-certain, the rest hash-based."""
    if not prefix:
        return -5.0
    last = prefix[-1]
    for j in range(1, len(prefix)):
        if prefix[j - 1] == last and prefix[j] == tok:
            return -0.05
    return -((zlib.crc32(f"{last}|{tok}".encode()) % 700) / 100.0) - 0.5


def continuation_logprob(prompt: str, continuation: str) -> float:
    """What a correct client must report for ``continuation`` after ``prompt`` (joint tokenisation)."""
    toks = tokenize(prompt + continuation)
    n_prompt = len(tokenize(prompt))
    return sum(lp(toks[:k], toks[k]) for k in range(n_prompt, len(toks)))


class FakeServer:
    def __init__(self, *, models: tuple[str, ...] = ("fake-model",), shifted: bool = False,
                 chat_top: list[tuple[str, float]] | None = None, owned_by: str | None = None) -> None:
        self.models = list(models)
        self.owned_by = owned_by  # what /v1/models says ("llamacpp": llama.cpp's server, "vllm"); None: omitted
        self.shifted = shifted
        self.chat_top = chat_top or [("Yes", -0.4), ("No", -1.3), (" yes", -2.0), ("Maybe", -3.0)]
        self.fault: Callable[[int, str, dict], Any] | None = None
        self.requests: list[dict[str, Any]] = []  # {"path", "body", "headers"}
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        # the same per kind of request: "generate" (completions without echo), "echo" (scoring), "chat", ...
        self.in_flight_by: dict[str, int] = {}
        self.max_in_flight_by: dict[str, int] = {}
        self.delay = 0.0  # seconds every answer takes (to observe concurrency)
        self.generated = " generated text"
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer._handle(self, "GET")

            def do_POST(self) -> None:
                outer._handle(self, "POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def __enter__(self) -> "FakeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    @staticmethod
    def kind(path: str, body: dict[str, Any]) -> str:
        if path == "/v1/completions":
            return "echo" if body.get("echo") else "generate"
        return {"/v1/chat/completions": "chat", "/v1/models": "models"}.get(path, path)

    def count(self, path: str) -> int:
        return sum(1 for r in self.requests if r["path"] == path)

    # -- HTTP -------------------------------------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else {}
        path = h.path.split("?")[0]
        kind = self.kind(path, body)
        with self.lock:
            n = len(self.requests)
            self.requests.append({"path": path, "raw_path": h.path, "body": body, "headers": dict(h.headers),
                                  "kind": kind})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.in_flight_by[kind] = self.in_flight_by.get(kind, 0) + 1
            self.max_in_flight_by[kind] = max(self.max_in_flight_by.get(kind, 0), self.in_flight_by[kind])
        try:
            if self.delay:
                time.sleep(self.delay)
            action = self.fault(n, path, body) if self.fault else None
            if action is None:
                status, obj = self._answer(path, body)
                self._send(h, status, json.dumps(obj).encode(), {})
            elif action[0] == "status":
                code = action[1]
                headers = action[2] if len(action) > 2 else {}
                text = action[3] if len(action) > 3 else ""
                self._send(h, code, (text or json.dumps({"error": {"message": f"fault {code}"}})).encode(),
                           headers or {})
            elif action[0] == "drop":
                h.close_connection = True
                h.connection.shutdown(socket.SHUT_RDWR)
            elif action[0] == "sleep":
                time.sleep(action[1])
                status, obj = self._answer(path, body)
                try:
                    self._send(h, status, json.dumps(obj).encode(), {})
                except OSError:
                    pass
            elif action[0] == "raw":
                self._send(h, 200, action[1], {})
            elif action[0] == "json":
                self._send(h, 200, json.dumps(action[1]).encode(), {})
        finally:
            with self.lock:
                self.in_flight -= 1
                self.in_flight_by[kind] -= 1

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, payload: bytes, headers: dict[str, str]) -> None:
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(payload)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(payload)

    # -- the fake model -----------------------------------------------------------------------------------------
    def _answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if path == "/v1/models":
            owner = {} if self.owned_by is None else {"owned_by": self.owned_by}
            return 200, {"object": "list", "data": [{"id": m, "object": "model", **owner} for m in self.models]}
        if body.get("model") not in self.models:
            return 404, {"error": {"message": f"model {body.get('model')!r} not found"}}
        if path == "/v1/completions":
            return 200, self._completion(body)
        if path == "/v1/chat/completions":
            return 200, self._chat(body)
        return 404, {"error": {"message": "no such endpoint"}}

    def _completion(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = body["prompt"]
        max_tokens = int(body.get("max_tokens", 16))
        n = int(body.get("n", 1))
        if body.get("echo") and body.get("logprobs") is not None:
            toks = tokenize(prompt) + [" next"]
            vocab = sorted(set(toks))
            k_top = int(body["logprobs"])
            offsets, lps, tops, pos = [], [], [], 0
            for k, t in enumerate(toks):
                offsets.append(pos)
                pos += len(t)
                row_prefix = toks[: k + 1] if self.shifted else toks[:k]
                if not row_prefix:
                    lps.append(None)
                    tops.append(None)
                    continue
                row = sorted(((lp(row_prefix, v), v) for v in vocab), reverse=True)[:k_top]
                top = {v: x for x, v in row}
                top[t] = lp(row_prefix, t)
                lps.append(lp(row_prefix, t))
                tops.append(top)
            lps[0], tops[0] = None, None
            logprobs = {"tokens": toks, "token_logprobs": lps, "text_offset": offsets, "top_logprobs": tops}
            return {"object": "text_completion", "model": body["model"],
                    "choices": [{"index": 0, "text": prompt + " next", "logprobs": logprobs,
                                 "finish_reason": "length"}],
                    "usage": {"prompt_tokens": len(toks) - 1, "completion_tokens": 1, "total_tokens": len(toks)}}
        text = self.generated if max_tokens >= 3 else self.generated[:4]
        finish = "stop" if max_tokens >= 3 else "length"
        if body.get("stop"):
            text = text.split(body["stop"][0])[0]
        choices = [{"index": i, "text": text, "logprobs": None, "finish_reason": finish} for i in range(n)]
        return {"object": "text_completion", "model": body["model"], "choices": choices,
                "usage": {"prompt_tokens": 5, "completion_tokens": 3 * n, "total_tokens": 5 + 3 * n}}

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        msg = {"role": "assistant", "content": self.chat_top[0][0] if body.get("max_tokens") == 1 else self.generated}
        choice: dict[str, Any] = {"index": 0, "message": msg, "finish_reason": "length"}
        if body.get("logprobs"):
            k = int(body.get("top_logprobs") or 0)
            first = self.chat_top[0]
            choice["logprobs"] = {"content": [{"token": first[0], "logprob": first[1], "bytes": None,
                                               "top_logprobs": [{"token": t, "logprob": v, "bytes": None}
                                                                for t, v in self.chat_top[:k]]}]}
        return {"object": "chat.completion", "model": body["model"], "choices": [choice],
                "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}}
