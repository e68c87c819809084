"""Turning a chat ``Prompt`` into what an endpoint takes.

* ``/v1/completions`` needs text.  ``chat_template`` decides how turns become text:
  ``human_assistant`` (default, the paper's raw-LM format ``\\n\\nHuman: …\\n\\nAssistant: …``), ``chatml``
  (``<|im_start|>role\\n…<|im_end|>\\n``), or any Jinja2 chat template text (e.g. the model's own, from its
  ``tokenizer_config.json`` or GGUF metadata), rendered like Hugging Face does (``messages``,
  ``add_generation_prompt=True``, ``bos_token``, ``eos_token``).  A trailing assistant message is a prefill: the
  other turns are rendered with the generation prompt and the prefill text is appended, so the turn stays open.
* ``/v1/chat/completions`` takes the messages themselves; a prefill is sent as a final assistant message, with
  ``continue_final_message``/``add_generation_prompt=false`` where ``prefill="continue"`` (vLLM honours these).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from moraleval.backend import Message, Prompt


def split_prefill(prompt: Prompt) -> tuple[tuple[Message, ...], str | None]:
    msgs = prompt.messages
    if msgs and msgs[-1].role == "assistant":
        return msgs[:-1], msgs[-1].content
    return msgs, None


def _human_assistant(messages: tuple[Message, ...], prefill: str | None) -> str:
    parts: list[str] = []
    for m in messages:
        if m.role == "system":
            parts.append(m.content)
        elif m.role == "user":
            parts.append(f"\n\nHuman: {m.content}")
        else:
            parts.append(f"\n\nAssistant: {m.content}")
    parts.append("\n\nAssistant:" if prefill is None else f"\n\nAssistant: {prefill}")
    return "".join(parts)


def _chatml(messages: tuple[Message, ...], prefill: str | None) -> str:
    text = "".join(f"<|im_start|>{m.role}\n{m.content}<|im_end|>\n" for m in messages)
    return text + "<|im_start|>assistant\n" + (prefill or "")


@lru_cache(maxsize=8)
def _compile(source: str) -> Any:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ValueError(f"the chat template refused the messages: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def check_template(source: str) -> None:
    """Compile a Jinja2 chat template now, so a broken one fails when the backend is created."""
    from moraleval.errors import BackendError
    try:
        _compile(source)
    except Exception as exc:  # jinja2.TemplateSyntaxError and friends
        raise BackendError(f"chat_template is neither a built-in name (human_assistant, chatml) nor a valid "
                           f"Jinja2 template: {exc}") from exc


def render_text(prompt: Prompt, chat_template: str, bos_token: str = "", eos_token: str = "") -> str:
    """The text sent to ``/v1/completions`` for ``prompt``."""
    if prompt.text is not None:
        return prompt.text
    messages, prefill = split_prefill(prompt)
    if chat_template == "human_assistant":
        return _human_assistant(messages, prefill)
    if chat_template == "chatml":
        return _chatml(messages, prefill)
    text = _compile(chat_template).render(
        messages=[{"role": m.role, "content": m.content} for m in messages],
        add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token)
    return text + (prefill or "")


def chat_body(prompt: Prompt, prefill_mode: str) -> dict[str, Any]:
    """``messages`` (and prefill flags) for ``/v1/chat/completions``.  Raises ValueError for ``prefill="error"``."""
    if prompt.text is not None:
        raise ValueError("a text prompt cannot be sent to /v1/chat/completions")
    body: dict[str, Any] = {"messages": [{"role": m.role, "content": m.content} for m in prompt.messages]}
    _, prefill = split_prefill(prompt)
    if prefill is not None:
        if prefill_mode == "error":
            raise ValueError("the prompt ends with an assistant prefill, which this server's chat endpoint "
                             "cannot continue (prefill=\"error\")")
        if prefill_mode == "continue":
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
    return body
