"""The one reranking core both rerank dialects call: the embedding core's second job.

Resolve the name, check that the model is a reranker, lease it from the
runtime, build the (query, document) pairs, send them down the model's batch
queue (where they share decodes with other requests, as sequences do), then
turn each pair's head values into a score and order the documents by it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.reranking import rerank_head
from server.core_errors import CoreError, InvalidRequest, go_quote
from server.engine import Engine, off_the_loop_if_long
from server.pairs import build_pairs, pair_limit


@dataclass(frozen=True)
class RerankJob:
    """What a rerank dialect asks of the core."""

    model: str
    query: str
    documents: Sequence[str]
    top_n: int | None = None  # keep the best n; None keeps all
    truncate: bool = True  # cut documents (never the query) to the context
    keep_alive: float | None = None
    options: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Ranked:
    """One document's place: its index in the request and its relevance score."""

    index: int
    score: float


@dataclass(frozen=True)
class RerankResult:
    """Documents best first (cut to top_n), with the counts and timings responses carry."""

    ranked: list[Ranked]
    prompt_tokens: int
    load_seconds: float
    total_seconds: float


def rank(scores: Sequence[float], top_n: int | None) -> list[Ranked]:
    """Indexes ordered by score, highest first (ties keep request order), cut to top_n."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    if top_n is not None:
        order = order[:top_n]
    return [Ranked(i, float(scores[i])) for i in order]


async def rerank(engine: Engine, job: RerankJob) -> RerankResult:
    """Score every document of `job` against its query with a reranker model."""
    started = time.perf_counter()
    engine.limits.check_inputs(len(job.documents))
    record = await engine.find(job.model)
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
    async with engine.lease(job.model, record, job.options, job.keep_alive) as (lease, options):
        limit = pair_limit(lease.model, options)
        chars = len(job.query) + sum(len(d) for d in job.documents)
        pairs = await off_the_loop_if_long(
            chars, build_pairs, lease.model, job.query, job.documents, limit, job.truncate
        )
        engine.limits.check_tokens(pairs)
        values = await lease.queue.embed(pairs)
        wait_seconds = lease.wait_seconds
    if values.shape[1] != head.outputs:
        raise CoreError(
            f"the model's head gives {values.shape[1]} values per pair, expected {head.outputs}"
        )
    if not np.isfinite(values).all():
        raise CoreError("rerank score is NaN or Inf")
    scores = head.scores(values).tolist()
    tokens = sum(len(p) for p in pairs)
    return RerankResult(
        rank(scores, job.top_n), tokens, wait_seconds, time.perf_counter() - started
    )
