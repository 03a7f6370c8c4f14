"""Which models are loaded: load on demand, keep_alive, reload, eviction, queue bound.

The scheduler of Ollama's runtime model. A request takes a lease on a model
(`Runtime.use`); the model is loaded on first use (concurrent requests wait
for the one load), is never unloaded while leased, and after its last lease
ends stays for its keep_alive. A request whose load options differ from the
loaded instance's waits for it to go idle, then reloads it. Loading one model
too many unloads the idle model that expires first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from backends.base import Backend, LoadedModel, LoadOptions
from models.store import ModelRecord
from server.batching import BatchQueue, BatchRecord
from server.durations import format_duration
from server.errors import ServerBusy

log = logging.getLogger("emberd.runtime")

# /api/ps shows a model kept forever with an expiry this far ahead.
_FOREVER_SECONDS = 10 * 365 * 24 * 3600.0


@dataclass(frozen=True)
class RuntimeLimits:
    """Bounds from the settings."""

    max_loaded: int = 3
    max_queue: int = 512
    default_keep_alive: float = 300.0
    token_budget: int = 256


@dataclass(eq=False)
class _Runner:
    record: ModelRecord
    options: LoadOptions
    keep_alive: float
    model: LoadedModel | None = None
    queue: BatchQueue | None = None
    refs: int = 0
    expires_at: float = math.inf  # wall clock, time.time()
    error: BaseException | None = None
    timer: asyncio.TimerHandle | None = None
    loaded_at: float = field(default_factory=time.time)

    @property
    def ready(self) -> bool:
        return self.model is not None

    def stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


@dataclass(frozen=True)
class Lease:
    """A loaded model held for one request; it cannot be unloaded meanwhile."""

    record: ModelRecord
    model: LoadedModel
    queue: BatchQueue
    wait_seconds: float  # from asking to having the model, load included


@dataclass(frozen=True)
class LoadedView:
    """A loaded model as /api/ps shows it."""

    record: ModelRecord
    options: LoadOptions
    size: int
    size_vram: int
    expires_at: datetime


class Runtime:
    """Owns the loaded models. All methods run on the event loop."""

    def __init__(
        self,
        backend: Backend,
        limits: RuntimeLimits,
        *,
        observe: Callable[[BatchRecord], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._backend = backend
        self._limits = limits
        self._observe = observe
        self._clock = clock
        self._runners: dict[Path, _Runner] = {}
        self._cond = asyncio.Condition()
        self._pending = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Requests admitted and not yet finished."""
        return self._pending

    @contextlib.asynccontextmanager
    async def use(
        self, record: ModelRecord, options: LoadOptions, keep_alive: float | None
    ) -> AsyncIterator[Lease]:
        """Lease `record` loaded with `options`; keep_alive None keeps the current one."""
        if self._pending >= self._limits.max_queue:
            raise ServerBusy()
        self._pending += 1
        started = time.perf_counter()
        try:
            runner = await self._acquire(record, options, keep_alive)
            try:
                assert runner.model is not None and runner.queue is not None
                yield Lease(record, runner.model, runner.queue, time.perf_counter() - started)
            finally:
                await self._release(runner)
        finally:
            self._pending -= 1

    async def _acquire(
        self, record: ModelRecord, options: LoadOptions, keep_alive: float | None
    ) -> _Runner:
        key = record.path
        async with self._cond:
            while True:
                runner = self._runners.get(key)
                if runner is None:
                    if len(self._runners) >= self._limits.max_loaded and not self._evict():
                        await self._cond.wait()
                        continue
                    ka = self._limits.default_keep_alive if keep_alive is None else keep_alive
                    runner = _Runner(record, options, ka)
                    self._runners[key] = runner
                    break
                if not runner.ready:
                    await self._wait_for_load(runner)
                    continue
                if runner.options != options:
                    if runner.refs == 0:
                        log.info("reloading %s: load options changed", record.name.display)
                        await self._unload(runner)
                    else:
                        await self._cond.wait()
                    continue
                self._claim(runner, keep_alive)
                return runner
        await self._load(runner)
        return runner

    async def _wait_for_load(self, runner: _Runner) -> None:
        await self._cond.wait()
        if runner.error is not None and not runner.ready:
            raise runner.error

    def _claim(self, runner: _Runner, keep_alive: float | None) -> None:
        runner.refs += 1
        runner.stop_timer()
        if keep_alive is not None:
            runner.keep_alive = keep_alive
        runner.expires_at = self._expiry(runner.keep_alive)

    async def _load(self, runner: _Runner) -> None:
        name = runner.record.name.display
        started = time.perf_counter()
        try:
            model = await asyncio.to_thread(
                self._backend.load, runner.record.path, runner.options
            )
        except BaseException as exc:
            async with self._cond:
                runner.error = exc
                self._runners.pop(runner.record.path, None)
                self._cond.notify_all()
            log.error("loading %s failed: %s", name, exc)
            raise
        queue = BatchQueue(
            model, token_budget=self._limits.token_budget, name=name, observe=self._observe
        )
        async with self._cond:
            runner.model, runner.queue = model, queue
            runner.refs += 1
            runner.expires_at = self._expiry(runner.keep_alive)
            self._cond.notify_all()
        log.info(
            "loaded %s in %.0f ms (num_ctx %d, keep_alive %s)",
            name, (time.perf_counter() - started) * 1000, runner.options.num_ctx,
            format_duration(runner.keep_alive),
        )

    async def _release(self, runner: _Runner) -> None:
        async with self._cond:
            runner.refs -= 1
            if runner.refs == 0:
                await self._idle(runner)
            self._cond.notify_all()

    async def _idle(self, runner: _Runner) -> None:
        """Start the keep_alive countdown of a runner nobody uses."""
        ka = runner.keep_alive
        runner.expires_at = self._expiry(ka)
        if ka <= 0:
            await self._unload(runner)
        elif math.isfinite(ka):
            loop = asyncio.get_running_loop()
            runner.timer = loop.call_later(ka, self._spawn_expire, runner)

    def _spawn_expire(self, runner: _Runner) -> None:
        task = asyncio.get_running_loop().create_task(self._expire(runner))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(self, runner: _Runner) -> None:
        async with self._cond:
            if runner.refs == 0 and self._runners.get(runner.record.path) is runner:
                await self._unload(runner)
                self._cond.notify_all()

    def _evict(self) -> bool:
        """Unload the idle runner that expires first; False when all are busy."""
        idle = [r for r in self._runners.values() if r.ready and r.refs == 0]
        if not idle:
            return False
        victim = min(idle, key=lambda r: r.expires_at)
        log.info("unloading %s to make room", victim.record.name.display)
        self._runners.pop(victim.record.path, None)
        victim.stop_timer()
        self._close_in_background(victim)
        return True

    async def _unload(self, runner: _Runner) -> None:
        self._runners.pop(runner.record.path, None)
        runner.stop_timer()
        await asyncio.to_thread(_close_runner, runner)
        log.info("unloaded %s", runner.record.name.display)

    def _close_in_background(self, runner: _Runner) -> None:
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(_close_runner, runner))
        self._tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._tasks.discard)  # type: ignore[arg-type]

    def _expiry(self, keep_alive: float) -> float:
        seconds = keep_alive if math.isfinite(keep_alive) else _FOREVER_SECONDS
        return self._clock() + max(seconds, 0.0)

    def loaded(self) -> list[LoadedView]:
        """Loaded models, latest expiry first."""
        views = []
        for runner in self._runners.values():
            if runner.model is None:
                continue
            size = runner.record.size
            facts = runner.model.facts
            share = facts.gpu_layers / facts.n_layers if facts.n_layers else 0.0
            views.append(
                LoadedView(
                    record=runner.record,
                    options=runner.options,
                    size=size,
                    size_vram=int(size * min(share, 1.0)),
                    expires_at=datetime.fromtimestamp(runner.expires_at, tz=timezone.utc),
                )
            )
        views.sort(key=lambda v: v.expires_at, reverse=True)
        return views

    async def close(self) -> None:
        """Unload everything (server shutdown)."""
        async with self._cond:
            for runner in list(self._runners.values()):
                if runner.ready:
                    await self._unload(runner)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _close_runner(runner: _Runner) -> None:
    if runner.queue is not None:
        runner.queue.close()
    if runner.model is not None:
        runner.model.close()
