"""Work whose client has gone is dropped: the request's handler is cancelled.

Once a handler has read its body and is still at work a moment later,
`DisconnectWatch` listens on the connection; if the client goes away before
the answer starts, the handler is cancelled. Its await on the batch queue
ends with it, so the worker skips the request's sequences that are still
queued (the decode in flight finishes). A client that leaves while still
sending its body ends the same way. Neither is a server error: nothing is
logged above debug, and no answer is sent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emberd.server.core.deadline import TIMER_SLACK_S, Deadline

log = logging.getLogger("emberd.disconnect")

# Requests answered sooner than this never start listening: most requests pay
# for neither a timer nor a task.
LISTEN_AFTER_S = 0.02


class _Watch:
    """The connection of one request, as its handler and the listener see it."""

    def __init__(
        self, receive: Receive, send: Send, task: asyncio.Task[object], owner: DisconnectWatch
    ) -> None:
        self._receive = receive
        self._send = send
        self._task = task
        self._owner = owner
        self._listener: asyncio.Task[Message] | None = None
        self._body_read = False
        self.started = False  # the answer has begun: the handler runs to its end
        self.finished = False
        self.gone = False

    async def receive(self) -> Message:
        """The handler's receive: its body, then the end of the connection."""
        if self._body_read:
            return await asyncio.shield(self.listen())
        message = await self._receive()
        if message["type"] == "http.disconnect":
            if not self.started:
                self.gone = True
                raise asyncio.CancelledError  # the client left mid-body
        elif not message.get("more_body", False):
            self._body_read = True
            self._owner.at_work(self)
        return message

    async def send(self, message: Message) -> None:
        """The handler's send; notes when the answer starts and ends."""
        if message["type"] == "http.response.start":
            self.started = True
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.finished = True
        await self._send(message)

    def listen(self) -> asyncio.Task[Message]:
        """The task that waits for the connection's next event (only its end can come)."""
        if self._listener is None:
            self._listener = asyncio.ensure_future(self._receive())
            self._listener.add_done_callback(self._ended)
        return self._listener

    def _ended(self, listener: asyncio.Task[Message]) -> None:
        if listener.cancelled() or listener.exception() is not None:
            return
        if listener.result()["type"] != "http.disconnect" or self.started or self.finished:
            return
        self.gone = True
        self._task.cancel()

    def close(self) -> None:
        """Stop listening: the handler is done."""
        self._owner.done(self)
        if self._listener is not None and not self._listener.done():
            self._listener.cancel()


class DisconnectWatch:
    """Cancels a request's handler when its client goes away before the answer starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Handlers at work whose connections nobody listens to yet, with when
        # their bodies were read. One deadline for all of them (`_sweep`) starts
        # listening for those still at work LISTEN_AFTER_S later.
        self._unheard: dict[_Watch, float] = {}
        self._next_sweep = Deadline()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if scope["type"] != "http" or task is None:
            await self.app(scope, receive, send)
            return
        watch = _Watch(receive, send, task, self)
        try:
            await self.app(scope, watch.receive, watch.send)
        except asyncio.CancelledError:
            if not watch.gone:
                raise  # the server itself is cancelling (shutdown)
            if sys.version_info >= (3, 11):
                task.uncancel()  # this cancellation was ours, and it ends here
            log.debug("%s %s: the client went away", scope["method"], scope["path"])
        finally:
            watch.close()

    def at_work(self, watch: _Watch) -> None:
        """`watch`'s handler has its body: listen to its connection if it is still at work
        LISTEN_AFTER_S from now."""
        now = asyncio.get_running_loop().time()
        self._unheard[watch] = now
        if self._next_sweep.when == math.inf:  # else an earlier handler's sweep comes first
            self._next_sweep.set(now + LISTEN_AFTER_S, self._sweep)

    def done(self, watch: _Watch) -> None:
        """`watch`'s handler has finished."""
        self._unheard.pop(watch, None)

    def _sweep(self) -> None:
        due = asyncio.get_running_loop().time() - LISTEN_AFTER_S + TIMER_SLACK_S
        for watch, since in list(self._unheard.items()):
            if since <= due:
                del self._unheard[watch]
                watch.listen()
        if self._unheard:
            self._next_sweep.set(min(self._unheard.values()) + LISTEN_AFTER_S, self._sweep)
