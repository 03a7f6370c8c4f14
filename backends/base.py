"""The small interface the runtime uses to run an embedding model.

A backend turns a GGUF file plus load options into a :class:`LoadedModel`;
a loaded model tokenizes text and embeds batches of token sequences. Nothing
here knows about HTTP, names or keep_alive, nor whether the model runs in
this process or in a runner process of its own (backends/runner.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from emberd.models.store import FileVersion

FloatMatrix = npt.NDArray[np.float32]


class Pooling(IntEnum):
    """Pooling types, numbered as GGUF's `<arch>.pooling_type` numbers them."""

    NONE = 0
    MEAN = 1
    CLS = 2
    LAST = 3
    RANK = 4


@dataclass(frozen=True)
class LoadOptions:
    """Everything that decides how a model is loaded; a change means a reload."""

    num_ctx: int
    num_batch: int
    num_gpu: int  # layers to offload; negative means all that fit
    main_gpu: int
    use_mmap: bool
    use_mlock: bool
    num_thread: int


@dataclass(frozen=True)
class ModelFacts:
    """What the runtime and engine need to know about a loaded model."""

    n_embd: int
    n_ctx_train: int
    n_vocab: int
    pooling: Pooling
    # Special tokens put around every sequence (e.g. [CLS] ... [SEP]).
    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    gpu_layers: int  # layers actually offloaded to a GPU
    n_layers: int
    # Rank pooling: values the classifier head gives per sequence.
    n_cls_out: int = 0
    # Rank pooling: special tokens between the two texts of a pair, after the
    # first text's suffix (XLM-R's second </s>); a pair is
    # prefix + query + suffix + pair_separator + document + suffix.
    pair_separator: tuple[int, ...] = ()
    # Rank pooling: the GGUF's rerank prompt ({query} and {document} in it), if any.
    rerank_template: str | None = None
    # Tokens one decode should carry on this model's device; None: the
    # server's budget, which is tuned for CPUs (a GPU wants larger decodes).
    decode_budget: int | None = None

    @property
    def width(self) -> int:
        """Values a decode gives per sequence: the head's outputs, or the vector."""
        return self.n_cls_out if self.pooling == Pooling.RANK else self.n_embd


@dataclass
class DecodeStats:
    """Counters a loaded model keeps, read by tests and metrics."""

    decodes: int = 0
    sequences: int = 0
    tokens: int = 0

    def count(self, batches: Sequence[Sequence[Sequence[int]]]) -> None:
        """Count one decode per non-empty batch, with its sequences and tokens."""
        for sequences in filter(None, batches):
            self.add(len(sequences), sum(len(s) for s in sequences))

    def add(self, sequences: int, tokens: int) -> None:
        """Count one decode of `sequences` sequences holding `tokens` tokens."""
        self.decodes += 1
        self.sequences += sequences
        self.tokens += tokens


class BackendError(Exception):
    """A backend failed to do what was asked (load, tokenize, decode)."""


class ModelLoadError(BackendError):
    """The model file could not be loaded."""


class NonFiniteOnGpu(BackendError):
    """A model on a GPU computed NaN or Inf values.

    llama.cpp has such faults on Metal and CUDA alone (long inputs, some
    model sizes): the runtime may restart the model on the CPU and retry once.
    """


class TokenOutOfRange(BackendError):
    """A token id given by the caller is not in the model's vocabulary."""


class InputRefused(BackendError):
    """An input the request's own options refuse (too long without truncation, nothing
    to embed): the client's error, not the model's."""


class ModelCrashed(BackendError):
    """The process running the model ended (a crash, an abort, a kill) or broke its protocol.

    `reason` says how, without paths: "killed by SIGKILL", "exited with status 1".
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"the model's runner stopped: {reason}")
        self.reason = reason


class LoadedModel(Protocol):
    """A model in memory, ready to embed.

    Tokenizing and decoding are awaited on the event loop; both run
    elsewhere, and a tokenize never waits for a decode.
    """

    facts: ModelFacts
    stats: DecodeStats

    async def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens."""
        ...

    async def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of token ids (special tokens as their text)."""
        ...

    def alive(self) -> bool:
        """False once the model can serve nothing more (its process has ended)."""
        ...

    def max_batch_tokens(self) -> int:
        """Most tokens one decode can take (a single sequence never exceeds it)."""
        ...

    def max_batch_sequences(self) -> int:
        """Most sequences one decode can take."""
        ...

    def parallel_decodes(self) -> int:
        """How many decodes `decode` runs side by side (1 or more)."""
        ...

    async def decode(
        self, batches: Sequence[Sequence[Sequence[int]]]
    ) -> list[FloatMatrix | BackendError]:
        """One decode per batch (at most `parallel_decodes()` of them), run side by side.

        Each batch gets its pooled, unnormalised vectors (or a reranker's head
        values), one row per sequence, or the BackendError its own decode
        raised. The caller packs: each batch fits `max_batch_tokens()` and
        `max_batch_sequences()`, each sequence carries its special tokens, and
        one call at a time is in flight (an `embed_text` may be beside it; the
        model serves them in turn). Awaited on the event loop: the decode runs
        elsewhere (a runner process), never on the loop.
        """
        ...

    async def embed_text(self, text: str, limit: int, truncate: bool) -> tuple[FloatMatrix, int]:
        """One text tokenized, fitted (`sequences.fit_sequence`) and decoded in one step.

        The fast path of a lone text when nothing else waits: one exchange
        with the model instead of a tokenize and a decode. Returns its vector
        (one row) and its token count, special tokens included; InputRefused
        for an input `limit` and `truncate` refuse.
        """
        ...

    def close(self) -> None:
        """Free the model's memory. The object is unusable afterwards."""
        ...

    async def wait_closed(self) -> None:
        """Wait, after close(), until what the model used on the event loop is released."""
        ...


class Backend(Protocol):
    """Loads models."""

    def load(self, path: Path, options: LoadOptions, version: FileVersion | None) -> LoadedModel:
        """Load the GGUF at `path`, refusing it unless it is still `version` (when given).

        Raises ModelLoadError when the file cannot be loaded, ModelCrashed
        when loading it ended the process that tried. Blocks: call it from a
        worker thread.
        """
        ...

    def gpu_devices(self) -> int:
        """How many GPUs a `main_gpu` may choose among; 0 without GPU offload."""
        ...

    def close(self) -> None:
        """Release what the backend holds besides its models (a spare process)."""
        ...
