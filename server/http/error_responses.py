"""The one table that maps every error to a status and message, and the HTTP errors.

The core raises its own errors (server/core/errors.py), the models and
backends theirs; routes raise the HTTP errors below. Only `error_response`
decides what a client sees, in the dialect (Ollama or OpenAI) of the route
that failed.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal, cast

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emberd.backends.base import BackendError, ModelLoadError, NonFiniteOnGpu, TokenOutOfRange
from emberd.models.capabilities import UnsupportedReranker
from emberd.models.errors import InvalidModelFile, InvalidModelName, ModelNotFound, ReadOnlyModel
from emberd.models.registry import ManifestNotFound, RegistryError
from emberd.server.core.durations import DurationError
from emberd.server.core.errors import (
    CoreError,
    InvalidRequest,
    InvalidVectors,
    QueueFull,
    go_quote,
    reason_of,
)
from emberd.server.http.api_types import (
    CohereErrorBody,
    ErrorBody,
    OpenAIErrorBody,
    OpenAIErrorDetail,
)

log = logging.getLogger("emberd.errors")

Dialect = Literal["ollama", "openai", "cohere"]


class ApiError(Exception):
    """An error whose status and message are known where it is raised."""

    status = 500
    # The request's body was left unread: its connection ends with the answer.
    closes_connection = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ApiError):
    """The request is malformed or asks for something impossible (400)."""

    status = 400


class Unauthorized(ApiError):
    """No valid API key (401)."""

    status = 401


class Forbidden(ApiError):
    """The request is refused for where it comes from (403)."""

    status = 403


class RequestTimeout(ApiError):
    """The request body did not arrive in time (408)."""

    status = 408
    closes_connection = True


class PayloadTooLarge(ApiError):
    """The request body is over the configured bound (413)."""

    status = 413
    closes_connection = True


class NotFound(ApiError):
    """Nothing at that name or path (404)."""

    status = 404


@dataclass(frozen=True)
class ErrorInfo:
    """What a client sees for an error."""

    status: int
    message: str


def _model_not_found(exc: Exception) -> ErrorInfo:
    assert isinstance(exc, ModelNotFound)
    return ErrorInfo(404, f"model {go_quote(exc.name)} not found, try pulling it first")


def _message(status: int) -> Callable[[Exception], ErrorInfo]:
    """The face of an error whose own message says it all."""
    return lambda e: ErrorInfo(status, getattr(e, "message", None) or str(e))


def _load_failure(exc: Exception) -> ErrorInfo:
    return ErrorInfo(500, f"failed to load model: {reason_of(exc)}")


def _os_error(exc: Exception) -> ErrorInfo:
    # strerror, not str(): the latter names the file, a path on this machine.
    return ErrorInfo(500, getattr(exc, "strerror", None) or "input/output error")


# Every error raised below the routes (the core, models, backends, durations)
# and its face; the most specific class listed wins.
_TABLE: dict[type[Exception], Callable[[Exception], ErrorInfo]] = {
    InvalidRequest: _message(400),
    QueueFull: _message(503),
    CoreError: _message(500),
    ModelNotFound: _model_not_found,
    ReadOnlyModel: _message(403),  # in Ollama's store: the message says how to remove it
    InvalidModelName: lambda e: ErrorInfo(400, "invalid model name"),
    TokenOutOfRange: _message(400),
    DurationError: _message(400),
    ManifestNotFound: _message(404),
    RegistryError: _message(500),
    InvalidModelFile: _load_failure,
    ModelLoadError: _load_failure,
    BackendError: _message(500),
    # The device is in the log (the backend logs it); the client gets the contract's words.
    NonFiniteOnGpu: lambda e: ErrorInfo(500, InvalidVectors().message),
    OSError: _os_error,
    UnsupportedReranker: _message(400),
}


# Expected errors: answered without a traceback in the log.
HANDLED: tuple[type[Exception], ...] = (ApiError, *_TABLE)


def describe(exc: Exception) -> ErrorInfo:
    """Status and message for any exception; unknown ones are logged 500s."""
    if isinstance(exc, ApiError):
        return ErrorInfo(exc.status, exc.message)
    for kind in type(exc).__mro__:
        face = _TABLE.get(kind)
        if face is not None:
            return face(exc)
    log.exception("unexpected error", exc_info=exc)
    return ErrorInfo(500, "internal server error")


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
}


def render(info: ErrorInfo, dialect: Dialect) -> Response:
    """The JSON body of an error in a dialect."""
    if dialect == "openai":
        kind = _OPENAI_TYPES.get(
            info.status, "api_error" if info.status >= 500 else "invalid_request_error"
        )
        detail = OpenAIErrorDetail.render(message=info.message, type=kind, param=None, code=None)
        body = OpenAIErrorBody.render(error=detail)
    elif dialect == "cohere":
        body = CohereErrorBody.render(message=info.message)
    else:
        body = ErrorBody.render(error=info.message)
    return Response(orjson.dumps(body), status_code=info.status, media_type="application/json")


def dialect_of(request: Request) -> Dialect:
    """The error dialect of a request: set by its route, else by its path."""
    chosen = getattr(request.state, "dialect", None)
    if chosen in ("openai", "ollama", "cohere"):
        return cast(Dialect, chosen)
    path = request.url.path
    if path.startswith("/v2/"):
        return "cohere"
    return "openai" if path.startswith("/v1/") else "ollama"


class _Throttle:
    """Lets a message through at most once per interval, counting the rest."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = -math.inf
        self.held = 0

    def take(self) -> int | None:
        """None while throttled; else how many were held back since the last one."""
        now = time.monotonic()
        if now - self.last < self.interval:
            self.held += 1
            return None
        held, self.held, self.last = self.held, 0, now
        return held


# Overload answers many requests at once: one log line per interval says so.
_busy_log = _Throttle(10.0)


def _log(request: Request, exc: Exception, info: ErrorInfo) -> None:
    where = f"{request.method} {request.url.path}"
    if info.status == 503:
        held = _busy_log.take()
        if held is not None:
            log.warning("%s -> 503 %s (%d more since the last report)", where, info.message, held)
    elif info.status >= 500:
        detail = getattr(exc, "detail", None) or str(exc) or info.message
        log.error("%s -> %d %s", where, info.status, detail)


async def refuse(
    scope: Scope,
    receive: Receive,
    send: Send,
    error: ApiError,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Answer a request with `error` from a middleware, before any route sees it.

    The connection is closed after the answer: the body, unread, would
    otherwise keep it (and its slot) for as long as its client trickles it.
    """
    response = await error_response(Request(scope), error)
    response.headers.update({"Connection": "close", **(headers or {})})
    await response(scope, receive, send)


async def error_response(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: every error leaves through here."""
    info = describe(exc)
    _log(request, exc, info)
    response = render(info, dialect_of(request))
    if isinstance(exc, ApiError) and exc.closes_connection:
        response.headers["Connection"] = "close"
    return response


class ErrorMiddleware:
    """Answers any exception a route lets out with `error_response`, and goes on serving.

    Starlette's own catch-all (an `Exception` handler) re-raises after
    answering, so uvicorn closes the connection under a client that may
    already be sending its next request on it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; turn an exception raised before the response began into one."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            if started:  # half a response is out: only closing the connection is left
                raise
            response = await error_response(Request(scope), exc)
            await response(scope, receive, send)
