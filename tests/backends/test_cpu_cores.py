"""The default thread count: performance cores, from sample sysfs trees and sysctl answers."""

from __future__ import annotations

from pathlib import Path

from emberd.backends.cpu_cores import (
    linux_performance_cores,
    macos_performance_cores,
    parse_cpu_list,
    performance_cores,
)


def sysfs(root: Path, siblings: dict[int, str], **kinds: str) -> Path:
    """A /sys/devices tree: each CPU's core_cpus_list, plus cpu_core/cpu_atom lists."""
    for cpu, text in siblings.items():
        topology = root / "system" / "cpu" / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "core_cpus_list").write_text(text + "\n")
    for kind, cpus in kinds.items():
        (root / kind).mkdir()
        (root / kind / "cpus").write_text(cpus + "\n")
    return root


def test_cpu_lists_parse() -> None:
    assert parse_cpu_list("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert parse_cpu_list("5") == {5}


def test_hyper_threads_count_once(tmp_path: Path) -> None:
    # 4 cores with 2 threads each, siblings numbered n and n+4.
    root = sysfs(tmp_path, {cpu: f"{cpu % 4},{cpu % 4 + 4}" for cpu in range(8)})
    assert linux_performance_cores(range(8), root) == 4


def test_hybrid_intel_keeps_the_performance_cores_alone(tmp_path: Path) -> None:
    # An i7-1260P: 4 P cores with hyper-threads (0-7, pairs), 8 E cores (8-15).
    siblings = {cpu: f"{cpu - cpu % 2}-{cpu - cpu % 2 + 1}" for cpu in range(8)}
    siblings.update({cpu: str(cpu) for cpu in range(8, 16)})
    root = sysfs(tmp_path, siblings, cpu_core="0-7", cpu_atom="8-15")
    assert linux_performance_cores(range(16), root) == 4


def test_the_affinity_mask_bounds_the_cores(tmp_path: Path) -> None:
    root = sysfs(tmp_path, {cpu: f"{cpu % 4},{cpu % 4 + 4}" for cpu in range(8)})
    assert linux_performance_cores({0, 4}, root) == 1  # two threads of one core
    assert linux_performance_cores({0, 1, 2}, root) == 3


def test_a_cpu_without_topology_counts_as_its_own_core(tmp_path: Path) -> None:
    assert linux_performance_cores({0, 1}, tmp_path) == 2


def test_apple_silicon_uses_perflevel0() -> None:
    m3_pro = {"hw.perflevel0.physicalcpu": "6\n", "hw.physicalcpu": "12\n"}
    assert macos_performance_cores(m3_pro.get) == 6
    intel_mac = {"hw.physicalcpu": "8\n"}  # no performance levels
    assert macos_performance_cores(intel_mac.get) == 8
    assert macos_performance_cores({}.get) == 0


def test_this_machine_has_at_least_one() -> None:
    assert performance_cores() >= 1
