"""The `busy` workload: the servers measured while CPU hogs keep every core busy.

People run emberd beside an IDE, a browser and a compiler. Here N processes
spin on the CPU (default: one per core; each stops by itself after a
deadline and is stopped by the bench) while one client sends single-text
requests, then 32 clients send one text each, then one client sends a
batch of long texts. emberd runs with its default (adaptive) threads;
llama-server with the same thread count and with one thread.

Before those, the first requests after an idle spell: the server sits idle
while the hogs start, and the first FIRST_REQUESTS single texts sent
IDLE_BEFORE_S later are timed with no warm-up, since a server that decides
its threads from a stale look at the machine shows it there alone.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from scripts.bench_lib import texts, workloads
from scripts.bench_lib.client import Endpoint, HttpEmbedder
from scripts.bench_lib.procs import Server

Say = Callable[[str], None]
# A hog never outlives this, even if the bench is killed.
HOG_DEADLINE_S = 900
# The first requests after the hogs start, and how long the hogs run before them.
FIRST_REQUESTS = 30
IDLE_BEFORE_S = 2.0
# emberd's goal for those first requests' p99.
FIRST_P99_GOAL_MS = 60.0
_HOG = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass\n"


@dataclass(frozen=True)
class BusySizes:
    """How big each busy workload is."""

    latency_requests: int = 300
    latency_warmup: int = 20
    conc_requests: int = 1000
    conc_clients: int = 32
    long_batch: int = 200

    def quick(self) -> BusySizes:
        """Smaller workloads for a fast check."""
        return replace(
            self, latency_requests=60, latency_warmup=5, conc_requests=200, long_batch=40
        )


@dataclass(frozen=True)
class BusyRow:
    """One server's figures under load."""

    server: str
    threads: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    conc_rate: float  # texts/s
    long_rate: float  # texts/s
    first_p99_ms: float = 0.0  # the first requests after an idle spell


@contextlib.contextmanager
def hogs(count: int) -> Iterator[None]:
    """`count` processes spinning on the CPU until the block ends."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _HOG, str(HOG_DEADLINE_S)], stdin=subprocess.DEVNULL
        )
        for _ in range(count)
    ]
    try:
        time.sleep(0.5)  # let the scheduler spread them
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def first_after_idle(endpoint: Endpoint, seed: int = 0) -> list[float]:
    """Milliseconds of the first single-text requests once the hogs have run a while.

    Called with the hogs just started and the server idle since its warm-up.
    """
    time.sleep(IDLE_BEFORE_S)
    batch = texts.short_texts(FIRST_REQUESTS, seed + 2000)
    return workloads.request_times(lambda: HttpEmbedder(endpoint), batch, 0)


def measure(
    server: str,
    threads: int,
    endpoint: Endpoint,
    sizes: BusySizes,
    seed: int = 0,
    first: list[float] | None = None,
) -> BusyRow:
    """The three busy workloads against one server; `first` are the first requests' times."""

    def factory() -> workloads.Embedder:
        return HttpEmbedder(endpoint)

    batch = texts.short_texts(sizes.latency_requests + sizes.latency_warmup, seed + 3000)
    times = workloads.request_times(factory, batch, sizes.latency_warmup)
    conc = workloads.concurrent_rate(
        factory,
        lambda s: texts.short_texts(sizes.conc_requests, seed + 4000 + s),
        sizes.conc_clients,
        1,
    )
    long_rate = workloads.batch_rate(
        factory, lambda s: texts.long_texts(sizes.long_batch, seed + 5000 + s), 1
    )
    return BusyRow(
        server=server,
        threads=threads,
        p50_ms=workloads.percentile(times, 50),
        p99_ms=workloads.percentile(times, 99),
        max_ms=max(times),
        conc_rate=conc,
        long_rate=long_rate,
        first_p99_ms=workloads.percentile(first, 99) if first else 0.0,
    )


def table(rows: list[BusyRow], hog_count: int, cores: int) -> str:
    """The busy rows as a Markdown table, with ratios of emberd to the best llama-server."""
    lines = [
        f"busy: {hog_count} CPU hogs on {cores} cores",
        "",
        f"| server | threads | first-{FIRST_REQUESTS} p99 ms | p50 ms | p99 ms | max ms "
        "| conc-32 texts/s | batch-long texts/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.server} | {r.threads} | {r.first_p99_ms:.1f} | {r.p50_ms:.1f} | "
            f"{r.p99_ms:.1f} | {r.max_ms:.1f} | {r.conc_rate:.0f} | {r.long_rate:.1f} |"
        )
    ours = [r for r in rows if r.server == "emberd"]
    # llama-server's rows only: emberd-before (--baseline) is not the one compared with.
    others = [r for r in rows if r.server.startswith("llama-server")]
    if ours and others:
        e = ours[0]
        same = [r for r in others if r.threads == e.threads]
        best_conc = max(r.conc_rate for r in others)
        best_long = max(r.long_rate for r in others)
        lines.append("")
        verdict = "met" if e.first_p99_ms <= FIRST_P99_GOAL_MS else "MISSED"
        lines.append(
            f"first {FIRST_REQUESTS} requests after idle ({IDLE_BEFORE_S:.0f} s into the hogs): "
            f"emberd p99 {e.first_p99_ms:.1f} ms, goal <= {FIRST_P99_GOAL_MS:.0f} ms: {verdict}"
        )
        if same:
            lines.append(
                f"p99: emberd {e.p99_ms:.1f} ms, llama-server at {e.threads} threads "
                f"{same[0].p99_ms:.1f} ms ({same[0].p99_ms / e.p99_ms:.1f}x better)"
            )
        lines.append(
            f"conc-32: {e.conc_rate / best_conc:.2f}x llama-server's best; "
            f"batch-long: {e.long_rate / best_long:.2f}x llama-server's best"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class BusyServer:
    """One server of the busy run: a name, its thread count and how to start it."""

    name: str
    threads: int
    dialect: str  # OLLAMA or OPENAI
    start: Callable[[], Server]


def run(
    servers: list[BusyServer], model_name: str, sizes: BusySizes, hog_count: int, say: Say
) -> list[BusyRow]:
    """Each server in turn: started and warmed while the machine is quiet, measured under hogs."""
    rows = []
    for spec in servers:
        server = spec.start()
        endpoint = Endpoint(server.port, spec.dialect, model_name)
        try:
            warm = HttpEmbedder(endpoint)
            warm.embed(texts.short_texts(4, 1))
            warm.close()
            say(f"busy: {spec.name} with {spec.threads} threads under {hog_count} hogs")
            with hogs(hog_count):
                first = first_after_idle(endpoint)
                rows.append(measure(spec.name, spec.threads, endpoint, sizes, first=first))
        finally:
            server.stop()
    return rows
