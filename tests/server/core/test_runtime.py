"""The runtime's scheduling, with the stand-in backend and millisecond keep_alives."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from emberd.backends.base import LoadOptions, ModelLoadError
from emberd.models.names import ModelName
from emberd.models.store import EMBERD, ModelRecord
from emberd.server.assembly import runtime_limits
from emberd.server.config import Settings
from emberd.server.core.errors import QueueFull
from emberd.server.core.runtime import Runtime
from tests.support.bounded import bounded
from tests.support.standin_backend import StandInBackend, StandInModel, vector_of

OPTIONS = LoadOptions(
    num_ctx=64, num_batch=64, num_gpu=0, main_gpu=0, use_mmap=True, use_mlock=False, num_thread=1
)
OTHER_OPTIONS = dataclasses.replace(OPTIONS, num_ctx=32)
# Timers may fire this early by the event loop's clock resolution.
EPSILON_S = 0.005


def record(name: str, size: int = 1000) -> ModelRecord:
    """A record for a stand-in model (the file need not exist)."""
    return ModelRecord(
        name=ModelName.parse(name),
        path=Path(f"/models/{name}.gguf"),
        digest="0" * 64,
        size=size,
        modified_at=datetime(2024, 1, 1, tzinfo=timezone.utc),
        params={},
        source=EMBERD,
    )


A, B, C = record("a"), record("b"), record("c")
DEFAULT_LIMITS = runtime_limits(Settings())


def runtime(backend: StandInBackend, **limits: Any) -> Runtime:
    """A runtime over `backend` with a default keep_alive of five minutes."""
    return Runtime(backend, dataclasses.replace(DEFAULT_LIMITS, **limits))


async def until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    """Poll `check` on the event loop until it holds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.002)


async def use_once(
    rt: Runtime, rec: ModelRecord, keep_alive: float | None = None, options: LoadOptions = OPTIONS
) -> StandInModel:
    """Take and give back one lease; returns its model."""
    async with rt.use(rec, options, keep_alive) as lease:
        assert isinstance(lease.model, StandInModel)
        return lease.model


async def seconds_until_unloaded(model: StandInModel, since: float) -> float:
    """Seconds from `since` (time.monotonic) until `model` was unloaded; fails after 2 s."""
    await until(lambda: model.closed)
    assert model.closed_at is not None
    return model.closed_at - since


def names(rt: Runtime) -> list[str]:
    """The loaded models' names, in loaded() order."""
    return [view.record.name.display for view in rt.loaded()]


# -- loading -----------------------------------------------------------------------


@bounded
async def test_loads_on_first_use_and_reuses_the_model() -> None:
    backend = StandInBackend()
    rt = runtime(backend)
    async with rt.use(A, OPTIONS, None) as lease:
        assert backend.load_calls == 1
        assert lease.record is A and lease.wait_seconds >= 0
        rows = await lease.queue.embed([[1, 5, 2]])
        assert rows.tolist() == [vector_of([1, 5, 2]).tolist()]
    again = await use_once(rt, A)
    assert again is lease.model and backend.load_calls == 1
    assert rt.pending == 0
    await rt.close()


@bounded
async def test_concurrent_users_of_a_loading_model_share_one_load() -> None:
    backend = StandInBackend()
    backend.load_gate.close()
    rt = runtime(backend)
    users = [asyncio.create_task(use_once(rt, A)) for _ in range(3)]
    await until(backend.load_gate.entered.is_set)
    await asyncio.sleep(0.01)
    assert not any(u.done() for u in users)
    backend.load_gate.open()
    models = await asyncio.gather(*users)
    assert backend.load_calls == 1
    assert models[0] is models[1] is models[2]
    await rt.close()


@bounded
async def test_load_failure_reaches_every_waiter_and_a_later_request_retries() -> None:
    backend = StandInBackend()
    backend.load_gate.close()
    backend.fail_loads = 1
    rt = runtime(backend)
    users = [asyncio.create_task(use_once(rt, A)) for _ in range(3)]
    await until(backend.load_gate.entered.is_set)
    backend.load_gate.open()
    results = await asyncio.gather(*users, return_exceptions=True)
    assert all(isinstance(r, ModelLoadError) for r in results), results
    assert backend.load_calls == 1 and rt.loaded() == [] and rt.pending == 0
    model = await use_once(rt, A)
    assert backend.load_calls == 2 and not model.closed
    await rt.close()


@bounded
async def test_a_request_cancelled_during_the_load_leaves_no_orphan() -> None:
    backend = StandInBackend()
    backend.load_gate.close()
    rt = runtime(backend)
    user = asyncio.create_task(use_once(rt, A, keep_alive=0))
    await until(backend.load_gate.entered.is_set)
    user.cancel()
    with pytest.raises(asyncio.CancelledError):
        await user
    backend.load_gate.open()
    # Nobody wants the model once it is loaded: keep_alive 0 unloads it at once.
    await until(lambda: len(backend.models) == 1 and backend.models[0].closed)
    assert rt.loaded() == [] and rt.pending == 0
    await rt.close()


# -- keep_alive --------------------------------------------------------------------


@bounded
async def test_keep_alive_expires_after_not_before() -> None:
    backend = StandInBackend()
    rt = runtime(backend)
    model = await use_once(rt, A, keep_alive=0.1)
    released = time.monotonic()
    await asyncio.sleep(0.01)
    assert not model.closed and names(rt) == ["a:latest"]
    await until(lambda: model.closed)
    assert model.closed_at is not None
    assert model.closed_at - released >= 0.1 - EPSILON_S
    assert rt.loaded() == []


@bounded
async def test_keep_alive_zero_unloads_when_the_request_ends() -> None:
    backend = StandInBackend()
    rt = runtime(backend)
    model = await use_once(rt, A, keep_alive=0)
    assert model.closed and rt.loaded() == []


@bounded
async def test_keep_alive_forever_never_expires() -> None:
    clock_now = 1_000_000.0
    backend = StandInBackend()
    rt = Runtime(backend, DEFAULT_LIMITS, clock=lambda: clock_now)
    model = await use_once(rt, A, keep_alive=math.inf)
    await asyncio.sleep(0.03)
    assert not model.closed
    (view,) = rt.loaded()
    assert view.expires_at.year - datetime.fromtimestamp(clock_now, tz=timezone.utc).year >= 5
    await rt.close()
    assert model.closed


@bounded
async def test_keep_alive_none_keeps_the_current_setting() -> None:
    backend = StandInBackend()
    rt = runtime(backend, default_keep_alive=300.0)
    model = await use_once(rt, A, keep_alive=0.03)
    await use_once(rt, A, keep_alive=None)
    await until(lambda: model.closed)  # 0.03 s, not the default five minutes


@bounded
async def test_a_new_request_restarts_the_countdown() -> None:
    backend = StandInBackend()
    rt = runtime(backend)
    # Margins of a few hundred ms, so that a busy machine's late wake-ups do not matter.
    model = await use_once(rt, A, keep_alive=0.2)
    await asyncio.sleep(0.02)
    await use_once(rt, A, keep_alive=0.5)
    second_release = time.monotonic()
    await asyncio.sleep(0.25)  # past the first countdown's end
    assert not model.closed
    assert await seconds_until_unloaded(model, second_release) >= 0.5 - EPSILON_S


@bounded
async def test_a_shorter_keep_alive_unloads_sooner_than_the_last_one_would() -> None:
    backend = StandInBackend()
    rt = runtime(backend)
    model = await use_once(rt, A, keep_alive=300)
    await use_once(rt, A, keep_alive=0.05)
    released = time.monotonic()
    assert 0.05 - EPSILON_S <= await seconds_until_unloaded(model, released) < 2  # not 5 minutes


@bounded
async def test_keep_alive_forever_after_a_short_one_stays_loaded() -> None:
    backend = StandInBackend()
    rt = runtime(backend)
    model = await use_once(rt, A, keep_alive=0.03)
    await use_once(rt, A, keep_alive=math.inf)
    await asyncio.sleep(0.1)  # well past the short countdown
    assert not model.closed and names(rt) == ["a:latest"]
    await rt.close()


@bounded
async def test_never_unloaded_under_a_lease() -> None:
    backend = StandInBackend()
    rt = runtime(backend)
    async with contextlib.AsyncExitStack() as outer:
        first = await outer.enter_async_context(rt.use(A, OPTIONS, 0))
        async with rt.use(A, OPTIONS, 0) as second:
            assert second.model is first.model
        await asyncio.sleep(0.01)
        assert not backend.models[0].closed and names(rt) == ["a:latest"]
    assert backend.models[0].closed and rt.loaded() == []


# -- reload, eviction, queue bound --------------------------------------------------


@bounded
async def test_changed_options_reload_once_the_old_instance_is_idle() -> None:
    backend = StandInBackend()
    rt = runtime(backend)
    async with rt.use(A, OPTIONS, None):
        other = asyncio.create_task(use_once(rt, A, options=OTHER_OPTIONS))
        await asyncio.sleep(0.02)
        assert backend.load_calls == 1 and not other.done()
    new = await other
    old = backend.models[0]
    assert backend.load_calls == 2 and new is not old
    assert old.closed and not new.closed and new.options == OTHER_OPTIONS
    assert old.closed_at is not None and old.closed_at <= new.loaded_at
    assert [view.options for view in rt.loaded()] == [OTHER_OPTIONS]
    await rt.close()


@bounded
async def test_eviction_unloads_the_idle_model_expiring_first() -> None:
    backend = StandInBackend()
    rt = runtime(backend, max_loaded=2)
    a = await use_once(rt, A, keep_alive=100)
    b = await use_once(rt, B, keep_alive=50)
    c = await use_once(rt, C, keep_alive=70)
    assert b.closed and not a.closed and not c.closed
    assert names(rt) == ["a:latest", "c:latest"]
    await rt.close()


@bounded
async def test_eviction_waits_while_every_model_is_busy() -> None:
    backend = StandInBackend()
    rt = runtime(backend, max_loaded=1)
    async with rt.use(A, OPTIONS, None) as lease:
        waiter = asyncio.create_task(use_once(rt, B))
        await asyncio.sleep(0.02)
        assert backend.load_calls == 1 and not waiter.done()
    b = await waiter
    assert isinstance(lease.model, StandInModel) and lease.model.closed
    assert not b.closed and names(rt) == ["b:latest"]
    await rt.close()


@bounded
async def test_past_max_queue_requests_are_refused() -> None:
    backend = StandInBackend()
    backend.load_gate.close()
    rt = runtime(backend, max_queue=2)
    users = [asyncio.create_task(use_once(rt, A)) for _ in range(2)]
    await until(lambda: rt.pending == 2)
    with pytest.raises(QueueFull):
        await use_once(rt, B)
    backend.load_gate.open()
    await asyncio.gather(*users)
    assert rt.pending == 0
    await use_once(rt, B)
    await rt.close()


# -- views and shutdown --------------------------------------------------------------


@bounded
async def test_loaded_lists_latest_expiry_first_with_its_fields() -> None:
    now = 1_700_000_000.0
    backend = StandInBackend(gpu_layers=2)  # half of the stand-in's 4 layers
    rt = Runtime(backend, DEFAULT_LIMITS, clock=lambda: now)
    await use_once(rt, record("short", size=4000), keep_alive=10)
    await use_once(rt, record("long", size=2000), keep_alive=100, options=OTHER_OPTIONS)
    views = rt.loaded()
    assert [v.record.name.display for v in views] == ["long:latest", "short:latest"]
    assert [v.size for v in views] == [2000, 4000]
    assert [v.size_vram for v in views] == [1000, 2000]
    assert [v.options for v in views] == [OTHER_OPTIONS, OPTIONS]
    assert views[0].expires_at == datetime.fromtimestamp(now + 100, tz=timezone.utc)
    await rt.close()


@bounded
async def test_close_unloads_everything() -> None:
    backend = StandInBackend()
    rt = runtime(backend)
    await use_once(rt, A)
    await use_once(rt, B, keep_alive=math.inf)
    await rt.close()
    assert len(backend.models) == 2 and backend.open_models == []
    assert rt.loaded() == []


@bounded
async def test_close_waits_for_a_load_in_progress() -> None:
    backend = StandInBackend()
    backend.load_gate.close()
    rt = runtime(backend)
    user = asyncio.create_task(use_once(rt, A))
    await until(backend.load_gate.entered.is_set)
    closing = asyncio.create_task(rt.close())
    await asyncio.sleep(0.01)
    assert not closing.done()
    backend.load_gate.open()
    await user
    await closing
    assert len(backend.models) == 1 and backend.models[0].closed
