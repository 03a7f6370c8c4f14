"""Ctrl-C during a run: the first stops it after the chunk in hand, a second at once.

A KeyboardInterrupt raised at an arbitrary point can land between a lock's
acquire and the `with` block that releases it, and the shutdown that follows
then waits on that lock forever. So the first Ctrl-C only asks: the run stops
where its checkpoint is whole and closes the model cleanly. A second Ctrl-C
ends the process at once, which loses nothing done: every chunk and
checkpoint is written atomically.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType, TracebackType

EXIT_INTERRUPTED = 128 + signal.SIGINT
_STDERR = 2  # the descriptor, whatever sys.stderr is now


def resume_hint(out: Path) -> str:
    """What an interrupted run tells its user."""
    return f"interrupted: run the same command again to continue ({out}.partial keeps what is done)"


class StopRequest:
    """Holds SIGINT for the length of a `with` block (main thread only; elsewhere a no-op)."""

    def __init__(self, out: Path) -> None:
        self.requested = False
        self._out = out
        self._previous: object = None
        self._installed = False

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)
            self._installed = True
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]
            self._installed = False

    def check(self) -> None:
        """Raise KeyboardInterrupt if a stop was asked for; call where the run can stop."""
        if self.requested:
            raise KeyboardInterrupt

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        # os.write, not print: the handler may run while the main thread is
        # inside a write to sys.stderr, and buffered writes are not reentrant.
        if self.requested:
            os.write(_STDERR, f"\n{resume_hint(self._out)}\n".encode())
            os._exit(EXIT_INTERRUPTED)
        self.requested = True
        os.write(_STDERR, b"\nstopping after the chunk in hand (Ctrl-C again stops at once)\n")
