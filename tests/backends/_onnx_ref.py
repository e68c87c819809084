"""Independent numpy Llama forward pass and tiny random models for the ONNX backend tests."""

from __future__ import annotations

import numpy as np

from backends.onnx._graph import LlamaConfig

TINY = LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0,
                   max_position_embeddings=64)


def random_weights(cfg: LlamaConfig = TINY, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    H, F, hd = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    kv = cfg.num_key_value_heads * hd

    def lin(out: int, inp: int) -> np.ndarray:
        return (rng.standard_normal((out, inp)) / np.sqrt(inp)).astype(np.float32)

    w = {"embed": (0.05 * rng.standard_normal((cfg.vocab_size, H))).astype(np.float32),
         "norm": (1 + 0.1 * rng.standard_normal(H)).astype(np.float32)}
    for i in range(cfg.num_hidden_layers):
        w[f"blocks.{i}.attn_norm"] = (1 + 0.1 * rng.standard_normal(H)).astype(np.float32)
        w[f"blocks.{i}.ffn_norm"] = (1 + 0.1 * rng.standard_normal(H)).astype(np.float32)
        w[f"blocks.{i}.q"] = lin(H, H)
        w[f"blocks.{i}.k"] = lin(kv, H)
        w[f"blocks.{i}.v"] = lin(kv, H)
        w[f"blocks.{i}.o"] = lin(H, H)
        w[f"blocks.{i}.gate"] = lin(F, H)
        w[f"blocks.{i}.up"] = lin(F, H)
        w[f"blocks.{i}.down"] = lin(H, F)
    return w


def _rms(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def reference_logits(weights: dict[str, np.ndarray], cfg: LlamaConfig, ids: list[int]) -> np.ndarray:
    """Logits [seq, vocab] for one unpadded sequence, in float64, written straight from the Llama paper/HF code."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    nh, nkv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    S = len(ids)
    x = w["embed"][ids]
    pos = np.arange(S)[:, None]
    inv = 1.0 / cfg.rope_theta ** (np.arange(0, hd, 2) / hd)
    ang = pos * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)  # [S, hd/2]

    def rope(t: np.ndarray) -> np.ndarray:  # [heads, S, hd], rotate-half
        a, b = t[..., : hd // 2], t[..., hd // 2:]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)

    mask = np.triu(np.full((S, S), -np.inf), k=1)
    for i in range(cfg.num_hidden_layers):
        h = _rms(x, w[f"blocks.{i}.attn_norm"], cfg.rms_norm_eps)
        q = (h @ w[f"blocks.{i}.q"].T).reshape(S, nh, hd).transpose(1, 0, 2)
        k = (h @ w[f"blocks.{i}.k"].T).reshape(S, nkv, hd).transpose(1, 0, 2)
        v = (h @ w[f"blocks.{i}.v"].T).reshape(S, nkv, hd).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        rep = nh // nkv
        k, v = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + mask
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        ctx = (p @ v).transpose(1, 0, 2).reshape(S, nh * hd)
        x = x + ctx @ w[f"blocks.{i}.o"].T
        h = _rms(x, w[f"blocks.{i}.ffn_norm"], cfg.rms_norm_eps)
        g = h @ w[f"blocks.{i}.gate"].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ w[f"blocks.{i}.up"].T)) @ w[f"blocks.{i}.down"].T
    x = _rms(x, w["norm"], cfg.rms_norm_eps)
    return x @ w["embed"].T


def gguf_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """What llama.cpp's convert_hf_to_gguf does to Q/K rows (HF rotate-half order -> interleaved order)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' "
          "+ '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _bytes_to_unicode() -> list[str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def tiny_vocab(vocab_size: int) -> tuple[list[str], list[int], list[str]]:
    """Specials + the 256 byte-level symbols + merges of frequent English pairs, up to ``vocab_size``."""
    tokens = SPECIALS + _bytes_to_unicode()
    types = [3] * len(SPECIALS) + [1] * 256
    merges: list[str] = []
    words = ["Ġt", "he", "Ġthe", "in", "an", "er", "on", "Ġa", "re", "at", "en", "Ġs", "Ġw", "or", "it", "is",
             "Ġc", "Ġo", "Ġis", "Ġp", "ar", "ou", "Ġb", "Ġf", "Ġm", "ĠP", "Pa", "ris", "ĠPa", "ĠParis", "ca", "pi",
             "tal", "Ġcapi", "Ġcapital", "Ġof", "Fr", "ance", "Ġ(", "a)", "b)", "c)", "Ġ(a)"]
    pieces = {"Ġthe": ("Ġt", "he"), "Ġis": ("Ġ", "is"), "ris": ("r", "is"), "ĠPa": ("ĠP", "a"),
              "ĠParis": ("ĠPa", "ris"), "tal": ("t", "al"), "Ġcapi": ("Ġc", "api"), "Ġcapital": ("Ġcapi", "tal"),
              "Ġof": ("Ġo", "f"), "ance": ("an", "ce"), "Ġ(a)": ("Ġ(", "a)")}
    def add(tok: str) -> None:
        if tok in tokens or len(tokens) >= vocab_size:
            return
        a, b = pieces.get(tok, (tok[:-1], tok[-1]))
        add(a)
        add(b)
        if a in tokens and b in tokens and len(tokens) < vocab_size:
            tokens.append(tok)
            types.append(1)
            merges.append(f"{a} {b}")

    for wd in words:
        add(wd)
    i = 0
    letters = "etaoinshrdlucmfwypvbgk"
    while len(tokens) < vocab_size:  # filler merges so the vocab has exactly vocab_size entries
        tok = letters[i % len(letters)] + letters[(i // len(letters)) % len(letters)]
        i += 1
        if tok not in tokens:
            tokens.append(tok)
            types.append(1)
            merges.append(f"{tok[0]} {tok[1]}")
    return tokens, types, merges


def write_tiny_gguf(path, weights: dict[str, np.ndarray], cfg: LlamaConfig = TINY, *, arch: str = "llama",
                    embed_q8: bool = False, linear_q4_1: bool = False) -> None:
    """A GGUF as llama.cpp's converter writes it: Q/K rows permuted, optional Q8_0 embedding and Q4_1 linear
    layers."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(cfg.rope_theta)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_dimension_count(cfg.head_dim)
    w.add_vocab_size(cfg.vocab_size)
    tokens, types, merges = tiny_vocab(cfg.vocab_size)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHATML)
    if embed_q8:
        q = gguf.quants.quantize(weights["embed"], gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor("token_embd.weight", q,
                     raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        w.add_tensor("token_embd.weight", weights["embed"])
    w.add_tensor("output_norm.weight", weights["norm"])
    names = {"attn_norm": "attn_norm", "ffn_norm": "ffn_norm", "q": "attn_q", "k": "attn_k", "v": "attn_v",
             "o": "attn_output", "gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down"}
    for i in range(cfg.num_hidden_layers):
        for ours, theirs in names.items():
            arr = weights[f"blocks.{i}.{ours}"]
            if ours == "q":
                arr = gguf_permute(arr, cfg.num_attention_heads)
            elif ours == "k":
                arr = gguf_permute(arr, cfg.num_key_value_heads)
            arr = np.ascontiguousarray(arr)
            if linear_q4_1 and arr.ndim == 2:
                q = gguf.quants.quantize(arr, gguf.GGMLQuantizationType.Q4_1)
                w.add_tensor(f"blk.{i}.{theirs}.weight", q, raw_dtype=gguf.GGMLQuantizationType.Q4_1)
            else:
                w.add_tensor(f"blk.{i}.{theirs}.weight", arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def q8_roundtrip(a: np.ndarray) -> np.ndarray:
    import gguf

    q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
    return gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).reshape(a.shape).astype(np.float32)
