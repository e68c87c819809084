"""Read a Llama GGUF file: dequantised weights in Hugging Face layout, config, tokenizer and chat template."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np

from moraleval.errors import BackendError

from ._graph import BlockQuant, LlamaConfig

# GGUF token types (llama.cpp): 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
_CONTROL, _USER_DEFINED = 3, 4
_SUPPORTED_PRE = ("smollm", "gpt2", "default")


@attrs.frozen
class GgufModel:
    config: LlamaConfig
    weights: dict[str, np.ndarray] = attrs.field(eq=False, repr=False)
    tokens: list[str] = attrs.field(repr=False)
    token_types: list[int] = attrs.field(repr=False)
    merges: list[str] = attrs.field(repr=False)
    pre: str
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None
    unk_token_id: int | None
    add_bos: bool
    chat_template: str | None
    name: str
    blocks: dict[str, BlockQuant] = attrs.field(factory=dict, eq=False, repr=False)


def _field(reader: Any, key: str, default: Any = None) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved RoPE order -> Hugging Face rotate-half order)."""
    out, d = w.shape
    hd = out // n_head
    return w.reshape(n_head, hd // 2, 2, d).swapaxes(1, 2).reshape(w.shape)


def _blocks(t: Any) -> BlockQuant | None:
    """The raw blocks of a Q4_1 or Q8_0 tensor as MatMulNBits parameters (exact), else None."""
    from gguf import GGMLQuantizationType as Q

    data = np.asarray(t.data)
    if t.tensor_type == Q.Q4_1:  # block: d fp16, m fp16, 16 bytes (low nibbles = 0..15, high = 16..31)
        b = data.reshape(data.shape[0], -1, 20)
        d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        m = b[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        qs = b[..., 4:20]
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).reshape(data.shape[0], -1)
        # w = d*q + m = d * (q - (-m/d)); a block with d == 0 is constant m: scale m, q 0, zero point -1
        zero = d == 0
        scale = np.where(zero, m, d)
        with np.errstate(divide="ignore", invalid="ignore"):
            zp = np.where(zero, -1.0, -m / np.where(zero, 1.0, d)).astype(np.float32)
        if zero.any():
            q = q.reshape(*d.shape, 32)
            q[zero] = 0
            q = q.reshape(data.shape[0], -1)
        return BlockQuant(4, 32, q.astype(np.uint8), scale.astype(np.float32), zp)
    if t.tensor_type == Q.Q8_0:  # block: d fp16, 32 x int8
        b = data.reshape(data.shape[0], -1, 34)
        d = b[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
        q = (b[..., 2:34].view(np.int8).astype(np.int16) + 128).astype(np.uint8).reshape(data.shape[0], -1)
        return BlockQuant(8, 32, q, d, np.full_like(d, 128.0))
    return None


def read_gguf(path: Path, *, load_weights: bool = True, load_blocks: bool = False) -> GgufModel:
    try:
        from gguf import GGUFReader
        from gguf.quants import dequantize
    except ImportError as exc:  # pragma: no cover - gguf is a core dependency
        raise BackendError("reading GGUF files needs the 'gguf' package", hint="pip install gguf") from exc
    path = Path(path)
    if not path.is_file():
        raise BackendError(f"GGUF file not found: {path}")
    try:
        reader = GGUFReader(str(path), "r")
    except Exception as exc:  # the gguf package raises ValueError, struct.error, IndexError... on bad files
        raise BackendError(f"{path.name} is not a readable GGUF file ({type(exc).__name__}: {exc})",
                           hint="the file may be truncated or corrupt; re-import with `moraleval models import "
                                "--force`") from exc
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise BackendError(f"{path.name}: unsupported architecture {arch!r}",
                           hint="the GGUF importer handles Llama-architecture models only; export other models "
                                "with `optimum-cli export onnx` and pass the directory as `model`")
    a = "llama."
    n_head = int(_field(reader, a + "attention.head_count"))
    n_kv = int(_field(reader, a + "attention.head_count_kv", n_head))
    hidden = int(_field(reader, a + "embedding_length"))
    tokens = list(_field(reader, "tokenizer.ggml.tokens") or [])
    if _field(reader, a + "rope.scaling.type") not in (None, "none"):
        raise BackendError(f"{path.name}: RoPE scaling is not supported by the GGUF importer")
    rope_dims = _field(reader, a + "rope.dimension_count")
    if rope_dims is not None and int(rope_dims) != hidden // n_head:
        raise BackendError(f"{path.name}: partial rotary embeddings are not supported")
    tok_model = _field(reader, "tokenizer.ggml.model")
    if tok_model != "gpt2":
        raise BackendError(f"{path.name}: unsupported tokenizer model {tok_model!r} (byte-level BPE 'gpt2' only)")
    pre = _field(reader, "tokenizer.ggml.pre", "default")
    if pre not in _SUPPORTED_PRE:
        raise BackendError(f"{path.name}: unsupported pre-tokenizer {pre!r} (supported: {', '.join(_SUPPORTED_PRE)})")

    names = {t.name: t for t in reader.tensors}
    weights: dict[str, np.ndarray] = {}
    blocks: dict[str, BlockQuant] = {}
    n_layers = int(_field(reader, a + "block_count"))
    if load_weights:
        def get(name: str) -> np.ndarray:
            t = names.get(name)
            if t is None:
                raise BackendError(f"{path.name}: tensor {name!r} is missing")
            try:
                arr = dequantize(t.data, t.tensor_type)
            except Exception as exc:
                raise BackendError(f"{path.name}: cannot dequantise {name} ({exc})") from exc
            arr = np.asarray(arr, dtype=np.float32)
            want = tuple(int(x) for x in reversed(t.shape.tolist())) if len(t.shape) > 1 else (int(t.shape[0]),)
            if arr.shape != want:
                arr = arr.reshape(want)
            return arr

        def raw(key: str, name: str, n_head: int | None = None) -> None:
            if not load_blocks or name not in names:
                return
            bq = _blocks(names[name])
            if bq is None:
                return
            if n_head is not None:  # the same Q/K row permutation as for the float weights
                bq = bq.permute_rows(unpermute_qk(np.arange(bq.q.shape[0])[:, None], n_head)[:, 0])
            blocks[key] = bq

        weights["embed"] = get("token_embd.weight")
        raw("embed", "token_embd.weight")
        raw("lm_head", "output.weight")
        weights["norm"] = get("output_norm.weight")
        if "output.weight" in names:
            weights["lm_head"] = get("output.weight")
        for i in range(n_layers):
            p = f"blk.{i}."
            weights[f"blocks.{i}.attn_norm"] = get(p + "attn_norm.weight")
            weights[f"blocks.{i}.ffn_norm"] = get(p + "ffn_norm.weight")
            weights[f"blocks.{i}.q"] = unpermute_qk(get(p + "attn_q.weight"), n_head)
            weights[f"blocks.{i}.k"] = unpermute_qk(get(p + "attn_k.weight"), n_kv)
            weights[f"blocks.{i}.v"] = get(p + "attn_v.weight")
            weights[f"blocks.{i}.o"] = get(p + "attn_output.weight")
            weights[f"blocks.{i}.gate"] = get(p + "ffn_gate.weight")
            weights[f"blocks.{i}.up"] = get(p + "ffn_up.weight")
            weights[f"blocks.{i}.down"] = get(p + "ffn_down.weight")
            for ours, theirs in (("q", "attn_q"), ("k", "attn_k"), ("v", "attn_v"), ("o", "attn_output"),
                                 ("gate", "ffn_gate"), ("up", "ffn_up"), ("down", "ffn_down")):
                raw(f"blocks.{i}.{ours}", p + theirs + ".weight",
                    n_head if ours == "q" else n_kv if ours == "k" else None)

    vocab = _field(reader, a + "vocab_size")
    cfg = LlamaConfig(
        vocab_size=int(vocab) if vocab is not None else len(tokens),
        hidden_size=hidden,
        intermediate_size=int(_field(reader, a + "feed_forward_length")),
        num_hidden_layers=n_layers,
        num_attention_heads=n_head,
        num_key_value_heads=n_kv,
        rms_norm_eps=float(_field(reader, a + "attention.layer_norm_rms_epsilon", 1e-5)),
        rope_theta=float(_field(reader, a + "rope.freq_base", 10000.0)),
        max_position_embeddings=int(_field(reader, a + "context_length", 2048)),
        tie_word_embeddings="output.weight" not in names,
    )

    def opt_int(key: str) -> int | None:
        v = _field(reader, key)
        return None if v is None else int(v)

    return GgufModel(
        config=cfg, weights=weights, tokens=tokens,
        token_types=[int(x) for x in (_field(reader, "tokenizer.ggml.token_type") or [1] * len(tokens))],
        merges=list(_field(reader, "tokenizer.ggml.merges") or []), pre=str(pre),
        bos_token_id=opt_int("tokenizer.ggml.bos_token_id"), eos_token_id=opt_int("tokenizer.ggml.eos_token_id"),
        pad_token_id=opt_int("tokenizer.ggml.padding_token_id"),
        unk_token_id=opt_int("tokenizer.ggml.unknown_token_id"),
        add_bos=bool(_field(reader, "tokenizer.ggml.add_bos_token", False)),
        chat_template=_field(reader, "tokenizer.chat_template"),
        name=str(_field(reader, "general.name", path.stem)),
        blocks=blocks,
    )


def build_tokenizer(m: GgufModel):
    """A Hugging Face ``tokenizers`` byte-level BPE equal to the GGUF's own (llama.cpp) tokenisation."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {tok: i for i, tok in enumerate(m.tokens)}
    merges = [tuple(x.split(" ", 1)) for x in m.merges]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    if m.pre == "smollm":
        # llama.cpp's "smollm" pre-tokeniser: every digit alone, then the GPT-2 regex (no prefix space)
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                    pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                             use_regex=True)])
    else:
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tk.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, special=(tt == _CONTROL), normalized=False)
                for t, tt in zip(m.tokens, m.token_types) if tt in (_CONTROL, _USER_DEFINED)]
    tk.add_tokens(specials)
    if m.add_bos and m.bos_token_id is not None:
        bos = m.tokens[m.bos_token_id]
        tk.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                          special_tokens=[(bos, m.bos_token_id)])
    return tk


def tokenizer_config(m: GgufModel) -> dict[str, Any]:
    def tok(i: int | None) -> str | None:
        return None if i is None or i >= len(m.tokens) else m.tokens[i]

    added = {str(i): {"content": t, "special": tt == _CONTROL, "lstrip": False, "rstrip": False,
                      "normalized": False, "single_word": False}
             for i, (t, tt) in enumerate(zip(m.tokens, m.token_types)) if tt in (_CONTROL, _USER_DEFINED)}
    return {
        "added_tokens_decoder": added,
        "bos_token": tok(m.bos_token_id),
        "eos_token": tok(m.eos_token_id),
        "pad_token": tok(m.pad_token_id),
        "unk_token": tok(m.unk_token_id),
        "add_bos_token": m.add_bos,
        "add_prefix_space": False,
        "chat_template": m.chat_template,
        "clean_up_tokenization_spaces": False,
        "model_max_length": m.config.max_position_embeddings,
        "tokenizer_class": "GPT2Tokenizer",
    }
