"""The request body's bounds: 413 past its size, 408 past its time.

A body over the size bound is refused before a route ever holds more than
that in memory. A body must also arrive within a bounded time from the
moment its request reached the app: a client that sends one byte every few
seconds would otherwise hold its connection, and one of the server's
connection slots, for as long as it likes. Either refusal closes the
connection, as the rest of the body is never read.
"""

from __future__ import annotations

import asyncio
import sys

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emberd.server.core.limits import RequestLimits
from emberd.server.http.error_responses import PayloadTooLarge, RequestTimeout, refuse


def body_error(limits: RequestLimits) -> PayloadTooLarge:
    """The 413 of a body past `limits.max_body_size`."""
    return PayloadTooLarge(
        f"request body too large: the limit is {limits.max_body_size} bytes "
        "(set by EMBERD_MAX_BODY_SIZE)"
    )


def timeout_error(timeout_s: float) -> RequestTimeout:
    """The 408 of a body that took longer than `timeout_s` seconds."""
    return RequestTimeout(
        f"request body not received within {timeout_s:g} seconds (set by EMBERD_BODY_TIMEOUT)"
    )


class BodyLimit:
    """413 for a body over the size bound (at once from Content-Length, else once it is
    read past), 408 for one still arriving `timeout_s` after its request began."""

    def __init__(self, app: ASGIApp, limits: RequestLimits, timeout_s: float = 60.0) -> None:
        self.app = app
        self.limits = limits
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"")
        if declared.isdigit() and int(declared) > self.limits.max_body_size:
            await refuse(scope, receive, send, body_error(self.limits))
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        received = 0
        body_done = False

        async def bounded() -> Message:
            nonlocal received, body_done
            if body_done:  # what follows the body is only the end of the connection
                return await receive()
            try:
                message = await _receive_by(receive, deadline)
            except asyncio.TimeoutError:
                raise timeout_error(self.timeout_s) from None
            body_done = not message.get("more_body", False)
            received += len(message.get("body", b""))
            if received > self.limits.max_body_size:
                raise body_error(self.limits)
            return message

        # A refusal's answer closes the connection (ApiError.closes_connection).
        await self.app(scope, bounded, send)


async def _receive_by(receive: Receive, deadline: float) -> Message:
    """`receive()`, or TimeoutError once the loop's clock passes `deadline`."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout_at(deadline):  # a timer on this task: no task per receive
            return await receive()
    remaining = max(0.0, deadline - asyncio.get_running_loop().time())
    return await asyncio.wait_for(receive(), remaining)
