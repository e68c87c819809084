"""Reading the server's answers.  Every check names the request and quotes what the server sent; nothing here
guesses a number it was not given."""

from __future__ import annotations

import json
import math
from typing import Any

from backends.openai_compat._errors import BadResponseError, NoLogprobsError, RequestRejectedError

_MISSING = object()
POSITIVE_TOLERANCE = 1e-4  # servers round; a log-prob a hair above 0 is 0


def _show(obj: Any, limit: int = 300) -> str:
    try:
        text = json.dumps(obj, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(obj)
    if len(text) > limit:
        text = text[:limit] + f"… [{len(text) - limit} more characters]"
    return text


def field(obj: Any, path: str, label: str, *, kind: type | tuple[type, ...] | None = None,
          allow_none: bool = False) -> Any:
    """``field(data, "choices.0.logprobs", label)``: the value at a dotted path, or a BadResponseError that says
    which part is missing and quotes the surrounding object."""
    cur = obj
    walked = []
    for part in path.split("."):
        walked.append(part)
        nxt: Any = _MISSING
        if isinstance(cur, dict):
            nxt = cur.get(part, _MISSING)
        elif isinstance(cur, list) and part.isdigit():
            idx = int(part)
            nxt = cur[idx] if idx < len(cur) else _MISSING
        if nxt is _MISSING:
            where = ".".join(walked)
            if isinstance(cur, list):
                msg = f"{label}: the server's answer has no '{where}' (the list has {len(cur)} entries)"
                if not cur and part == "0":
                    msg = f"{label}: the server's answer has an empty '{'.'.join(walked[:-1])}' list"
            else:
                msg = f"{label}: the server's answer has no '{where}'"
            raise BadResponseError(f"{msg}; it sent: {_show(obj)}")
        cur = nxt
    if cur is None and allow_none:
        return None
    if kind is not None and not isinstance(cur, kind) or (cur is None and not allow_none):
        raise BadResponseError(f"{label}: '{path}' in the server's answer is {_show(cur, 100)}, not "
                               f"{_kind_name(kind)}; it sent: {_show(obj)}")
    return cur


def _kind_name(kind: Any) -> str:
    if kind is None:
        return "a value"
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join({dict: "an object", list: "a list", str: "a string", int: "an integer",
                        float: "a number", bool: "a boolean"}.get(k, k.__name__) for k in kinds)


def logprob_value(x: Any, label: str, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise BadResponseError(f"{label}: the log-prob of {what} is {_show(x, 80)}, not a number")
    x = float(x)
    if math.isnan(x) or x > POSITIVE_TOLERANCE:
        raise BadResponseError(f"{label}: the server gave {what} the log-prob {x!r}, which is not a log-probability")
    if math.isinf(x):
        raise BadResponseError(f"{label}: the server gave {what} the log-prob -inf (probability 0 after its "
                               f"sampling filters)", hint="check that the server applies no top-k/top-p/min-p "
                                                          "filter to logprobs")
    return min(x, 0.0)


def logsumexp(xs: list[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


# -- /v1/completions with echo --------------------------------------------------------------------------------

def echo_continuation(data: dict[str, Any], prompt_text: str, continuation: str, label: str,
                      top_k: int, shifted: bool = False, floor: Any = "min_top"
                      ) -> tuple[float, int, tuple[tuple[str, float], ...]]:
    """Sum of the continuation's token log-probs from an ``echo`` answer, the token count and (``top_k`` > 0)
    the alternatives at the continuation's first token.

    OpenAI semantics: ``token_logprobs[k]`` = log p(token k | tokens before k) and ``top_logprobs[k]`` is the
    distribution token k was drawn from.  llama-cpp-python (0.3.x, abetlen/llama-cpp-python#1983) is ``shifted``:
    its entry k comes from the distribution *after* token k, so the right value for token k is
    ``top_logprobs[k-1][token k]`` (present only if token k is among the top-n asked for).  A token missing from
    that list gets ``floor`` (``"min_top"``: the lowest listed log-prob, an upper bound) and the continuation is
    reported with n_tokens 0, the mark of a floored value."""
    choice = field(data, "choices.0", label, kind=dict)
    lp = choice.get("logprobs")
    if lp is None:
        raise NoLogprobsError(
            f"{label}: the server answered without logprobs: {_show(choice)}",
            hint="llama.cpp (llama-cpp-python) must be started with --logits_all true; servers without echo "
                 "logprobs (OpenAI chat models, Ollama) need scoring=\"chat_top_logprobs\" or scoring=\"sample\"")
    tokens = field(lp, "tokens", label, kind=list)
    token_lps = field(lp, "token_logprobs", label, kind=list)
    offsets = field(lp, "text_offset", label, kind=list)
    if not (len(tokens) == len(token_lps) == len(offsets)):
        raise BadResponseError(f"{label}: logprobs lists differ in length (tokens {len(tokens)}, token_logprobs "
                               f"{len(token_lps)}, text_offset {len(offsets)})")
    if not all(isinstance(t, str) for t in tokens) or not all(isinstance(o, int) for o in offsets):
        raise BadResponseError(f"{label}: logprobs.tokens must be strings and text_offset integers; got "
                               f"{_show(lp)}")
    text = choice.get("text")
    full = prompt_text + continuation
    if isinstance(text, str) and not text.startswith(full):
        raise BadResponseError(f"{label}: the server did not echo the prompt (echo: true); its text starts "
                               f"{_show(text[:120])}", hint="this server does not support echo; use "
                                                            "scoring=\"chat_top_logprobs\" or \"sample\"")
    start, end = len(prompt_text), len(full)
    idx = _select(tokens, offsets, start, end, continuation)
    if idx is None:  # the offsets may count a leading special token (e.g. BOS) the text lacks: align on the end
        idx = _select(tokens, _offsets_from_end(tokens, text, start), start, end, continuation)
    if idx is None:
        straddle = _straddling(tokens, offsets, start)
        if straddle is not None:
            raise RequestRejectedError(
                f"{label}: the continuation {continuation!r} does not start at a token boundary: the server "
                f"tokenised the joint text so that the token {straddle!r} spans the end of the prompt",
                hint="move the boundary (end the prompt before the space, start the continuation with it), or "
                     "use a backend that tokenises prompt and continuation separately")
        near = [(t, o) for t, o in zip(tokens, offsets) if o >= start - 10][:12]
        raise BadResponseError(f"{label}: the server's tokens do not spell the continuation {continuation!r} at "
                               f"character {start}; tokens from there (text, offset): {_show(near)}")
    tl = lp.get("top_logprobs")
    if shifted and tokens and isinstance(text, str) and not text.startswith(tokens[0]):
        # llama-cpp-python drops a leading BOS token from the echo (SmolLM2: BOS is ChatML's <|im_start|>), and
        # that one missing entry puts its rows back in line: read this answer the standard way
        shifted = False
    total = 0.0
    floored = False
    for k in idx:
        if shifted:
            row = tl[k - 1] if k >= 1 and isinstance(tl, list) and len(tl) >= k else None
            if not isinstance(row, dict):
                raise BadResponseError(f"{label}: no top_logprobs before token {tokens[k]!r} of the continuation "
                                       f"(the first token of a text has none: is the prompt empty?)")
            if tokens[k] not in row:
                values = [logprob_value(x, label, f"alternative {t!r}") for t, x in row.items()]
                total += min(values) if floor == "min_top" else float(floor)
                floored = True
                continue
            total += logprob_value(row[tokens[k]], label, f"token {tokens[k]!r}")
            continue
        if token_lps[k] is None:
            raise BadResponseError(f"{label}: the server gave no log-prob for token {tokens[k]!r} of the "
                                   f"continuation (the first token of a text has none: the prompt is empty?)")
        total += logprob_value(token_lps[k], label, f"token {tokens[k]!r}")
    top: tuple[tuple[str, float], ...] = ()
    if top_k > 0:
        pos = idx[0] - 1 if shifted else idx[0]
        alts = tl[pos] if isinstance(tl, list) and 0 <= pos < len(tl) else None
        if not isinstance(alts, dict):
            raise BadResponseError(f"{label}: asked for top-{top_k} alternatives, but logprobs.top_logprobs at "
                                   f"the continuation's first token is {_show(alts, 120)}")
        pairs = [(str(t), logprob_value(v, label, f"alternative {t!r}")) for t, v in alts.items()]
        top = tuple(sorted(pairs, key=lambda p: (-p[1], p[0]))[:top_k])
    return total, 0 if floored else len(idx), top


def _select(tokens: list[str], offsets: list[int] | None, start: int, end: int, continuation: str
            ) -> list[int] | None:
    if offsets is None:
        return None
    idx = [k for k, o in enumerate(offsets) if start <= o < end]
    if not idx or "".join(tokens[k] for k in idx) != continuation:
        return None
    if idx != list(range(idx[0], idx[-1] + 1)):
        return None
    return idx


def _offsets_from_end(tokens: list[str], text: Any, start: int) -> list[int] | None:
    """Offsets found by matching the tokens backwards against the echoed text, down to character ``start``.

    Servers differ in what they count in text_offset (a BOS token's text, special tokens such as <|im_start|>
    that detokenise to ""); the end of the text - continuation plus generated token - is plain text, so
    walking back from it finds the continuation's tokens whatever happened earlier."""
    if not isinstance(text, str):
        return None
    out = [-1] * len(tokens)
    pos = len(text)
    for k in range(len(tokens) - 1, -1, -1):
        if pos <= start and tokens[k]:
            break
        tok = tokens[k]
        if not text.startswith(tok, pos - len(tok)) or len(tok) > pos:
            return None
        pos -= len(tok)
        out[k] = pos
    return out


def _straddling(tokens: list[str], offsets: list[int], start: int) -> str | None:
    for t, o in zip(tokens, offsets):
        if o < start < o + len(t):
            return t
    return None


# -- /v1/chat/completions with top_logprobs -------------------------------------------------------------------

def chat_first_token_candidates(data: dict[str, Any], label: str) -> dict[str, float]:
    """token → log-prob at the first generated position (the top-k list plus the sampled token)."""
    choice = field(data, "choices.0", label, kind=dict)
    lp = choice.get("logprobs")
    if lp is None:
        raise NoLogprobsError(f"{label}: the chat endpoint answered without logprobs: {_show(choice)}",
                              hint="this server gives no chat logprobs; use scoring=\"sample\"")
    content = field(lp, "content", label, kind=list)
    if not content:
        raise BadResponseError(f"{label}: the chat answer has no generated token to read log-probs from (the "
                               f"model ended its turn at once?): {_show(choice)}")
    first = field(content, "0", label, kind=dict)
    cands: dict[str, float] = {}
    tops = field(first, "top_logprobs", label, kind=list)
    for k, alt in enumerate(tops):
        tok = field(alt, "token", label + f" (top_logprobs[{k}])", kind=str)
        cands[tok] = logprob_value(field(alt, "logprob", label, kind=(int, float)), label, f"token {tok!r}")
    tok = first.get("token")
    if isinstance(tok, str) and first.get("logprob") is not None:
        cands.setdefault(tok, logprob_value(first["logprob"], label, f"token {tok!r}"))
    if not cands:
        raise NoLogprobsError(f"{label}: the chat answer lists no top_logprobs: {_show(first)}",
                              hint="ask for them with top_logprobs >= 1 (OpenAI allows up to 20)")
    return cands


def norm(text: str, match: str) -> str:
    return text.strip() if match == "strip" else text


def choice_logprobs(cands: dict[str, float], continuations: tuple[str, ...], match: str, floor: Any
                    ) -> tuple[list[float], list[int]]:
    """Each continuation's log-prob as a single next token (tokens that match it after normalisation are summed);
    a continuation not among the candidates gets ``floor`` and n_tokens 0."""
    lowest = min(cands.values())
    lps, ns = [], []
    for c in continuations:
        key = norm(c, match)
        hits = [lp for t, lp in cands.items() if norm(t, match) == key]
        if hits:
            lps.append(logsumexp(hits))
            ns.append(1)
        else:
            lps.append(lowest if floor == "min_top" else float(floor))
            ns.append(0)
    return lps, ns


# -- generation ---------------------------------------------------------------------------------------------

def finish_reason(raw: Any, choice: dict[str, Any], has_stop: bool) -> str:
    if raw == "length":
        return "length"
    stop_reason = choice.get("stop_reason", _MISSING)  # vLLM: the matched stop string, or a token id / null
    if isinstance(stop_reason, str):
        return "stop"
    if stop_reason is not _MISSING:
        return "eos"
    # "stop" from other servers covers both a stop string and end-of-turn; with no stop strings it is the latter
    return "stop" if has_stop else "eos"


def generated_text(data: dict[str, Any], label: str, chat: bool) -> tuple[str, str, dict[str, Any]]:
    choice = field(data, "choices.0", label, kind=dict)
    if chat:
        text = field(choice, "message.content", label, kind=str, allow_none=True) or ""
    else:
        text = field(choice, "text", label, kind=str)
    return text, choice.get("finish_reason"), choice


def all_generated_texts(data: dict[str, Any], label: str, chat: bool) -> list[str]:
    choices = field(data, "choices", label, kind=list)
    if not choices:
        raise BadResponseError(f"{label}: the server's answer has an empty 'choices' list; it sent: {_show(data)}")
    out = []
    for k in range(len(choices)):
        path = f"choices.{k}.message.content" if chat else f"choices.{k}.text"
        out.append(field(data, path, label, kind=str, allow_none=chat) or "")
    return out


# -- which way does this server align echo log-probs? ----------------------------------------------------------

PROBE_TEXT = "A B C D E F G H I J K L M N O P " * 3


def probe_alignment(data: dict[str, Any], label: str) -> tuple[str, float, float]:
    """Decide from an echo answer for ``PROBE_TEXT`` whether token_logprobs are standard or shifted by one.

    In the text's third repetition every letter is predictable from the context (an LM copies), so under the right
    reading the log-probs are near 0; under the wrong one they are the log-probs of a letter repeating itself or
    missing from a top-n list, far below.  Returns (verdict, mean standard reading, mean shifted reading)."""
    choice = field(data, "choices.0", label, kind=dict)
    lp = choice.get("logprobs")
    if not isinstance(lp, dict):
        raise NoLogprobsError(f"{label}: the server answered an echo request without logprobs: {_show(choice)}",
                              hint="llama.cpp (llama-cpp-python) must be started with --logits_all true; servers "
                                   "without echo logprobs need scoring=\"chat_top_logprobs\" or \"sample\"")
    tokens = field(lp, "tokens", label, kind=list)
    token_lps = field(lp, "token_logprobs", label, kind=list)
    offsets = field(lp, "text_offset", label, kind=list)
    tops = lp.get("top_logprobs") if isinstance(lp.get("top_logprobs"), list) else []
    start = 2 * len(PROBE_TEXT) // 3
    std, shf = [], []
    for k, (tok, off) in enumerate(zip(tokens, offsets)):
        if not isinstance(off, int) or off < start or off >= len(PROBE_TEXT) or not tok.strip():
            continue
        v = token_lps[k] if k < len(token_lps) else None
        std.append(float(v) if isinstance(v, (int, float)) else -30.0)
        row = tops[k - 1] if 0 < k <= len(tops) else None
        w = row.get(tok) if isinstance(row, dict) else None
        shf.append(float(w) if isinstance(w, (int, float)) else -30.0)
    if len(std) < 5:
        raise BadResponseError(f"{label}: the echo answer for the alignment probe has too few tokens: {_show(lp)}",
                               hint="set echo_alignment to \"standard\" or \"shifted\"")
    ms, mh = sum(std) / len(std), sum(shf) / len(shf)
    if ms > mh + 1.0:
        return "standard", ms, mh
    if mh > ms + 1.0:
        return "shifted", ms, mh
    raise BadResponseError(f"{label}: cannot tell how this server aligns echo log-probs (mean log-prob of a "
                           f"predictable text: {ms:.2f} read the standard way, {mh:.2f} read shifted by one)",
                           hint="set echo_alignment to \"standard\" (OpenAI semantics, vLLM) or \"shifted\" "
                                "(llama-cpp-python 0.3.x)")
