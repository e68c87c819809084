"""Ragged, batch-invariant decoding for graphs built by moraleval: every number a sequence gets is the same bits
alone or in any batch.

Why padding moved bits (measured on this model, onnxruntime 1.32 CPU): (1) the in-graph ``Cos``/``Sin`` of the
rotary embedding are vectorised with a scalar tail, so a position's value depends on where it falls in the tensor
(i.e. on the batch's shape); (2) a left-padded row's keys sit at other indices than alone, and the GEMM reduction
over keys is blocked at fixed indices (k = 0..255, 256..), so the sum is associated differently; (3) Softmax's
vectorised row sum likewise.  A GEMM row itself is independent of the other rows (tested for every M).

The rewrite (in memory, at load time; the files on disk keep the ``optimum`` layout):

- the rotary ``Cos``/``Sin`` become ``Gather`` from tables computed once (float64, rounded to float32);
- each layer's attention (concat past, QK^T, mask, softmax, x V) becomes onnxruntime's ``com.microsoft``
  ``GroupQueryAttention`` with per-sequence ``seqlens_k``: it runs one GEMM + softmax + GEMM per (sequence, head)
  over exactly that sequence's keys, stored from index 0 (right-aligned padding never enters a reduction), so the
  shapes — and bits — are those of the sequence alone.  Past and present share one buffer (IOBinding), so a decode
  step writes its token in place instead of copying the whole cache.

On top of that :class:`RaggedDecoder` runs *continuous* batching: finished sequences leave the batch and queued
ones are prefilled into their slots, so no step is spent on padding or on finished rows.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Any, Callable, Mapping, Sequence

import attrs
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from moraleval.backend import GenerateRequest, GenerateResult, ScoreResult
from moraleval.errors import BackendError

from ._graph import NEXT_LOGPROBS, SELECT_POSITIONS, SELECT_TARGETS, SELECTED_LOGPROBS
from ._ort import run_interruptibly

SEQLENS = "seqlens_k"  # int32 [batch]: total length (past + new) of each sequence, minus 1
TOTAL = "total_sequence_length"  # int32 [1]: the longest total length of the batch


def _init(g: onnx.GraphProto, name: str) -> np.ndarray | None:
    for t in g.initializer:
        if t.name == name:
            return numpy_helper.to_array(t)
    return None


def make_ragged(model: onnx.ModelProto, max_positions: int, kv_cache: str = "float32") -> bool:
    """Rewrite a decoder written by :func:`backends.onnx._graph.build_llama` in place (see the module docstring).

    ``kv_cache="float16"`` keeps the KV cache in fp16 (half the bytes a position; GroupQueryAttention then takes
    fp16 queries, keys and values, computes in fp32 and returns fp16, cast back to fp32): other numbers than fp32,
    so the backend names it in its identity.  Returns False, leaving the graph untouched, for any other graph (a
    user's optimum export)."""
    if kv_cache not in ("float32", "float16"):
        raise ValueError(f"kv_cache must be float32 or float16, not {kv_cache!r}")
    half = kv_cache == "float16"
    g = model.graph
    if model.producer_name != "moraleval":
        return False
    nodes = list(g.node)
    by_name = {n.name: k for k, n in enumerate(nodes)}
    shape_q, shape_kv, inv_freq = _init(g, "shape.q"), _init(g, "shape.kv"), _init(g, "const.inv_freq")
    if shape_q is None or shape_kv is None or inv_freq is None:
        return False
    nh, hd, nkv = int(shape_q[2]), int(shape_q[3]), int(shape_kv[2])
    trig = [n for n in nodes if n.op_type in ("Cos", "Sin")]
    n_layers = sum(1 for n in nodes if n.name.endswith("/concat_k"))
    if n_layers == 0 or len(trig) != 2:
        return False

    # rotary tables: the graph computes float32(position) * inv_freq in float32, then cos/sin of [f, f]
    pos = np.arange(max_positions, dtype=np.float32)[:, None]
    freqs = pos * inv_freq.reshape(1, -1).astype(np.float32)
    emb = np.concatenate([freqs, freqs], axis=-1).astype(np.float64)
    tables = {"Cos": np.cos(emb).astype(np.float32), "Sin": np.sin(emb).astype(np.float32)}
    new_inits = [numpy_helper.from_array(tables[n.op_type], f"ragged.{n.op_type.lower()}_table") for n in trig]
    new_inits += [numpy_helper.from_array(np.array([0, 0, nh * hd], np.int64), "ragged.shape_q"),
                  numpy_helper.from_array(np.array([0, 0, nkv * hd], np.int64), "ragged.shape_kv")]
    for n in trig:
        k = nodes.index(n)
        nodes[k] = helper.make_node("Gather", [f"ragged.{n.op_type.lower()}_table", "position_ids"], list(n.output),
                                    axis=0, name=n.name + "/table")

    for i in range(n_layers):
        p = f"model.layers.{i}"
        ck, cv = by_name.get(f"{p}/concat_k"), by_name.get(f"{p}/concat_v")
        if ck is None or cv is None:
            return False
        k_in, v_in = nodes[ck].input[1], nodes[cv].input[1]
        q_in = ctx = None
        j = cv + 1
        while j < len(nodes) and ctx is None:
            n = nodes[j]
            if n.op_type == "Reshape" and n.input[1] == "shape.grouped_flat":
                q_in = n.input[0]
            elif n.op_type == "Reshape" and n.input[1] == "shape.hidden":
                ctx = j
            j += 1
        if q_in is None or ctx is None:
            return False
        flat = []
        for t, shape in ((q_in, "ragged.shape_q"), (k_in, "ragged.shape_kv"), (v_in, "ragged.shape_kv")):
            tt = f"{p}/ragged/{len(flat)}"
            flat.append(helper.make_node("Transpose", [t], [tt + ".bsnh"], perm=[0, 2, 1, 3], name=tt + "/T"))
            flat.append(helper.make_node("Reshape", [tt + ".bsnh", shape], [tt + ".flat"], name=tt + "/R"))
        qkv = [flat[1].output[0], flat[3].output[0], flat[5].output[0]]
        out = nodes[ctx].output[0]
        if half:
            for k, t in enumerate(qkv):
                flat.append(helper.make_node("Cast", [t], [t + ".fp16"], to=TensorProto.FLOAT16, name=t + "/fp16"))
                qkv[k] = t + ".fp16"
            out = out + ".fp16"
        gqa = helper.make_node(
            "GroupQueryAttention",
            [*qkv, f"past_key_values.{i}.key", f"past_key_values.{i}.value", SEQLENS, TOTAL],
            [out, f"present.{i}.key", f"present.{i}.value"],
            name=f"{p}/GroupQueryAttention", domain="com.microsoft", num_heads=nh, kv_num_heads=nkv,
            scale=1.0)  # q is already scaled by 1/sqrt(head_dim) in the graph
        tail = [helper.make_node("Cast", [out], [nodes[ctx].output[0]], to=TensorProto.FLOAT, name=out + "/fp32")] \
            if half else []
        nodes[ctx] = None  # type: ignore[call-overload]
        nodes[ck] = None  # type: ignore[call-overload]
        nodes[cv] = flat + [gqa] + tail  # type: ignore[call-overload]
    flat_nodes: list[onnx.NodeProto] = []
    for n in nodes:
        if n is None:
            continue
        flat_nodes.extend(n if isinstance(n, list) else [n])

    # dead-code elimination (the old mask/softmax chains), from the outputs to a fixed point (the scoring head's
    # nodes come after the MatMul that reads them, so one backward sweep is not enough)
    needed = {o.name for o in g.output}
    live = [False] * len(flat_nodes)
    changed = True
    while changed:
        changed = False
        for k in range(len(flat_nodes) - 1, -1, -1):
            n = flat_nodes[k]
            if not live[k] and any(o in needed for o in n.output):
                live[k] = changed = True
                needed.update(x for x in n.input if x)
    keep = [n for n, alive in zip(flat_nodes, live) if alive]
    del g.node[:]
    g.node.extend(keep)
    inits = [t for t in g.initializer if t.name in needed] + new_inits
    del g.initializer[:]
    g.initializer.extend(inits)
    inputs = [x for x in g.input if x.name in needed]
    if half:
        for x in [*inputs, *g.output]:
            if x.name.startswith(("past_key_values.", "present.")):
                x.type.tensor_type.elem_type = TensorProto.FLOAT16
    del g.input[:]
    g.input.extend(inputs)
    g.input.extend([helper.make_tensor_value_info(SEQLENS, TensorProto.INT32, ["batch_size"]),
                    helper.make_tensor_value_info(TOTAL, TensorProto.INT32, [1])])
    del g.value_info[:]
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return True


class PrefixCache:
    """The KV caches of recent generations' prompts, bounded in bytes, least recently used out.

    A later score request whose tokens start with one of them (the CoT follow-up turn: the same dialogue, the
    reasoning and the next human turn) extends that cache instead of recomputing the prefix.  Only positions
    computed by a prefill are stored, in the arithmetic's own precision, so the extension gives the same bits as
    computing from scratch (tested)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.entries: "OrderedDict[tuple[int, ...], list[np.ndarray]]" = OrderedDict()
        self.bytes = 0
        self.hits = 0
        self.reused_tokens = 0

    def put(self, ids: Sequence[int], kv: list[np.ndarray]) -> None:
        size = sum(a.nbytes for a in kv)
        key = tuple(ids)
        if size > self.max_bytes or key in self.entries:
            return
        self.entries[key] = kv
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self.entries.popitem(last=False)
            self.bytes -= sum(a.nbytes for a in old)

    def longest(self, ids: Sequence[int]) -> tuple[int, list[np.ndarray] | None]:
        """(length of the longest stored prompt that ``ids`` starts with, its KV) — (0, None) if none.

        Only a *whole* stored prompt counts (the follow-up turn extends its generation's prompt).  A request that
        merely shares leading tokens with one (the Q+IF prompt shares its human turn with the CoT generation
        prompt) is computed from scratch: extending a truncated cache gave log-probs ~1e-5 away from scratch on
        the default model, so the result would depend on which generations ran earlier in the process (a resumed
        run, or another order, would store other numbers)."""
        best, best_key = 0, None
        arr = np.asarray(ids)
        for key in self.entries:
            n = len(key)
            if n <= best or n > len(arr):
                continue
            if np.array_equal(np.asarray(key), arr[:n]):
                best, best_key = n, key
        if best_key is None:
            return 0, None
        self.entries.move_to_end(best_key)
        return best, self.entries[best_key]


MIN_REUSE = 16  # shortest shared prefix worth a separate extension pass
# Every prefill pads its batch to the longest prompt + PREFILL_PAD positions, so that *every* sequence is padded.
# onnxruntime's GroupQueryAttention (CPU) computes a sequence that fills the batch's length exactly otherwise than a
# padded one, and the two round differently when the length is 128k + 1 (measured on onnxruntime 1.32 for every
# length 1..1099: 129, 257, ... differ; the quick start's two 129-token Q+IF prompts moved by 1.5e-5 next to any
# longer prompt), whereas a padded sequence gets the same bits whatever the padding (every length 1..1099, padded by
# 1, 2 and 3..139 positions, alone and in a batch: identical).  The padded positions add exact zeros.
# Until issue 25 every prefill was padded to a multiple of 64 positions (PREFILL_ALIGN), which padded every sequence
# except those of exactly 64k tokens (never 128k + 1) and therefore gave the same bits as padding by one, at the
# cost of up to 63 positions per prompt (lm-eval's BBQ prompts in the runner's calls of 8: 82 % more positions than
# tokens).
PREFILL_PAD = 1
# The identity's name for this prefill arithmetic: "prefill_align": 64 since the 64-alignment; padding by one gives
# the same bits (above), so the name stays and caches filled since then stay valid.
PREFILL_ARITHMETIC = 64
# a scoring group keeps its prompts' caches for the continuations: at most this many times max_batch_tokens
# positions (fp32: 46 KB a position for the default model)
SCORE_GROUP_POSITIONS_PER_BATCH_TOKEN = 1


@attrs.define
class DecodeTiming:
    """Where generation time goes, summed over a decoder's life: prompt prefills (compute-bound, the same cost
    one at a time or batched) and decode steps (the part batching speeds up).  ``decode_rows`` / ``decode_steps``
    is the mean number of sequences per step, i.e. how full the batch was kept."""

    prefill_s: float = 0.0
    prefill_rows: int = 0
    prefill_positions: int = 0  # positions run, PREFILL_PAD included
    decode_s: float = 0.0
    decode_steps: int = 0
    decode_rows: int = 0  # tokens decoded by steps (a sequence's first token comes from its prefill)
    score_step_s: float = 0.0  # scoring: the continuations' passes after the prompts' prefills
    score_steps: int = 0
    score_step_rows: int = 0  # prefix-tree nodes run

    def as_dict(self) -> dict[str, float | int]:
        return attrs.asdict(self)


class RaggedDecoder:
    """Scoring and generation on a graph rewritten by :func:`make_ragged`.

    ``pick(next_logprobs_row, request, rng) -> token`` and the tokenizer come from the backend."""

    def __init__(self, backend: Any) -> None:
        self.be = backend
        self.session = backend.session
        self.past_names: list[str] = backend._past_names
        self.present_names: list[str] = backend._present_names
        self.nkv, self.hd, self.dtype = backend._kv_heads, backend._head_dim, backend._past_dtype
        self.prefixes = PrefixCache(int(backend.settings["kv_reuse_mb"]) << 20)
        self.timing = DecodeTiming()

    # ------------------------------------------------------------------------------------------ passes

    def _feed(self, ids: np.ndarray, pos: np.ndarray, seqlens: np.ndarray, sel_pos: np.ndarray,
              sel_tgt: np.ndarray) -> dict[str, np.ndarray]:
        return {"input_ids": ids.astype(np.int64), "position_ids": pos.astype(np.int64),
                SEQLENS: seqlens.astype(np.int32), TOTAL: np.array([int(seqlens.max()) + 1], np.int32),
                SELECT_POSITIONS: sel_pos.astype(np.int64), SELECT_TARGETS: sel_tgt.astype(np.int64)}

    def _run(self, feed: dict[str, np.ndarray], past: list[np.ndarray], want_present: bool) \
            -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        feed.update(zip(self.past_names, past))
        outs = [SELECTED_LOGPROBS, NEXT_LOGPROBS] + (self.present_names if want_present else [])
        try:
            res = run_interruptibly(lambda options: self.session.run(outs, feed, run_options=options))
        except Exception as exc:
            raise BackendError(f"onnxruntime failed on a batch of shape {tuple(feed['input_ids'].shape)}: "
                               f"{exc}") from None
        return res[0], res[1], res[2:]

    def prefill(self, seqs: list[list[int]], want_present: bool = True) \
            -> tuple[np.ndarray, list[np.ndarray]]:
        """Right-padded first pass: next-token log-probs at each sequence's last token, and the KV cache
        ([n, kv_heads, S, head_dim] per layer; row b valid up to len(seqs[b]))."""
        n, longest = len(seqs), max(len(s) for s in seqs)
        S = longest + PREFILL_PAD  # see PREFILL_PAD: every sequence padded, so batch-invariant rounding
        ids = np.zeros((n, S), np.int64)
        for r, s in enumerate(seqs):
            ids[r, :len(s)] = s
        lens = np.array([len(s) for s in seqs])
        pos = np.minimum(np.arange(S)[None, :], self.be.max_length - 1).repeat(n, axis=0)
        empty = np.zeros((n, self.nkv, 0, self.hd), self.dtype)
        feed = self._feed(ids, pos, lens - 1, (lens - 1)[:, None], np.zeros((n, 1)))
        feed[TOTAL] = np.array([S], np.int32)  # the padded length: past (none) + new
        t0 = time.perf_counter()
        _, next_lp, present = self._run(feed, [empty] * len(self.past_names), want_present)
        self.timing.prefill_s += time.perf_counter() - t0
        self.timing.prefill_rows += n
        self.timing.prefill_positions += n * S
        return next_lp, [np.ascontiguousarray(p[:, :, :longest]) for p in present]

    def _extend(self, ids: list[int], common: int, kv: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Run ``ids[common:]`` on top of the first ``common`` cached positions (a batch of one: onnxruntime's
        GroupQueryAttention extends a cache by several tokens only for one sequence at a time)."""
        new = ids[common:]
        S = len(new)
        past = [np.ascontiguousarray(k[None, :, :common]) for k in kv]
        pos = np.minimum(common + np.arange(S), self.be.max_length - 1)[None, :]
        feed = self._feed(np.array([new]), pos, np.array([common + S - 1]), np.array([[S - 1]]), np.zeros((1, 1)))
        _, next_lp, present = self._run(feed, past, want_present=True)
        return next_lp, present

    def prompt_states(self, prompts: list[list[int]], want_present: bool) \
            -> tuple[np.ndarray, list[np.ndarray]]:
        """Next-token log-probs after each prompt and (if wanted) the KV caches [B, kv_heads, S, head_dim]:
        prompts that extend a stored generation reuse its cache, the others are prefilled together."""
        reuse = {}
        if self.prefixes.entries:
            for b, ids in enumerate(prompts):
                common, kv = self.prefixes.longest(ids)
                # a strict extension only: the last prompt token must run (its output is the score), and
                # running it from a cache cut short is what PrefixCache.longest avoids
                if MIN_REUSE <= common < len(ids):
                    reuse[b] = (common, kv)
        if not reuse:
            return self.prefill(prompts, want_present)
        fresh = [b for b in range(len(prompts)) if b not in reuse]
        S = max(len(p) for p in prompts)
        next_lp = None
        present = [np.zeros((len(prompts), self.nkv, S, self.hd), self.dtype) for _ in self.past_names] \
            if want_present else []
        if fresh:
            lp, pr = self.prefill([prompts[b] for b in fresh], want_present)
            next_lp = np.zeros((len(prompts), lp.shape[1]), lp.dtype)
            next_lp[fresh] = lp
            for dst, src in zip(present, pr):
                dst[fresh, :, :src.shape[2]] = src
        for b, (common, kv) in reuse.items():
            lp, pr = self._extend(prompts[b], common, kv)
            self.prefixes.hits += 1
            self.prefixes.reused_tokens += common
            if next_lp is None:
                next_lp = np.zeros((len(prompts), lp.shape[1]), lp.dtype)
            next_lp[b] = lp[0]
            for dst, src in zip(present, pr):
                dst[b, :, :len(prompts[b])] = src[0, :, :len(prompts[b])]
        return next_lp, present  # type: ignore[return-value]

    # ------------------------------------------------------------------------------------------ scoring

    def score(self, prompts: list[list[int]], conts: list[list[list[int]]], top_ks: list[int],
              emit: Callable[[int, ScoreResult], None]) -> None:
        """Score every request; ``emit(i, result)`` as each group of them is done.

        Requests are sorted by prompt length (so a prefill batch pads little) and taken in groups that share the
        continuation passes: every prompt is prefilled once, the first token of each continuation is read from its
        next-token distribution, and the later tokens run as a prefix tree over the whole group (below)."""
        order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
        budget = SCORE_GROUP_POSITIONS_PER_BATCH_TOKEN * self.be.settings["max_batch_tokens"]
        most = self.be.call_size("score")  # requests per group (what the runner hands over in one call)
        group: list[int] = []
        kept = 0  # positions of prompt caches the group keeps for its continuation passes
        for i in order:
            need = len(prompts[i]) if any(len(c) >= 2 for c in conts[i]) else 0
            if group and (kept + need > budget or len(group) >= most):
                self._score_group(group, prompts, conts, top_ks, emit)
                group, kept = [], 0
            group.append(i)
            kept += need
        if group:
            self._score_group(group, prompts, conts, top_ks, emit)

    def _prefill_batches(self, idx: list[int], prompts: list[list[int]]) -> list[list[int]]:
        """Consecutive prefill batches of ``idx`` (already in length order): ``batch_size`` prompts, padded
        positions within ``max_batch_tokens``."""
        return cut_batches(idx, {i: len(prompts[i]) + PREFILL_PAD for i in idx}, self.be.settings["batch_size"],
                           self.be.settings["max_batch_tokens"])

    def _score_group(self, idx: list[int], prompts: list[list[int]], conts: list[list[list[int]]],
                     top_ks: list[int], emit: Callable[[int, ScoreResult], None]) -> None:
        logprobs: dict[int, list[float]] = {}
        tops: dict[int, tuple[tuple[str, float], ...]] = {}
        kv: dict[int, list[np.ndarray]] = {}  # request -> per layer [kv_heads, prompt length, head_dim]
        for batch in self._prefill_batches(idx, prompts):
            keep = [i for i in batch if any(len(c) >= 2 for c in conts[i])]
            lp, present = self.prompt_states([prompts[i] for i in batch], want_present=bool(keep))
            for r, i in enumerate(batch):
                logprobs[i] = [float(lp[r, c[0]]) if c else 0.0 for c in conts[i]]
                tops[i] = self._top(lp[r], top_ks[i])
                if i in keep:
                    kv[i] = [p[r, :, :len(prompts[i])] for p in present]
        if kv:
            self._score_continuations([i for i in idx if i in kv], prompts, conts, kv, logprobs)
        for i in idx:
            emit(i, ScoreResult(tuple(logprobs[i]), tuple(len(c) for c in conts[i]), tops[i]))

    def _top(self, row: np.ndarray, k: int) -> tuple[tuple[str, float], ...]:
        """The ``k`` most likely next tokens (decoded) with their log-probs, most likely first (ties: lower id)."""
        k = min(k, row.shape[0])
        if k <= 0:
            return ()
        cand = np.argpartition(-row, k - 1)[:k]
        cand = cand[np.lexsort((cand, -row[cand]))]
        return tuple((self.be.text.token_text(int(t)), float(row[t])) for t in cand)

    def _score_continuations(self, idx: list[int], prompts: list[list[int]], conts: list[list[list[int]]],
                             kv: dict[int, list[np.ndarray]], logprobs: dict[int, list[float]]) -> None:
        """The continuations' tokens after their first, as a prefix tree on top of each prompt's cache.

        A node is a request and a prefix of a continuation's tokens (the tokens fed so far); it is run once
        however many continuations share it (" Not known" and " Not enough" share " Not"), as one row of a
        decode-like pass that feeds the prefix's last token on top of its parent's cache and gives the
        distribution of the next token, from which every continuation through the node reads its log-prob.
        Depth by depth, every node of the current requests is one row of a pass (rows within
        ``max_batch_tokens`` / 2 positions of cache), each row's cache copied from its parent's row.  A row's
        numbers are the bits it gets alone (ragged GroupQueryAttention, and a matmul row does not depend on the
        other rows), which is also what one continuation at a time on its own copy of the cache computes."""
        budget = max(1, self.be.settings["max_batch_tokens"] // 2)
        # requests in chunks whose first-depth rows fit the budget; every depth of a chunk then fits it too
        chunks: list[list[int]] = []
        cur: list[int] = []
        rows = 0
        for i in idx:
            depth = max(len(c) for c in conts[i]) - 1
            width = max(len({tuple(c[:d]) for c in conts[i] if len(c) > d}) for d in range(1, depth + 1))
            cost = width * (len(prompts[i]) + depth)
            if cur and rows + cost > budget:
                chunks.append(cur)
                cur, rows = [], 0
            cur.append(i)
            rows += cost
        if cur:
            chunks.append(cur)
        for chunk in chunks:
            parents: dict[tuple[int, tuple[int, ...]], tuple[list[np.ndarray], int]] = {}
            depth = 1
            while True:
                nodes = sorted({(i, tuple(c[:depth])) for i in chunk for c in conts[i] if len(c) > depth})
                if not nodes:
                    break
                R = len(nodes)
                lens = np.array([len(prompts[i]) + depth - 1 for i, _ in nodes])  # cached positions per row
                cap = int(lens.max()) + 1
                bufs = [np.zeros((R, self.nkv, cap, self.hd), self.dtype) for _ in self.past_names]
                for r, (i, prefix) in enumerate(nodes):
                    if depth == 1:
                        src = kv[i]
                    else:
                        pb, pr = parents[(i, prefix[:-1])]
                        src = [b[pr, :, :lens[r]] for b in pb]
                    for dst, s in zip(bufs, src):
                        dst[r, :, :lens[r]] = s
                t0 = time.perf_counter()
                lp = self.step(np.array([prefix[-1] for _, prefix in nodes]), lens, bufs)
                self.timing.score_step_s += time.perf_counter() - t0
                self.timing.score_steps += 1
                self.timing.score_step_rows += R
                for r, (i, prefix) in enumerate(nodes):
                    for j, c in enumerate(conts[i]):
                        if len(c) > depth and tuple(c[:depth]) == prefix:
                            logprobs[i][j] += float(lp[r, c[depth]])
                parents = {node: (bufs, r) for r, node in enumerate(nodes)}
                depth += 1

    def step(self, tokens: np.ndarray, lens: np.ndarray, kv: list[np.ndarray]) -> np.ndarray:
        """One token per row on top of the rows' caches: ``tokens`` [A] at positions ``lens`` [A] (the tokens
        cached so far), ``kv`` per layer [A, kv_heads, capacity > lens, head_dim], past and present in one buffer
        (the new token's keys and values are written in place).  Returns the next-token log-probs [A, vocab]."""
        import onnxruntime as ort

        A = len(tokens)
        io = self.session.io_binding()
        io.bind_cpu_input("input_ids", np.asarray(tokens, np.int64).reshape(A, 1))
        io.bind_cpu_input("position_ids", np.minimum(lens, self.be.max_length - 1).astype(np.int64)[:, None])
        io.bind_cpu_input(SEQLENS, lens.astype(np.int32))
        io.bind_cpu_input(TOTAL, np.array([int(lens.max()) + 1], np.int32))
        io.bind_cpu_input(SELECT_POSITIONS, np.zeros((A, 1), np.int64))
        io.bind_cpu_input(SELECT_TARGETS, np.zeros((A, 1), np.int64))
        views = []
        for name, pname, buf in zip(self.past_names, self.present_names, kv):
            v = ort.OrtValue.ortvalue_from_numpy(buf if buf.shape[0] == A else buf[:A])
            views.append(v)
            io.bind_ortvalue_input(name, v)
            io.bind_ortvalue_output(pname, v)
        io.bind_output(NEXT_LOGPROBS)
        try:
            run_interruptibly(lambda options: self.session.run_with_iobinding(io, run_options=options))
        except Exception as exc:
            raise BackendError(f"onnxruntime failed on a decode step of {A} sequences: {exc}") from None
        out = io.get_outputs()[-1].numpy()
        del views
        return out

    # ------------------------------------------------------------------------------------------ generation

    def generate(self, prompts: list[list[int]], reqs: Sequence[GenerateRequest], batch_size: int,
                 emit: Callable[[int, GenerateResult], None],
                 between: Callable[[], None] | None = None) -> None:
        """Continuous batching: up to ``batch_size`` sequences decode together; a finished one leaves at once
        and the next queued prompt is prefilled into its slot.  ``emit(i, result)`` as each finishes;
        ``between()`` after every step (the backend scores finished sequences' follow-up turns there)."""
        be = self.be
        text = be.text
        budgets = [min(r.max_tokens, be.max_length - len(p)) for r, p in zip(reqs, prompts)]
        queue = deque(i for i in range(len(reqs)))
        for i in list(queue):
            if reqs[i].max_tokens <= 0:
                queue.remove(i)
                emit(i, GenerateResult("", 0, "length"))
        if not queue:
            return
        cap = max(len(prompts[i]) + budgets[i] for i in queue)
        B = min(batch_size, len(queue))
        kv = [np.zeros((B, self.nkv, cap, self.hd), self.dtype) for _ in self.past_names]
        # per slot: request index, generated tokens, rng, tokens in the cache, token to feed next
        slots: list[dict[str, Any]] = []

        def finish(state: dict[str, Any], reason: str, cut: str | None = None) -> None:
            out = cut if cut is not None else text.decode(state["gen"])
            emit(state["i"], GenerateResult(out, len(state["gen"]), reason))

        def accept(state: dict[str, Any], tok: int) -> bool:
            """Take the picked token; True while the sequence goes on."""
            r = reqs[state["i"]]
            if tok in text.stop_ids:
                finish(state, "eos")
                return False
            state["gen"].append(tok)
            if r.stop:
                t = text.decode(state["gen"])
                hit = [t.find(s) for s in r.stop if s and s in t]
                if hit:
                    finish(state, "stop", t[:min(hit)])
                    return False
            if len(state["gen"]) >= budgets[state["i"]]:
                finish(state, "length")
                return False
            state["next"] = tok
            return True

        def fill() -> None:
            """Prefill queued prompts into free slots (right after the active ones)."""
            while queue and len(slots) < B:
                take = []
                budget = be.settings["max_batch_tokens"]
                while queue and len(slots) + len(take) < B:
                    i = queue[0]
                    longest = max([len(prompts[j]) for j in take] + [len(prompts[i])])
                    if take and (len(take) + 1) * longest > budget:
                        break
                    take.append(queue.popleft())
                next_lp, present = self.prefill([prompts[i] for i in take])
                if self.prefixes.max_bytes:
                    # keep each prompt's cache for the turn scored on top of it later (the prompt's part only:
                    # positions computed by a prefill are the bits a from-scratch prefill computes; decode steps
                    # run onnxruntime's one-row kernels, which round differently — measured ~1e-6)
                    for r, i in enumerate(take):
                        L = len(prompts[i])
                        self.prefixes.put(prompts[i], [src[r, :, :L].copy() for src in present])
                for r, i in enumerate(take):
                    state = {"i": i, "gen": [], "rng": np.random.default_rng(reqs[i].seed), "len": len(prompts[i])}
                    if accept(state, pick_token(next_lp[r], reqs[i], state["rng"])):
                        row = len(slots)
                        L = state["len"]
                        for dst, src in zip(kv, present):
                            dst[row, :, :L] = src[r, :, :L]
                        slots.append(state)

        fill()
        while slots:
            A = len(slots)
            lens = np.array([s["len"] for s in slots])
            t0 = time.perf_counter()
            next_lp = self.step(np.array([s["next"] for s in slots]), lens, kv)
            self.timing.decode_s += time.perf_counter() - t0
            self.timing.decode_steps += 1
            self.timing.decode_rows += A
            alive = []
            for r, s in enumerate(slots):
                s["len"] += 1
                if accept(s, pick_token(next_lp[r], reqs[s["i"]], s["rng"])):
                    alive.append(r)
            if len(alive) < A:  # compact: the surviving rows move to the front, in order
                for new, old in enumerate(alive):
                    if new != old:
                        L = slots[old]["len"]
                        for buf in kv:
                            buf[new, :, :L] = buf[old, :, :L]
                slots[:] = [slots[r] for r in alive]
                fill()
            if between is not None:
                between()


def pick_token(lp: np.ndarray, req: GenerateRequest, rng: np.random.Generator) -> int:
    """The next token: argmax at temperature 0, else a draw from the nucleus (top_p) of the tempered distribution."""
    if req.temperature == 0:
        return int(np.argmax(lp))
    z = lp.astype(np.float64) / req.temperature
    p = np.exp(z - z.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    ps = p[order]
    if req.top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(ps), req.top_p) + 1)
        ps = ps[:keep] / ps[:keep].sum()
        order = order[:keep]
    u = rng.random()
    return int(order[min(int(np.searchsorted(np.cumsum(ps), u, side="right")), len(order) - 1)])


def cut_batches(order: Sequence[int], length: Mapping[int, int], batch_size: int, max_tokens: int) -> list[list[int]]:
    """``order`` (indices in length order) cut into consecutive batches of at most ``batch_size``, each within
    ``max_tokens`` positions once padded to its longest (the last one, in length order)."""
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) >= batch_size or (len(cur) + 1) * length[i] > max_tokens):
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out
