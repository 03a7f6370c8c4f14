"""How uvicorn serves the app: connection limits, timeouts and the shutdown grace.

uvicorn's httptools protocol bounds neither the size of a request's headers
nor the time a client may take to send them, and arms its keep-alive timer
only after a first response: a client can hold a connection forever by
never finishing its headers. `BoundedHttpProtocol` adds both bounds. On
SIGTERM, requests in flight get `shutdown_grace` to finish; then uvicorn
cancels them, and a watchdog ends the process if something still holds it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from types import FrameType
from typing import Any, cast

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from emberd.server.config import Settings
from emberd.server.core.deadline import Deadline
from emberd.server.http.write_coalescing import CoalescingTransport

log = logging.getLogger("emberd")

# What a client may send before its request starts: request line and headers
# together (nginx allows 32 KiB, Node 16 KiB; browsers' cookies for localhost
# can be many), and how long it may take to send them.
MAX_HEADER_BYTES = 64 * 1024
HEADER_TIMEOUT_S = 10.0
# An idle keep-alive connection is closed after this long (uvicorn's default, set on purpose).
KEEP_ALIVE_S = 5
# Open connections plus running requests; past it uvicorn answers 503 at once.
# Well above OLLAMA_MAX_QUEUE's default, so the runtime's own 503 comes first.
MAX_CONCURRENCY = 2048
# After the grace, what the process may still take to unload before it is ended.
FORCED_EXIT_MARGIN_S = 5.0

_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\ncontent-length: 31\r\n"
    b"connection: close\r\n\r\nrequest header fields too large"
)


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on header bytes and on header time,
    writing each response in one piece."""

    max_header_bytes = MAX_HEADER_BYTES
    header_timeout_s = HEADER_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # RequestMetrics has the line written after the response (see access_log).
        self.access_log = False
        self._in_headers = False
        self._header_bytes = 0
        # One timer serves a connection's many requests (see Deadline).
        self._headers_deadline = Deadline()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # A response's head and body leave in one write (see write_coalescing).
        super().connection_made(cast(asyncio.Transport, CoalescingTransport(transport, self.loop)))
        if isinstance(self.server_state, WakingState):
            # The Date header is refreshed now, before this connection's first
            # answer; the main loop wakes to tick while connections are open.
            self.server_state.refresh_date()
            self.server_state.wake()
        self._expect_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_deadline.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self._in_headers:
            return
        # Only chunks that leave the headers unfinished count against the bound.
        self._header_bytes += len(data)
        if self._header_bytes > self.max_header_bytes:
            self._in_headers = False
            self._headers_deadline.cancel()
            if not self.transport.is_closing():
                self.transport.write(_TOO_LARGE)
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_headers:
            self._expect_headers()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._headers_deadline.clear()
        super().on_headers_complete()

    def _expect_headers(self) -> None:
        self._in_headers = True
        self._header_bytes = 0
        when = self.loop.time() + self.header_timeout_s
        self._headers_deadline.set(when, self._headers_timed_out)

    def _headers_timed_out(self) -> None:
        if self._in_headers and not self.transport.is_closing():
            log.debug("closing a connection that did not finish its headers in time")
            self.transport.close()


class WakingState(ServerState):
    """uvicorn's state shared with the connections, plus a way to wake the main loop."""

    def __init__(self) -> None:
        super().__init__()
        self.wake: Callable[[], None] = lambda: None
        self.refresh_date: Callable[[], None] = lambda: None


class GracefulServer(uvicorn.Server):
    """uvicorn's server, with a watchdog that ends the process once the grace is spent,
    and a main loop that sleeps while no connection is open.

    uvicorn's own main loop wakes ten times a second for ever, to refresh
    the Date header and look for a request to exit; on a laptop an idle
    server then keeps the CPU from its deep sleep states. Here the loop ticks
    only while connections are open, and otherwise waits for a new
    connection (BoundedHttpProtocol wakes it) or an exit request.
    """

    def __init__(self, config: uvicorn.Config, grace_s: float) -> None:
        self._exit = False
        self._waker: Callable[[], None] = lambda: None
        super().__init__(config)
        self.server_state = WakingState()
        self.server_state.refresh_date = self._refresh_date
        self.grace_s = grace_s
        self._watchdog: threading.Timer | None = None

    @property
    def should_exit(self) -> bool:
        """Whether the server should stop; setting it wakes a sleeping main loop."""
        return self._exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._exit = value
        if value:
            self._waker()

    async def main_loop(self) -> None:
        """uvicorn's ticks while connections are open; asleep until one comes otherwise."""
        loop = asyncio.get_running_loop()
        wakened = asyncio.Event()

        def wake() -> None:
            # From a signal handler, another thread or the loop itself alike.
            loop.call_soon_threadsafe(wakened.set)

        self._waker = wake
        assert isinstance(self.server_state, WakingState)
        self.server_state.wake = wake
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            if self.server_state.connections or self.server_state.tasks:
                counter = (counter + 1) % 864000
                await asyncio.sleep(0.1)
            else:
                wakened.clear()
                if not self.should_exit:
                    await wakened.wait()
                counter = 0  # a tick that refreshes the Date header at once
            should_exit = await self.on_tick(counter)

    def _refresh_date(self) -> None:
        """The Date header of now, as uvicorn's tick would set it."""
        if self.config.date_header:
            now = formatdate(time.time(), usegmt=True).encode()
            self.server_state.default_headers = [(b"date", now), *self.config.encoded_headers]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._watchdog is None:
            self._watchdog = threading.Timer(self.grace_s + FORCED_EXIT_MARGIN_S, _forced_exit)
            self._watchdog.daemon = True
            self._watchdog.start()


def _forced_exit() -> None:
    log.error("shutdown did not finish within the grace period: exiting now")
    logging.shutdown()
    os._exit(128 + signal.SIGTERM)


@dataclass(frozen=True)
class Listener:
    """Where and how to listen: what `uvicorn.Config` gets besides the app."""

    host: str
    port: int
    log_level: str
    grace_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Listener:
        """The listener `settings` describe."""
        return cls(settings.host, settings.port, settings.log_level, settings.shutdown_grace)


def uvicorn_config(app: ASGIApp, listener: Listener, **overrides: Any) -> uvicorn.Config:
    """uvicorn's configuration with every limit and timeout set on purpose."""
    options: dict[str, Any] = {
        "host": listener.host,
        "port": listener.port,
        "log_level": listener.log_level,
        "log_config": None,  # keep the logging the command configured
        "http": BoundedHttpProtocol,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "limit_concurrency": MAX_CONCURRENCY,
        "timeout_graceful_shutdown": listener.grace_s,
        **overrides,
    }
    return uvicorn.Config(app, **options)


def serve(app: ASGIApp, settings: Settings, sock: socket.socket | None = None) -> None:
    """Serve `app` as `settings` say until SIGINT or SIGTERM, then shut down within the grace.

    `sock`, already bound and listening (`listen.bind_listener`), is used
    instead of binding here.
    """
    listener = Listener.from_settings(settings)
    server = GracefulServer(uvicorn_config(app, listener), listener.grace_s)
    server.run(sockets=[sock] if sock is not None else None)


__all__ = [
    "BoundedHttpProtocol",
    "GracefulServer",
    "Listener",
    "WakingState",
    "serve",
    "uvicorn_config",
]
