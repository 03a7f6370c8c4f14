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
import threading
import time
from collections.abc import Callable

import psutil

try:
    import resource
except ImportError:  # not on Windows
    resource = None  # type: ignore[assignment]

# Counters are read at most this often; a decode in between reuses the answer.
# The machine's counters tick every 10 ms per core, so a shorter window would
# mostly measure that rounding.
SAMPLE_INTERVAL_S = 0.25
# A window longer than this says little about now: start a fresh one.
STALE_S = 2.0
# A core counts as free while other programs use less than half of it; more,
# and one of our threads there is descheduled often enough to stall the rest.
_FREE_CORE_SLACK = 0.5


# Fields of psutil.cpu_times() that are work (guest time is already in user).
_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal")


def _busy_seconds() -> float:
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


class CpuLoad:
    """Watches how busy the machine is with work that is not this process's."""

    def __init__(
        self,
        cores: int | None = None,
        counters: Callable[[], tuple[float, float]] = cpu_counters,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cores = cores or os.cpu_count() or 1
        self._counters = counters
        self._clock = clock
        self._lock = threading.Lock()
        self._free = float(self._cores)
        self._mark = (clock(), *counters())

    def free_cores(self) -> float:
        """Cores that other processes left idle since the last look (0 .. cores).

        Between looks it costs one clock read: the counters are read at most
        every SAMPLE_INTERVAL_S, not on every decode.
        """
        with self._lock:
            now = self._clock()
            elapsed = now - self._mark[0]
            if elapsed < SAMPLE_INTERVAL_S:
                return self._free
            busy, own = self._counters()
            if elapsed <= STALE_S:
                others = (busy - self._mark[1]) - (own - self._mark[2])
                self._free = min(self._cores, max(0.0, self._cores - others / elapsed))
            self._mark = (now, busy, own)
            return self._free

    def threads(self, wanted: int) -> int:
        """How many of `wanted` threads one decode should use right now (at least 1)."""
        usable = math.floor(self.free_cores() + _FREE_CORE_SLACK)
        return max(1, min(wanted, usable))
