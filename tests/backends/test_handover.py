"""Handing a runner its channels: the framing of the blobs Windows shares over stdin.

(`socket.share` exists on Windows alone; on POSIX every runner test uses
the inherited descriptors.)
"""

from __future__ import annotations

import io
import os

import pytest

from emberd.backends import handover


def test_blobs_arrive_whole_and_in_order_through_a_pipe() -> None:
    read_end, write_end = os.pipe()
    blobs = [b"decode" * 100, b"", b"tokenize"]
    with open(read_end, "rb") as reader:
        handover.write_blobs(open(write_end, "wb"), blobs)  # noqa: SIM115 - closes it
        assert handover.read_blobs(reader, 3) == blobs


def test_an_input_that_ends_early_is_refused_not_taken_for_a_channel() -> None:
    stream = _Unclosed()
    handover.write_blobs(stream, [b"decode-share"])
    with pytest.raises(EOFError):
        handover.read_blobs(io.BytesIO(stream.getvalue()[:-3]), 1)
    with pytest.raises(EOFError):
        handover.read_blobs(io.BytesIO(stream.getvalue()), 2)


class _Unclosed(io.BytesIO):
    """A buffer that keeps its bytes readable after `write_blobs` closes it."""

    def close(self) -> None:
        pass
