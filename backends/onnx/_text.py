"""Tokenizer, chat template and special tokens of a model directory — everything but the ONNX session.

This is cheap to load (no weights), so ``render_prompt`` can show the exact text a model sees.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from moraleval.backend import Prompt
from moraleval.errors import BackendError

_END_TOKENS = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<|end|>", "</s>")
_SENTINEL = "\u2063moraleval-prefill\u2063"


class ModelText:
    """Tokenizer + chat template of one model directory (optimum layout)."""

    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        self.directory = Path(directory)
        try:
            self.config: dict[str, Any] = json.loads((self.directory / "config.json").read_text("utf-8"))
        except FileNotFoundError:
            raise BackendError(f"{self.directory} has no config.json",
                               hint="a model directory needs the files `optimum-cli export onnx` writes") from None
        except ValueError as exc:
            raise BackendError(f"{self.directory / 'config.json'} is not valid JSON ({exc})") from None
        try:
            self.tokenizer = Tokenizer.from_file(str(self.directory / "tokenizer.json"))
        except Exception as exc:  # tokenizers raises its own Exception type
            raise BackendError(f"cannot load {self.directory / 'tokenizer.json'}: {exc}",
                               hint="the model directory needs a fast-tokenizer tokenizer.json") from None
        tc_path = self.directory / "tokenizer_config.json"
        try:
            self.tokenizer_config: dict[str, Any] = json.loads(tc_path.read_text("utf-8")) if tc_path.exists() \
                else {}
        except ValueError as exc:
            raise BackendError(f"{tc_path} is not valid JSON ({exc})") from None
        self.chat_template: str | None = self.tokenizer_config.get("chat_template")
        if isinstance(self.chat_template, list):  # named templates: use "default"
            named = {t.get("name"): t.get("template") for t in self.chat_template}
            self.chat_template = named.get("default") or next(iter(named.values()), None)
        self._compiled = None
        self.vocab_size = int(self.config.get("vocab_size") or self.tokenizer.get_vocab_size())
        self.stop_ids = self._stop_ids()

    def _special(self, key: str) -> str | None:
        v = self.tokenizer_config.get(key)
        if isinstance(v, dict):
            v = v.get("content")
        return v

    def _stop_ids(self) -> frozenset[int]:
        ids: set[int] = set()
        eos = self.config.get("eos_token_id")
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, list):
            ids.update(int(x) for x in eos)
        names = [self._special("eos_token"), *_END_TOKENS]
        for name in names:
            if name:
                i = self.tokenizer.token_to_id(name)
                if i is not None:
                    ids.add(i)
        return frozenset(ids)

    # ------------------------------------------------------------------------------------------ rendering

    def _template(self):
        if self._compiled is None:
            if not self.chat_template:
                raise BackendError(f"model {self.directory.name} has no chat template",
                                   hint="use text prompts with this model, or add chat_template to "
                                        "tokenizer_config.json")
            from jinja2.exceptions import TemplateError
            from jinja2.sandbox import ImmutableSandboxedEnvironment

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)  # as transformers does

            def raise_exception(message: str) -> None:
                raise TemplateError(message)

            env.globals["raise_exception"] = raise_exception
            try:
                self._compiled = env.from_string(self.chat_template)
            except TemplateError as exc:
                raise BackendError(f"the chat template of {self.directory.name} does not compile: {exc}") from None
        return self._compiled

    def render(self, prompt: Prompt) -> str:
        """The exact text the model sees for ``prompt`` (chat messages through the model's chat template)."""
        if not prompt.is_chat:
            return prompt.text or ""
        from jinja2.exceptions import TemplateError

        msgs = [{"role": m.role, "content": m.content} for m in prompt.messages]
        ctx = {"bos_token": self._special("bos_token") or "", "eos_token": self._special("eos_token") or ""}
        tmpl = self._template()
        try:
            if msgs[-1]["role"] == "assistant":
                # prefill: render the turn with a sentinel after its content and cut there, so the turn stays open
                prefill = msgs[-1]["content"]
                msgs[-1] = {"role": "assistant", "content": prefill + _SENTINEL}
                full = tmpl.render(messages=msgs, add_generation_prompt=False, **ctx)
                cut = full.find(_SENTINEL)
                if cut < 0:
                    raise BackendError("the chat template dropped the assistant prefill message")
                return full[:cut]
            return tmpl.render(messages=msgs, add_generation_prompt=True, **ctx)
        except TemplateError as exc:
            raise BackendError(f"chat template of {self.directory.name} rejected the messages: {exc}") from None

    # ------------------------------------------------------------------------------------------ tokens

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        text = self.render(prompt)
        # a chat template writes its own BOS; a raw prompt gets the tokenizer's special tokens (if any)
        return self.tokenizer.encode(text, add_special_tokens=not prompt.is_chat).ids

    def encode_continuation(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids if text else []

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special)

    def token_text(self, i: int) -> str:
        """One token as text (byte-level decoded; special tokens kept)."""
        return self.tokenizer.decode([int(i)], skip_special_tokens=False)


@lru_cache(maxsize=8)
def _model_text_cached(directory: str, stamp: float) -> ModelText:
    return ModelText(Path(directory))


def model_text(directory: Path) -> ModelText:
    d = Path(directory)
    try:
        stamp = (d / "tokenizer.json").stat().st_mtime
    except OSError:
        stamp = 0.0
    return _model_text_cached(str(d.resolve()), stamp)
