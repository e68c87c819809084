"""HTTP transport: one asyncio loop on a private thread, an httpx.AsyncClient, bounded concurrency, client-side
rate limits, retries with exponential backoff and jitter, a per-call error budget.

Results are handed back to the *calling* thread through a queue, so ``on_result`` runs where the runner lives
(its cache connection need not be thread-safe).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import queue
import random
import threading
import time
from typing import Any, Awaitable, Callable, Sequence

import attrs
import httpx

from backends.openai_compat._errors import (BadResponseError, RemoteError, RequestRejectedError,
                                            ServerUnavailableError)
from backends.openai_compat._settings import Settings, public_url, split_base_url

log = logging.getLogger("moraleval.backends.openai")

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})
QUOTE_CHARS = 400


class Secret:
    """A value that never shows in repr/str/logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("a Secret is not picklable")


def quote(text: str, secret: Secret | None = None, limit: int = QUOTE_CHARS) -> str:
    """The server's words, shortened, with the API key blanked out should the server echo it."""
    if secret is not None and secret.reveal():
        text = text.replace(secret.reveal(), "***")
    text = text.strip()
    if len(text) > limit:
        text = text[:limit] + f"… [{len(text) - limit} more characters]"
    return repr(text)


@attrs.define
class Stats:
    """Counters the runner/report can read (``backend.stats``); reset by nobody, they count the backend's life."""

    http_requests: int = 0
    failed_attempts: int = 0  # retried or fatal transport/HTTP failures
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    floored_choices: int = 0  # chat_top_logprobs/sample: choices not seen, given the declared floor logprob
    floored_requests: int = 0  # score requests with at least one floored choice
    sampled_requests: int = 0  # score requests estimated by sampling (scoring="sample")

    def as_dict(self) -> dict[str, int]:
        return attrs.asdict(self)


class TokenBucket:
    """``per_minute`` units refill continuously; at most ``burst_seconds`` worth are banked.  A request larger than
    the bucket waits for a full bucket and then drives the level negative (so it is never starved)."""

    def __init__(self, per_minute: float, burst_seconds: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * burst_seconds)
        self.level = self.capacity
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    async def take(self, n: float) -> None:
        async with self.lock:  # FIFO: requests leave in the order they asked
            need = min(n, self.capacity)
            while True:
                self._refill()
                if self.level >= need:
                    self.level -= n
                    return
                await asyncio.sleep((need - self.level) / self.rate)

    def adjust(self, delta: float) -> None:
        """Debit (positive) or credit (negative) once the real cost is known."""
        self._refill()
        self.level = min(self.capacity, self.level - delta)


@attrs.define
class CallState:
    """One ``score``/``generate`` call: its error budget and progress.

    ``failures`` counts failed attempts not yet made up by answers: each failure adds one, each answered attempt
    takes one off (never below zero).  A flaky server that answers most attempts never spends the budget however
    long the call; an outage (or a server failing more often than it answers) spends it after ``budget``
    failures.  A plain per-call count would make the budget depend on the call's size, which is not the user's.
    """

    budget: int
    failures: int = 0


def _retry_after(resp: httpx.Response) -> float | None:
    ms = resp.headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _rejection_hint(status: int, settings: Settings) -> str | None:
    if status in (401, 403):
        if settings.api_key_env:
            return f"check the API key in the environment variable {settings.api_key_env}"
        return "the server wants an API key: set api_key_env to the NAME of the environment variable that holds it"
    if status == 404:
        return (f"check base_url ({public_url(settings.base_url)!r} should end in /v1) and that the server offers "
                "this endpoint")
    if status in (400, 422):
        return "the server refused the request's parameters; its words above say which"
    return None


class Transport:
    """Owns the loop thread and the httpx client; all coroutines here run on that loop."""

    def __init__(self, settings: Settings, api_key: Secret | None, stats: Stats) -> None:
        self.settings = settings
        self.api_key = api_key
        self.stats = stats
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None
        self._rpm: TokenBucket | None = None
        self._tpm: TokenBucket | None = None
        self._lock = threading.Lock()

    # -- the loop thread ------------------------------------------------------------------------------------
    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="moraleval-openai", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run_sync(self, coro: Awaitable[Any]) -> Any:
        """Run one coroutine on the loop and wait for it (used for small things like the model check)."""
        fut = asyncio.run_coroutine_threadsafe(coro, self._ensure_loop())  # type: ignore[arg-type]
        try:
            return fut.result()
        except BaseException:
            fut.cancel()
            raise

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None:
            return
        if self._client is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._client.aclose(), loop).result(timeout=5)
            except Exception:  # closing must not fail the caller
                pass
            self._client = None
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=5)
        loop.close()

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            s = self.settings
            headers = {"Accept": "application/json"}
            if self.api_key is not None:
                headers["Authorization"] = f"Bearer {self.api_key.reveal()}"
            limits = httpx.Limits(max_connections=s.concurrency + 2, max_keepalive_connections=s.concurrency + 2)
            timeout = httpx.Timeout(s.timeout, connect=min(s.connect_timeout, s.timeout))
            base, params = split_base_url(s.base_url)
            self._client = httpx.AsyncClient(base_url=base + "/", params=params, headers=headers, limits=limits,
                                             timeout=timeout, trust_env=False)
            if s.requests_per_minute:
                self._rpm = TokenBucket(s.requests_per_minute, s.rate_burst_seconds)
            if s.tokens_per_minute:
                self._tpm = TokenBucket(s.tokens_per_minute, s.rate_burst_seconds)
        return self._client

    # -- one request with retries ---------------------------------------------------------------------------
    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        s = self.settings
        cap = min(s.backoff_max, s.backoff_base * (2 ** (attempt - 1)))
        delay = cap / 2 + random.uniform(0, cap / 2)  # "equal jitter": never zero, never in lock-step
        if retry_after is not None:
            delay = max(delay, min(retry_after, s.retry_after_max))
        return delay

    async def request(self, method: str, path: str, body: dict[str, Any] | None, *, label: str,
                      call: CallState, est_tokens: int = 0) -> dict[str, Any]:
        """POST/GET ``path`` below base_url; returns the decoded JSON object or raises a RemoteError."""
        s = self.settings
        client = self._get_client()
        url = f"{public_url(s.base_url)}/{path}"  # for messages: no credentials, no query
        attempt = 0
        while True:
            if self._rpm is not None:
                await self._rpm.take(1)
            if self._tpm is not None and est_tokens:
                await self._tpm.take(est_tokens)
            retry_after: float | None = None
            self.stats.http_requests += 1
            try:
                if body is None:
                    resp = await client.request(method, path)
                else:
                    resp = await client.request(method, path, content=json.dumps(body).encode("utf-8"),
                                                headers={"Content-Type": "application/json"})
            except httpx.TimeoutException as exc:
                problem = f"no answer within the timeout ({type(exc).__name__}, timeout={s.timeout:g}s)"
            except httpx.TransportError as exc:  # refused, reset, dropped mid-answer, protocol garbage
                problem = f"connection failed ({type(exc).__name__}: {quote(str(exc), self.api_key, 200)})"
            else:
                if resp.status_code < 300:
                    call.failures = max(0, call.failures - 1)
                    data = self._decode(resp, label, url)
                    usage = data.get("usage")
                    if isinstance(usage, dict):
                        self._count_usage(usage, est_tokens)
                    return data
                words = quote(resp.text, self.api_key)
                if resp.status_code in RETRY_STATUS and not _is_permanent(resp.text):
                    problem = f"HTTP {resp.status_code}: {words}"
                    retry_after = _retry_after(resp)
                else:
                    self.stats.failed_attempts += 1
                    raise RequestRejectedError(f"{label}: {method} {url} was refused with HTTP {resp.status_code}:"
                                               f" {words}", hint=_rejection_hint(resp.status_code, s))
            self.stats.failed_attempts += 1
            call.failures += 1
            attempt += 1
            if call.failures > call.budget:
                raise ServerUnavailableError(
                    f"stopped: the error budget of this call is spent (failed attempts outran answers by more "
                    f"than {call.budget}); "
                    f"last failure: {label}: {method} {url}: {problem}",
                    hint="check the server; raise error_budget or max_retries, or lower concurrency or "
                         "requests_per_minute if the server is overloaded")
            if attempt > s.max_retries:
                raise ServerUnavailableError(
                    f"{label}: gave up after {attempt} attempts ({s.max_retries} retries); "
                    f"last failure: {method} {url}: {problem}",
                    hint="check the server; raise max_retries or timeout if it is just slow")
            delay = self._backoff(attempt, retry_after)
            self.stats.retries += 1
            log.warning("%s: %s; retry %d/%d in %.2fs", label, problem, attempt, s.max_retries, delay)
            await asyncio.sleep(delay)

    def _count_usage(self, usage: dict[str, Any], est_tokens: int) -> None:
        p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(p, int):
            self.stats.prompt_tokens += p
        if isinstance(c, int):
            self.stats.completion_tokens += c
        total = usage.get("total_tokens")
        if self._tpm is not None and est_tokens and isinstance(total, int):
            self._tpm.adjust(total - est_tokens)

    def _decode(self, resp: httpx.Response, label: str, url: str) -> dict[str, Any]:
        try:
            data = json.loads(resp.content)
        except (ValueError, UnicodeDecodeError):
            raise BadResponseError(f"{label}: the server's answer from {url} is not valid JSON: "
                                   f"{quote(resp.text, self.api_key)}") from None
        if not isinstance(data, dict):
            raise BadResponseError(f"{label}: the server's answer from {url} is JSON but not an object: "
                                   f"{quote(resp.text, self.api_key)}")
        if "error" in data and "choices" not in data and "data" not in data:
            raise RequestRejectedError(f"{label}: the server answered {url} with an error: "
                                       f"{quote(json.dumps(data['error']), self.api_key)}")
        return data


def _is_permanent(text: str) -> bool:
    """A 5xx that retrying cannot fix (llama-cpp-python answers 500 when logprobs are off)."""
    t = text.lower()
    return "logits_all" in t or ("logprobs" in t and "not supported" in t)


# -- running many jobs ------------------------------------------------------------------------------------------

def run_jobs(transport: Transport, n_results: int, jobs: Sequence[Any],
             handle: Callable[[Any, CallState], Awaitable[tuple[int, Any] | None]],
             on_result: Callable[[int, Any], None] | None, concurrency: int, budget: int) -> list[Any]:
    """Run ``handle(job)`` for every job with at most ``concurrency`` in flight.  ``handle`` returns
    ``(i, result)`` once request ``i`` is complete (or None while it still waits for its other parts).  Results
    go to ``on_result`` on the calling thread as they arrive.  On the first error nothing new starts, jobs in
    flight are cancelled, and the error is raised with how many requests were answered."""
    results: list[Any] = [None] * n_results
    if n_results == 0:
        return results
    q: queue.SimpleQueue = queue.SimpleQueue()
    call = CallState(budget=budget)
    done_marker = object()

    async def drive() -> None:
        it = iter(jobs)

        async def worker() -> None:
            for job in it:
                out = await handle(job, call)
                if out is not None:
                    q.put(out)

        tasks = [asyncio.ensure_future(worker()) for _ in range(max(1, min(concurrency, len(jobs))))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def finished(fut: Any) -> None:
        q.put(done_marker)

    loop = transport._ensure_loop()
    fut = asyncio.run_coroutine_threadsafe(drive(), loop)
    fut.add_done_callback(finished)
    answered = 0
    try:
        while True:
            item = q.get()
            if item is done_marker:
                break
            i, res = item
            results[i] = res
            answered += 1
            if on_result is not None:
                on_result(i, res)
        while True:  # results that raced the done marker cannot exist (FIFO), but be safe
            try:
                item = q.get_nowait()
            except queue.Empty:
                break
            if item is not done_marker:
                i, res = item
                results[i] = res
                answered += 1
                if on_result is not None:
                    on_result(i, res)
        exc = fut.exception()
    except BaseException:
        fut.cancel()  # the caller's on_result failed or the user pressed ^C: stop the loop's work
        raise
    if exc is not None:
        if isinstance(exc, RemoteError):
            raise exc.with_progress(answered, n_results) from exc
        raise exc
    return results
