"""How many threads a decode should use by default: the performance cores.

ggml's threads meet at a barrier after every operation, so the slowest
thread sets the pace: a thread on an efficiency core (Apple's E cores,
Intel's Atom cores) or on the second hyper-thread of a busy core makes every
decode wait. llama.cpp itself defaults to the performance cores for the same
reason: `hw.perflevel0.physicalcpu` on Apple, and on x86 Linux the physical
cores, efficiency cores dropped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil

SYS_DEVICES = Path("/sys/devices")


def parse_cpu_list(text: str) -> set[int]:
    """The CPUs of a Linux cpu list such as "0-3,8,10-11"."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def linux_performance_cores(allowed: Iterable[int], sys_devices: Path = SYS_DEVICES) -> int:
    """Physical performance cores among the `allowed` CPUs, from sysfs.

    On a hybrid Intel CPU the kernel lists the performance cores in
    `cpu_core/cpus` (the efficiency ones in `cpu_atom/cpus`); hyper-threads
    of one core share its `core_cpus_list`. 0 when sysfs says nothing.
    """
    cpus = set(allowed)
    performance = sys_devices / "cpu_core" / "cpus"
    if performance.is_file():
        cpus &= parse_cpu_list(performance.read_text())
    cores = set()
    for cpu in cpus:
        topology = sys_devices / "system" / "cpu" / f"cpu{cpu}" / "topology"
        siblings = {cpu}
        for name in ("core_cpus_list", "thread_siblings_list"):
            try:
                siblings = parse_cpu_list((topology / name).read_text()) or {cpu}
                break
            except (OSError, ValueError):
                continue
        cores.add(min(siblings))  # a core is named by its first logical CPU
    return len(cores)


def macos_performance_cores(sysctl: Callable[[str], str | None]) -> int:
    """Apple's performance cores (`hw.perflevel0.physicalcpu`), or the physical
    cores on a Mac without performance levels (Intel); 0 when neither answers."""
    for key in ("hw.perflevel0.physicalcpu", "hw.physicalcpu"):
        value = sysctl(key)
        if value is not None and value.strip().isdigit() and int(value) > 0:
            return int(value)
    return 0


def _sysctl(key: str) -> str | None:
    try:
        done = subprocess.run(
            ["sysctl", "-n", key], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def performance_cores() -> int:
    """The default thread count of a decode: this machine's performance cores (at least 1)."""
    found = 0
    if sys.platform == "darwin":
        found = macos_performance_cores(_sysctl)
    elif sys.platform.startswith("linux"):
        try:
            found = linux_performance_cores(os.sched_getaffinity(0))
        except OSError:
            found = 0
    if not found:
        found = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    return max(1, found)
