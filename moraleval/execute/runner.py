"""Runs a Plan against a Backend: deduplicated, batched, cached, resumable, with progress (``progress``).

Order of work.  A request's generate steps run before its scoring, and every request's step *k* runs before any
step *k+1*: all first generate steps (batched), then all second ones, ..., then all scoring (batched).  Inside a
stage the backend calls are deduplicated by ``request_hash`` (different plan requests often share a CoT prompt)
and sent in plan order, ``batch_size`` at a time (or more when the backend's ``call_size(kind)`` asks for more).
A backend whose ``reuses_generated_prefix`` is true (the ONNX backend keeps recent generations' KV caches; a
server's prefix cache does the same for the OpenAI-compatible backend) gets the requests with generate steps in
groups of ``reuse_group_size()`` where it has one, else of ``call_size("generate")``: each group's generation, then
at once its scoring — so the follow-up turn extends a cache still held — then the requests without generate steps.
A backend with ``generate_and_score`` (the ONNX backend) does better for a single chain of thought: it gets the
group's generations in large calls and scores each one's follow-up turn as soon as that generation finishes, so its
decoding batch stays full (``_stream``); the results, stored the moment they are handed over, are the same bits.

Caching.  Every result is normalised, then stored in the :class:`~moraleval.execute.cache.ResponseCache` the moment the
backend hands it over (``on_result``), one committed transaction each.  A run stopped by Ctrl-C, SIGKILL or a
backend error loses at most the batch in flight; running it again reads everything stored and computes only the
rest.

Normalisation (the only change the runner makes to a backend's numbers).  Log-probabilities (choices and top
alternatives) are rounded to ``LOGPROB_DECIMALS`` = 6 decimal places (1e-6 nats, ``round(x, 6)``, ``-0.0`` -> ``0.0``)
before they are stored or used.  fp32 inference differs in the last bits with padding, i.e. with batch size and
batch composition; rounding removes that noise from nearly all values, and the cache then makes every later run
reuse the stored value exactly.  (A value within the noise of a rounding boundary can still round differently
when first computed with another batch size; from then on the stored value is what every run sees.)
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import attrs

from moraleval.backend import GenerateRequest, GenerateResult, ScoreRequest, ScoreResult, model_key, request_hash
from moraleval.errors import BackendError, MoralevalError, RunError, RunInterrupted
from moraleval.execute.cache import CacheError, Result, ResponseCache, decode_result, encode_result, result_kind
from moraleval.execute.eta import prompt_chars
from moraleval.execute.progress import make_progress
from moraleval.plan.select import select_requests
from moraleval.plan.types import Plan, PlanRequest, RequestOutcome
from moraleval.util.signals import interrupt_requested

__all__ = ["LOGPROB_DECIMALS", "RunInterrupted", "RunOutcomes", "RunStats", "StageStats", "normalise_result",
           "round_logprob", "run_plan"]

LOGPROB_DECIMALS = 6
DEFAULT_BATCH_SIZE = 8



@attrs.define
class StageStats:
    """One stage: ``generate:<step>`` (the k-th generate step of the requests that have one) or ``score``."""

    name: str
    kind: str  # "generate" | "score"
    requests: int = 0  # plan requests that reach this stage
    unique: int = 0  # distinct backend requests among them (deduplicated by request_hash)
    cached: int = 0  # ... already in the cache
    computed: int = 0  # ... computed by the backend in this run
    blocked: int = 0  # dry run only: depends on text not generated yet, so the cache can't be asked
    work: int = 0  # computed in this run: generated tokens (generate) or prompt characters (score)
    seconds: float = 0.0  # backend time of this stage (moraleval.execute.eta turns work/seconds into rates)

    def to_json(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d["seconds"] = round(self.seconds, 3)
        return d


@attrs.define
class RunStats:
    model_key: str
    cache_path: str
    batch_size: int
    dry_run: bool
    plan_requests: int  # requests selected (all, or those of the rows ``limit`` picks)
    items: int  # plan items they answer
    stages: list[StageStats] = attrs.field(factory=list)
    completed: int = 0  # plan requests with a full outcome
    corrupted: list[str] = attrs.field(factory=list)  # cache entries found damaged (recomputed)
    backend_seconds: float = 0.0  # wall time inside backend.score/generate
    total_seconds: float = 0.0

    @property
    def cached(self) -> int:
        return sum(s.cached for s in self.stages)

    @property
    def computed(self) -> int:
        return sum(s.computed for s in self.stages)

    @property
    def to_compute(self) -> int:
        """Dry run: backend calls a real run would make (blocked ones included)."""
        return sum(s.unique - s.cached for s in self.stages) + sum(s.blocked for s in self.stages)

    def to_json(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d["stages"] = [s.to_json() for s in self.stages]
        d["cached"] = self.cached
        d["computed"] = self.computed
        d["backend_seconds"] = round(self.backend_seconds, 3)
        d["total_seconds"] = round(self.total_seconds, 3)
        return d

    def summary(self) -> str:
        if self.dry_run:
            head = (f"dry run: {self.plan_requests} requests ({self.items} items); backend calls: "
                    f"{self.cached} cached, {self.to_compute} to compute")
        else:
            head = (f"{self.completed}/{self.plan_requests} requests ({self.items} items); backend calls: "
                    f"{self.cached} cached, {self.computed} computed; backend {self.backend_seconds:.1f}s "
                    f"of {self.total_seconds:.1f}s")
        lines = [head]
        for s in self.stages:
            extra = f", {s.blocked} waiting on generated text" if s.blocked else ""
            lines.append(f"  {s.name}: {s.requests} requests, {s.unique} unique, {s.cached} cached, "
                         f"{s.computed if not self.dry_run else s.unique - s.cached} "
                         f"{'computed' if not self.dry_run else 'to compute'}{extra}")
        lines.extend(f"  warning: {p}" for p in self.corrupted)
        return "\n".join(lines)


class RunOutcomes(dict):  # dict[str, RequestOutcome], in plan.requests order
    """What ``run_plan`` returns: ``{request key: RequestOutcome}`` plus ``.stats`` (a :class:`RunStats`)."""

    stats: RunStats
    not_run: frozenset[str]  # request keys left out on purpose (--limit); measure says "not run (--limit)"

    def __init__(self, outcomes: dict[str, RequestOutcome], stats: RunStats,
                 not_run: frozenset[str] = frozenset()) -> None:
        super().__init__(outcomes)
        self.stats = stats
        self.not_run = not_run


# -- normalisation --------------------------------------------------------------------------------------------

def round_logprob(x: float) -> float:
    x = float(x)
    if not math.isfinite(x):
        return x
    r = round(x, LOGPROB_DECIMALS)
    return 0.0 if r == 0 else r


def normalise_result(result: Result, request: ScoreRequest | GenerateRequest) -> Result:
    """Check a backend result against its request and round its log-probs; the value stored and used.

    Returns exactly what reading it back from the cache gives (encoded and decoded once)."""
    if isinstance(request, ScoreRequest):
        if not isinstance(result, ScoreResult):
            raise BackendError(f"backend returned {type(result).__name__} for a score request")
        n = len(request.continuations)
        if len(result.logprobs) != n or len(result.n_tokens) != n:
            raise BackendError(f"backend returned {len(result.logprobs)} log-probs and {len(result.n_tokens)} "
                               f"token counts for {n} continuations")
        if any(math.isnan(float(v)) for v in result.logprobs):
            raise BackendError("backend returned a NaN log-prob")
        result = ScoreResult(tuple(round_logprob(v) for v in result.logprobs), tuple(int(t) for t in result.n_tokens),
                             tuple((str(t), round_logprob(p)) for t, p in result.top))
    elif not isinstance(result, GenerateResult):
        raise BackendError(f"backend returned {type(result).__name__} for a generate request")
    try:
        return decode_result(result_kind(result), encode_result(result))
    except ValueError as exc:
        raise BackendError(f"backend returned an invalid result: {exc}") from exc


# -- the run --------------------------------------------------------------------------------------------------

class _Run:
    def __init__(self, plan: Plan, backend: Any, cache: ResponseCache, batch_size: int, limit: int | None,
                 progress: bool | str, dry_run: bool) -> None:
        self.backend = backend
        self.cache = cache
        self.batch_size = batch_size
        self.dry_run = dry_run
        identity = backend.identity()
        self.model = model_key(identity) if dry_run else cache.register_model(identity)
        self.requests, n_items = select_requests(plan, limit)
        selected = {r.key for r in self.requests}
        self.not_run = frozenset(r.key for r in plan.requests if r.key not in selected)
        self.stats = RunStats(self.model, str(cache.path), batch_size, dry_run, len(self.requests), n_items)
        self.progress = make_progress("none" if dry_run else progress)
        self.generated: dict[str, dict[str, str]] = {r.key: {} for r in self.requests}
        self.blocked: set[str] = set()  # dry run: keys whose generated text is not known
        self.scores: dict[str, ScoreResult] = {}
        self.stored_now = 0
        self.fresh: set[str] = set()  # hashes computed in this run before their stage (``_stream``)
        # a cache failure inside a backend's on_result callback, kept here: a backend may wrap what its callback
        # raised, and the user must hear about the cache (its fix), not "the backend failed"
        self.cache_failure: CacheError | None = None

    def run(self) -> RunOutcomes:
        groups = [self.requests]
        self.depth = max((len(r.generate_steps) for r in self.requests), default=0)
        size = self._interleave_size()
        if self._streams():  # each CoT follow-up is scored by the backend as soon as its generation finishes
            cot = [r for r in self.requests if r.generate_steps]
            rest = [r for r in self.requests if not r.generate_steps]
            groups = [g for g in (cot, rest) if g]
        elif size:  # each call's CoT turns are scored right after it, while the backend still holds their KV caches
            cot = [r for r in self.requests if r.generate_steps]
            rest = [r for r in self.requests if not r.generate_steps]
            groups = [cot[i:i + size] for i in range(0, len(cot), size)] + ([rest] if rest else [])
        got: dict[str, Result] = {}
        for group in groups:
            got.update(self._run_group(group))
        outcomes = {r.key: RequestOutcome(r.key, dict(self.generated[r.key]), got[r.key])  # type: ignore[arg-type]
                    for r in self.requests if r.key in got}
        self.stats.completed = len(outcomes)
        return RunOutcomes(outcomes, self.stats, self.not_run)

    def _interleave_size(self) -> int:
        """Requests per generate-then-score group, for a backend that reuses a generation's KV cache; else 0."""
        if self.dry_run or not getattr(self.backend, "reuses_generated_prefix", False):
            return 0
        group = getattr(self.backend, "reuse_group_size", None)
        if callable(group):  # a server's prefix cache: the backend knows how many it holds
            return max(1, int(group()))
        hint = getattr(self.backend, "call_size", None)
        return max(self.batch_size, int(hint("generate")) if callable(hint) else 0)

    def _streams(self) -> bool:
        """Whether the backend generates and scores each chain of thought's follow-up turn in one pass
        (``generate_and_score``: the ONNX backend, whose decoding batch then stays full): single-step CoT only."""
        return (not self.dry_run and self.depth == 1 and callable(getattr(self.backend, "generate_and_score", None))
                and bool(getattr(self.backend, "reuses_generated_prefix", False)))

    def _stream(self, requests: list[PlanRequest]) -> None:
        """Generate the group's missing chains of thought with ``generate_and_score``: each generation, and the
        follow-up turn of the first plan request that shares it, stored in the cache the moment the backend hands
        it over.  The stages below then find them there (counted as computed, not cached); anything the pass did
        not answer (another request's follow-up on a shared generation) is computed there as usual."""
        todo = [r for r in requests if len(r.generate_steps) == 1]
        if not todo:
            return
        names = sorted({r.generate_steps[0][1].name for r in todo})
        gen_stage, score_stage = self._stage(f"generate:{'/'.join(names)}", "generate"), self._stage("score", "score")
        unique: dict[str, tuple[GenerateRequest, PlanRequest]] = {}
        for r in todo:
            req = r.generate_request(0, {})
            unique.setdefault(request_hash(req), (req, r))
        cached = self.cache.get_many(self.model, {h: q for h, (q, _r) in unique.items()}, repair=True)
        missing = [h for h in unique if h not in cached]
        if not missing:
            return
        task = self.progress.stage(f"{gen_stage.name} and its follow-up turns", len(missing))
        hint = getattr(self.backend, "call_size", None)
        step = max(self.batch_size, 4 * int(hint("generate")) if callable(hint) else 0)
        for start in range(0, len(missing), step):
            if interrupt_requested():
                raise KeyboardInterrupt
            self._stream_call(missing[start:start + step], unique, gen_stage, score_stage, task)

    def _stream_call(self, hashes: list[str], unique: dict[str, tuple[GenerateRequest, PlanRequest]],
                     gen_stage: StageStats, score_stage: StageStats, task: Any) -> None:
        requests = [unique[h][0] for h in hashes]
        follow: dict[int, tuple[str, ScoreRequest]] = {}
        generated: set[int] = set()

        def store(stage: StageStats, h: str, value: Result, work: int) -> None:
            if interrupt_requested():  # Ctrl-C whose KeyboardInterrupt was lost on the way (util.signals)
                raise KeyboardInterrupt
            try:
                self.cache.put(self.model, h, value)
            except CacheError as exc:
                self.cache_failure = exc
                raise
            self.fresh.add(h)
            stage.computed += 1
            stage.work += work
            self.stored_now += 1

        def on_generated(i: int, result: GenerateResult) -> None:
            if i in generated or not 0 <= i < len(requests):
                return
            value = normalise_result(result, requests[i])
            store(gen_stage, hashes[i], value, value.n_tokens)  # type: ignore[union-attr]
            generated.add(i)
            self.progress.advance(task)

        def follow_up(i: int, result: GenerateResult) -> ScoreRequest | None:
            plan_request = unique[hashes[i]][1]
            text = normalise_result(result, requests[i]).text  # type: ignore[union-attr]
            req = plan_request.score_request({plan_request.generate_steps[0][1].name: text})
            h = request_hash(req)
            if h in self.fresh or self.cache.get_many(self.model, {h: req}, repair=True):
                return None
            follow[i] = (h, req)
            return req

        def on_scored(i: int, result: ScoreResult) -> None:
            h, req = follow[i]
            if h not in self.fresh:
                store(score_stage, h, normalise_result(result, req), prompt_chars(req))

        t0 = time.perf_counter()
        try:
            self.backend.generate_and_score(requests, follow_up, on_generated=on_generated, on_scored=on_scored)
        finally:
            elapsed = time.perf_counter() - t0
            self.stats.backend_seconds += elapsed
            gen_stage.seconds += elapsed
        if len(generated) != len(requests):
            raise BackendError(f"backend answered {len(generated)} of {len(requests)} requests in a batch")

    def _stage(self, name: str, kind: str) -> StageStats:
        for stage in self.stats.stages:
            if stage.name == name:
                return stage
        stage = StageStats(name, kind)
        self.stats.stages.append(stage)
        return stage

    def _run_group(self, requests: list[PlanRequest]) -> dict[str, Result]:
        depth = self.depth
        if self._streams():
            self._stream(requests)
        for s in range(depth):
            todo = [r for r in requests if len(r.generate_steps) > s]
            if not todo:
                continue
            names = sorted({r.generate_steps[s][1].name for r in todo})
            stage = self._stage(f"generate:{'/'.join(names)}" + (f"#{s + 1}" if depth > 1 else ""), "generate")
            stage.requests += len(todo)
            ready = [r for r in todo if r.key not in self.blocked]
            stage.blocked += len(todo) - len(ready)
            pairs = [(r.key, r.generate_request(s, self.generated[r.key])) for r in ready]
            got = self._resolve(stage, pairs, self.backend.generate)
            for r in ready:
                name = r.generate_steps[s][1].name
                if r.key in got:
                    self.generated[r.key][name] = got[r.key].text  # type: ignore[union-attr]
                else:
                    self.blocked.add(r.key)
        stage = self._stage("score", "score")
        stage.requests += len(requests)
        ready = [r for r in requests if r.key not in self.blocked]
        stage.blocked += len(requests) - len(ready)
        pairs = [(r.key, r.score_request(self.generated[r.key])) for r in ready]
        return self._resolve(stage, pairs, self.backend.score)

    def _resolve(self, stage: StageStats, pairs: list[tuple[str, ScoreRequest | GenerateRequest]],
                 call: Callable[..., list[Any]]) -> dict[str, Result]:
        """Results for (plan key, backend request) pairs: from the cache, else from the backend in batches."""
        hashes = [request_hash(req) for _key, req in pairs]
        unique: dict[str, ScoreRequest | GenerateRequest] = {}
        for h, (_key, req) in zip(hashes, pairs):
            unique.setdefault(h, req)
        stage.unique += len(unique)
        results: dict[str, Result] = dict(self.cache.get_many(self.model, unique, repair=not self.dry_run))
        self.stats.corrupted = list(self.cache.problems)
        stage.cached += sum(1 for h in results if h not in self.fresh)  # computed by this run's streamed pass
        missing = [h for h in unique if h not in results]
        if not self.dry_run and missing:
            task = self.progress.stage(f"{stage.name} ({stage.cached} cached)", len(missing))
            # a backend that batches internally (continuous batching) may ask for larger calls; results are
            # still stored one by one through on_result
            hint = getattr(self.backend, "call_size", None)
            step = max(self.batch_size, int(hint(stage.kind)) if callable(hint) else 0)
            for start in range(0, len(missing), step):
                if interrupt_requested():
                    raise KeyboardInterrupt
                batch = missing[start:start + step]
                self._call(stage, call, batch, [unique[h] for h in batch], results, task)
        return {key: results[h] for h, (key, _req) in zip(hashes, pairs) if h in results}

    def _call(self, stage: StageStats, call: Callable[..., list[Any]], hashes: list[str],
              requests: Sequence[ScoreRequest | GenerateRequest], results: dict[str, Result], task: Any) -> None:
        done: set[int] = set()

        def on_result(i: int, result: Result) -> None:
            if interrupt_requested():  # Ctrl-C whose KeyboardInterrupt was lost on the way (util.signals)
                raise KeyboardInterrupt
            if i in done or not 0 <= i < len(requests):
                return
            value = normalise_result(result, requests[i])
            try:
                self.cache.put(self.model, hashes[i], value)
            except CacheError as exc:
                self.cache_failure = exc
                raise
            stage.work += value.n_tokens if isinstance(value, GenerateResult) else prompt_chars(requests[i])
            done.add(i)
            results[hashes[i]] = value
            stage.computed += 1
            self.stored_now += 1
            self.progress.advance(task)

        t0 = time.perf_counter()
        try:
            returned = call(list(requests), on_result=on_result)
        finally:
            self.stats.backend_seconds += time.perf_counter() - t0
            stage.seconds += time.perf_counter() - t0
        returned = list(returned or ())
        for i, result in enumerate(returned[:len(requests)]):
            on_result(i, result)  # backends that don't call on_result, or skipped some
        if len(done) != len(requests):
            raise BackendError(f"backend answered {len(done)} of {len(requests)} requests in a batch")

    def failure_message(self, what: str) -> str:
        total = len(self.requests)
        # a request is complete when its score is known; count what the cache now holds for the score stage
        complete = self.stats.completed
        return (f"{what}; {complete} of {total} requests complete, {total - complete} left. "
                f"{self.stored_now} new backend results were stored in the cache ({self.cache.path})")

    def count_complete(self) -> None:
        """After a failure: how many selected requests are fully answered (their score is cached)."""
        n = 0
        try:
            for r in self.requests:
                if r.key in self.blocked:
                    continue
                try:
                    req = r.score_request(self.generated[r.key])
                except KeyError:
                    continue
                if self.cache.get(self.model, request_hash(req), repair=False) is not None:
                    n += 1
        except Exception:  # noqa: BLE001 - best effort, only for the message
            pass
        self.stats.completed = n


_RESUME_HINT = "run the same command again to resume: stored results are reused, only the rest is computed"


def run_plan(plan: Plan, backend: Any, *, cache: ResponseCache | str | None = None,
             batch_size: int = DEFAULT_BATCH_SIZE, limit: int | None = None, progress: bool | str = True,
             dry_run: bool = False) -> RunOutcomes:
    """Answer every request of ``plan`` (or, with ``limit``, those of N rows per task: see ``limit_items``)
    with ``backend``, through ``cache``.

    ``cache``: a :class:`ResponseCache`, a cache directory, or None for the default one.  ``progress``: a mode of
    ``moraleval.execute.progress`` ("auto": a bar on a terminal, plain lines elsewhere; "bar", "plain", "none";
    True is "auto", False "none"), on stderr.  Returns
    ``{request key: RequestOutcome}`` in plan order, with ``.stats`` (cached vs computed counts, backend time vs
    total time).  ``dry_run`` computes nothing: it returns the outcomes the cache already holds and stats saying
    what a run would compute.  A backend failure raises :class:`RunError`, Ctrl-C :class:`RunInterrupted`; both
    say how much is done and how to resume.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    t0 = time.perf_counter()
    own = not isinstance(cache, ResponseCache)
    store = ResponseCache(cache) if own else cache
    try:
        run = _Run(plan, backend, store, batch_size, limit, progress, dry_run)
        try:
            out = run.run()
        except KeyboardInterrupt:
            run.progress.close()
            run.count_complete()
            raise RunInterrupted(run.failure_message("interrupted"), hint=_RESUME_HINT) from None
        except RunError:
            run.progress.close()
            raise
        except (MoralevalError, Exception) as exc:  # backend failures of any kind
            run.progress.close()
            if run.cache_failure is not None:  # the cache failed inside the backend's call, whatever it said
                raise run.cache_failure from None
            run.count_complete()
            detail = exc.message if isinstance(exc, MoralevalError) else f"{type(exc).__name__}: {exc}"
            raise RunError(run.failure_message(f"the backend failed: {detail}"), hint=_RESUME_HINT) from exc
        finally:
            run.progress.close()
        run.stats.total_seconds = time.perf_counter() - t0
        return out
    finally:
        if own:
            store.close()
