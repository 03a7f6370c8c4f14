"""One queue and one worker thread per loaded model: dynamic batching.

Requests put token sequences on the queue and await a future. The worker
fills each decode up to a token budget from the jobs waiting, so concurrent
single-text requests share decodes and a long list of texts never runs one
decode per text. A model with several lanes gets one decode per lane each
round. Decoding happens on the worker thread (llama.cpp releases the GIL),
never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
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
    loop: asyncio.AbstractEventLoop
    result: FloatMatrix
    next: int = 0  # position in `order` of the first sequence not yet decoded

    @property
    def wanted(self) -> bool:
        """Whether the caller still waits (a cancelled caller's future is done)."""
        return not self.future.done()

    def finish(self, error: BaseException | None = None) -> None:
        # A loop that has closed has no caller left to tell.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(_settle, self.future, self.result, error)


def _settle(
    future: asyncio.Future[FloatMatrix], result: FloatMatrix, error: BaseException | None
) -> None:
    if future.done():  # the caller went away
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _settle_all(jobs: list[_Job]) -> None:
    for job in jobs:
        _settle(job.future, job.result, None)


def _finish_all(jobs: list[_Job]) -> None:
    """Give each finished job its result, waking each caller's loop once, not once per job."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
    for job in jobs:
        by_loop.setdefault(job.loop, []).append(job)
    for loop, finished in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop has no caller left
            loop.call_soon_threadsafe(_settle_all, finished)


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
    """The decode queue of one loaded model, served by one worker thread.

    The worker batches continuously: each round takes up to a token budget
    per lane from the jobs in arrival order (each job's texts shortest first),
    and jobs that arrive during a round join the next one, so the remainder of
    a job shares its decode with newcomers instead of running half empty.
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
        self._arrivals: deque[_Job | None] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"emberd-batch-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Requests the worker has not picked up yet."""
        return len(self._arrivals)

    async def embed(self, sequences: Sequence[Sequence[int]]) -> FloatMatrix:
        """Pooled vectors for `sequences`, in order, decoded alongside other requests.

        An empty token sequence has no vector to pool: its row stays zero.
        Raises the decode's error, or BackendError once the queue is closed.
        """
        loop = asyncio.get_running_loop()
        width = self._model.facts.width  # a reranker's rows are its head's values
        result = np.zeros((len(sequences), width), dtype=np.float32)
        order = sorted((i for i, s in enumerate(sequences) if s), key=lambda i: len(sequences[i]))
        if not order:
            return result
        job = _Job(sequences, order, loop.create_future(), loop, result)
        with self._wake:
            if self._closed:
                raise BackendError("the model has been unloaded")
            self._arrivals.append(job)
            self._wake.notify()
        return await job.future

    def close(self) -> None:
        """Stop the worker once the jobs already queued are done."""
        with self._wake:
            if not self._closed:
                self._closed = True
                self._arrivals.append(None)
                self._wake.notify()
        self._thread.join()

    def _take_arrivals(self, wait: bool) -> tuple[list[_Job], bool]:
        """Jobs that arrived since the last look, and whether close() was called."""
        with self._wake:
            while wait and not self._arrivals:
                self._wake.wait()
            jobs: list[_Job] = []
            stop = False
            while self._arrivals:
                job = self._arrivals.popleft()
                if job is None:
                    stop = True
                else:
                    jobs.append(job)
            return jobs, stop

    def _run(self) -> None:
        active: deque[_Job] = deque()
        stopping = False
        while True:
            arrived, stop = self._take_arrivals(wait=not active)
            active.extend(arrived)
            stopping = stopping or stop
            for job in [job for job in active if not job.wanted]:
                active.remove(job)  # its caller went away
            if not active:
                if stopping:
                    return
                continue
            try:
                self._step(active)
            except Exception as exc:  # a bug must not leave callers waiting forever
                log.exception("batch worker failed")
                for job in active:
                    job.finish(exc)
                active.clear()

    def _step(self, active: deque[_Job]) -> None:
        """One round of decodes from the head of `active`; finished and failed jobs leave it."""
        groups = self._plan(active)
        consumed = sum(len(group) for group in groups)
        for job in active:
            take = min(consumed, len(job.order) - job.next)
            job.next += take
            consumed -= take
            if not consumed:
                break
        for job in self._decode(groups):
            active.remove(job)
        done = []
        while active and active[0].next == len(active[0].order):
            done.append(active.popleft())
        _finish_all(done)

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

    def _decode(self, groups: list[list[tuple[_Job, int]]]) -> set[_Job]:
        """Decode `groups` side by side into their jobs' results; the jobs that failed."""
        started = time.perf_counter()
        batches = [[job.sequences[i] for job, i in group] for group in groups]
        results: list[FloatMatrix | Exception]
        try:
            results = [*self._model.embed_parallel(batches)]
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
