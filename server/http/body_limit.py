"""The request body bound: 413 before a route ever holds more than that in memory."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emberd.server.core.limits import RequestLimits
from emberd.server.http.error_responses import PayloadTooLarge, refuse


def body_error(limits: RequestLimits) -> PayloadTooLarge:
    """The 413 of a body past `limits.max_body_size`."""
    return PayloadTooLarge(
        f"request body too large: the limit is {limits.max_body_size} bytes "
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
            await refuse(scope, receive, send, body_error(self.limits), _CLOSE)
            return
        received = 0
        over = False

        async def counted() -> Message:
            nonlocal received, over
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limits.max_body_size:
                over = True
                raise body_error(self.limits)
            return message

        async def closing(message: Message) -> None:
            if over and message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"connection", b"close")]}
            await send(message)

        await self.app(scope, counted, closing)
