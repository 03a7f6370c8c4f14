"""The one embedding core both dialects call.

Resolve the name, lease the model from the runtime, tokenize and truncate,
submit to the model's batch queue, then check, cut and normalise the vectors.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from backends.base import FloatMatrix, LoadedModel, LoadOptions, TokenOutOfRange
from models.bundled import bundled_for, install_bundled
from models.errors import ModelNotFound
from models.store import ModelRecord, ModelStores
from server.errors import BadRequest, InternalError
from server.options import ServerDefaults, load_overrides, resolve_load_options
from server.runtime import Runtime

# Tokenizing this many characters or more goes to a thread, off the event loop.
_INLINE_TOKENIZE_CHARS = 4096


@dataclass(frozen=True)
class EmbedJob:
    """What a dialect asks of the core."""

    model: str
    texts: Sequence[str] = ()
    token_lists: Sequence[Sequence[int]] | None = None  # token ids instead of texts
    truncate: bool = True
    dimensions: int | None = None
    normalize: bool = True
    keep_alive: float | None = None
    options: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class EmbedResult:
    """Vectors in input order, with the counts and timings responses carry."""

    vectors: FloatMatrix
    prompt_tokens: int
    load_seconds: float
    total_seconds: float
    token_counts: tuple[int, ...] = ()  # per input, special tokens included


def l2_normalize(vectors: FloatMatrix) -> FloatMatrix:
    """Each row divided by its norm (at least 1e-12), as float32."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def finish_vectors(vectors: FloatMatrix, dimensions: int | None, normalize: bool) -> FloatMatrix:
    """Reject NaN/Inf, cut to `dimensions` when it is a real cut, then normalise."""
    if not np.isfinite(vectors).all():
        raise InternalError("embedding contains NaN or Inf values")
    if dimensions is not None and 0 < dimensions < vectors.shape[1]:
        vectors = vectors[:, :dimensions]
    return l2_normalize(vectors) if normalize else vectors


def truncation_limit(model: LoadedModel, options: LoadOptions) -> int:
    """How many tokens of an input fit, before the model's special tokens."""
    facts = model.facts
    return min(options.num_ctx, facts.n_ctx_train) - len(facts.prefix) - len(facts.suffix)


def prepare_texts(
    model: LoadedModel, texts: Sequence[str], limit: int, truncate: bool
) -> list[list[int]]:
    """Tokenize and truncate per Ollama; specials are added after the cut."""
    if limit <= 0:
        raise BadRequest("input after truncation exceeds maximum context length")
    prefix, suffix = list(model.facts.prefix), list(model.facts.suffix)
    sequences = []
    for text in texts:
        tokens = model.tokenize(text)
        if len(tokens) > limit:
            if not truncate:
                raise BadRequest("the input length exceeds the context length")
            tokens = tokens[:limit]
        sequences.append(prefix + tokens + suffix)
    return sequences


def prepare_tokens(
    model: LoadedModel, token_lists: Sequence[Sequence[int]], limit: int, truncate: bool
) -> list[list[int]]:
    """Token ids go to the model as given, checked against the vocabulary and truncated."""
    if limit <= 0:
        raise BadRequest("input after truncation exceeds maximum context length")
    n_vocab = model.facts.n_vocab
    sequences = []
    for ids in token_lists:
        bad = [t for t in ids if not 0 <= t < n_vocab]
        if bad:
            raise TokenOutOfRange(f"token id {bad[0]} is out of range (vocabulary of {n_vocab})")
        if len(ids) > limit:
            if not truncate:
                raise BadRequest("the input length exceeds the context length")
            ids = ids[:limit]
        sequences.append(list(ids))
    return sequences


class Engine:
    """Embeds texts with a named model, whatever the dialect."""

    def __init__(self, stores: ModelStores, runtime: Runtime, defaults: ServerDefaults) -> None:
        self.stores = stores
        self.runtime = runtime
        self.defaults = defaults
        self._installing = asyncio.Lock()

    async def find(self, name: str) -> ModelRecord:
        """The model a name means, from the stores.

        A bundled model (all-minilm) that no store has yet is imported from
        its package on first use, once, however many requests ask at once.
        """
        if not name:
            raise BadRequest("model is required")
        try:
            return self.stores.resolve(name)
        except ModelNotFound as missing:
            bundled = bundled_for(name)
            if bundled is None:
                raise
            not_found = missing
        async with self._installing:
            with contextlib.suppress(ModelNotFound):
                return self.stores.resolve(name)  # installed while this request waited
            if await asyncio.to_thread(install_bundled, bundled, self.stores) is None:
                raise not_found
            return self.stores.resolve(name)

    async def embed(self, job: EmbedJob) -> EmbedResult:
        """Embed `job`'s inputs; no inputs just loads the model (keep_alive applied)."""
        started = time.perf_counter()
        record = await self.find(job.model)
        info = record.info()  # validates the GGUF before llama.cpp sees it; cached
        options = resolve_load_options(
            self.defaults, record.params, load_overrides(job.options), info.context_length
        )
        async with self.runtime.use(record, options, job.keep_alive) as lease:
            count = len(job.token_lists) if job.token_lists is not None else len(job.texts)
            if count == 0:
                empty = np.zeros((0, lease.model.facts.n_embd), dtype=np.float32)
                return EmbedResult(empty, 0, lease.wait_seconds, time.perf_counter() - started)
            sequences = await self._prepare(lease.model, options, job)
            raw = await lease.queue.embed(sequences)
        vectors = finish_vectors(raw, job.dimensions, job.normalize)
        counts = tuple(len(s) for s in sequences)
        return EmbedResult(
            vectors, sum(counts), lease.wait_seconds, time.perf_counter() - started, counts
        )

    async def _prepare(
        self, model: LoadedModel, options: LoadOptions, job: EmbedJob
    ) -> list[list[int]]:
        if job.token_lists is not None:
            # Ids go to the model as given: no special tokens are added, so
            # none need room.
            limit = min(options.num_ctx, model.facts.n_ctx_train)
            return prepare_tokens(model, job.token_lists, limit, job.truncate)
        limit = truncation_limit(model, options)
        if sum(len(t) for t in job.texts) < _INLINE_TOKENIZE_CHARS:
            return prepare_texts(model, job.texts, limit, job.truncate)
        return await asyncio.to_thread(prepare_texts, model, job.texts, limit, job.truncate)
