"""Models whose runner keeps dying are held back, so a poisoned file cannot make emberd spin.

A runner that ends under its model costs only that model's requests, and
the next request starts a fresh one. A file that kills its runner again and
again (CRASH_LIMIT times within CRASH_WINDOW_S) is refused from then on,
until the file changes or the server restarts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from emberd.models.store import ModelRecord
from emberd.server.core.file_notes import FileNotes

CRASH_LIMIT = 3
CRASH_WINDOW_S = 60.0


class HeldBack(Exception):
    """The model's file has ended its runner too often; the engine names the model."""

    def __init__(self, crashes: int) -> None:
        super().__init__(f"{crashes} crashes")
        self.crashes = crashes


@dataclass
class _Crashes:
    times: list[float] = field(default_factory=list)
    held: bool = False


class CrashRecord:
    """Recent runner deaths per model file, and the files held back for them."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._notes: FileNotes[_Crashes] = FileNotes()

    def add(self, record: ModelRecord) -> None:
        """Count one death of a runner serving `record`'s file."""
        entry = self._notes.get(record.path) or _Crashes()
        now = self._clock()
        entry.times = [t for t in entry.times if now - t < CRASH_WINDOW_S] + [now]
        entry.held = entry.held or len(entry.times) >= CRASH_LIMIT
        self._notes.put(record.path, entry)

    def check(self, record: ModelRecord) -> None:
        """Raise HeldBack if `record`'s file, as it is now, is held back."""
        entry = self._notes.get(record.path)
        if entry is not None and entry.held:
            raise HeldBack(len(entry.times))
