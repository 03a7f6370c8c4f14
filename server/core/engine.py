"""The one core every dialect calls: embeddings, and reranking as its second job.

Resolve the name, lease the model from the runtime, tokenize and truncate,
submit to the model's batch queue, then check, cut and normalise the vectors
(or, for a reranker, turn each pair's head values into a score and order the
documents by it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from emberd.backends.base import (
    FloatMatrix,
    InputRefused,
    LoadedModel,
    LoadOptions,
    ModelCrashed,
    ModelLoadError,
    NonFiniteOnGpu,
)
from emberd.backends.sequences import NO_ROOM, fit_sequence
from emberd.models.bundled import bundled_for, install_bundled
from emberd.models.capabilities import rerank_head
from emberd.models.errors import InvalidModelFile, ModelNotFound
from emberd.models.store import ModelRecord, ModelStores
from emberd.server.core.crashes import HeldBack
from emberd.server.core.errors import (
    CoreError,
    InvalidRequest,
    InvalidVectors,
    LoadFailed,
    ModelHeldBack,
    ModelStopped,
    go_quote,
    reason_of,
)
from emberd.server.core.gpu_faults import GpuFaults
from emberd.server.core.limits import RequestLimits
from emberd.server.core.options import ServerDefaults, load_overrides, resolve_load_options
from emberd.server.core.pools import WorkPool
from emberd.server.core.rerank import RerankJob, RerankResult, build_pairs, pair_limit, rank
from emberd.server.core.runtime import Lease, Runtime

_T = TypeVar("_T")

# Threads that resolve names; most of a resolve is a few stats, so few are busy at once.
RESOLVE_WORKERS = 8


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
    # From asking for the model to holding it: its load, or the wait for a
    # slot. Ollama's load_duration measures the same span.
    model_wait_seconds: float
    total_seconds: float
    token_counts: tuple[int, ...] = ()  # per input, special tokens included


def finish_vectors(vectors: FloatMatrix, dimensions: int | None, normalize: bool) -> FloatMatrix:
    """Reject NaN/Inf, cut to `dimensions` when it is a real cut, then normalise (each row
    over its norm, at least 1e-12, as float32)."""
    cut = dimensions is not None and 0 < dimensions < vectors.shape[1]
    if cut or not normalize:  # else the norms below see every value
        if not np.isfinite(vectors).all():
            raise InvalidVectors()
        if not normalize:
            return vectors[:, :dimensions] if cut else vectors
        vectors = vectors[:, :dimensions]
    vectors = vectors.astype(np.float32, copy=False)
    # The norms in one call (np.linalg.norm takes several on a small matrix); a NaN or
    # Inf in a row makes its norm so.
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    if not np.isfinite(norms).all():
        raise InvalidVectors()
    return (vectors / np.maximum(norms, 1e-12)[:, None]).astype(np.float32, copy=False)


def check_dimensions(dimensions: int | None, width: int | None = None) -> None:
    """400 for `dimensions` below 1, or (once the model's `width` is known) above it.

    A vector longer than the model's would not be the model's: refused, as
    OpenAI refuses more dimensions than a model has, rather than answered
    at full length as if the request had been honoured.
    """
    if dimensions is None:
        return
    if dimensions < 1:
        raise InvalidRequest(f"dimensions must be at least 1, got {dimensions}")
    if width is not None and dimensions > width:
        raise InvalidRequest(
            f"dimensions {dimensions} is more than the model's embedding length of {width}"
        )


def truncation_limit(model: LoadedModel, options: LoadOptions) -> int:
    """How many tokens of an input fit, before the model's special tokens."""
    facts = model.facts
    return min(options.num_ctx, facts.n_ctx_train) - len(facts.prefix) - len(facts.suffix)


async def prepare_texts(
    model: LoadedModel, texts: Sequence[str], limit: int, truncate: bool
) -> list[list[int]]:
    """Tokenize and fit per Ollama (`fit_sequence`): cut, then the special tokens."""
    prefix, suffix = model.facts.prefix, model.facts.suffix
    try:
        return [
            fit_sequence(tokens, index, limit, truncate, prefix, suffix)
            for index, tokens in enumerate(await model.tokenize(texts))
        ]
    except InputRefused as exc:  # the client's 400, as from a runner's own fit
        raise InvalidRequest(str(exc)) from exc


def prepare_tokens(
    model: LoadedModel, token_lists: Sequence[Sequence[int]], limit: int, truncate: bool
) -> list[list[int]]:
    """Token ids go to the model as given, checked against the vocabulary and truncated."""
    if limit <= 0:
        raise InvalidRequest(NO_ROOM)
    n_vocab = model.facts.n_vocab
    sequences = []
    for index, ids in enumerate(token_lists):
        bad = [t for t in ids if not 0 <= t < n_vocab]
        if bad:
            raise InvalidRequest(f"token id {bad[0]} is out of range (vocabulary of {n_vocab})")
        try:  # cut by the texts' rule, with no special tokens; an empty list stays empty
            sequences.append(fit_sequence(ids, index, limit, truncate, (), ()) if ids else [])
        except InputRefused as exc:
            raise InvalidRequest(str(exc)) from exc
    return sequences


class Engine:
    """Embeds texts with a named model, whatever the dialect."""

    def __init__(
        self,
        stores: ModelStores,
        runtime: Runtime,
        defaults: ServerDefaults,
        limits: RequestLimits,
    ) -> None:
        self.stores = stores
        self.runtime = runtime
        self.defaults = defaults
        self.limits = limits
        self._installing = asyncio.Lock()
        self.gpu_faults = GpuFaults()
        # Names are resolved in a pool of their own: listings and pulls, which
        # can wait long on a hash or a registry, never hold up an embed.
        self.resolving = WorkPool("resolve", RESOLVE_WORKERS)

    async def start(self) -> None:
        """Get the backend ready before the first request, and learn the GPUs it has."""
        gpus = await self.runtime.start()
        self.defaults = dataclasses.replace(self.defaults, gpu_devices=gpus)

    async def find(self, name: str) -> ModelRecord:
        """The model a name means, from the stores.

        A bundled model (all-minilm) that no store has yet is imported from
        its package on first use, once, however many requests ask at once.
        A broken entry is a LoadFailed that names the model, not its path.
        """
        if not name:
            raise InvalidRequest("model is required")
        try:
            return await self._find(name)
        except InvalidModelFile as exc:
            raise LoadFailed(name, reason_of(exc), str(exc)) from exc

    async def _find(self, name: str) -> ModelRecord:
        known = self.stores.cached(name)
        if known is not None:
            return known
        try:
            # Resolving may hash a dropped multi-GB file: never on the loop.
            return await self.resolving.run(self.stores.resolve, name)
        except ModelNotFound as missing:
            bundled = bundled_for(name)
            if bundled is None:
                raise
            not_found = missing
        async with self._installing:
            with contextlib.suppress(ModelNotFound):
                # installed while this request waited
                return await self.resolving.run(self.stores.resolve, name)
            if await asyncio.to_thread(install_bundled, bundled, self.stores) is None:
                raise not_found
            return await self.resolving.run(self.stores.resolve, name)

    async def embed(self, job: EmbedJob) -> EmbedResult:
        """Embed `job`'s inputs; no inputs just loads the model (keep_alive applied)."""
        started = time.perf_counter()
        count = len(job.token_lists) if job.token_lists is not None else len(job.texts)
        self.limits.check_inputs(count)
        check_dimensions(job.dimensions)
        record = await self.find(job.model)
        if record.info().is_reranker:
            raise InvalidRequest(
                f"{go_quote(job.model)} does not support embeddings (its capability is rerank)"
            )

        async def run(lease: Lease, options: LoadOptions) -> tuple[FloatMatrix, tuple[int, ...]]:
            check_dimensions(job.dimensions, lease.model.facts.n_embd)
            if count == 0:
                return np.zeros((0, lease.model.facts.n_embd), dtype=np.float32), ()
            if count == 1 and job.token_lists is None and lease.queue.idle:
                return await self._embed_alone(lease, options, job)
            sequences = await self._prepare(lease.model, options, job)
            self.limits.check_tokens(sequences)
            return await lease.queue.embed(sequences), tuple(len(s) for s in sequences)

        (raw, counts), wait = await self._leased(
            job.model, record, job.options, job.keep_alive, run
        )
        if count == 0:
            return EmbedResult(raw, 0, wait, time.perf_counter() - started)
        vectors = finish_vectors(raw, job.dimensions, job.normalize)
        return EmbedResult(vectors, sum(counts), wait, time.perf_counter() - started, counts)

    async def _embed_alone(
        self, lease: Lease, options: LoadOptions, job: EmbedJob
    ) -> tuple[FloatMatrix, tuple[int, ...]]:
        """A lone text while its model is idle: tokenized and decoded in one exchange."""
        limit = truncation_limit(lease.model, options)
        try:
            vector, tokens = await lease.queue.embed_alone(job.texts[0], limit, job.truncate)
        except InputRefused as exc:  # the runner's `fit_sequence`: the client's 400
            raise InvalidRequest(str(exc)) from exc
        self.limits.check_token_count(tokens)
        return vector, (tokens,)

    async def rerank(self, job: RerankJob) -> RerankResult:
        """Score every document of `job` against its query with a reranker model."""
        started = time.perf_counter()
        self.limits.check_inputs(len(job.documents))
        record = await self.find(job.model)
        info = record.info()  # checked when the record was found; cached
        if not info.is_reranker:
            capability = "embedding" if info.is_embedding else "none"
            raise InvalidRequest(
                f"{go_quote(job.model)} does not support reranking (its capability is {capability})"
            )
        head = rerank_head(info)  # refuses rerankers whose scores would be wrong
        if not job.documents:
            raise InvalidRequest("documents must not be empty")
        if job.top_n is not None and job.top_n < 1:
            raise InvalidRequest("top_n must be a positive integer")

        async def run(lease: Lease, options: LoadOptions) -> tuple[FloatMatrix, list[list[int]]]:
            limit = pair_limit(lease.model, options)
            pairs = await build_pairs(
                lease.model, job.query, job.documents, limit, job.truncate,
                job.max_document_tokens,
            )  # fmt: skip
            self.limits.check_tokens(pairs)
            return await lease.queue.embed(pairs), pairs

        (values, pairs), wait = await self._leased(
            job.model, record, job.options, job.keep_alive, run
        )
        if values.shape[1] != head.outputs:
            raise CoreError(
                f"the model's head gives {values.shape[1]} values per pair, expected {head.outputs}"
            )
        if not np.isfinite(values).all():
            raise CoreError("rerank score is NaN or Inf")
        scores = head.scores(values).tolist()
        tokens = sum(len(p) for p in pairs)
        return RerankResult(rank(scores, job.top_n), tokens, wait, time.perf_counter() - started)

    async def _leased(
        self,
        name: str,
        record: ModelRecord,
        requested: Mapping[str, object],
        keep_alive: float | None,
        work: Callable[[Lease, LoadOptions], Awaitable[_T]],
    ) -> tuple[_T, float]:
        """`work` done under a lease of the model, and the lease's wait for it.

        NaN or Inf from a model on a GPU moves the model to the CPU (a new
        runner, since the load options change) and does the work once more there.
        """
        try:
            async with self.lease(name, record, requested, keep_alive) as (lease, options):
                return await work(lease, options), lease.wait_seconds
        except NonFiniteOnGpu as exc:
            self.gpu_faults.add(record, name, str(exc))
        async with self.lease(name, record, requested, keep_alive) as (lease, options):
            return await work(lease, options), lease.wait_seconds

    @contextlib.asynccontextmanager
    async def lease(
        self,
        name: str,
        record: ModelRecord,
        requested: Mapping[str, object],
        keep_alive: float | None,
    ) -> AsyncIterator[tuple[Lease, LoadOptions]]:
        """`record` checked, loaded as `requested` and leased, with the options it has.

        A file that is broken or that llama.cpp refuses is a LoadFailed naming
        `name` (the model as the client asked for it); a runner that ends
        under the request is ModelStopped, and a file that keeps ending its
        runners ModelHeldBack.
        """
        try:
            options = self._load_options(record, requested)
            async with self.runtime.use(record, options, keep_alive) as lease:
                yield lease, options
        except (InvalidModelFile, ModelLoadError) as exc:  # only loading raises these
            raise LoadFailed(name, reason_of(exc), str(exc)) from exc
        except ModelCrashed as exc:
            raise ModelStopped(name, exc.reason) from exc
        except HeldBack as exc:
            raise ModelHeldBack(name, exc.crashes) from exc

    def _load_options(self, record: ModelRecord, requested: Mapping[str, object]) -> LoadOptions:
        """How `record` must be loaded for a request (its file is vetted when it loads)."""
        overrides = load_overrides(requested)
        info = record.info()  # cached per file version
        options = resolve_load_options(self.defaults, record.params, overrides, info.context_length)
        return self.gpu_faults.place(record, options)

    async def _prepare(
        self, model: LoadedModel, options: LoadOptions, job: EmbedJob
    ) -> list[list[int]]:
        if job.token_lists is not None:
            # Ids go to the model as given: no special tokens are added, so
            # none need room.
            limit = min(options.num_ctx, model.facts.n_ctx_train)
            return prepare_tokens(model, job.token_lists, limit, job.truncate)
        limit = truncation_limit(model, options)
        return await prepare_texts(model, job.texts, limit, job.truncate)
