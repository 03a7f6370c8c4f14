"""What the server has learned about a model file, kept only while the file stays the same.

A file that kills its runners, or computes NaN on a GPU, is treated
differently from then on; a replaced file (another size, modification time
or inode) gets a new chance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Generic, TypeVar

from emberd.models.store import FileVersion, file_version

_T = TypeVar("_T")


class FileNotes(Generic[_T]):
    """One note per model file, each bound to the version of the file it was taken on."""

    def __init__(self) -> None:
        self._notes: dict[Path, tuple[FileVersion | None, _T]] = {}

    def get(self, path: Path) -> _T | None:
        """The note on `path`, if it was taken on the file as it is now (a stale one is dropped)."""
        entry = self._notes.get(path)
        if entry is None:
            return None  # the common case: no stat
        if file_version(path) != entry[0]:
            del self._notes[path]
            return None
        return entry[1]

    def put(self, path: Path, note: _T) -> None:
        """Note `note` on the file at `path` as it is now."""
        self._notes[path] = (file_version(path), note)
