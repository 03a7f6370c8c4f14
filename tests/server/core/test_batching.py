"""The batch queue: packing, ordering, coalescing, failures, cancellation, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from emberd.backends.base import BackendError, FloatMatrix, LoadedModel, LoadOptions
from emberd.backends.runner import RunnerBackend
from emberd.server.core.batching import BatchQueue, BatchRecord, decode_size
from tests.support.bounded import bounded
from tests.support.standin_backend import N_EMBD, POISON, StandInModel, vector_of
from tests.support.tiny_model import write_tiny_bert

OPTIONS = LoadOptions(
    num_ctx=128, num_batch=128, num_gpu=0, main_gpu=0, use_mmap=True, use_mlock=False, num_thread=1
)


async def until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll `check` on the event loop until it holds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


@pytest.fixture
def standin() -> StandInModel:
    """A stand-in model: 64 tokens and 8 sequences per decode."""
    return StandInModel(Path("standin.gguf"), OPTIONS)


@pytest.fixture
def queue(standin: StandInModel) -> Iterator[BatchQueue]:
    """A queue over the stand-in (its batcher ends with the test's loop)."""
    q = BatchQueue(standin, token_budget=32)
    yield q
    standin.decode_gate.open()


# -- decode_size -----------------------------------------------------------------------


def split(lengths: list[int], budget: int, max_sequences: int) -> list[list[int]]:
    """Lengths cut into decodes by repeated decode_size calls."""
    groups = []
    while lengths:
        count = decode_size(lengths, budget, max_sequences)
        groups.append(lengths[:count])
        lengths = lengths[count:]
    return groups


@pytest.mark.parametrize("seed", range(20))
def test_decode_size_properties(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(1, 40) for _ in range(rng.randint(0, 60))]
    budget, max_sequences = rng.choice([16, 32, 64]), rng.randint(1, 6)
    groups = split(lengths, budget, max_sequences)
    assert [size for group in groups for size in group] == lengths  # in order, each once
    for group, following in zip(groups, [*groups[1:], None], strict=True):
        assert 1 <= len(group) <= max_sequences
        assert sum(group) <= budget or len(group) == 1  # only a long item goes over, alone
        if following is not None and len(group) < max_sequences:
            assert sum(group) + following[0] > budget  # nothing that fitted was left out


def test_decode_size_edges() -> None:
    assert decode_size([], 10, 10) == 0
    assert decode_size(iter([50, 1]), 10, 8) == 1  # a long item alone
    assert decode_size([3, 3, 3], 6, 8) == 2
    assert decode_size([1, 1, 1], 100, 2) == 2


# -- the queue with the stand-in ------------------------------------------------------


@bounded
async def test_results_come_back_in_input_order(queue: BatchQueue) -> None:
    sequences = [[1, *range(n), 2] for n in (9, 1, 30, 4, 4, 0, 17)]
    rows = await queue.embed(sequences)
    expected = np.stack([vector_of(s) for s in sequences])
    np.testing.assert_array_equal(rows, expected)


@bounded
async def test_concurrent_jobs_are_coalesced(standin: StandInModel, queue: BatchQueue) -> None:
    standin.decode_gate.close()
    first = asyncio.create_task(queue.embed([[1, 3, 2]]))
    await until(standin.decode_gate.entered.is_set)  # the worker is busy with `first`
    rest = [asyncio.create_task(queue.embed([[1, 10 + k, 2]])) for k in range(5)]
    await until(lambda: queue.depth == 5)
    standin.decode_gate.open()
    results = await asyncio.gather(first, *rest)
    assert standin.stats.decodes == 2  # one for `first`, one for the five that waited
    assert [len(batch) for batch in standin.batches] == [1, 5]
    for k, rows in enumerate(results[1:]):
        np.testing.assert_array_equal(rows[0], vector_of([1, 10 + k, 2]))


@bounded
async def test_a_job_remainder_shares_a_decode_with_later_arrivals(
    standin: StandInModel, queue: BatchQueue
) -> None:
    standin.decode_gate.close()
    big = asyncio.create_task(queue.embed([[1, *range(8), 2]] * 4))  # 10 tokens each
    await until(standin.decode_gate.entered.is_set)  # three of them fill the first decode
    small = asyncio.create_task(queue.embed([[1, 77, 2]]))
    await until(lambda: queue.depth == 1)
    standin.decode_gate.open()
    rows, alone = await asyncio.gather(big, small)
    assert [len(batch) for batch in standin.batches] == [3, 2]
    np.testing.assert_array_equal(rows[3], vector_of([1, *range(8), 2]))
    np.testing.assert_array_equal(alone[0], vector_of([1, 77, 2]))


@bounded
async def test_the_budget_is_capped_by_the_model(standin: StandInModel) -> None:
    records: list[BatchRecord] = []
    q = BatchQueue(standin, token_budget=10_000, observe=records.append)
    try:
        await q.embed([[1] * 30] * 5)
    finally:
        await q.close()
    assert [r.tokens for r in records] == [60, 60, 30]  # the stand-in takes 64 tokens


@bounded
async def test_work_for_two_lanes_is_shared_out_evenly() -> None:
    model = StandInModel(Path("lanes.gguf"), OPTIONS, lanes=2)
    q = BatchQueue(model, token_budget=32)
    try:
        await q.embed([[1, *range(8), 2]] * 4)  # 40 tokens: two decodes of 20, not 30 + 10
        assert [len(batch) for batch in model.batches] == [2, 2]
        model.batches.clear()
        await q.embed([[3]])  # a single text is one decode
        assert model.batches == [[(3,)]]
    finally:
        await q.close()


@bounded
async def test_a_failing_lane_fails_only_its_jobs() -> None:
    model = StandInModel(Path("lanes.gguf"), OPTIONS, lanes=2)
    q = BatchQueue(model, token_budget=32)
    model.decode_gate.close()
    try:
        blocker = asyncio.create_task(q.embed([[1, 2]]))
        await until(model.decode_gate.entered.is_set)
        bad = asyncio.create_task(q.embed([[POISON] * 10]))
        good = asyncio.create_task(q.embed([[1] * 10]))
        await until(lambda: q.depth == 2)
        model.decode_gate.open()
        await blocker
        with pytest.raises(BackendError, match="poisoned"):
            await bad
        np.testing.assert_array_equal((await good)[0], vector_of([1] * 10))
        assert [len(batch) for batch in model.batches[1:]] == [1, 1]  # side by side
    finally:
        model.decode_gate.open()
        await q.close()


@bounded
async def test_a_failing_decode_fails_only_its_jobs(
    standin: StandInModel, queue: BatchQueue
) -> None:
    standin.decode_gate.close()
    blocker = asyncio.create_task(queue.embed([[1, 2]]))
    await until(standin.decode_gate.entered.is_set)
    # Longer than the budget, so it is decoded alone.
    bad = asyncio.create_task(queue.embed([[POISON] * 40]))
    good = asyncio.create_task(queue.embed([[1, 7, 2], [1, 8, 8, 2]]))
    await until(lambda: queue.depth == 2)
    standin.decode_gate.open()
    await blocker
    with pytest.raises(BackendError, match="poisoned"):
        await bad
    np.testing.assert_array_equal((await good)[1], vector_of([1, 8, 8, 2]))
    later = await queue.embed([[1, 9, 2]])  # the worker keeps serving
    np.testing.assert_array_equal(later[0], vector_of([1, 9, 2]))


@bounded
async def test_a_failure_fails_a_job_once_even_across_decodes(
    standin: StandInModel, queue: BatchQueue
) -> None:
    # Two decodes of one job: the poisoned one fails it, the other is skipped.
    with pytest.raises(BackendError):
        await queue.embed([[POISON] * 40, [1] * 40])
    assert len(standin.batches) == 1
    assert (await queue.embed([[5]])).shape == (1, N_EMBD)


@bounded
async def test_a_cancelled_caller_is_skipped(standin: StandInModel, queue: BatchQueue) -> None:
    standin.decode_gate.close()
    blocker = asyncio.create_task(queue.embed([[1, 2]]))
    await until(standin.decode_gate.entered.is_set)
    gone = asyncio.create_task(queue.embed([[1, 555, 2]]))
    await until(lambda: queue.depth == 1)
    gone.cancel()
    await asyncio.sleep(0)
    standin.decode_gate.open()
    await blocker
    await queue.embed([[1, 3, 2]])
    decoded = [seq for batch in standin.batches for seq in batch]
    assert (1, 555, 2) not in decoded and (1, 3, 2) in decoded


@bounded
async def test_empty_inputs_give_zero_rows_without_a_decode(
    standin: StandInModel, queue: BatchQueue
) -> None:
    assert (await queue.embed([])).shape == (0, N_EMBD)
    rows = await queue.embed([[], [1, 4, 2], []])
    assert not rows[0].any() and not rows[2].any()
    np.testing.assert_array_equal(rows[1], vector_of([1, 4, 2]))
    assert standin.batches == [[(1, 4, 2)]]
    await queue.embed([[]])
    assert len(standin.batches) == 1


@bounded
async def test_observe_sees_every_decode(standin: StandInModel) -> None:
    records: list[BatchRecord] = []
    q = BatchQueue(standin, token_budget=8, observe=records.append)
    try:
        await q.embed([[1, 2, 3], [4, 5, 6, 7, 8, 9]])
    finally:
        await q.close()
    assert [(r.sequences, r.tokens) for r in records] == [(1, 3), (1, 6)]
    assert all(r.seconds >= 0 for r in records)


@bounded
async def test_an_unexpected_error_fails_its_callers_instead_of_hanging(
    standin: StandInModel,
) -> None:
    seen: list[BatchRecord] = []

    def observe(record: BatchRecord) -> None:
        seen.append(record)
        if len(seen) == 1:
            raise RuntimeError("observer broke")

    q = BatchQueue(standin, observe=observe)
    try:
        with pytest.raises(RuntimeError, match="observer broke"):
            await q.embed([[1, 2]])
        assert (await q.embed([[1, 3]])).shape == (1, N_EMBD)  # still serving
    finally:
        await q.close()


@bounded
async def test_close_finishes_queued_jobs_then_refuses_new_ones(standin: StandInModel) -> None:
    q = BatchQueue(standin, name="closing")
    standin.decode_gate.close()
    queued = asyncio.create_task(q.embed([[1, 2]]))
    await until(standin.decode_gate.entered.is_set)
    closing = asyncio.create_task(q.close())
    await asyncio.sleep(0.05)
    assert not closing.done()  # a job is still being decoded
    standin.decode_gate.open()
    await closing
    np.testing.assert_array_equal((await queued)[0], vector_of([1, 2]))
    assert "emberd-batch-closing" not in {t.get_name() for t in asyncio.all_tasks()}
    with pytest.raises(BackendError):
        await q.embed([[1, 2]])
    await q.close()  # twice is harmless


# -- the queue with the real tiny model -----------------------------------------------


@contextlib.asynccontextmanager
async def in_runner(path: Path, options: LoadOptions) -> AsyncIterator[LoadedModel]:
    """`path` loaded in a runner process, driven by this test's event loop."""
    backend = RunnerBackend()
    try:
        model = await asyncio.to_thread(backend.load, path, options, None)
        try:
            yield model
        finally:
            await asyncio.to_thread(model.close)
            await model.wait_closed()
    finally:
        backend.close()


async def decoded_alone(
    model: LoadedModel, texts: list[str]
) -> tuple[list[list[int]], FloatMatrix]:
    """Each text's token sequence, and its vector from a decode of its own."""
    prefix, suffix = list(model.facts.prefix), list(model.facts.suffix)
    sequences = [prefix + tokens + suffix for tokens in await model.tokenize(texts)]
    rows = []
    for sequence in sequences:
        (alone,) = await model.decode([[sequence]])
        assert not isinstance(alone, BackendError)
        rows.append(alone)
    return sequences, np.concatenate(rows)


@pytest.mark.slow
@bounded
async def test_real_model_batches_match_single_decodes(tmp_path: Path) -> None:
    texts = ["why is the sky blue?", "hello world", "the sea", "green grass", "a", "big dog"]
    async with in_runner(write_tiny_bert(tmp_path / "tiny.gguf"), OPTIONS) as model:
        sequences, singles = await decoded_alone(model, texts)
        before = model.stats.decodes
        q = BatchQueue(model, token_budget=256)
        try:
            results = await asyncio.gather(*(q.embed([s]) for s in sequences))
        finally:
            await q.close()
        assert model.stats.decodes - before < len(texts)
    rows = np.concatenate(results)
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(singles, axis=1)
    assert ((rows * singles).sum(1) / norms).min() > 0.9999


@pytest.mark.slow
@bounded
async def test_two_lanes_of_a_real_model_match_single_decodes(tmp_path: Path) -> None:
    path = write_tiny_bert(tmp_path / "lanes.gguf")
    async with in_runner(path, dataclasses.replace(OPTIONS, num_thread=2)) as model:
        assert model.parallel_decodes() == 2
        texts = [f"the sea {'green grass ' * n}" for n in range(12)]
        sequences, singles = await decoded_alone(model, texts)
        q = BatchQueue(model, token_budget=64)
        try:
            rows = await q.embed(sequences)
        finally:
            await q.close()
    norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(singles, axis=1)
    assert ((rows * singles).sum(1) / norms).min() > 0.9999
