"""Typed errors and the one table that maps every error to a status and message.

Routes and the engine raise; only `error_response` decides what a client sees,
in the dialect (Ollama or OpenAI) of the route that failed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backends.base import BackendError, ModelLoadError, TokenOutOfRange
from models.errors import InvalidModelFile, InvalidModelName, ModelNotFound
from models.reranking import UnsupportedReranker
from server.durations import DurationError

log = logging.getLogger("emberd.errors")

Dialect = Literal["ollama", "openai"]


class ApiError(Exception):
    """An error whose status and message are known where it is raised."""

    status = 500

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


class NotFound(ApiError):
    """Nothing at that name or path (404)."""

    status = 404


class ServerBusy(ApiError):
    """The queue bound is reached (503)."""

    status = 503

    def __init__(self) -> None:
        super().__init__("server busy, please try again.  maximum pending requests exceeded")


class InternalError(ApiError):
    """A fault inside the server (500)."""

    status = 500


def go_quote(text: str) -> str:
    """Quote like Go's %q, as Ollama's messages do."""
    return json.dumps(text, ensure_ascii=False)


@dataclass(frozen=True)
class ErrorInfo:
    """What a client sees for an error."""

    status: int
    message: str


def _model_not_found(exc: Exception) -> ErrorInfo:
    assert isinstance(exc, ModelNotFound)
    return ErrorInfo(404, f"model {go_quote(exc.name)} not found, try pulling it first")


# Errors raised below the server (models, backends, durations) and their faces.
_TABLE: dict[type[Exception], Callable[[Exception], ErrorInfo]] = {
    ModelNotFound: _model_not_found,
    InvalidModelName: lambda e: ErrorInfo(400, "invalid model name"),
    UnsupportedReranker: lambda e: ErrorInfo(400, str(e)),
    TokenOutOfRange: lambda e: ErrorInfo(400, str(e)),
    DurationError: lambda e: ErrorInfo(400, str(e)),
    InvalidModelFile: lambda e: ErrorInfo(500, f"failed to load model: {e}"),
    ModelLoadError: lambda e: ErrorInfo(500, f"failed to load model: {e}"),
    BackendError: lambda e: ErrorInfo(500, str(e)),
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


_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                 404: "not_found_error"}


def render(info: ErrorInfo, dialect: Dialect) -> Response:
    """The JSON body of an error in a dialect."""
    if dialect == "openai":
        kind = _OPENAI_TYPES.get(info.status, "api_error" if info.status >= 500 else
                                 "invalid_request_error")
        body: object = {"error": {"message": info.message, "type": kind, "param": None,
                                  "code": None}}
    else:
        body = {"error": info.message}
    return Response(orjson.dumps(body), status_code=info.status, media_type="application/json")


def dialect_of(request: Request) -> Dialect:
    """The error dialect of a request: set by its route, else by its path."""
    chosen = getattr(request.state, "dialect", None)
    if chosen == "openai" or chosen == "ollama":
        return chosen
    return "openai" if request.url.path.startswith("/v1/") else "ollama"


async def error_response(request: Request, exc: Exception) -> Response:
    """Starlette exception handler: every error leaves through here."""
    info = describe(exc)
    if info.status >= 500:
        log.error("%s %s -> %d %s", request.method, request.url.path, info.status, info.message)
    return render(info, dialect_of(request))


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
