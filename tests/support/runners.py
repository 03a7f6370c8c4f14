"""A model in a real runner process, driven from synchronous test code."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from emberd.backends.base import BackendError, FloatMatrix, LoadOptions
from emberd.backends.runner import RemoteModel, RunnerBackend

_T = TypeVar("_T")


class DrivenModel:
    """`model`, a RemoteModel, with one private event loop for its async calls."""

    def __init__(self, model: RemoteModel, path: Path) -> None:
        self.model = model
        self.path = path
        self._loop = asyncio.new_event_loop()

    def run(self, work: Coroutine[Any, Any, _T]) -> _T:
        """Run a coroutine that uses the model to its end."""
        return self._loop.run_until_complete(work)

    def tokenize(self, text: str) -> list[int]:
        """The model's token ids of one text."""
        return self.run(self.model.tokenize([text]))[0]

    def embed(self, sequences: Sequence[Sequence[int]]) -> FloatMatrix:
        """Vectors of `sequences` in one decode; its error raised."""
        (result,) = self.run(self.model.decode([sequences]))
        if isinstance(result, BackendError):
            raise result
        return result

    def close(self) -> None:
        """End the runner, then the loop once the model has let go of it."""
        self.model.close()
        self.run(self.model.wait_closed())
        self._loop.close()


@contextlib.contextmanager
def loaded_in_runner(path: Path, options: LoadOptions) -> Iterator[DrivenModel]:
    """`path` loaded in a runner process of its own, ended when the block ends."""
    backend = RunnerBackend()
    try:
        driven = DrivenModel(backend.load(path, options, None), path)
        try:
            yield driven
        finally:
            driven.close()
    finally:
        backend.close()
