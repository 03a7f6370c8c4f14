"""How many threads a decode gets: as many cores as other programs leave free."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from emberd.backends.cpu_load import (
    FRESH_WINDOW_S,
    SAMPLE_INTERVAL_S,
    STALE_S,
    CpuLoad,
    runnable_others,
)


class Counters:
    """Machine and own CPU seconds that a test moves forward by hand."""

    def __init__(self) -> None:
        self.now = 100.0
        self.machine = 0.0
        self.own = 0.0

    def __call__(self) -> tuple[float, float]:
        return self.machine, self.own

    def clock(self) -> float:
        return self.now

    def advance(self, seconds: float, others_cores: float, own_cores: float = 0.0) -> None:
        self.now += seconds
        self.machine += seconds * (others_cores + own_cores)
        self.own += seconds * own_cores


def test_a_quiet_machine_gives_every_thread() -> None:
    counters = Counters()
    load = CpuLoad(cores=4, counters=counters, clock=counters.clock)
    counters.advance(0.3, others_cores=0.1, own_cores=3.9)  # our own decodes do not count
    assert load.threads(4) == 4
    assert load.threads(8) == 4  # never more than the cores


@pytest.mark.parametrize(
    ("others", "threads"), [(0.3, 4), (0.6, 3), (1.0, 3), (1.8, 2), (3.9, 1), (8, 1)]
)
def test_cores_others_keep_busy_are_left_to_them(others: float, threads: int) -> None:
    counters = Counters()
    load = CpuLoad(cores=4, counters=counters, clock=counters.clock)
    counters.advance(0.3, others_cores=others)
    assert load.threads(4) == threads


def test_answers_are_reused_briefly() -> None:
    counters = Counters()
    load = CpuLoad(cores=2, counters=counters, clock=counters.clock, runnable=lambda: None)
    counters.advance(0.3, others_cores=2.0)
    assert load.threads(2) == 1
    counters.advance(SAMPLE_INTERVAL_S / 2, others_cores=0.0)
    assert load.threads(2) == 1  # too soon to look again
    counters.advance(0.3, others_cores=0.0)
    assert load.threads(2) == 2


def idle_then_busy(counters: Counters, load: CpuLoad) -> None:
    """A quiet start, then an idle spell during which two hogs start."""
    counters.advance(0.3, others_cores=0.0)
    assert load.threads(2) == 2
    counters.advance(STALE_S * 5, others_cores=2.0)


def test_a_machine_that_got_busy_while_idle_gets_a_fresh_window() -> None:
    counters = Counters()
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the hogs keep running meanwhile
        slept.append(seconds)
        counters.advance(seconds, others_cores=2.0)

    load = CpuLoad(
        cores=2, counters=counters, clock=counters.clock, runnable=lambda: None, sleep=sleep
    )
    idle_then_busy(counters, load)
    assert load.threads(2) == 1  # the first decode after idle, not the stale 2
    assert slept == [FRESH_WINDOW_S]
    counters.advance(SAMPLE_INTERVAL_S / 2, others_cores=2.0)
    assert load.threads(2) == 1
    assert slept == [FRESH_WINDOW_S]  # only the stale look waits


def test_a_machine_that_got_busy_while_idle_is_counted_at_once_where_it_can_be() -> None:
    counters = Counters()
    running = [0]

    def no_sleep(seconds: float) -> None:
        raise AssertionError("an instant count needs no window")

    load = CpuLoad(
        cores=2, counters=counters, clock=counters.clock, runnable=lambda: running[0],
        sleep=no_sleep,
    )  # fmt: skip
    idle_then_busy(counters, load)
    running[0] = 2
    assert load.threads(2) == 1
    counters.advance(STALE_S * 5, others_cores=0.0)
    running[0] = 0
    assert load.threads(2) == 2  # and quiet again after the next idle spell


def test_runnable_threads_are_read_from_proc_stat() -> None:
    sample = "cpu  10 0 5 100 0 0 0 0 0 0\nctxt 12345\nprocs_running 3\nprocs_blocked 0\n"
    assert runnable_others(sample) == 2  # less the thread that asks
    assert runnable_others("cpu 1 2 3\n") is None
    if sys.platform.startswith("linux"):
        assert runnable_others() is not None


@pytest.fixture
def hogs() -> Iterator[None]:
    spin = "import time\nend = time.time() + 20\nwhile time.time() < end: pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_real_hogs_on_every_core_leave_one_thread(hogs: None) -> None:
    load = CpuLoad()
    time.sleep(0.5)
    load.free_cores()  # start a window while the hogs run
    time.sleep(0.5)
    assert load.threads(os.cpu_count() or 1) == 1
