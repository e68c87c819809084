"""OpenAI-compatible remote backend (vLLM, llama.cpp server, Ollama, OpenAI).  See docs/backends/openai.md."""

from __future__ import annotations

from backends.openai_compat._backend import OpenAICompatBackend
from backends.openai_compat._errors import (BadResponseError, NoLogprobsError, RemoteError, RequestRejectedError,
                                            ServerUnavailableError, UnknownModelError)
from backends.openai_compat._settings import Settings
from backends.openai_compat._transport import Stats

__all__ = ["OpenAICompatBackend", "Settings", "Stats", "RemoteError", "ServerUnavailableError",
           "RequestRejectedError", "BadResponseError", "NoLogprobsError", "UnknownModelError"]
