"""The API key is read from the environment variable named in the settings and shows up nowhere else: not in
identity(), repr, error messages or logs, even when the server quotes it back."""

from __future__ import annotations

import logging
import pickle

import pytest
from _openai_fake import FakeServer

from backends.openai_compat import OpenAICompatBackend, RemoteError, RequestRejectedError
from moraleval.backend import Prompt, ScoreRequest
from moraleval.errors import BackendError

KEY = "sk-test-SECRET-0123456789abcdef"
FAST = dict(backoff_base=0.01, backoff_max=0.02, echo_alignment="standard")


@pytest.fixture
def keyed(monkeypatch):
    monkeypatch.setenv("MORALEVAL_TEST_KEY", KEY)
    with FakeServer() as srv:
        yield srv


def req() -> ScoreRequest:
    return ScoreRequest(Prompt(text="Is the sky blue? Answer:"), (" yes",))


def test_key_is_sent_but_never_shown(keyed, caplog):
    caplog.set_level(logging.DEBUG)  # httpx/httpcore debug logs included
    with OpenAICompatBackend(base_url=keyed.base_url, model="fake-model", api_key_env="MORALEVAL_TEST_KEY",
                             **FAST) as b:
        b.score([req()])
        ident = b.identity()
        shown = [repr(b), str(ident), repr(b.settings), repr(b._api_key), repr(vars(b)), str(b.stats)]
    assert keyed.requests[-1]["headers"]["Authorization"] == f"Bearer {KEY}"
    assert ident["base_url"] == keyed.base_url and ident["model"] == "fake-model"
    for text in shown + [caplog.text]:
        assert KEY not in text
    assert "MORALEVAL_TEST_KEY" in repr(b)  # the variable's NAME is fine to show


def test_key_quoted_by_server_is_blanked(keyed, caplog):
    caplog.set_level(logging.DEBUG)
    keyed.fault = lambda n, path, body: ("status", 401, {}, f'{{"error": "Incorrect API key provided: {KEY}"}}')
    with OpenAICompatBackend(base_url=keyed.base_url, model="fake-model", api_key_env="MORALEVAL_TEST_KEY",
                             **FAST) as b, pytest.raises(RequestRejectedError) as ei:
        b.score([req()])
    text = str(ei.value)
    assert "HTTP 401" in text and "Incorrect API key provided: ***" in text
    assert "MORALEVAL_TEST_KEY" in text  # the hint names the variable to check
    assert KEY not in text and KEY not in caplog.text and KEY not in repr(ei.value.args)
    assert KEY not in str(pickle.loads(pickle.dumps(ei.value)))


def test_key_in_retry_logs_is_blanked(keyed, caplog):
    caplog.set_level(logging.DEBUG)
    keyed.fault = lambda n, path, body: ("status", 503, {}, f"upstream rejected token {KEY}")
    with OpenAICompatBackend(base_url=keyed.base_url, model="fake-model", api_key_env="MORALEVAL_TEST_KEY",
                             max_retries=2, **FAST) as b, pytest.raises(RemoteError) as ei:
        b.score([req()])
    assert "retry 1/2" in caplog.text
    assert KEY not in caplog.text and KEY not in str(ei.value)


def test_missing_variable_is_named_not_guessed(monkeypatch):
    monkeypatch.delenv("MORALEVAL_NO_SUCH_KEY", raising=False)
    with pytest.raises(BackendError, match="MORALEVAL_NO_SUCH_KEY"):
        OpenAICompatBackend(base_url="http://127.0.0.1:9/v1", model="m", api_key_env="MORALEVAL_NO_SUCH_KEY")


def test_credentials_in_url_stay_out_of_identity(keyed):
    url = f"http://bob:{KEY}@127.0.0.1:{keyed.port}/v1?api-key={KEY}"
    with OpenAICompatBackend(base_url=url, model="fake-model", check_model=False, **FAST) as b:
        assert KEY not in str(b.identity()) and KEY not in repr(b)
