"""One queue and one batcher per loaded model: dynamic batching.

Requests put token sequences on the queue and await a future. The batcher,
a task on the event loop, fills each decode up to a token budget from the
jobs waiting, so concurrent single-text requests share decodes and a long
list of texts never runs one decode per text. A model with several lanes
gets one decode per lane each round. The decode itself runs in the model's
runner process; the batcher only awaits it, so no thread hand-off stands
between a request and its vectors.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from emberd.backends.base import BackendError, FloatMatrix, LoadedModel

log = logging.getLogger("emberd.batching")

# Attention in llama.cpp's encoders spans the whole micro-batch, so its cost
# grows with the square of the batch: small micro-batches are faster.
DEFAULT_TOKEN_BUDGET = 256


@dataclass(frozen=True)
class BatchRecord:
    """One decode, as observed by metrics."""

    sequences: int
    tokens: int
    seconds: float


@dataclass(eq=False)
class _Job:
    sequences: Sequence[Sequence[int]]
    order: list[int]  # indexes of the non-empty sequences, shortest first
    future: asyncio.Future[FloatMatrix]
    result: FloatMatrix
    next: int = 0  # position in `order` of the first sequence not yet decoded

    @property
    def wanted(self) -> bool:
        """Whether the caller still waits (a cancelled caller's future is done)."""
        return not self.future.done()

    def finish(self, error: BaseException | None = None) -> None:
        if self.future.done():  # the caller went away
            return
        if error is None:
            self.future.set_result(self.result)
        else:
            self.future.set_exception(error)


def decode_size(lengths: Iterable[int], budget: int, max_sequences: int) -> int:
    """How many of the next items, taken in order, go into one decode.

    A decode holds at most `max_sequences` items and `budget` tokens, except
    that an item longer than the budget goes alone (it always fits the model's
    micro-batch: truncation saw to that).
    """
    count = used = 0
    for size in lengths:
        if count and (used + size > budget or count >= max_sequences):
            break
        count += 1
        used += size
    return count


class BatchQueue:
    """The decode queue of one loaded model, served by one batcher task at a time.

    The batcher batches continuously: each round takes up to a token budget
    per lane from the jobs in arrival order (each job's texts shortest first),
    and jobs that arrive during a round join the next one, so the remainder of
    a job shares its decode with newcomers instead of running half empty. It
    runs while there are jobs and ends when there are none. All methods run
    on the event loop.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        name: str = "model",
        observe: Callable[[BatchRecord], None] | None = None,
    ) -> None:
        self._model = model
        self._budget = max(1, min(token_budget, model.max_batch_tokens()))
        self._max_sequences = model.max_batch_sequences()
        self._lanes = model.parallel_decodes()
        self._observe = observe
        self._name = name
        self._arrivals: deque[_Job] = deque()
        self._closed = False
        self._batcher: asyncio.Task[None] | None = None
        self._alone = 0  # lone texts being embedded in one step
        self._none_alone = asyncio.Event()
        self._none_alone.set()

    @property
    def depth(self) -> int:
        """Requests the batcher has not picked up yet."""
        return len(self._arrivals)

    @property
    def idle(self) -> bool:
        """Whether nothing is queued or being decoded: a lone text may take the fast path."""
        return self._batcher is None and not self._alone and not self._closed

    async def embed_alone(self, text: str, limit: int, truncate: bool) -> tuple[FloatMatrix, int]:
        """One text tokenized, fitted and decoded by the model in one step; its vector
        and token count.

        For a request with one text while the queue is idle: it skips the
        separate tokenize exchange. Requests that come meanwhile queue as
        usual, and the model serves the two in turn.
        """
        if self._closed:
            raise BackendError("the model has been unloaded")
        self._alone += 1
        self._none_alone.clear()
        started = time.perf_counter()
        try:
            vector, tokens = await self._model.embed_text(text, limit, truncate)
        finally:
            self._alone -= 1
            if not self._alone:
                self._none_alone.set()
        if self._observe is not None:
            self._observe(BatchRecord(1, tokens, time.perf_counter() - started))
        return vector, tokens

    async def embed(self, sequences: Sequence[Sequence[int]]) -> FloatMatrix:
        """Pooled vectors for `sequences`, in order, decoded alongside other requests.

        An empty token sequence has no vector to pool: its row stays zero.
        Raises the decode's error, or BackendError once the queue is closed.
        """
        width = self._model.facts.width  # a reranker's rows are its head's values
        result = np.zeros((len(sequences), width), dtype=np.float32)
        order = sorted((i for i, s in enumerate(sequences) if s), key=lambda i: len(sequences[i]))
        if not order:
            return result
        if self._closed:
            raise BackendError("the model has been unloaded")
        loop = asyncio.get_running_loop()
        job = _Job(sequences, order, loop.create_future(), result)
        self._arrivals.append(job)
        if self._batcher is None:
            self._batcher = loop.create_task(self._run(), name=f"emberd-batch-{self._name}")
        return await job.future

    async def close(self) -> None:
        """Take no more jobs; return once the jobs already queued (and lone texts) are done."""
        self._closed = True
        if self._batcher is not None:
            await asyncio.shield(self._batcher)
        await self._none_alone.wait()

    def _take_arrivals(self, active: deque[_Job]) -> None:
        """Move the jobs that arrived since the last look to `active`, minus abandoned ones."""
        active.extend(self._arrivals)
        self._arrivals.clear()
        for job in [job for job in active if not job.wanted]:
            active.remove(job)  # its caller went away

    async def _run(self) -> None:
        active: deque[_Job] = deque()
        try:
            while True:
                self._take_arrivals(active)
                if not active:
                    return  # with no await since the last look: no job is left behind
                try:
                    await self._step(active)
                except Exception as exc:  # a bug must not leave callers waiting forever
                    log.exception("batcher failed")
                    for job in active:
                        job.finish(exc)
                    active.clear()
        finally:
            self._batcher = None
            for job in active:  # cancelled with the loop: nobody decodes these now
                job.finish(BackendError("the model has been unloaded"))

    async def _step(self, active: deque[_Job]) -> None:
        """One round of decodes from the head of `active`; finished and failed jobs leave it."""
        groups = self._plan(active)
        consumed = sum(len(group) for group in groups)
        for job in active:
            take = min(consumed, len(job.order) - job.next)
            job.next += take
            consumed -= take
            if not consumed:
                break
        for job in await self._decode(groups):
            active.remove(job)
        while active and active[0].next == len(active[0].order):
            active.popleft().finish()

    def _plan(self, active: deque[_Job]) -> list[list[tuple[_Job, int]]]:
        """The next decodes, one per lane at most, taken in order from the head of the queue.

        What that many full decodes would hold is shared out evenly, so that
        32 waiting texts become two decodes of 16, not one of 25 and one of 7.
        """
        lanes = self._lanes
        pending = ((job, i) for job in active for i in job.order[job.next :])
        head = list(itertools.islice(pending, lanes * self._max_sequences))
        sizes = [len(job.sequences[i]) for job, i in head]
        window = decode_size(sizes, lanes * self._budget, lanes * self._max_sequences)
        share = min(self._budget, -(-sum(sizes[:window]) // lanes))
        groups: list[list[tuple[_Job, int]]] = []
        start = 0
        while start < window and len(groups) < lanes:
            count = decode_size(sizes[start:window], share, self._max_sequences)
            groups.append(head[start : start + count])
            start += count
        return groups

    async def _decode(self, groups: list[list[tuple[_Job, int]]]) -> set[_Job]:
        """Decode `groups` side by side into their jobs' results; the jobs that failed."""
        started = time.perf_counter()
        batches = [[job.sequences[i] for job, i in group] for group in groups]
        results: list[FloatMatrix | Exception]
        try:
            results = [*await self._model.decode(batches)]
        except Exception as exc:  # fail these callers, keep serving others
            results = [exc] * len(groups)
        seconds = time.perf_counter() - started
        failed: set[_Job] = set()
        for group, result in zip(groups, results, strict=True):
            if isinstance(result, Exception):
                log.error("decode failed: %s", result)
                for job in {job for job, _ in group} - failed:
                    failed.add(job)
                    job.finish(result)
                continue
            for row, (job, i) in enumerate(group):
                job.result[i] = result[row]
            if self._observe is not None:
                tokens = sum(len(job.sequences[i]) for job, i in group)
                self._observe(BatchRecord(len(group), tokens, seconds))
        return failed
