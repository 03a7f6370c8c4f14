"""A model whose process ends: its requests fail, the next ones get a fresh model, and a
file that keeps ending its models is held back until it changes."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import pytest

from emberd.backends.base import LoadOptions, ModelCrashed
from emberd.models.names import ModelName
from emberd.models.store import EMBERD, ModelRecord
from emberd.server.assembly import runtime_limits
from emberd.server.config import Settings
from emberd.server.core.crashes import CRASH_LIMIT, HeldBack
from emberd.server.core.runtime import Runtime
from tests.support.bounded import bounded
from tests.support.standin_backend import StandInBackend, StandInModel

OPTIONS = LoadOptions(
    num_ctx=64, num_batch=64, num_gpu=0, main_gpu=0, use_mmap=True, use_mlock=False, num_thread=1
)


def record_for(path: Path) -> ModelRecord:
    """A stand-in model file at `path`, and its record."""
    path.write_bytes(b"stand-in")
    return ModelRecord(
        name=ModelName.parse(path.stem),
        path=path,
        digest="0" * 64,
        size=8,
        modified_at=datetime.now(timezone.utc),
        params={},
        source=EMBERD,
    )


def runtime(backend: StandInBackend) -> Runtime:
    """A runtime with the default limits."""
    return Runtime(backend, runtime_limits(Settings()))


async def embed_once(rt: Runtime, record: ModelRecord) -> StandInModel:
    """One lease and one decode; the model that served it."""
    async with rt.use(record, OPTIONS, None) as lease:
        await lease.queue.embed([[1, 5, 2]])
        assert isinstance(lease.model, StandInModel)
        return lease.model


@bounded
async def test_a_crash_under_a_request_fails_it_and_the_next_gets_a_fresh_model(
    tmp_path: Path,
) -> None:
    backend = StandInBackend()
    rt = runtime(backend)
    a = record_for(tmp_path / "a.gguf")
    first = await embed_once(rt, a)
    with pytest.raises(ModelCrashed, match="SIGKILL"):
        async with rt.use(a, OPTIONS, None) as lease:
            first.crash()
            await lease.queue.embed([[1, 5, 2]])
    second = await embed_once(rt, a)
    assert second is not first and backend.load_calls == 2
    assert first.closed  # the dead one was retired
    await rt.close()


@bounded
async def test_a_model_that_died_while_idle_is_replaced_before_the_next_request(
    tmp_path: Path,
) -> None:
    backend = StandInBackend()
    rt = runtime(backend)
    a = record_for(tmp_path / "a.gguf")
    first = await embed_once(rt, a)
    first.crash()
    second = await embed_once(rt, a)  # no error: the death was noticed before the lease
    assert second is not first and backend.load_calls == 2
    await rt.close()


@bounded
async def test_a_file_that_keeps_crashing_is_held_back_until_it_changes(tmp_path: Path) -> None:
    backend = StandInBackend()
    rt = runtime(backend)
    a, b = record_for(tmp_path / "a.gguf"), record_for(tmp_path / "b.gguf")
    for _ in range(CRASH_LIMIT):
        (await embed_once(rt, a)).crash()
        await embed_once(rt, b)  # another model is never affected
    with pytest.raises(HeldBack):
        await embed_once(rt, a)
    assert backend.load_calls == CRASH_LIMIT + 1  # b once; no load was tried for the held a
    await embed_once(rt, b)
    a.path.write_bytes(b"a new file")
    os.utime(a.path, ns=(1, 1))
    await embed_once(rt, a)  # a changed file is tried again
    await rt.close()


@bounded
async def test_crashes_spread_over_more_than_a_minute_hold_nothing_back(tmp_path: Path) -> None:
    now = [1000.0]
    backend = StandInBackend()
    rt = Runtime(backend, runtime_limits(Settings()), clock=lambda: now[0])
    a = record_for(tmp_path / "a.gguf")
    for _ in range(CRASH_LIMIT + 2):
        (await embed_once(rt, a)).crash()
        now[0] += 31.0  # two crashes in any minute, never three
    await embed_once(rt, a)
    await rt.close()
