"""How a runner process gets its two channel sockets from the server.

On POSIX the runner inherits them as file descriptors (`pass_fds`) and is
started in a session of its own, so a Ctrl-C meant for the server does not
reach it. Windows has neither: there each socket is duplicated for the
runner with `socket.share(pid)` and the shared blobs are written to the
runner's standard input, and the runner is started in a process group of
its own.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from collections.abc import Sequence
from typing import BinaryIO

_LENGTH = struct.Struct("<I")
WINDOWS = sys.platform == "win32"


def start(
    command: Sequence[str], channels: tuple[socket.socket, socket.socket], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start `command` (runner_process's) with `channels`, the runner's ends; closes them."""
    try:
        if WINDOWS:
            return _start_windows(command, channels, env)
        fds = tuple(sock.fileno() for sock in channels)
        return subprocess.Popen(
            [*command, "--decode-fd", str(fds[0]), "--tokenize-fd", str(fds[1])],
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    finally:
        for sock in channels:
            sock.close()


def receive(decode_fd: int | None, tokenize_fd: int | None) -> tuple[socket.socket, socket.socket]:
    """The runner's ends of its channels: inherited descriptors, or shares read from stdin."""
    if decode_fd is not None and tokenize_fd is not None:
        return socket.socket(fileno=decode_fd), socket.socket(fileno=tokenize_fd)
    decode, tokenize = read_blobs(sys.stdin.buffer, 2)
    return _from_share(decode), _from_share(tokenize)


def write_blobs(stream: BinaryIO, blobs: Sequence[bytes]) -> None:
    """Each blob, preceded by its length, then close `stream`."""
    with stream:
        for blob in blobs:
            stream.write(_LENGTH.pack(len(blob)) + blob)


def read_blobs(stream: BinaryIO, count: int) -> list[bytes]:
    """`count` blobs that `write_blobs` wrote; EOFError if the stream ends first."""
    blobs = []
    for _ in range(count):
        (size,) = _LENGTH.unpack(_read_exact(stream, _LENGTH.size))
        blobs.append(_read_exact(stream, size))
    return blobs


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError("the server closed the runner's input early")
    return data


def _start_windows(
    command: Sequence[str], channels: tuple[socket.socket, socket.socket], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    if sys.platform != "win32":  # narrows the platform for type checkers
        raise OSError("socket.share exists on Windows only")
    process = subprocess.Popen(
        list(command),
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        creationflags=subprocess.CREATE_NEW_PROCESS_GROUP,
        env=env,
    )
    assert process.stdin is not None
    try:
        write_blobs(process.stdin, [sock.share(process.pid) for sock in channels])
    except OSError:
        process.kill()
        process.wait()
        raise
    return process


def _from_share(blob: bytes) -> socket.socket:
    if sys.platform != "win32":
        raise OSError("the runner was given no channel descriptors")
    return socket.fromshare(blob)
