"""One write per loop turn: a response's head and body leave the server together."""

from __future__ import annotations

import asyncio

from emberd.server.http.write_coalescing import CoalescingTransport
from tests.support.bounded import bounded


class RecordingTransport(asyncio.Transport):
    """A transport that records what reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.events: list[str] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.events.append("close")
        self.closing = True

    def abort(self) -> None:
        self.events.append("abort")
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        self.events.append("pause_reading")


@bounded
async def test_the_writes_of_one_turn_leave_as_one() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(memoryview(b"{}"))
    assert inner.writes == []  # held until the turn ends
    assert transport.get_write_buffer_size() == 40
    await asyncio.sleep(0)
    assert inner.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    transport.write(b"next")
    await asyncio.sleep(0)
    assert inner.writes[1:] == [b"next"]  # a later turn is a write of its own


@bounded
async def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.write(b"bye")
    transport.close()
    assert inner.writes == [b"bye"] and inner.events == ["close"]
    other = RecordingTransport()
    aborted = CoalescingTransport(other, asyncio.get_running_loop())
    aborted.write(b"never")
    aborted.abort()
    await asyncio.sleep(0)
    assert other.writes == [] and other.events == ["abort"]


@bounded
async def test_everything_else_is_the_transports() -> None:
    inner = RecordingTransport()
    transport = CoalescingTransport(inner, asyncio.get_running_loop())
    transport.pause_reading()
    assert inner.events == ["pause_reading"]
    assert transport.is_closing() is False
