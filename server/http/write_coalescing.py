"""A connection's writes of one event-loop turn, sent as one.

uvicorn writes a response as two ASGI messages: the status line and headers,
then the body, each its own `transport.write` and so its own send on the
socket. Sent apart, they cost two system calls and wake the client twice for
one answer, which on a small machine is a measurable share of a one-text
embedding. `CoalescingTransport` holds what is written until the end of the
loop's turn (or the next close), then sends it in one write: the head and
body of a response, which uvicorn writes in the same turn, leave together,
and nothing is ever held longer than the turn.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescingTransport:
    """A transport that gathers the writes of one loop turn into one write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Hold `data` until the end of this loop turn."""
        if not data:
            return
        if not self._held:
            self._loop.call_soon(self.flush)
        self._held.append(bytes(data))  # the caller may reuse a buffer it passed

    def writelines(self, chunks: Any) -> None:
        """Hold every chunk."""
        for chunk in chunks:
            self.write(chunk)

    def flush(self) -> None:
        """Send what is held, in one write."""
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def write_eof(self) -> None:
        """Send what is held, then end the writing side."""
        self.flush()
        self._transport.write_eof()

    def close(self) -> None:
        """Send what is held, then close (the transport sends its buffer before closing)."""
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        """Drop what is held and close at once."""
        self._held.clear()
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        """Bytes waiting to be sent, held ones included."""
        return self._transport.get_write_buffer_size() + sum(len(b) for b in self._held)

    def __getattr__(self, name: str) -> Any:
        # Everything else (reading, flow control, extra info) is the transport's.
        return getattr(self._transport, name)
