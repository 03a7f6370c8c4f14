"""Models that computed NaN or Inf on a GPU run on the CPU from then on.

llama.cpp has faults that only its Metal and CUDA kernels show (long inputs,
some model sizes). Such a model's runner is restarted on the CPU and the
request tried once more there; the file stays on the CPU until it changes or
the server restarts, so one bad kernel costs one retry, not every request.
"""

from __future__ import annotations

import dataclasses
import logging

from emberd.backends.base import LoadOptions
from emberd.models.store import ModelRecord
from emberd.server.core.file_notes import FileNotes

log = logging.getLogger("emberd.engine")


class GpuFaults:
    """The model files kept off the GPU, each as it was when it failed there."""

    def __init__(self) -> None:
        self._off_gpu: FileNotes[bool] = FileNotes()

    def add(self, record: ModelRecord, name: str, reason: str) -> None:
        """Keep `record`'s file, as it is now, on the CPU from now on."""
        self._off_gpu.put(record.path, True)
        log.warning(
            "model %s: %s; restarting it on the CPU and trying the request there once", name, reason
        )

    def place(self, record: ModelRecord, options: LoadOptions) -> LoadOptions:
        """`options`, with no GPU layers when `record`'s file failed on a GPU."""
        if options.num_gpu == 0 or not self._off_gpu.get(record.path):
            return options
        return dataclasses.replace(options, num_gpu=0)
