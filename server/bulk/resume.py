"""Resuming an interrupted run: chunk files and a checkpoint beside the output.

`OUT.partial/` holds one Parquet file per finished chunk and
`checkpoint.json`: what the run is (its fingerprint: arguments, model and
input file) and how far it got (the next chunk and where in the input it
starts). The checkpoint is replaced atomically after each chunk file is
renamed into place, so after a kill at any moment the checkpoint names only
chunks that are whole; a chunk written after it is simply written again.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emberd.server.bulk.readers import Position

CHECKPOINT = "checkpoint.json"


@dataclass(frozen=True)
class State:
    """How far a run got."""

    chunks: int = 0  # chunk files written, numbered 0..chunks-1
    position: Position = field(default_factory=Position)  # where the next chunk starts
    embedded: int = 0
    skipped: int = 0


class WorkDir:
    """The `OUT.partial` directory of one output file."""

    def __init__(self, out: Path) -> None:
        self.path = out.with_name(out.name + ".partial")
        self._fingerprint: object = {}

    def start(self, fingerprint: Mapping[str, object]) -> tuple[State, bool]:
        """The state to continue from, and whether it was resumed.

        A checkpoint of a different run (other arguments, model or input) is
        discarded with its chunks.
        """
        saved = self._load()
        if saved is not None and saved.get("fingerprint") == dict(fingerprint):
            state = _state(saved.get("state"))
            if state is not None:
                return state, True
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True)
        self._fingerprint = dict(fingerprint)
        self.commit(State())
        return State(), False

    def _load(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.path / CHECKPOINT).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        self._fingerprint = data.get("fingerprint")
        return data

    def chunk_path(self, index: int) -> Path:
        """Where chunk `index` is kept."""
        return self.path / f"chunk-{index:08d}.parquet"

    def chunk_files(self, state: State) -> list[Path]:
        """The chunk files `state` counts as done, in order (chunks with no rows have none)."""
        return [p for p in map(self.chunk_path, range(state.chunks)) if p.is_file()]

    def commit(self, state: State) -> None:
        """Record `state` atomically."""
        temporary = self.path / (CHECKPOINT + ".tmp")
        temporary.write_text(json.dumps({"fingerprint": self._fingerprint, "state": asdict(state)}))
        os.replace(temporary, self.path / CHECKPOINT)

    def remove(self) -> None:
        """Delete the directory and everything in it."""
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.path)


def _state(saved: object) -> State | None:
    """The State a checkpoint holds, or None when it is not one."""
    if not isinstance(saved, dict):
        return None
    try:
        position = Position(**saved["position"])
        return State(
            chunks=int(saved["chunks"]),
            position=position,
            embedded=int(saved["embedded"]),
            skipped=int(saved["skipped"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
