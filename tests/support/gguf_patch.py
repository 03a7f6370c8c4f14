"""Copies of a GGUF with header values changed in place, for tests of broken files.

Scalar values are overwritten where they lie in the file, so the copy differs
from a good model in exactly the keys named and nothing else.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gguf import GGUFReader


def patched_copy(source: Path, target: Path, values: dict[str, float | int | bool]) -> Path:
    """Copy `source` to `target` with each key's scalar value replaced; return `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    reader = GGUFReader(target, "r+")
    for key, value in values.items():
        field = reader.fields[key]
        part = field.parts[field.data[0]]
        assert part.size == 1, f"{key} is not a scalar"
        part[0] = value
    reader.data.flush()  # a memory map of the copy: the writes land in the file
    return target
