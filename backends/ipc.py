"""Frames between the server and a runner process: a JSON header and raw bytes.

A frame is two little-endian uint32 lengths, the header (a JSON object,
through orjson) and a payload of raw bytes: token ids as int32, vectors as
float32. Nothing is pickled: a runner whose memory llama.cpp has corrupted
can send nonsense, which is refused, but never make the server run code.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from emberd.backends.base import BackendError, FloatMatrix, InputRefused, NonFiniteOnGpu

_LENGTHS = struct.Struct("<II")
# A header holds texts (tokenize) or a text (detokenize); the payload a batch
# of token ids or of vectors. Either past this is a broken peer, not data.
MAX_FRAME = 1 << 30

Header = dict[str, Any]


class ChannelClosed(Exception):
    """The other end has gone (its process ended) or sent a broken frame."""


class NoAnswer(ChannelClosed):
    """The peer did not answer within the socket's timeout."""


def encode(header: Header, payload: bytes = b"") -> list[bytes]:
    """The buffers of one frame, ready for `sendmsg` or a stream writer."""
    head = orjson.dumps(header)
    return [_LENGTHS.pack(len(head), len(payload)), head, payload]


def send(sock: socket.socket, header: Header, payload: bytes = b"") -> None:
    """Write one frame on a blocking socket; ChannelClosed when the peer has gone."""
    try:
        sock.sendall(b"".join(encode(header, payload)))
    except OSError as exc:
        raise ChannelClosed(str(exc)) from None


def recv(sock: socket.socket) -> tuple[Header, bytes]:
    """Read one frame from a blocking socket; ChannelClosed at its end."""
    head_len, payload_len = _check(_LENGTHS.unpack(_read_exact(sock, _LENGTHS.size)))
    return _header(_read_exact(sock, head_len)), _read_exact(sock, payload_len)


class FrameParser:
    """Frames out of a byte stream that arrives in pieces (an asyncio protocol's data)."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[Header, bytes]]:
        """The frames `data` completes, in order; ChannelClosed for a broken one."""
        if not self._buffer and len(data) >= _LENGTHS.size:
            # The common case, one whole answer in one read: no copy into the buffer.
            head_len, payload_len = _check(_LENGTHS.unpack_from(data))
            start = _LENGTHS.size + head_len
            if len(data) == start + payload_len:
                return [(_header(data[_LENGTHS.size : start]), data[start:])]
        self._buffer += data
        frames = []
        while len(self._buffer) >= _LENGTHS.size:
            head_len, payload_len = _check(_LENGTHS.unpack_from(self._buffer))
            end = _LENGTHS.size + head_len + payload_len
            if len(self._buffer) < end:
                break
            start = _LENGTHS.size + head_len
            header = _header(bytes(self._buffer[_LENGTHS.size : start]))
            frames.append((header, bytes(self._buffer[start:end])))
            del self._buffer[:end]
        return frames


def _check(lengths: tuple[int, int]) -> tuple[int, int]:
    if lengths[0] + lengths[1] > MAX_FRAME:
        raise ChannelClosed(f"a frame of {lengths[0] + lengths[1]} bytes")
    return lengths


def _header(raw: bytes) -> Header:
    try:
        header = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ChannelClosed(f"a broken header: {exc}") from None
    if not isinstance(header, dict):
        raise ChannelClosed("a header that is not an object")
    return header


def _read_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        try:
            n = sock.recv_into(view[got:])
        except TimeoutError:
            raise NoAnswer(f"no answer within {sock.gettimeout()} s") from None
        except OSError as exc:
            raise ChannelClosed(str(exc)) from None
        if n == 0:
            raise ChannelClosed("end of stream")
        got += n
    return bytes(buf)


# -- token lists and vectors as payloads


def pack_sequences(sequences: Sequence[Sequence[int]]) -> tuple[list[int], bytes]:
    """Lengths and the concatenated int32 ids of token sequences."""
    lengths = [len(s) for s in sequences]
    if not sequences or not sum(lengths):
        return lengths, b""
    flat = np.concatenate([np.asarray(s, dtype=np.int32) for s in sequences if len(s)])
    return lengths, flat.tobytes()


def unpack_sequences(lengths: Sequence[int], payload: bytes) -> list[list[int]]:
    """The token sequences `pack_sequences` packed."""
    flat = np.frombuffer(payload, dtype=np.int32)
    if any(n < 0 for n in lengths) or sum(lengths) != len(flat):
        raise ChannelClosed("token lengths do not match the payload")
    ends = np.cumsum(lengths)
    return [flat[end - n : end].tolist() for n, end in zip(lengths, ends, strict=True)]


def unpack_matrix(rows: int, cols: int, payload: bytes) -> FloatMatrix:
    """A float32 matrix from its raw bytes, checked against its shape."""
    if rows < 0 or cols < 0 or rows * cols * 4 != len(payload):
        raise ChannelClosed("a matrix whose size does not match its shape")
    return np.frombuffer(payload, dtype=np.float32).reshape(rows, cols).copy()


# Backend errors that cross the wire keep their type, so that the server can
# act on them (a GPU's NaN moves the model to the CPU; a refused input is the
# client's 400).
_TYPED_ERRORS: dict[str, type[BackendError]] = {
    "non_finite_on_gpu": NonFiniteOnGpu,
    "input_refused": InputRefused,
}
_KINDS = {cls: kind for kind, cls in _TYPED_ERRORS.items()}


def pack_error(exc: BackendError) -> Header:
    """A backend error as a reply field: its message, and its kind when the kind matters."""
    kind = _KINDS.get(type(exc))
    return {"error": str(exc), "kind": kind} if kind else {"error": str(exc)}


def unpack_error(field: Any) -> BackendError:
    """The backend error `pack_error` wrote (a bare message is a plain BackendError)."""
    if isinstance(field, dict):
        cls = _TYPED_ERRORS.get(str(field.get("kind")), BackendError)
        return cls(str(field.get("error")))
    return BackendError(str(field))
