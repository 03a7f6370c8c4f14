"""`--paired ROUNDS`: emberd, emberd-before and llama-server up at once, measured in turns.

Run one after another, contenders see different machines: on a shared
virtual machine the speed drifts by 10-25% within minutes, more than the
differences worth measuring. Here every server is started first; then each
round gives every server, in an order that alternates between rounds, a
block of single-text requests (latency), one short batch, one long batch
and one burst from 32 clients. A contender's figure is its median over the
rounds; its ratio to llama-server is the mean of the per-round ratios, with
the standard error of that mean, so a drift that hits all servers within a
round cancels out.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from scripts.bench_lib import procs, workloads
from scripts.bench_lib.client import OLLAMA, OPENAI, Endpoint, HttpEmbedder
from scripts.bench_lib.llama_server import DEFAULT_CONFIG
from scripts.bench_lib.results import BATCH_LONG, BATCH_SHORT, CONC, LATENCY_P50, UNITS
from scripts.bench_lib.runner import (
    EMBERD,
    EMBERD_BEFORE,
    LLAMA_SERVER,
    Options,
    http_suite,
    start_emberd,
    start_llama_server,
)
from scripts.bench_lib.workloads import Sizes

# Each round's workloads, for each server: smaller than a sequential run's,
# since every round measures every server.
ROUND_SIZES = replace(
    Sizes(), short_batch=256, long_batch=24, conc_requests=300, latency_requests=120, repeats=1
)
METRICS: tuple[str, ...] = (LATENCY_P50, BATCH_SHORT, BATCH_LONG, CONC)


@dataclass(frozen=True)
class Row:
    """One contender's figure for one metric, and how it compares with llama-server's."""

    contender: str
    metric: str
    median: float
    ratio: float  # mean of the per-round ratios to llama-server
    ratio_se: float
    difference: float  # mean of the per-round differences (ms for latency)
    difference_se: float


def _round(opts: Options, endpoint: Endpoint, seed: int) -> dict[str, float]:
    """One round's figures for one server: the bench's own HTTP workloads."""
    sized = replace(opts, sizes=ROUND_SIZES, seed=seed)
    return {m.metric: m.value for m in http_suite(endpoint.model, endpoint, sized, METRICS)}


def _start(opts: Options, binary: Path) -> dict[str, tuple[procs.Server, Endpoint]]:
    servers: dict[str, tuple[procs.Server, Endpoint]] = {}
    try:
        port = procs.free_port()
        servers[EMBERD] = (start_emberd(opts, port), Endpoint(port, OLLAMA, opts.model.name))
        if opts.baseline is not None:
            port = procs.free_port()
            before = start_emberd(opts, port, opts.baseline)
            servers[EMBERD_BEFORE] = (before, Endpoint(port, OLLAMA, opts.model.name))
        server = start_llama_server(opts, binary, DEFAULT_CONFIG)
        servers[LLAMA_SERVER] = (server, Endpoint(server.port, OPENAI, opts.model.name))
    except BaseException:
        for started, _ in servers.values():
            started.stop()
        raise
    return servers


def run(opts: Options, binary: Path, rounds: int, say: Callable[[str], None]) -> list[Row]:
    """Every server up at once, `rounds` rounds in alternating order; the rows."""
    servers = _start(opts, binary)
    try:
        for _, endpoint in servers.values():  # loaded and warm before the first round
            workloads.request_times(lambda e=endpoint: HttpEmbedder(e), ["warm"] * 10, 10)
        time.sleep(3)  # emberd's next spare runner starts in this pause, not in a round
        names = list(servers)
        figures: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for number in range(rounds):
            order = names if number % 2 == 0 else names[::-1]
            say(f"paired round {number + 1}/{rounds}: {', '.join(order)}")
            for name in order:
                figures[name].append(_round(opts, servers[name][1], 1000 * number))
    finally:
        for server, _ in servers.values():
            server.stop()
    return _rows(figures)


def _rows(figures: dict[str, list[dict[str, float]]]) -> list[Row]:
    reference = figures[LLAMA_SERVER]
    rows = []
    for name, rounds in figures.items():
        for metric in METRICS:
            mine = [r[metric] for r in rounds]
            theirs = [r[metric] for r in reference]
            ratios = [a / b for a, b in zip(mine, theirs, strict=True)]
            differences = [a - b for a, b in zip(mine, theirs, strict=True)]
            rows.append(
                Row(
                    name,
                    metric,
                    statistics.median(mine),
                    statistics.mean(ratios),
                    _se(ratios),
                    statistics.mean(differences),
                    _se(differences),
                )
            )
    return rows


def _se(values: Sequence[float]) -> float:
    return statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0


def table(rows: Sequence[Row], rounds: int) -> str:
    """The rows as text: medians, ratios to llama-server, and p50 differences in ms."""
    lines = [f"paired: {rounds} rounds, servers up together, order alternating"]
    lines.append(f"{'metric':<12} {'unit':<8} {'contender':<14} {'median':>8}  vs llama-server")
    for metric in METRICS:
        unit = UNITS[metric]
        for row in (r for r in rows if r.metric == metric):
            versus = f"{row.ratio:.3f}x +- {row.ratio_se:.3f}"
            if metric == LATENCY_P50:
                versus += f" ({row.difference:+.2f} +- {row.difference_se:.2f} ms)"
            if row.contender == LLAMA_SERVER:
                versus = ""
            lines.append(f"{metric:<12} {unit:<8} {row.contender:<14} {row.median:>8.2f}  {versus}")
    return "\n".join(lines)
