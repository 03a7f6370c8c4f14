"""A one-line progress bar on stderr: rows, rows/s and the time left.

It draws only when its stream is a terminal, at most a few times a second,
so logs and pipes stay clean.
"""

from __future__ import annotations

import time
from typing import TextIO

_REDRAW_SECONDS = 0.2


def clock(seconds: float) -> str:
    """`1:02:03` or `2:03`."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class ProgressBar:
    """Rows done so far; the rate counts only the rows of this run (not those resumed).

    `start_fraction` is how much of the input was done before this run; None
    (a resumed run) takes the first fraction shown as the start.
    """

    def __init__(self, stream: TextIO, start_rows: int, start_fraction: float | None) -> None:
        self._stream = stream
        self._enabled = stream.isatty()
        self._start_rows = start_rows
        self._start_fraction = start_fraction  # None: the first fraction shown
        self._started = time.perf_counter()
        self._drawn = 0.0

    def update(self, rows: int, fraction: float | None, force: bool = False) -> None:
        """Show `rows` done and `fraction` of the input read (None when unknown)."""
        now = time.perf_counter()
        if not self._enabled or (not force and now - self._drawn < _REDRAW_SECONDS):
            return
        self._drawn = now
        elapsed = max(now - self._started, 1e-9)
        rate = (rows - self._start_rows) / elapsed
        parts = [f"{rows:,} rows", f"{rate:,.0f} rows/s"]
        if fraction is not None:
            if self._start_fraction is None:
                self._start_fraction = fraction
            gained = fraction - self._start_fraction
            if gained > 0:
                parts.append(f"ETA {clock(elapsed * (1.0 - fraction) / gained)}")
            parts.append(f"{fraction * 100:3.0f}%")
        self._stream.write("\r" + "  ".join(parts) + "\x1b[K")
        self._stream.flush()

    def close(self) -> None:
        """End the line the bar was drawn on."""
        if self._enabled and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
