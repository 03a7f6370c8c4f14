"""Which models are loaded: load on demand, keep_alive, reload, eviction, queue bound.

The scheduler of Ollama's runtime model. A request takes a lease on a model
(`Runtime.use`); the model is loaded on first use (concurrent requests share
the one load), is never unloaded while leased, and after its last lease ends
stays for its keep_alive. A request whose load options differ from the
loaded instance's waits for it to go idle, then reloads it. Loading one model
too many unloads the idle model that expires first.

All state lives on the event loop and changes only between awaits, so no lock
is needed: waiters sleep on `_Changes` and look again when woken. Loads and
closes run in threads as tasks the runtime owns, never under a waiting
request, so a cancelled request cannot orphan a half-loaded model.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from emberd.backends.base import Backend, LoadedModel, LoadOptions, ModelCrashed
from emberd.models.store import FileVersion, ModelRecord, file_version
from emberd.server.core.batching import BatchQueue, BatchRecord
from emberd.server.core.crashes import CrashRecord
from emberd.server.core.deadline import Deadline
from emberd.server.core.durations import format_duration
from emberd.server.core.errors import QueueFull

log = logging.getLogger("emberd.runtime")

# /api/ps shows a model kept forever with an expiry this far ahead.
_FOREVER_SECONDS = 10 * 365 * 24 * 3600.0


@dataclass(frozen=True)
class RuntimeLimits:
    """Bounds from the settings (`emberd.server.assembly.runtime_limits`)."""

    max_loaded: int
    max_queue: int
    default_keep_alive: float
    token_budget: int = 256


@dataclass(eq=False)
class _Runner:
    record: ModelRecord
    options: LoadOptions
    keep_alive: float
    version: FileVersion | None  # the file's, when loading began
    loading: asyncio.Task[None] | None = None
    model: LoadedModel | None = None
    queue: BatchQueue | None = None
    crashed: bool = False  # its process ended under it; counted once
    refs: int = 0  # leases held, and requests waiting for this runner's load
    expires_at: float = math.inf  # wall clock, as the runtime's clock tells it
    countdown: Deadline = field(default_factory=Deadline)  # keep_alive, on the loop's clock

    @property
    def ready(self) -> bool:
        return self.model is not None

    def file_changed(self) -> bool:
        """Whether the GGUF was replaced or removed since this runner loaded it."""
        return file_version(self.record.path) != self.version


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


class _Changes:
    """Wakes every waiter whenever the runtime's state changes."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wait(self) -> Coroutine[Any, Any, bool]:
        return self._event.wait()  # the event of now: a later notify() sets it

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()


class Runtime:
    """Owns the loaded models. All methods run on the event loop."""

    def __init__(
        self,
        backend: Backend,
        limits: RuntimeLimits,
        *,
        observe: Callable[[BatchRecord], None] | None = None,
        on_load: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._backend = backend
        self._limits = limits
        self._observe = observe
        self._on_load = on_load
        self._clock = clock
        self._runners: dict[Path, _Runner] = {}
        self._changes = _Changes()
        self._pending = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._crashes = CrashRecord(clock)

    async def start(self) -> int:
        """Get the backend ready (a spare runner started); the GPUs it can use."""
        return await asyncio.to_thread(self._backend.gpu_devices)

    @property
    def pending(self) -> int:
        """Requests admitted and not yet finished."""
        return self._pending

    @property
    def queued(self) -> int:
        """Requests in the loaded models' batch queues that no decode has taken up yet."""
        return sum(r.queue.depth for r in list(self._runners.values()) if r.queue is not None)

    @contextlib.asynccontextmanager
    async def use(
        self, record: ModelRecord, options: LoadOptions, keep_alive: float | None
    ) -> AsyncIterator[Lease]:
        """Lease `record` loaded with `options`; keep_alive None keeps the current one.

        Raises QueueFull past `max_queue` pending requests, or the load's error.
        """
        if self._pending >= self._limits.max_queue:
            raise QueueFull()
        self._pending += 1
        started = time.perf_counter()
        try:
            runner = await self._acquire(record, options, keep_alive)
            try:
                assert runner.model is not None and runner.queue is not None
                yield Lease(record, runner.model, runner.queue, time.perf_counter() - started)
            except ModelCrashed:
                self._crashed(runner)
                raise
            finally:
                closing = self._release(runner)
                if closing is not None:  # keep_alive 0: the request ends once unloaded
                    await asyncio.wait([closing])
        finally:
            self._pending -= 1

    # -- taking and giving back ---------------------------------------------

    async def _acquire(
        self, record: ModelRecord, options: LoadOptions, keep_alive: float | None
    ) -> _Runner:
        runner = await self._claim_runner(record, options, keep_alive)
        if not runner.ready:
            assert runner.loading is not None
            try:
                await asyncio.shield(runner.loading)  # the load outlives a cancelled request
            except BaseException:
                self._release(runner)
                raise
        return runner

    async def _claim_runner(
        self, record: ModelRecord, options: LoadOptions, keep_alive: float | None
    ) -> _Runner:
        """Claim the runner of `record` with `options`, starting its load if needed."""
        while True:
            self._crashes.check(record)
            runner = self._runners.get(record.path)
            if runner is not None and runner.ready and not runner.crashed:
                assert runner.model is not None
                if not runner.model.alive():  # it ended while idle
                    self._crashed(runner)
                    continue
            if runner is None and self._has_room():
                runner = self._start_load(record, options, keep_alive)
            elif runner is not None and (why := _reload_reason(runner, options)):
                if runner.ready and runner.refs == 0:
                    log.info("reloading %s: %s", record.name.display, why)
                    self._retire(runner)
                    continue
                runner = None  # wait until it is idle
            if runner is not None:
                self._claim(runner, keep_alive)
                return runner
            await self._changes.wait()

    def _has_room(self) -> bool:
        return len(self._runners) < self._limits.max_loaded or self._evict()

    def _claim(self, runner: _Runner, keep_alive: float | None) -> None:
        runner.refs += 1
        if keep_alive is not None:
            runner.keep_alive = keep_alive
        runner.expires_at = self._expiry(runner.keep_alive)

    def _release(self, runner: _Runner) -> asyncio.Task[None] | None:
        """Give back one claim; returns the unload it started, if any."""
        runner.refs -= 1
        closing = None
        if runner.refs == 0 and runner.ready and self._is_current(runner):
            closing = self._idle(runner)
        self._changes.notify()
        return closing

    def _idle(self, runner: _Runner) -> asyncio.Task[None] | None:
        """Start the keep_alive countdown of a runner nobody uses."""
        ka = runner.keep_alive
        runner.expires_at = self._expiry(ka)
        if ka == 0:
            return self._retire(runner)
        if not 0 < ka < math.inf:  # kept for good
            runner.countdown.cancel()
            return None
        when = asyncio.get_running_loop().time() + ka
        runner.countdown.set(when, functools.partial(self._expire, runner))
        return None

    def _expire(self, runner: _Runner) -> None:
        if runner.refs == 0 and self._is_current(runner):
            self._retire(runner)

    def _expiry(self, keep_alive: float) -> float:
        forever = keep_alive < 0 or math.isinf(keep_alive)
        return self._clock() + (_FOREVER_SECONDS if forever else keep_alive)

    # -- loading and unloading ------------------------------------------------

    def _start_load(
        self, record: ModelRecord, options: LoadOptions, keep_alive: float | None
    ) -> _Runner:
        ka = self._limits.default_keep_alive if keep_alive is None else keep_alive
        runner = _Runner(record, options, ka, file_version(record.path))
        self._runners[record.path] = runner
        runner.loading = self._spawn(self._load(runner))
        return runner

    async def _load(self, runner: _Runner) -> None:
        name = runner.record.name.display
        if self._closing:  # free what is being unloaded before loading more
            await asyncio.wait(list(self._closing))
        started = time.perf_counter()
        try:
            model = await asyncio.to_thread(
                self._backend.load, runner.record.path, runner.options, runner.version
            )
        except Exception as exc:
            log.error("loading %s (%s) failed: %s", name, runner.record.path, exc)
            if isinstance(exc, ModelCrashed):
                self._crashes.add(runner.record)
            self._forget(runner)
            self._changes.notify()
            raise
        runner.model = model
        runner.queue = BatchQueue(
            model,
            # A GPU model says how large its decodes should be; the default suits CPUs.
            token_budget=model.facts.decode_budget or self._limits.token_budget,
            name=name,
            observe=self._observe,
        )
        if runner.refs == 0:  # every request that wanted it has gone
            self._idle(runner)
        self._changes.notify()
        seconds = time.perf_counter() - started
        if self._on_load is not None:
            self._on_load(seconds)
        log.info(
            "loaded %s in %.0f ms (num_ctx %d, keep_alive %s)",
            name,
            seconds * 1000,
            runner.options.num_ctx,
            format_duration(runner.keep_alive),
        )

    def _crashed(self, runner: _Runner) -> None:
        """Its process has ended: forget it (the next request starts another) and count it."""
        if runner.crashed:
            return
        runner.crashed = True
        log.error("%s stopped unexpectedly", runner.record.name.display)
        self._crashes.add(runner.record)
        if self._is_current(runner):
            self._retire(runner)

    def _evict(self) -> bool:
        """Unload the idle runner that expires first; False when all are busy."""
        idle = [r for r in self._runners.values() if r.ready and r.refs == 0]
        if not idle:
            return False
        victim = min(idle, key=lambda r: r.expires_at)
        log.info("unloading %s to make room", victim.record.name.display)
        self._retire(victim)
        return True

    def _retire(self, runner: _Runner) -> asyncio.Task[None]:
        """Forget `runner` now and close it in a thread; returns that close."""
        self._forget(runner)
        task = self._spawn(_close_runner(runner))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        self._changes.notify()
        return task

    def _forget(self, runner: _Runner) -> None:
        runner.countdown.cancel()
        if self._is_current(runner):
            del self._runners[runner.record.path]

    def _is_current(self, runner: _Runner) -> bool:
        return self._runners.get(runner.record.path) is runner

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._settled)
        return task

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Load errors reach their requests; this only marks them as seen.
            log.debug("runtime task failed: %s", task.exception())

    # -- views and shutdown ---------------------------------------------------

    def loaded(self) -> list[LoadedView]:
        """Loaded models, latest expiry first.

        An idle model whose file was replaced or removed is unloaded first:
        it is no longer the model its name means; one whose process has
        ended is forgotten (and counted as a crash).
        """
        for runner in list(self._runners.values()):
            if not runner.ready or runner.refs:
                continue
            assert runner.model is not None
            if not runner.model.alive():  # its process ended while idle
                self._crashed(runner)
            elif runner.file_changed():
                log.info("unloading %s: its file changed", runner.record.name.display)
                self._retire(runner)
        views = [_view(runner) for runner in self._runners.values() if runner.ready]
        views.sort(key=lambda v: v.expires_at, reverse=True)
        return views

    async def close(self) -> None:
        """Wait for loads in progress, then unload everything (server shutdown)."""
        while True:
            for runner in list(self._runners.values()):
                if runner.ready:
                    self._retire(runner)
            if not self._tasks:
                break
            await asyncio.wait(list(self._tasks))
        await asyncio.to_thread(self._backend.close)


def _view(runner: _Runner) -> LoadedView:
    assert runner.model is not None
    size = runner.record.size
    facts = runner.model.facts
    share = facts.gpu_layers / facts.n_layers if facts.n_layers else 0.0
    return LoadedView(
        record=runner.record,
        options=runner.options,
        size=size,
        size_vram=int(size * min(share, 1.0)),
        expires_at=datetime.fromtimestamp(runner.expires_at, tz=timezone.utc),
    )


def _reload_reason(runner: _Runner, options: LoadOptions) -> str:
    """Why a loaded runner cannot serve a request with `options`; "" when it can."""
    if runner.options != options:
        return "load options changed"
    if runner.ready and runner.file_changed():
        return "its file changed"
    return ""


async def _close_runner(runner: _Runner) -> None:
    """Let its queue finish, close its model (which blocks: in a thread), then let the
    model release what it holds on this loop."""
    if runner.queue is not None:
        await runner.queue.close()
    if runner.model is not None:
        await asyncio.to_thread(runner.model.close)
        await runner.model.wait_closed()
