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

# Counters are read at most this often; a decode in between reuses the answer.
SAMPLE_INTERVAL_S = 0.05
# A window longer than this says little about now: start a fresh one.
STALE_S = 2.0
# Other programs using more than this share of a core make it unusable: one of
# our threads there would be descheduled now and then, stalling the rest.
_FREE_CORE_SLACK = 0.3


# Fields of psutil.cpu_times() that are work (guest time is already in user).
_BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal")


def _busy_seconds() -> float:
    times = psutil.cpu_times()
    return sum(float(getattr(times, name, 0.0)) for name in _BUSY_FIELDS)


def _own_seconds() -> float:
    times = os.times()
    return times.user + times.system


def cpu_counters() -> tuple[float, float, float]:
    """(now, CPU seconds the whole machine has worked, CPU seconds this process has)."""
    return time.monotonic(), _busy_seconds(), _own_seconds()


class CpuLoad:
    """Watches how busy the machine is with work that is not this process's."""

    def __init__(
        self,
        cores: int | None = None,
        counters: Callable[[], tuple[float, float, float]] = cpu_counters,
    ) -> None:
        self._cores = cores or os.cpu_count() or 1
        self._counters = counters
        self._lock = threading.Lock()
        self._free = float(self._cores)
        self._mark = counters()

    def free_cores(self) -> float:
        """Cores that other processes left idle since the last look (0 .. cores)."""
        with self._lock:
            current = self._counters()
            elapsed = current[0] - self._mark[0]
            if elapsed < SAMPLE_INTERVAL_S:
                return self._free
            if elapsed <= STALE_S:
                others = (current[1] - self._mark[1]) - (current[2] - self._mark[2])
                self._free = min(self._cores, max(0.0, self._cores - others / elapsed))
            self._mark = current
            return self._free

    def threads(self, wanted: int) -> int:
        """How many of `wanted` threads one decode should use right now (at least 1)."""
        usable = math.floor(self.free_cores() + _FREE_CORE_SLACK)
        return max(1, min(wanted, usable))
