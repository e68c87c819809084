"""OnnxBackend: score and generate with a decoder-with-past ONNX model on onnxruntime (CPU).

Scoring: prompts are sorted by length, grouped into batches and left-padded (position ids come from the
attention mask).  One forward pass per prompt batch yields the next-token distribution; single-token
continuations are read from it directly.  Longer continuations run one more pass over their own tokens on top of
the prompt's KV cache (the prompt is never recomputed per choice).  The graph returns only the log-probs of the
target tokens and the last position's distribution, never [batch, seq, vocab] logits.

Tokenisation convention (as lm-evaluation-harness): the prompt and each continuation are tokenised *separately*
and the token lists concatenated, so " (a)" is scored as the tokens of " (a)" on its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from moraleval.backend import GenerateRequest, GenerateResult, Prompt, ScoreRequest, ScoreResult
from moraleval.errors import BackendError

from . import store
from ._graph import (NEXT_LOGPROBS, SELECT_POSITIONS, SELECT_TARGETS, SELECTED_LOGPROBS, add_scoring_head,
                     set_nbits_accuracy)
from ._ort import run_interruptibly
from ._ragged import PREFILL_ARITHMETIC, RaggedDecoder, cut_batches, make_ragged, pick_token
from ._text import ModelText, model_text

TRUNCATION = ("error", "left")
# quantize settings: the imported model variants (store.QUANTIZE_CHOICES) and those run from one of them with other
# arithmetic chosen at load time ("gguf-q8": the GGUF's 4-bit blocks with int8 activations, MatMulNBits
# accuracy_level 4, as llama.cpp computes Q4_1 x Q8_1)
LOAD_TIME_QUANTIZE = {"gguf-q8": "gguf"}
QUANTIZE = (*store.QUANTIZE_CHOICES, *LOAD_TIME_QUANTIZE)
PROVIDERS = ("cpu", "openvino")
PRECISIONS = ("fp32", "bf16")  # provider "openvino": OpenVINO's CPU inference precision (bf16 runs on AMX)
KV_CACHE = ("float32", "float16")
DEFAULT_RAGGED_BATCH = 8  # scoring: prompts per pass on a ragged (batch-invariant) graph
DEFAULT_RAGGED_GENERATE_BATCH = 32  # generation: sequences decoded together on a ragged graph
SCORE_CALL_BATCHES = 8  # scoring on a ragged graph: prefill batches per call (call_size)


def physical_cores() -> int:
    """Physical cores (hyper-threads do not help GEMM-bound inference)."""
    try:
        cores = set()
        phys = core = None
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("physical id"):
                    phys = line.split(":")[1].strip()
                elif line.startswith("core id"):
                    core = line.split(":")[1].strip()
                elif not line.strip():
                    if core is not None:
                        cores.add((phys, core))
                    phys = core = None
        if core is not None:
            cores.add((phys, core))
        if cores:
            return len(cores)
    except OSError:
        pass
    return max(1, (os.cpu_count() or 2) // 2)


def resolve_model_dir(model: str | os.PathLike, quantize: str = "none") -> tuple[Path, bool]:
    """(directory, is_default).  "default" imports the embedded model on first use."""
    if str(model) == "default":
        return store.ensure_default_model(quantize), True
    d = Path(model).expanduser()
    if not d.exists():
        cached = store.models_dir() / str(model)
        if cached.is_dir():
            return cached, False
        raise BackendError(f"model directory not found: {model}",
                           hint="use model=\"default\", a directory written by `optimum-cli export onnx`, or the "
                                "name of a model listed by `moraleval models list`")
    if d.is_file():
        d = d.parent
    return d, False


class OnnxBackend:
    """Backend settings (all optional; the full table and what each costs: docs/backends/onnx.md):

    - ``model``: "default" (the embedded SmolLM2-135M-Instruct, imported on first use), a directory exported with
      ``optimum-cli export onnx --task text-generation-with-past``, or a model name from ``moraleval models list``.
    - ``quantize``: "none" (fp16-stored weights, fp32 compute), or an opt-in arithmetic route of the default model
      ("int8", "gguf", "gguf-q8", "w16a16"), each its own identity.
    - ``threads``: intra-op threads (default: physical cores); ``spinning``: busy-waiting worker threads (default
      true: faster on an idle machine, slower on a loaded one).
    - ``batch_size`` / ``generate_batch_size``: prompts per scoring pass / sequences decoded together.  On
      moraleval's own (ragged) graphs results are batch-invariant, so these change speed only (defaults 8 / 32);
      on other exports padding moves the last float bits, so they default to 1 and a larger value is in the identity.
    - ``max_batch_tokens``: cap on batch × padded length (default 8192); ``max_length``: context limit in tokens
      (default: the model's); ``truncation``: "error" (default: an over-long item is an error naming it) or "left".
    - ``kv_cache``: "float32" (default) or "float16" (half the KV bytes; other numbers, named in the identity).
    - ``provider``: "cpu" (default) or "openvino" (onnxruntime-openvino), with ``precision`` "bf16" (default
      there: AMX) or "fp32".
    """

    name = "onnx"

    def __init__(self, model: str = "default", quantize: str = "none", threads: int | None = None,
                 batch_size: int | None = None, max_length: int | None = None, truncation: str = "error",
                 max_batch_tokens: int = 8192, generate_batch_size: int | None = None,
                 spinning: bool = True, kv_reuse_mb: int = 512, kv_cache: str = "float32",
                 provider: str = "cpu", precision: str | None = None) -> None:
        try:
            import onnx

            from backends.onnx._ort import import_onnxruntime

            import_onnxruntime()  # telemetry off, nothing written to ~/.cache/Microsoft
        except ImportError as exc:  # pragma: no cover - core dependencies
            raise BackendError(f"the onnx backend needs onnxruntime and onnx: {exc}",
                               hint="pip install onnxruntime onnx") from exc
        check_settings(quantize=quantize, kv_cache=kv_cache, provider=provider, precision=precision,
                       truncation=truncation, batch_size=batch_size, max_batch_tokens=max_batch_tokens,
                       generate_batch_size=generate_batch_size, kv_reuse_mb=kv_reuse_mb, threads=threads,
                       max_length=max_length)
        self.model_dir, self.is_default = resolve_model_dir(model, LOAD_TIME_QUANTIZE.get(quantize, quantize))
        if quantize != "none" and not self.is_default:
            raise BackendError("quantize applies to the default model only",
                               hint="quantise your own export with onnxruntime.quantization and load that directory")
        manifest_path = self.model_dir / "manifest.json"
        if manifest_path.exists():
            self.manifest = store.verify_manifest(self.model_dir)
            self.file_hashes = dict(self.manifest["files"])
        else:  # a user's export: hash what is there (identity must change when the files do)
            self.manifest = None
            self.file_hashes = store.hash_dir(self.model_dir)
        model_path = find_model_file(self.model_dir)
        self.text: ModelText = model_text(self.model_dir)
        self.settings = {"model": str(model), "quantize": quantize, "threads": threads or physical_cores(),
                         "batch_size": batch_size, "max_batch_tokens": max_batch_tokens,
                         "truncation": truncation, "generate_batch_size": generate_batch_size,
                         "spinning": bool(spinning), "kv_reuse_mb": kv_reuse_mb, "kv_cache": kv_cache,
                         "provider": provider,
                         "precision": (precision or "bf16") if provider == "openvino" else None}

        try:
            proto = onnx.load(str(model_path), load_external_data=False)
        except Exception as exc:
            raise BackendError(f"{model_path} is not a readable ONNX model ({type(exc).__name__}: {exc})",
                               hint="re-export or re-import the model") from None
        check_decoder_export(proto, model_path)
        self._model_path = model_path
        try:
            self.ragged = self._prepare(proto)
            blob = proto.SerializeToString()
        except Exception as exc:
            raise BackendError(f"cannot prepare {model_path} for scoring: {exc}") from None
        del proto
        if kv_cache != "float32" and not self.ragged:
            raise BackendError("kv_cache applies to moraleval's own models only",
                               hint="export your model with an fp16 KV cache instead (optimum's --dtype fp16)")
        self.session = self.create_session(blob)
        del blob

        inputs = {i.name: i for i in self.session.get_inputs()}
        self._input_names = set(inputs)
        self._past_names = sorted((n for n in inputs if n.startswith("past_key_values.")),
                                  key=lambda n: (int(n.split(".")[1]), n.split(".")[2]))
        if not self._past_names:
            raise BackendError(f"{model_path} has no past_key_values inputs (exported without a KV cache)",
                               hint="export with `optimum-cli export onnx --task text-generation-with-past`")
        cfg = self.text.config
        self._kv_heads, self._head_dim, self._past_dtype = kv_layout(inputs[self._past_names[0]], cfg)
        self._present_names = [n.replace("past_key_values.", "present.") for n in self._past_names]
        self.n_layers = len(self._past_names) // 2
        model_max = int(cfg.get("max_position_embeddings") or self.text.tokenizer_config.get("model_max_length")
                        or 2048)
        self.max_length = min(int(max_length), model_max) if max_length else model_max
        self.settings["max_length"] = self.max_length
        if self.settings["batch_size"] is None:
            self.settings["batch_size"] = DEFAULT_RAGGED_BATCH if self.ragged else 1
        if self.settings["generate_batch_size"] is None:
            self.settings["generate_batch_size"] = DEFAULT_RAGGED_GENERATE_BATCH if self.ragged else 1
        self._decoder = RaggedDecoder(self) if self.ragged else None

    # -------------------------------------------------------------------------------------------- graph

    def _prepare(self, proto: Any) -> bool:
        """Rewrite the loaded graph as this backend runs it (in memory): the scoring head, the load-time arithmetic
        of ``quantize``, and for moraleval's own graphs the ragged decoder.  Returns whether it is ragged."""
        add_scoring_head(proto)
        if self.settings["quantize"] == "gguf-q8":
            set_nbits_accuracy(proto, 4)
        # moraleval's own graphs become batch-invariant ragged decoders (backends/onnx/_ragged.py)
        return make_ragged(proto, int(self.text.config.get("max_position_embeddings") or 2048),
                           kv_cache=self.settings["kv_cache"])

    def prepared_graph(self) -> Any:
        """The graph exactly as this backend runs it, loaded afresh without its weights (they stay in their
        files): for tools that need one more output of it (bench/fidelity.py); run it with :meth:`create_session`."""
        import onnx

        proto = onnx.load(str(self._model_path), load_external_data=False)
        self._prepare(proto)
        return proto

    def create_session(self, blob: bytes) -> Any:
        """An onnxruntime session for a serialised graph of this model, with this backend's options."""
        return create_session(blob, self._model_path, self.settings)

    # -------------------------------------------------------------------------------------------- public

    def identity(self) -> dict[str, Any]:
        if self.ragged:  # batch-invariant: batch sizes change speed only, never a bit of a result
            settings = {k: self.settings[k] for k in ("quantize", "max_length", "truncation")}
            settings["attention"] = "ragged"
            settings["prefill_align"] = PREFILL_ARITHMETIC  # the arithmetic of every prefill (see PREFILL_PAD)
            # settings that change the arithmetic, named only when not the default (earlier caches keep their key)
            if self.settings["kv_cache"] != "float32":
                settings["kv_cache"] = self.settings["kv_cache"]
            if self.settings["provider"] != "cpu":
                settings["provider"] = self.settings["provider"]
                settings["precision"] = self.settings["precision"]
            return {"backend": self.name,
                    "model": {"name": "default:" + self.model_dir.name if self.is_default else self.model_dir.name,
                              "files": dict(sorted(self.file_hashes.items()))},
                    "settings": settings}
        settings = {k: self.settings[k] for k in ("quantize", "max_length", "truncation", "generate_batch_size")}
        if self.settings["provider"] != "cpu":
            settings["provider"] = self.settings["provider"]
            settings["precision"] = self.settings["precision"]
        if self.settings["batch_size"] != 1:  # batched scoring pads prompts, which changes the last float bits
            settings["batch_size"] = self.settings["batch_size"]
        return {
            "backend": self.name,
            "model": {"name": "default:" + self.model_dir.name if self.is_default else self.model_dir.name,
                      "files": dict(sorted(self.file_hashes.items()))},
            "settings": settings,
        }

    @property
    def reuses_generated_prefix(self) -> bool:
        """True when a score request extending a just-generated dialogue reuses the generation's KV cache (the
        runner then scores each batch of generate requests' follow-up turns right after generating them)."""
        return self.ragged and self.settings["kv_reuse_mb"] > 0

    def decode_timing(self) -> dict[str, float | int] | None:
        """Prefill vs decode-step seconds of the ragged decoder so far (None for a padded graph): what the
        benchmarks split throughput by, since batching speeds up only the decode steps."""
        return self._decoder.timing.as_dict() if self._decoder is not None else None

    def call_size(self, kind: str) -> int:
        """Requests the runner should hand over per call: enough to keep every decoding slot busy (the ragged
        decoder refills a finished sequence's slot from the same call)."""
        if kind == "generate" and self.ragged:
            # with KV reuse the runner scores each call's CoT turns right after it, while their prompt caches are
            # kept: two batches' worth keeps the slots refilled for most of the call (one batch drains from its
            # first finished sequence on: 19 of 32 rows a step on average, measured) while 64 prompt caches of
            # BBQ's ~160 tokens still fit the default kv_reuse_mb (an evicted one is scored from scratch)
            return self.settings["generate_batch_size"] * (2 if self.reuses_generated_prefix else 4)
        if kind == "score" and self.ragged:
            # the backend sorts a call's prompts by length into prefill batches and runs their continuations
            # together: a larger call pads less (lm-eval's BBQ prompts: 31 % more positions than tokens in calls
            # of 8, 3 % in calls of 64) and fills the continuation passes
            return self.settings["batch_size"] * SCORE_CALL_BATCHES
        return self.settings["batch_size"] if kind == "score" else self.settings["generate_batch_size"]

    def render(self, prompt: Prompt) -> str:
        """The exact text the model sees for ``prompt``."""
        return self.text.render(prompt)

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]

    def __enter__(self) -> "OnnxBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -------------------------------------------------------------------------------------------- forward

    def _forward(self, ids: np.ndarray, mask: np.ndarray, pos: np.ndarray, past: list[np.ndarray] | None,
                 sel_pos: np.ndarray, sel_tgt: np.ndarray, want_present: bool) \
            -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        if self.session is None:
            raise BackendError("the onnx backend was closed")
        B = ids.shape[0]
        feed: dict[str, np.ndarray] = {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64),
                                       SELECT_POSITIONS: sel_pos.astype(np.int64),
                                       SELECT_TARGETS: sel_tgt.astype(np.int64)}
        if "position_ids" in self._input_names:
            feed["position_ids"] = pos.astype(np.int64)
        if "use_cache_branch" in self._input_names:  # optimum "merged" decoders
            feed["use_cache_branch"] = np.array([past is not None])
        if past is None:
            empty = np.zeros((B, self._kv_heads, 0, self._head_dim), self._past_dtype)
            past = [empty] * len(self._past_names)
        feed.update(zip(self._past_names, past))
        outs = [SELECTED_LOGPROBS, NEXT_LOGPROBS] + (self._present_names if want_present else [])
        try:
            res = run_interruptibly(lambda options: self.session.run(outs, feed, run_options=options))
        except Exception as exc:
            raise BackendError(f"onnxruntime failed on a batch of shape {tuple(ids.shape)}: {exc}") from None
        return res[0], res[1], res[2:]

    def _fit(self, i: int, ids: list[int], extra: int, what: str) -> list[int]:
        if len(ids) + extra <= self.max_length:
            return ids
        if self.settings["truncation"] == "left" and extra < self.max_length:
            return ids[len(ids) + extra - self.max_length:]
        raise BackendError(f"request {i}: prompt ({len(ids)} tokens) + {what} ({extra}) exceeds max_length "
                           f"{self.max_length}",
                           hint="shorten the prompt, or set truncation=\"left\" to drop its oldest tokens")

    def _prompt_ids(self, i: int, prompt: Prompt) -> list[int]:
        ids = self.text.encode_prompt(prompt)
        if not ids:  # nothing to condition on: start from the end-of-text token (lm-eval convention)
            start = self.text.tokenizer.token_to_id("<|endoftext|>")
            if start is None:
                start = min(self.text.stop_ids) if self.text.stop_ids else 0
            ids = [start]
        return ids

    # -------------------------------------------------------------------------------------------- score

    def score(self, requests: Sequence[ScoreRequest], *,
              on_result: Callable[[int, ScoreResult], None] | None = None) -> list[ScoreResult]:
        n = len(requests)
        prompts: list[list[int]] = []
        conts: list[list[list[int]]] = []
        for i, r in enumerate(requests):
            c = [self.text.encode_continuation(t) for t in r.continuations]
            longest = max((len(x) for x in c), default=0)
            prompts.append(self._fit(i, self._prompt_ids(i, r.prompt), longest, "longest continuation"))
            conts.append(c)
        results: list[ScoreResult | None] = [None] * n

        def emit(i: int, res: ScoreResult) -> None:
            results[i] = res
            if on_result is not None:
                on_result(i, res)

        if self._decoder is not None:
            self._decoder.score(prompts, conts, [r.top_k for r in requests], emit)
            return results  # type: ignore[return-value]
        for batch in length_batches([len(p) for p in prompts], self.settings["batch_size"], self.settings["max_batch_tokens"]):
            for i, res in zip(batch, self._score_batch([prompts[i] for i in batch], [conts[i] for i in batch],
                                                       [requests[i].top_k for i in batch])):
                emit(i, res)
        return results  # type: ignore[return-value]

    def _score_batch(self, prompts: list[list[int]], conts: list[list[list[int]]], top_ks: list[int]) \
            -> list[ScoreResult]:
        B = len(prompts)
        ids, mask, pos = left_pad(prompts)
        S = ids.shape[1]
        multi = any(len(c) >= 2 for cs in conts for c in cs)
        _, next_lp, present = self._forward(ids, mask, pos, None, np.full((B, 1), S - 1), np.zeros((B, 1)),
                                            want_present=bool(multi))
        logprobs = [[float(next_lp[b, c[0]]) if c else 0.0 for c in conts[b]] for b in range(B)]
        if multi:
            # The prompt's KV cache is reused, never recomputed.  Each pass reads every weight once, so few
            # large passes are best: all (prompt, choice) rows in one pass when their gathered cache copies fit
            # half the token budget; otherwise one pass per choice slot over the batch's own cache arrays
            # (zero-copy), gathering rows only where few prompts have that slot.
            real_len = mask.sum(axis=1)
            rows = [(b, j) for b in range(B) for j, c in enumerate(conts[b]) if len(c) >= 2]
            L = max(len(conts[b][j]) - 1 for b, j in rows)
            if len(rows) <= max(1, self.settings["max_batch_tokens"] // 2 // (S + L)):
                groups = [rows]
            else:
                groups = []
                for j in range(max(len(c) for c in conts)):
                    slot = [(b, j) for b in range(B) if j < len(conts[b]) and len(conts[b][j]) >= 2]
                    if slot:
                        groups.append(slot if 2 * len(slot) <= B else
                                      [(b, j) if (b, j) in slot else (b, None) for b in range(B)])
            for group in groups:
                src = np.array([b for b, _ in group])
                zero_copy = len(group) == B and bool((src == np.arange(B)).all())
                past = present if zero_copy else [p[src] for p in present]
                conts_g = [conts[b][j] if j is not None else [] for b, j in group]
                Lc = max(max(len(c) - 1 for c in conts_g), 1)
                R = len(group)
                c_ids = np.zeros((R, Lc), np.int64)
                c_tgt = np.zeros((R, Lc), np.int64)
                c_mask = np.zeros((R, Lc), np.int64)
                for r, c in enumerate(conts_g):
                    if len(c) >= 2:
                        c_ids[r, :len(c) - 1] = c[:-1]
                        c_tgt[r, :len(c) - 1] = c[1:]
                        c_mask[r, :len(c) - 1] = 1
                full_mask = np.concatenate([mask[src], c_mask], axis=1)
                c_pos = real_len[src][:, None] + np.arange(Lc)[None, :]
                sel, _, _ = self._forward(c_ids, full_mask, c_pos, past, np.tile(np.arange(Lc), (R, 1)), c_tgt,
                                          want_present=False)
                for r, ((b, j), c) in enumerate(zip(group, conts_g)):
                    if len(c) >= 2:
                        logprobs[b][j] += float(sel[r, :len(c) - 1].astype(np.float64).sum())
        out = []
        for b in range(B):
            top: list[tuple[str, float]] = []
            k = min(top_ks[b], next_lp.shape[1])
            if k > 0:
                row = next_lp[b]
                idx = np.argpartition(-row, k - 1)[:k]
                idx = idx[np.lexsort((idx, -row[idx]))]
                top = [(self.text.token_text(int(t)), float(row[t])) for t in idx]
            out.append(ScoreResult(tuple(logprobs[b]), tuple(len(c) for c in conts[b]), tuple(top)))
        return out

    # -------------------------------------------------------------------------------------------- generate

    def generate(self, requests: Sequence[GenerateRequest], *,
                 on_result: Callable[[int, GenerateResult], None] | None = None) -> list[GenerateResult]:
        prompts = []
        for i, r in enumerate(requests):
            if r.temperature < 0 or not 0 < r.top_p <= 1:
                raise BackendError(f"request {i}: temperature must be >= 0 and top_p in (0, 1]")
            prompts.append(self._fit(i, self._prompt_ids(i, r.prompt), 1, "one generated token"))
        results: list[GenerateResult | None] = [None] * len(requests)
        if self._decoder is not None:
            def emit(i: int, res: GenerateResult) -> None:
                results[i] = res
                if on_result is not None:
                    on_result(i, res)

            self._decoder.generate(prompts, requests, self.settings["generate_batch_size"], emit)
            return results  # type: ignore[return-value]
        for batch in length_batches([len(p) for p in prompts], self.settings["generate_batch_size"],
                                    self.settings["max_batch_tokens"]):
            for i, res in zip(batch, self._generate_batch([prompts[i] for i in batch],
                                                          [requests[i] for i in batch])):
                results[i] = res
                if on_result is not None:
                    on_result(i, res)
        return results  # type: ignore[return-value]

    def generate_and_score(self, requests: Sequence[GenerateRequest],
                           follow_up: Callable[[int, GenerateResult], ScoreRequest | None], *,
                           on_generated: Callable[[int, GenerateResult], None] | None = None,
                           on_scored: Callable[[int, ScoreResult], None] | None = None) \
            -> tuple[list[GenerateResult], list[ScoreResult | None]]:
        """Generate every request and score each one's follow-up turn (``follow_up(i, generated)``: the chain of
        thought's next turn, or None) as soon as its generation finishes, while the other sequences go on
        decoding: the decoding batch stays full until the last prompt has started (generating a group and then
        scoring it lets the batch drain at the end of every group), and a follow-up extends its generation
        prompt's KV cache while it is still held.  The numbers are those of :meth:`generate` then :meth:`score`
        (both batch-invariant; a follow-up scored on a held cache gets the bits of one scored from scratch).

        On a graph that is not ragged: :meth:`generate`, then :meth:`score` of every follow-up."""
        gen: list[GenerateResult | None] = [None] * len(requests)
        scored: list[ScoreResult | None] = [None] * len(requests)
        pending: list[tuple[int, ScoreRequest]] = []

        def emit(i: int, res: GenerateResult) -> None:
            gen[i] = res
            if on_generated is not None:
                on_generated(i, res)
            req = follow_up(i, res)
            if req is not None:
                pending.append((i, req))

        def flush(at_least: int) -> None:
            if len(pending) < max(at_least, 1):
                return
            batch = pending[:]
            pending.clear()

            def put(k: int, res: ScoreResult) -> None:
                scored[batch[k][0]] = res
                if on_scored is not None:
                    on_scored(batch[k][0], res)

            self.score([r for _, r in batch], on_result=put)

        if self._decoder is None or not self.reuses_generated_prefix:
            self.generate(requests, on_result=emit)
            flush(1)
            return gen, scored  # type: ignore[return-value]
        prompts = []
        for i, r in enumerate(requests):
            if r.temperature < 0 or not 0 < r.top_p <= 1:
                raise BackendError(f"request {i}: temperature must be >= 0 and top_p in (0, 1]")
            prompts.append(self._fit(i, self._prompt_ids(i, r.prompt), 1, "one generated token"))
        # follow-ups are scored a prefill batch at a time: their prompt caches are held only that long
        self._decoder.generate(prompts, requests, self.settings["generate_batch_size"], emit,
                               between=lambda: flush(self.settings["batch_size"]))
        flush(1)
        return gen, scored  # type: ignore[return-value]

    def _generate_batch(self, prompts: list[list[int]], reqs: list[GenerateRequest]) -> list[GenerateResult]:
        B = len(prompts)
        ids, mask, pos = left_pad(prompts)
        S = ids.shape[1]
        rngs = [np.random.default_rng(r.seed) for r in reqs]
        gen: list[list[int]] = [[] for _ in range(B)]
        done: list[GenerateResult | None] = [None] * B
        budget = [min(r.max_tokens, self.max_length - len(p)) for r, p in zip(reqs, prompts)]
        for b in range(B):
            if reqs[b].max_tokens <= 0:
                done[b] = GenerateResult("", 0, "length")
        past = None
        sel = np.zeros((B, 1), np.int64)
        cur_ids, cur_pos, sel_pos = ids, pos, np.full((B, 1), S - 1)
        while not all(done):
            _, next_lp, past = self._forward(cur_ids, mask, cur_pos, past, sel_pos, sel, want_present=True)
            step = np.zeros((B, 1), np.int64)
            for b in range(B):
                if done[b] is not None:
                    continue
                tok = pick_token(next_lp[b], reqs[b], rngs[b])
                step[b, 0] = tok
                if tok in self.text.stop_ids:
                    done[b] = GenerateResult(self.text.decode(gen[b]), len(gen[b]), "eos")
                    continue
                gen[b].append(tok)
                text = self.text.decode(gen[b])
                hit = [text.find(s) for s in reqs[b].stop if s and s in text]
                if hit:
                    done[b] = GenerateResult(text[:min(hit)], len(gen[b]), "stop")
                elif len(gen[b]) >= budget[b]:
                    done[b] = GenerateResult(text, len(gen[b]), "length")
            mask = np.concatenate([mask, np.ones((B, 1), np.int64)], axis=1)
            cur_pos = (cur_pos[:, -1:] + 1)
            cur_ids, sel_pos = step, np.zeros((B, 1), np.int64)
        return done  # type: ignore[return-value]


def render_prompt(prompt: Prompt, model: str = "default") -> str:
    """The exact text ``model`` sees for ``prompt``; reads only the tokenizer/chat-template files (no ONNX session;
    the default model is imported first if it is not in the cache yet)."""
    directory, _ = resolve_model_dir(model)
    return model_text(directory).render(prompt)


def check_settings(*, quantize: str, kv_cache: str, provider: str, precision: str | None, truncation: str,
                   batch_size: int | None, max_batch_tokens: int, generate_batch_size: int | None, kv_reuse_mb: int,
                   threads: int | None, max_length: int | None) -> None:
    """Refuse a setting the backend cannot run, before anything is loaded (one line naming it and the fix)."""
    if quantize not in QUANTIZE:
        raise BackendError(f"unknown quantize setting {quantize!r}",
                           hint="use " + ", ".join(repr(q) for q in QUANTIZE))
    if kv_cache not in KV_CACHE:
        raise BackendError(f"unknown kv_cache setting {kv_cache!r}", hint="use 'float32' or 'float16'")
    if provider not in PROVIDERS:
        raise BackendError(f"unknown provider setting {provider!r}", hint="use 'cpu' or 'openvino'")
    if precision is not None and (provider != "openvino" or precision not in PRECISIONS):
        raise BackendError(f"precision {precision!r} is not available with provider {provider!r}",
                           hint="precision 'bf16' or 'fp32' goes with provider 'openvino'")
    if truncation not in TRUNCATION:
        raise BackendError(f"unknown truncation setting {truncation!r}", hint="use 'error' or 'left'")
    for label, v in (("batch_size", batch_size), ("max_batch_tokens", max_batch_tokens),
                     ("generate_batch_size", generate_batch_size)):
        if label != "max_batch_tokens" and v is None:
            continue  # the default depends on the graph (ragged: batched; otherwise 1)
        if not isinstance(v, int) or v < 1:
            raise BackendError(f"{label} must be a positive integer, not {v!r}")
    if not isinstance(kv_reuse_mb, int) or kv_reuse_mb < 0:
        raise BackendError(f"kv_reuse_mb must be a non-negative integer, not {kv_reuse_mb!r}")
    for label, v in (("threads", threads), ("max_length", max_length)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise BackendError(f"{label} must be a positive integer, not {v!r}")


def find_model_file(model_dir: Path) -> Path:
    """The decoder graph of an export: model.onnx, the older optimum name, or the only .onnx file there."""
    model_path = model_dir / "model.onnx"
    if not model_path.is_file() and (model_dir / "decoder_model_merged.onnx").is_file():
        model_path = model_dir / "decoder_model_merged.onnx"  # older optimum layout
    if not model_path.is_file():
        cands = sorted(model_dir.glob("*.onnx"))
        if len(cands) != 1:
            raise BackendError(f"no model.onnx in {model_dir}",
                               hint="export with `optimum-cli export onnx --task text-generation-with-past`")
        model_path = cands[0]
    return model_path


def check_decoder_export(proto: Any, model_path: Path) -> None:
    """A causal-LM decoder export has input_ids, attention_mask and logits; anything else is named, not run."""
    in_names = {i.name for i in proto.graph.input}
    out_names = {o.name for o in proto.graph.output}
    if not {"input_ids", "attention_mask"} <= in_names or "logits" not in out_names:
        raise BackendError(f"{model_path} is not a causal-LM decoder export (needs inputs input_ids, "
                           "attention_mask and output logits)",
                           hint="export with `optimum-cli export onnx --task text-generation-with-past`")


def create_session(blob: bytes, model_path: Path, settings: dict[str, Any]) -> Any:
    """An onnxruntime session for a serialised graph of the model at ``model_path``, with the backend's options."""
    from backends.onnx._ort import import_onnxruntime

    ort = import_onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = settings["threads"]
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    # busy-waiting worker threads: faster on an idle machine, slower on an oversubscribed one (`spinning`)
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if settings["spinning"] else "0")
    # (keep onnxruntime's memory arena: without it peak RSS at batch 32 measured 3.1 GB instead of 1.1 GB)
    so.add_session_config_entry("session.model_external_initializers_file_folder_path", str(model_path.parent))
    providers: list[Any] = ["CPUExecutionProvider"]
    if settings["provider"] == "openvino":
        if "OpenVINOExecutionProvider" not in ort.get_available_providers():
            raise BackendError("provider 'openvino' needs onnxruntime's OpenVINO build",
                               hint="pip install onnxruntime-openvino (it replaces the onnxruntime package; "
                                    "pip install onnxruntime brings the default back)")
        import json

        providers.insert(0, ("OpenVINOExecutionProvider", {
            "device_type": "CPU", "precision": "FP32", "num_of_threads": str(settings["threads"]),
            "load_config": json.dumps({"CPU": {"INFERENCE_PRECISION_HINT": settings["precision"].replace(
                "fp", "f")}})}))
    try:
        return ort.InferenceSession(blob, so, providers=providers)
    except Exception as exc:
        raise BackendError(f"onnxruntime cannot load {model_path}: {exc}",
                           hint="re-export or re-import the model") from None


def length_batches(lengths: list[int], batch_size: int, max_batch_tokens: int) -> list[list[int]]:
    """Length-bucketed batches: indices sorted by length, cut by batch size and padded-token budget."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return cut_batches(order, dict(enumerate(lengths)), batch_size, max_batch_tokens)


def left_pad(seqs: list[list[int]], pad: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    S = max(len(s) for s in seqs)
    ids = np.full((len(seqs), S), pad, np.int64)
    mask = np.zeros((len(seqs), S), np.int64)
    for r, s in enumerate(seqs):
        ids[r, S - len(s):] = s
        mask[r, S - len(s):] = 1
    pos = np.clip(np.cumsum(mask, axis=1) - 1, 0, None)
    return ids, mask, pos


def kv_layout(past: Any, cfg: dict[str, Any]) -> tuple[int, int, Any]:
    """(KV heads, head size, dtype) of a past_key_values input: its static shape where the export has one, else the
    model's config.json."""
    heads = cfg.get("num_attention_heads", 1)
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    head_dim = int(cfg.get("head_dim") or cfg.get("hidden_size", 0) // heads)
    shape = past.shape
    if len(shape) == 4 and isinstance(shape[1], int):
        kv_heads = shape[1]
    if len(shape) == 4 and isinstance(shape[3], int):
        head_dim = shape[3]
    return kv_heads, head_dim, (np.float16 if "float16" in past.type else np.float32)
