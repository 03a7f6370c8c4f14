"""What the command line prints about sizes and progress, in one place.

Human sizes (`45 MB`, `1.2 GB`) as Ollama prints them, a progress line that
is redrawn in place on a terminal and written once, finished, anywhere else
(a log file, a pipe, a test's buffer), and the two shapes built on it: the
step lines of `emberd pull` and the bar of `emberd import`.

It lives in `models` because both `models` (pull, import) and `server` (the
`list` and `ps` verbs) print through it, and `models` never imports
`server`. It imports nothing else of the project.

The bars are drawn here rather than by a progress library: the lines keep
Ollama's wording, are redrawn only when their text changes (no timer), and
write nothing but the finished line off a terminal, which is what the
commands' output is held to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO

__all__ = ["ProgressLine", "StepPrinter", "human_bytes", "text_progress"]

_BAR_WIDTH = 30


def human_bytes(size: int) -> str:
    """Decimal units as Ollama prints sizes: `45 MB`, `1.2 GB`, `512 B`."""
    for unit, scale in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= scale:
            value = size / scale
            if value >= 10 or value == int(value):
                return f"{int(value)} {unit}"
            return f"{value:.1f} {unit}"
    return f"{size} B"


def _fixed_size(size: int) -> str:
    """Megabytes with one decimal (gigabytes with two): a width that holds still in a bar."""
    return f"{size / 1e6:.1f} MB" if size < 10**9 else f"{size / 1e9:.2f} GB"


class ProgressLine:
    """One line of progress on `stream`, plus plain lines between progress.

    On a terminal `show` redraws the line in place; elsewhere only the
    finished line is written, so logs and pipes get one line per task.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._open = False  # a redrawn line waits for its newline

    def show(self, text: str, finished: bool) -> None:
        """Draw the progress line; `finished` ends it."""
        out = ""
        if self._tty:
            out, self._open = "\r" + text, True
        if finished:
            out += ("" if self._tty else text) + "\n"
            self._open = False
        self._write(out)

    def say(self, text: str) -> None:
        """Write a plain line, ending an unfinished progress line first."""
        self._write(("\n" if self._open else "") + text + "\n")
        self._open = False

    def _write(self, text: str) -> None:
        if text:
            self._stream.write(text)
            self._stream.flush()


class StepPrinter:
    """Steps as lines and transfers as `label: NN% of SIZE`, like `ollama pull`."""

    def __init__(self, stream: IO[str]) -> None:
        self._line = ProgressLine(stream)

    def step(self, status: str) -> None:
        """A step without bytes to count (`pulling manifest`, `success`)."""
        self._line.say(status)

    def transfer(self, label: str, done: int, total: int) -> None:
        """Bytes of one transfer so far; the line ends when `done` reaches `total`."""
        percent = 100 * done // total if total else 100
        self._line.show(f"{label}: {percent:3d}% of {human_bytes(total)}", done >= total)


def text_progress(stream: IO[str], label: str = "converting") -> Callable[[int, int], None]:
    """A `(done, total)` callback drawing a one-line bar on `stream`.

    On a terminal the line is redrawn whenever the percentage changes;
    elsewhere only the finished line is written.
    """
    line = ProgressLine(stream)
    last = [-1]

    def draw(done: int, total: int) -> None:
        percent = 100 if total <= 0 else min(100, done * 100 // total)
        if percent == last[0]:
            return
        last[0] = percent
        filled = _BAR_WIDTH * percent // 100
        bar = "█" * filled + " " * (_BAR_WIDTH - filled)
        text = f"{label} {percent:3d}% |{bar}| {_fixed_size(done)}/{_fixed_size(total)}"
        line.show(text, done >= total)

    return draw
