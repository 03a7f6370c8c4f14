"""The runner's wire format: sequences in, vectors and typed errors out."""

from __future__ import annotations

import socket
from collections.abc import Sequence

import numpy as np

from emberd.backends import ipc
from emberd.backends.base import BackendError, FloatMatrix, NonFiniteOnGpu
from emberd.backends.runner_process import _embed


class _Model:
    """What `_embed` needs of a loaded model: batches in, one result per batch."""

    def embed_parallel(
        self, batches: Sequence[Sequence[Sequence[int]]]
    ) -> list[FloatMatrix | BackendError]:
        return [
            NonFiniteOnGpu("m computed NaN or Inf on CUDA0"),
            BackendError("llama.cpp decode failed with code 1"),
            np.array([[float(sum(s)), 1.0] for s in batches[2]], dtype=np.float32),
        ]


def test_each_batch_comes_back_with_its_vectors_or_its_error_of_the_same_kind() -> None:
    lengths, payload = ipc.pack_sequences([[1, 2], [3], [4, 5, 6]])
    reply, data = _embed(_Model(), {"lengths": lengths, "batches": [1, 1, 1]}, payload)
    left, right = socket.socketpair()
    with left, right:
        ipc.send(left, reply, data)
        header, received = ipc.recv(right)
    gpu, plain, shape = header["results"]
    assert isinstance(ipc.unpack_error(gpu), NonFiniteOnGpu)
    assert str(ipc.unpack_error(gpu)) == "m computed NaN or Inf on CUDA0"
    assert type(ipc.unpack_error(plain)) is BackendError
    np.testing.assert_array_equal(ipc.unpack_matrix(*shape, received), [[15.0, 1.0]])


def test_frames_are_parsed_however_the_stream_cuts_them() -> None:
    frames = [({"id": 1}, b"abc"), ({"id": 2, "text": "x" * 50}, b""), ({"id": 3}, b"\x00" * 9)]
    stream = b"".join(b"".join(ipc.encode(header, payload)) for header, payload in frames)
    for cuts in ([], [len(stream) // 3], [1, 5, 40], list(range(1, len(stream)))):
        parser = ipc.FrameParser()
        got = []
        for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            got += parser.feed(stream[start:end])
        assert got == frames, cuts
    whole = b"".join(ipc.encode(*frames[0]))  # one whole frame in one read
    assert ipc.FrameParser().feed(whole) == [frames[0]]
