"""Models whose runner keeps dying are held back, so a poisoned file cannot make emberd spin.

A runner that ends under its model costs only that model's requests, and
the next request starts a fresh one. A file that kills its runner again and
again (CRASH_LIMIT times within CRASH_WINDOW_S) is refused from then on,
until the file changes or the server restarts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from emberd.models.store import FileVersion, ModelRecord, file_version

CRASH_LIMIT = 3
CRASH_WINDOW_S = 60.0


class HeldBack(Exception):
    """The model's file has ended its runner too often; the engine names the model."""

    def __init__(self, crashes: int) -> None:
        super().__init__(f"{crashes} crashes")
        self.crashes = crashes


@dataclass
class _Crashes:
    version: FileVersion | None
    times: list[float] = field(default_factory=list)
    held: bool = False


class CrashRecord:
    """Recent runner deaths per model file, and the files held back for them."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._by_path: dict[Path, _Crashes] = {}

    def add(self, record: ModelRecord) -> None:
        """Count one death of a runner serving `record`'s file."""
        version = file_version(record.path)
        entry = self._by_path.get(record.path)
        if entry is None or entry.version != version:
            entry = self._by_path[record.path] = _Crashes(version)
        now = self._clock()
        entry.times = [t for t in entry.times if now - t < CRASH_WINDOW_S] + [now]
        entry.held = entry.held or len(entry.times) >= CRASH_LIMIT

    def check(self, record: ModelRecord) -> None:
        """Raise HeldBack if `record`'s file, as it is now, is held back."""
        entry = self._by_path.get(record.path)
        if entry is None or not entry.held:
            return
        if file_version(record.path) != entry.version:  # a new file gets a new chance
            del self._by_path[record.path]
            return
        raise HeldBack(len(entry.times))
