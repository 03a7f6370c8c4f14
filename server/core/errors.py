"""Errors of the embedding core (engine, runtime, batching, options), free of HTTP.

The core says what went wrong, in words a client may read; `server/http/error_responses.py`
alone decides the status code and how each dialect shows it.
"""

from __future__ import annotations

import json


class CoreError(Exception):
    """Something the core refused or failed to do; `message` is safe to show."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(CoreError):
    """The request is malformed or asks for something impossible."""


class InvalidOption(InvalidRequest):
    """An entry of `options` has a wrong type or an absurd value."""


class QueueFull(CoreError):
    """Too many requests are pending; the client may try again later."""

    def __init__(self) -> None:
        super().__init__("server busy, please try again.  maximum pending requests exceeded")


class LoadFailed(CoreError):
    """A model's file is broken or llama.cpp refused it.

    The message names the model as the client asked for it; `detail`, which
    may hold store paths, is for the server's log only.
    """

    def __init__(self, name: str, reason: str, detail: str) -> None:
        super().__init__(f"failed to load model {go_quote(name)}: {reason}")
        self.detail = detail


class ModelStopped(CoreError):
    """The process running the model ended under the request (a crash, an abort, a kill)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"model {go_quote(name)} stopped unexpectedly: {reason}")


class ModelHeldBack(CoreError):
    """The model's file keeps ending its runner, so it is not loaded again for now."""

    def __init__(self, name: str, crashes: int) -> None:
        super().__init__(
            f"model {go_quote(name)} stopped unexpectedly {crashes} times within a minute; "
            "it is held back until its file changes or emberd restarts"
        )


class InvalidVectors(CoreError):
    """The model computed NaN or Inf values."""

    def __init__(self) -> None:
        super().__init__("embedding contains NaN or Inf values")


def go_quote(text: str) -> str:
    """Quote like Go's %q, as Ollama's messages do."""
    return json.dumps(text, ensure_ascii=False)


def reason_of(exc: Exception) -> str:
    """What went wrong, without the store path that `str(exc)` may carry."""
    return str(getattr(exc, "reason", exc))
