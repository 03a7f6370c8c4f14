"""One queue and one worker thread per loaded model: dynamic batching.

Requests put token sequences on the queue and await a future. The worker
takes everything waiting, sorts the sequences by length and packs them into
token-budgeted decodes, so concurrent single-text requests share decodes and
a long list of texts never runs one decode per text. Decoding happens on the
worker thread (llama.cpp releases the GIL), never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from backends.base import BackendError, FloatMatrix, LoadedModel

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
    future: asyncio.Future[FloatMatrix]
    loop: asyncio.AbstractEventLoop
    result: FloatMatrix
    remaining: int = field(init=False)

    def __post_init__(self) -> None:
        self.remaining = len(self.sequences)

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


def pack(
    lengths: Sequence[int], token_budget: int, max_tokens: int, max_sequences: int
) -> list[list[int]]:
    """Group item indexes into decodes, shortest first.

    A decode holds at most `max_sequences` items and `token_budget` tokens,
    except that an item longer than the budget goes alone (it always fits
    `max_tokens`, truncation saw to that).
    """
    budget = max(1, min(token_budget, max_tokens))
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for index in order:
        size = lengths[index]
        if current and (used + size > budget or len(current) >= max_sequences):
            groups.append(current)
            current, used = [], 0
        current.append(index)
        used += size
    if current:
        groups.append(current)
    return groups


class BatchQueue:
    """The decode queue of one loaded model, served by one worker thread."""

    def __init__(
        self,
        model: LoadedModel,
        *,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        name: str = "model",
        observe: Callable[[BatchRecord], None] | None = None,
    ) -> None:
        self._model = model
        self._budget = token_budget
        self._observe = observe
        self._jobs: deque[_Job | None] = deque()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"emberd-batch-{name}", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        """Requests waiting for the worker."""
        return len(self._jobs)

    async def embed(self, sequences: Sequence[Sequence[int]]) -> FloatMatrix:
        """Pooled vectors for `sequences`, in order, decoded alongside other requests.

        Raises the decode's error, or BackendError once the queue is closed.
        """
        loop = asyncio.get_running_loop()
        n_embd = self._model.facts.n_embd
        result = np.zeros((len(sequences), n_embd), dtype=np.float32)
        if not sequences:
            return result
        job = _Job(sequences, loop.create_future(), loop, result)
        with self._wake:
            if self._closed:
                raise BackendError("the model has been unloaded")
            self._jobs.append(job)
            self._wake.notify()
        return await job.future

    def close(self) -> None:
        """Stop the worker once the jobs already queued are done."""
        with self._wake:
            if not self._closed:
                self._closed = True
                self._jobs.append(None)
                self._wake.notify()
        self._thread.join()

    def _take_all(self) -> tuple[list[_Job], bool]:
        with self._wake:
            while not self._jobs:
                self._wake.wait()
            jobs: list[_Job] = []
            stop = False
            while self._jobs:
                job = self._jobs.popleft()
                if job is None:
                    stop = True
                    break
                jobs.append(job)
            return jobs, stop

    def _run(self) -> None:
        while True:
            jobs, stop = self._take_all()
            try:
                self._serve(jobs)
            except Exception as exc:  # a bug must not leave callers waiting forever
                log.exception("batch worker failed")
                for job in jobs:
                    job.finish(exc)
            if stop:
                return

    def _serve(self, jobs: list[_Job]) -> None:
        items = [(job, i) for job in jobs for i in range(len(job.sequences))]
        lengths = [len(job.sequences[i]) for job, i in items]
        groups = pack(
            lengths,
            self._budget,
            self._model.max_batch_tokens(),
            self._model.max_batch_sequences(),
        )
        failed: set[_Job] = set()
        for group in groups:
            # An empty token list has no vector to pool: it stays zero.
            members = [
                (job, i)
                for job, i in (items[k] for k in group)
                if job.sequences[i] and job.wanted and job not in failed
            ]
            if members:
                self._decode(members, failed)
            done = []
            for job, _ in (items[k] for k in group):
                job.remaining -= 1
                if job.remaining == 0 and job not in failed:
                    done.append(job)
            _finish_all(done)

    def _decode(self, members: list[tuple[_Job, int]], failed: set[_Job]) -> None:
        started = time.perf_counter()
        try:
            vectors = self._model.embed([job.sequences[i] for job, i in members])
        except Exception as exc:  # fail these callers, keep serving others
            log.error("decode failed: %s", exc)
            for job, _ in members:
                if job not in failed:
                    failed.add(job)
                    job.finish(exc)
            return
        for row, (job, i) in enumerate(members):
            job.result[i] = vectors[row]
        if self._observe is not None:
            tokens = sum(len(job.sequences[i]) for job, i in members)
            self._observe(BatchRecord(len(members), tokens, time.perf_counter() - started))
