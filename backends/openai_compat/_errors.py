"""Errors of the OpenAI-compatible backend.  All are ``BackendError``s, so the CLI renders them like any other.

Every error raised during a ``score``/``generate`` call carries ``answered`` / ``total``: results for the
answered requests were already handed to ``on_result`` (the runner caches them), so re-running the same command
resumes where the call stopped.
"""

from __future__ import annotations

from moraleval.errors import BackendError

RESUME_HINT = ("re-run the same command to resume: the requests answered so far are in the cache and are "
               "skipped")


class RemoteError(BackendError):
    """Base of the errors talking to an OpenAI-compatible server."""

    def __init__(self, message: str, *, hint: str | None = None, answered: int | None = None,
                 total: int | None = None) -> None:
        self.detail = message
        self.base_hint = hint
        self.answered = answered
        self.total = total
        if answered is not None and total is not None:
            message = (f"{message}\n  progress: {answered} of {total} requests answered, "
                       f"{total - answered} remain")
            hint = f"{hint}; {RESUME_HINT}" if hint else RESUME_HINT
        super().__init__(message, hint=hint)

    @property
    def remaining(self) -> int | None:
        if self.answered is None or self.total is None:
            return None
        return self.total - self.answered

    def with_progress(self, answered: int, total: int) -> "RemoteError":
        """The same error, raised at the end of a call with how far the call got."""
        return type(self)(self.detail, hint=self.base_hint, answered=answered, total=total)

    def __reduce__(self):  # picklable (worker processes, Ray)
        return (_rebuild, (type(self), self.detail, self.base_hint, self.answered, self.total))


def _rebuild(cls: type, detail: str, hint: str | None, answered: int | None, total: int | None) -> RemoteError:
    return cls(detail, hint=hint, answered=answered, total=total)


class ServerUnavailableError(RemoteError):
    """Retries or the call's error budget ran out (timeouts, 429, 5xx, dropped connections)."""


class RequestRejectedError(RemoteError):
    """The server refused a request for a reason retrying cannot fix (4xx: bad settings, auth, context length)."""


class BadResponseError(RemoteError):
    """The server answered, but not with what was asked (bad JSON, missing fields, wrong tokens)."""


class NoLogprobsError(BadResponseError):
    """The server gives no log-probabilities for this kind of request."""


class UnknownModelError(RemoteError):
    """``/v1/models`` does not list the configured model."""
