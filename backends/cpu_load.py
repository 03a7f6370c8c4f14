"""How many cores other programs leave free: the thread count of a lone decode.

ggml's threads meet at a barrier after every operation of a decode. On a
quiet machine, more threads finish a decode sooner; on a busy one (an IDE,
a browser, a compiler beside the server) a descheduled thread makes the
others wait for a whole scheduler slice, dozens of times per decode, and the
tail latency collapses. One thread waits on nobody. So a decode gets as many
threads as there are cores that other processes leave idle, measured from
the system's CPU counters less this process's own use, never fewer than one.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

# Counters are read at most this often; a decode in between reuses the answer.
# The machine's counters tick every 10 ms per core, so a shorter window would
# mostly measure that rounding.
SAMPLE_INTERVAL_S = 0.25
# A window longer than this says little about now (the server sat idle while
# the machine got busy, or not): the next decode measures afresh first.
STALE_S = 2.0
# The fresh look after an idle spell, where no instant count of runnable
# threads exists (macOS, Windows): a short window the first decode waits for.
FRESH_WINDOW_S = 0.02
# A core counts as free while other programs use less than half of it; more,
# and one of our threads there is descheduled often enough to stall the rest.
_FREE_CORE_SLACK = 0.5


# Fields of psutil.cpu_times() that are work (guest time is already in user).
_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal")
_PROC_STAT = Path("/proc/stat")


def _busy_seconds() -> float:
    # macOS answers the machine-wide counters (host_statistics) from a cache
    # once a caller passes its request limit, so that windows see no work at
    # all and then all of it at once (psutil #2368); the per-CPU counters
    # (host_processor_info) are read fresh every time. Linux and Windows
    # count the same either way.
    if sys.platform == "darwin":
        per_cpu = psutil.cpu_times(percpu=True)
        return sum(float(getattr(cpu, name, 0.0)) for cpu in per_cpu for name in _BUSY_FIELDS)
    times = psutil.cpu_times()
    return sum(float(getattr(times, name, 0.0)) for name in _BUSY_FIELDS)


def _own_seconds() -> float:
    if resource is None:  # Windows: os.times, in clock ticks
        times = os.times()
        return times.user + times.system
    usage = resource.getrusage(resource.RUSAGE_SELF)  # microseconds, not ticks
    return usage.ru_utime + usage.ru_stime


def cpu_counters() -> tuple[float, float]:
    """(CPU seconds the whole machine has worked, CPU seconds this process has)."""
    return _busy_seconds(), _own_seconds()


def runnable_others(proc_stat: str | None = None) -> int | None:
    """Threads of other programs runnable right now (Linux's procs_running, less
    the thread asking); None where the system has no such count."""
    if proc_stat is None:
        try:
            proc_stat = _PROC_STAT.read_text()
        except OSError:
            return None
    for line in proc_stat.splitlines():
        if line.startswith("procs_running "):
            return max(0, int(line.split()[1]) - 1)
    return None


class CpuLoad:
    """Watches how busy the machine is with work that is not this process's."""

    def __init__(
        self,
        cores: int | None = None,
        counters: Callable[[], tuple[float, float]] = cpu_counters,
        clock: Callable[[], float] = time.monotonic,
        runnable: Callable[[], int | None] = runnable_others,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._cores = cores or os.cpu_count() or 1
        self._counters = counters
        self._clock = clock
        self._runnable = runnable
        self._sleep = sleep
        self._lock = threading.Lock()
        self._free = float(self._cores)
        self._mark = (clock(), *counters())

    def free_cores(self) -> float:
        """Cores that other processes left idle since the last look (0 .. cores).

        Between looks it costs one clock read: the counters are read at most
        every SAMPLE_INTERVAL_S, not on every decode. After an idle spell the
        last answer is stale, so the first decode looks afresh: the threads
        runnable right now where the system counts them, else a short window.
        """
        with self._lock:
            now = self._clock()
            elapsed = now - self._mark[0]
            if elapsed < SAMPLE_INTERVAL_S:
                return self._free
            if elapsed > STALE_S:
                self._free = self._fresh_look()
                self._mark = (self._clock(), *self._counters())
                return self._free
            busy, own = self._counters()
            others = (busy - self._mark[1]) - (own - self._mark[2])
            self._free = self._clamp(self._cores - others / elapsed)
            self._mark = (now, busy, own)
            return self._free

    def _fresh_look(self) -> float:
        running = self._runnable()
        if running is not None:
            return self._clamp(self._cores - running)
        start, busy, own = self._clock(), *self._counters()
        self._sleep(FRESH_WINDOW_S)
        end, busy_end, own_end = self._clock(), *self._counters()
        others = (busy_end - busy) - (own_end - own)
        return self._clamp(self._cores - others / max(end - start, 1e-3))

    def _clamp(self, free: float) -> float:
        return min(float(self._cores), max(0.0, free))

    def threads(self, wanted: int) -> int:
        """How many of `wanted` threads one decode should use right now (at least 1)."""
        usable = math.floor(self.free_cores() + _FREE_CORE_SLACK)
        return max(1, min(wanted, usable))
