"""A cancel switch for a pull, which also cuts a read that is waiting on a stalled link.

Checking a flag between chunks is not enough: a registry that stops sending
leaves the download blocked in a socket read until the read times out, and
the partial file stays locked (a second pull of the same model waits on it)
for that long. Whoever blocks on a connection registers how to cut it; the
switch runs that when it is set.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator


class CancelSwitch:
    """Set once to stop a pull: between chunks, and inside a blocked read."""

    def __init__(self) -> None:
        self._event = threading.Event()
        # Held while cuts run and while they are added or removed, so that a
        # cut never runs on a connection its owner has already closed.
        self._lock = threading.Lock()
        self._cuts: list[Callable[[], None]] = []

    def set(self) -> None:
        """Stop the pull; cut the connections registered now."""
        with self._lock:
            self._event.set()
            for cut in self._cuts:
                cut()

    def is_set(self) -> bool:
        """Whether the pull was stopped."""
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the switch; whether it was set."""
        return self._event.wait(timeout)

    def add(self, cut: Callable[[], None]) -> None:
        """Run `cut` when the switch is set (at once if it is already), for the pull's life.

        For a cut that is harmless once its connection is gone, such as
        `shut_down` of a socket (whose `fileno` is then -1).
        """
        with self._lock:
            if self._event.is_set():
                cut()
            self._cuts.append(cut)

    @contextlib.contextmanager
    def cutting(self, cut: Callable[[], None]) -> Iterator[None]:
        """Run `cut` if the switch is set while the block runs (at once if it is already)."""
        with self._lock:
            if self._event.is_set():
                cut()
            self._cuts.append(cut)
        try:
            yield
        finally:
            with self._lock:
                self._cuts.remove(cut)


def shut_down(fileno: Callable[[], int]) -> Callable[[], None]:
    """A cut that shuts down the socket behind `fileno()`: a read blocked on it returns."""

    def cut() -> None:
        # shutdown acts on the socket itself, so a duplicate descriptor reaches
        # the one the reader holds without touching the reader's objects.
        with (
            contextlib.suppress(OSError, ValueError, AttributeError),
            socket.socket(fileno=os.dup(fileno())) as sock,
        ):
            sock.shutdown(socket.SHUT_RDWR)

    return cut
