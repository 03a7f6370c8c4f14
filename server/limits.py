"""Bounds on one request: body size, number of inputs, and tokens.

`RequestLimits` holds the bounds and the checks every route that takes
inputs calls (embeddings today, reranking next); `BodyLimit` is the ASGI
middleware that stops reading a body past its bound, so no route ever holds
more than that in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.config import Settings
from server.errors import BadRequest, PayloadTooLarge, refuse

# Defaults (declared with the other settings): OpenAI's published bounds for
# its embeddings endpoint (2,048 inputs, 300,000 tokens summed over a
# request's inputs), and a body that fits 2,048 inputs of a few thousand
# characters each.
DEFAULT_MAX_BODY_SIZE: int = Settings.max_body_size
DEFAULT_MAX_INPUTS: int = Settings.max_inputs
DEFAULT_MAX_REQUEST_TOKENS: int = Settings.max_request_tokens


@dataclass(frozen=True)
class RequestLimits:
    """The bounds one request must fit; the checks raise the client's error."""

    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    max_inputs: int = DEFAULT_MAX_INPUTS
    max_tokens: int = DEFAULT_MAX_REQUEST_TOKENS

    def check_inputs(self, count: int) -> None:
        """400 when a request carries more inputs (texts, documents) than allowed."""
        if count > self.max_inputs:
            raise BadRequest(
                f"too many inputs: {count}, the limit is {self.max_inputs} per request "
                "(set by EMBERD_MAX_INPUTS); split them over several requests"
            )

    def check_tokens(self, sequences: Sequence[Sequence[int]]) -> None:
        """400 when the request's sequences, after truncation, hold too many tokens."""
        total = sum(len(sequence) for sequence in sequences)
        if total > self.max_tokens:
            raise BadRequest(
                f"too many tokens: {total}, the limit is {self.max_tokens} per request "
                "(set by EMBERD_MAX_REQUEST_TOKENS); split the inputs over several requests"
            )

    def body_error(self) -> PayloadTooLarge:
        """The 413 of a body past `max_body_size`."""
        return PayloadTooLarge(
            f"request body too large: the limit is {self.max_body_size} bytes "
            "(set by EMBERD_MAX_BODY_SIZE)"
        )


# The rest of an oversized body is not read: the connection cannot carry on.
_CLOSE = {"Connection": "close"}


class BodyLimit:
    """413 for a body over the bound: at once from Content-Length, else once it is read past."""

    def __init__(self, app: ASGIApp, limits: RequestLimits) -> None:
        self.app = app
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > self.limits.max_body_size:
            await refuse(scope, receive, send, self.limits.body_error(), _CLOSE)
            return
        received = 0
        over = False

        async def counted() -> Message:
            nonlocal received, over
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limits.max_body_size:
                over = True
                raise self.limits.body_error()
            return message

        async def closing(message: Message) -> None:
            if over and message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"connection", b"close")]}
            await send(message)

        await self.app(scope, counted, closing)
