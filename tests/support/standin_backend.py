"""A deterministic stand-in for the llama.cpp backend, for runtime and batching tests.

It implements the `Backend` and `LoadedModel` protocols with vectors computed
from the token ids, counts loads, decodes and closes, and can hold a load or
a decode on a gate until the test lets it go, or fail on demand.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emberd.backends.base import (
    BackendError,
    DecodeStats,
    FloatMatrix,
    LoadOptions,
    ModelCrashed,
    ModelFacts,
    ModelLoadError,
    NonFiniteOnGpu,
    Pooling,
)
from emberd.backends.sequences import fit_sequence
from emberd.models.store import FileVersion

N_EMBD = 8
# A decode containing this token fails.
POISON = 666
# How long a gated call waits before giving up, so a broken test cannot hang.
GATE_TIMEOUT_S = 5.0


def vector_of(sequence: Sequence[int]) -> np.ndarray:
    """The stand-in's pooled vector of one token sequence."""
    k = np.arange(N_EMBD, dtype=np.float64)
    return np.cos(k * (1 + sum(sequence)) + len(sequence)).astype(np.float32)


class Gate:
    """A door that is open unless closed; waiting at a closed door times out with an error."""

    def __init__(self, *, open_: bool = True) -> None:
        self._event = threading.Event()
        self.entered = threading.Event()  # set once someone came to the door
        if open_:
            self._event.set()

    def close(self) -> None:
        """Make later arrivals wait."""
        self._event.clear()

    def open(self) -> None:
        """Let everyone waiting, and everyone after, through."""
        self._event.set()

    def pass_through(self) -> None:
        """Wait until the door is open."""
        self.entered.set()
        if not self._event.wait(GATE_TIMEOUT_S):
            raise TimeoutError("the test never opened the gate")


class StandInModel:
    """A loaded stand-in model: embeds by `vector_of`, records every decode."""

    def __init__(
        self,
        path: Path,
        options: LoadOptions,
        *,
        max_tokens: int = 64,
        max_sequences: int = 8,
        gpu_layers: int = 0,
        lanes: int = 1,
    ) -> None:
        self.path = path
        self.options = options
        self.facts = ModelFacts(
            n_embd=N_EMBD,
            n_ctx_train=max_tokens,
            n_vocab=1000,
            pooling=Pooling.MEAN,
            prefix=(1,),
            suffix=(2,),
            gpu_layers=gpu_layers,
            n_layers=4,
        )
        self.stats = DecodeStats()
        self.decode_gate = Gate()
        self.batches: list[list[tuple[int, ...]]] = []  # every decode's sequences
        self.alone: list[str] = []  # every text embedded in one step (embed_text)
        self.loaded_at = time.monotonic()
        self.closed_at: float | None = None
        self.crashed = False
        self.nan_on_gpu = False  # decodes give NaN when the model has GPU layers
        self._max_tokens = max_tokens
        self._max_sequences = max_sequences
        self._lanes = lanes

    @property
    def closed(self) -> bool:
        """Whether close() was called."""
        return self.closed_at is not None

    async def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """One token per word: 10 plus the word's length."""
        if self.crashed:
            raise ModelCrashed("killed by SIGKILL")
        return [[10 + len(word) for word in text.split()] for text in texts]

    async def detokenize(self, tokens: Sequence[int]) -> str:
        """A word of the right length per token."""
        return " ".join("x" * (token - 10) for token in tokens)

    def alive(self) -> bool:
        """False once `crash()` was called."""
        return not self.crashed

    def crash(self) -> None:
        """Behave from now on as a model whose process has ended."""
        self.crashed = True

    def max_batch_tokens(self) -> int:
        """The stand-in's decode size."""
        return self._max_tokens

    def max_batch_sequences(self) -> int:
        """The stand-in's sequence limit."""
        return self._max_sequences

    def parallel_decodes(self) -> int:
        """Batches `embed_parallel` takes at once (decoded one after another)."""
        return self._lanes

    async def decode(
        self, batches: Sequence[Sequence[Sequence[int]]]
    ) -> list[FloatMatrix | BackendError]:
        """`embed_parallel` on a worker thread, as a decode runs off the event loop."""
        return await asyncio.to_thread(self.embed_parallel, batches)

    async def embed_text(self, text: str, limit: int, truncate: bool) -> tuple[FloatMatrix, int]:
        """Tokenized, fitted and embedded alone, as a runner does it in one step."""
        self.alone.append(text)
        (tokens,) = await self.tokenize([text])
        sequence = fit_sequence(tokens, 0, limit, truncate, self.facts.prefix, self.facts.suffix)
        return await asyncio.to_thread(self.embed, [sequence]), len(sequence)

    def embed_parallel(
        self, batches: Sequence[Sequence[Sequence[int]]]
    ) -> list[FloatMatrix | BackendError]:
        """`embed` of each batch, each failing alone."""
        assert len(batches) <= self._lanes
        results: list[FloatMatrix | BackendError] = []
        for batch in batches:
            try:
                results.append(self.embed(batch))
            except BackendError as exc:
                results.append(exc)
        return results

    def embed(self, sequences: Sequence[Sequence[int]]) -> FloatMatrix:
        """`vector_of` each sequence; fails on POISON or on a batch that does not fit."""
        if self.closed:
            raise BackendError("model is closed")
        if self.crashed:
            raise ModelCrashed("killed by SIGKILL")
        self.batches.append([tuple(s) for s in sequences])
        self.decode_gate.pass_through()
        total = sum(len(s) for s in sequences)
        if total > self._max_tokens or len(sequences) > self._max_sequences:
            raise BackendError("batch does not fit")
        if any(POISON in s for s in sequences):
            raise BackendError("poisoned batch")
        if self.nan_on_gpu and self.options.num_gpu != 0:
            raise NonFiniteOnGpu("stand-in computed NaN or Inf on its GPU")
        self.stats.add(len(sequences), total)
        return np.stack([vector_of(s) for s in sequences])

    def close(self) -> None:
        """Mark closed (the first time only)."""
        if self.closed_at is None:
            self.closed_at = time.monotonic()

    async def wait_closed(self) -> None:
        """Nothing held on the loop."""


class StandInBackend:
    """Loads stand-in models; counts loads, can hold them on a gate or fail them."""

    def __init__(self, *, gpu_layers: int = 0, gpus: int = 0) -> None:
        self.load_gate = Gate()
        self.nan_on_gpu = False  # models loaded from now on compute NaN on a GPU
        self.models: list[StandInModel] = []
        self.load_calls = 0
        self.fail_loads = 0  # how many of the next loads fail
        self._gpu_layers = gpu_layers
        self._gpus = gpus
        self._lock = threading.Lock()

    def gpu_devices(self) -> int:
        """The GPUs the stand-in claims (none unless told)."""
        return self._gpus

    def close(self) -> None:
        """Nothing to release."""

    def load(
        self, path: Path, options: LoadOptions, version: FileVersion | None = None
    ) -> StandInModel:
        """A new stand-in model for `path`, after the gate; ModelLoadError when told to fail."""
        with self._lock:
            self.load_calls += 1
        self.load_gate.pass_through()
        with self._lock:
            if self.fail_loads > 0:
                self.fail_loads -= 1
                raise ModelLoadError(f"cannot load {path.name}")
            model = StandInModel(path, options, gpu_layers=self._gpu_layers)
            model.nan_on_gpu = self.nan_on_gpu
            self.models.append(model)
        return model

    def loaded_for(self, path: Path) -> list[StandInModel]:
        """Every model ever loaded from `path`, oldest first."""
        return [m for m in self.models if m.path == path]

    @property
    def open_models(self) -> list[StandInModel]:
        """Models loaded and not closed."""
        return [m for m in self.models if not m.closed]
