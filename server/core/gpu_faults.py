"""Models that computed NaN or Inf on a GPU run on the CPU from then on.

llama.cpp has faults that only its Metal and CUDA kernels show (long inputs,
some model sizes). Such a model's runner is restarted on the CPU and the
request tried once more there; the file stays on the CPU until it changes or
the server restarts, so one bad kernel costs one retry, not every request.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from emberd.backends.base import LoadOptions
from emberd.models.store import FileVersion, ModelRecord, file_version

log = logging.getLogger("emberd.engine")


class GpuFaults:
    """The model files that are kept off the GPU, each with the version that failed there."""

    def __init__(self) -> None:
        self._by_path: dict[Path, FileVersion | None] = {}

    def add(self, record: ModelRecord, name: str, reason: str) -> None:
        """Keep `record`'s file, as it is now, on the CPU from now on."""
        self._by_path[record.path] = file_version(record.path)
        log.warning(
            "model %s: %s; restarting it on the CPU and trying the request there once", name, reason
        )

    def place(self, record: ModelRecord, options: LoadOptions) -> LoadOptions:
        """`options`, with no GPU layers when `record`'s file failed on a GPU."""
        if record.path not in self._by_path or options.num_gpu == 0:
            return options
        if file_version(record.path) != self._by_path[record.path]:  # a new file, a new chance
            del self._by_path[record.path]
            return options
        return dataclasses.replace(options, num_gpu=0)
