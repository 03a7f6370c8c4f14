"""The workloads, over any `Embedder`: batches, concurrent clients, latency, leak check.

An `Embedder` is one client (an HTTP connection, or an in-process model
behind a lock); each concurrent client thread gets its own from the factory.
Standard library only.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from scripts.bench_lib import texts


class Embedder(Protocol):
    """One client of a contender."""

    def embed(self, batch: Sequence[str]) -> None:
        """Embed `batch` in one request; raise if the answer is not one vector per text."""

    def close(self) -> None:
        """Release the client."""


EmbedderFactory = Callable[[], Embedder]


@dataclass(frozen=True)
class Sizes:
    """How big each workload is."""

    short_batch: int = 1000
    long_batch: int = 200
    conc_requests: int = 1000
    conc_clients: int = 32
    latency_requests: int = 300
    latency_warmup: int = 20
    repeats: int = 3  # batch workloads: the best of this many runs
    leak_requests: int = 20000
    leak_clients: int = 4
    leak_samples: int = 10  # RSS readings after warm-up

    def quick(self) -> Sizes:
        """Smaller workloads for a fast check (the leak check keeps its own setting)."""
        return replace(
            self,
            short_batch=200,
            long_batch=40,
            conc_requests=200,
            latency_requests=60,
            latency_warmup=5,
            repeats=1,
        )


@dataclass(frozen=True)
class Latency:
    """Per-request latency of one client sending one short text at a time."""

    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Leak:
    """Resident memory over the leak check, in MB."""

    base_mb: float  # after warm-up
    final_mb: float
    peak_mb: float
    requests: int
    seconds: float

    @property
    def growth_percent(self) -> float:
        """Growth from after warm-up to the end."""
        return (self.final_mb - self.base_mb) / self.base_mb * 100.0

    def summary(self) -> str:
        """The figures behind the growth, in words."""
        return (
            f"{self.requests} requests in {self.seconds:.0f} s; RSS {self.base_mb:.0f} MB after"
            f" warm-up, {self.final_mb:.0f} MB at the end, peak {self.peak_mb:.0f} MB"
        )


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0..100) with linear interpolation between ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def batch_rate(factory: EmbedderFactory, make: Callable[[int], list[str]], repeats: int) -> float:
    """Texts per second of one request holding `make(seed)`, best of `repeats` (new texts each)."""
    client = factory()
    try:
        client.embed(make(-1)[:4])  # warm: the model is loaded, the connection open
        best = math.inf
        for seed in range(repeats):
            batch = make(seed)
            start = time.perf_counter()
            client.embed(batch)
            best = min(best, time.perf_counter() - start)
        return len(make(0)) / best
    finally:
        client.close()


def concurrent_rate(
    factory: EmbedderFactory, make: Callable[[int], list[str]], clients: int, repeats: int
) -> float:
    """Texts per second with `clients` threads each sending one text of `make(seed)` per
    request; best of `repeats` (new texts each)."""
    embedders = [factory() for _ in range(clients)]
    try:
        for client in embedders:
            client.embed(make(-1)[:1])
        best = math.inf
        for seed in range(repeats):
            best = min(best, run_concurrently(embedders, ([t] for t in make(seed))))
        return len(make(0)) / best
    finally:
        for client in embedders:
            client.close()


def run_concurrently(embedders: Sequence[Embedder], requests: Iterable[Sequence[str]]) -> float:
    """Send `requests` through one thread per embedder, each taking the next; wall seconds."""
    lock = threading.Lock()
    source: Iterator[Sequence[str]] = iter(requests)
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(embedders) + 1)

    def next_request() -> Sequence[str] | None:
        with lock:
            return next(source, None)

    def work(client: Embedder) -> None:
        barrier.wait()
        try:
            while not errors and (request := next_request()) is not None:
                client.embed(request)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in embedders]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    return seconds


def request_times(factory: EmbedderFactory, batch: Sequence[str], warmup: int) -> list[float]:
    """Milliseconds of sequential one-text requests; the first `warmup` are not counted."""
    client = factory()
    try:
        times: list[float] = []
        for i, text in enumerate(batch):
            start = time.perf_counter()
            client.embed([text])
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
        return times
    finally:
        client.close()


def latency(factory: EmbedderFactory, batch: Sequence[str], warmup: int) -> Latency:
    """p50 and p99 of sequential one-text requests; the first `warmup` are not counted."""
    times = request_times(factory, batch, warmup)
    return Latency(p50_ms=percentile(times, 50), p99_ms=percentile(times, 99))


def leak_check(
    factory: EmbedderFactory, sizes: Sizes, rss_bytes: Callable[[], int], seed: int = 0
) -> Leak:
    """Send `sizes.leak_requests` mixed requests from `sizes.leak_clients` threads.

    The first tenth is warm-up; resident memory is read after it, then
    `sizes.leak_samples` times more, the last at the end.
    """
    total = sizes.leak_requests
    warm = max(1, total // 10)
    requests = texts.mixed_requests(total, seed)
    embedders = [factory() for _ in range(sizes.leak_clients)]
    try:
        start = time.perf_counter()
        run_concurrently(embedders, itertools.islice(requests, warm))
        base = rss_bytes()
        peak = base
        remaining = total - warm
        chunk = max(1, math.ceil(remaining / sizes.leak_samples))
        final = base
        while remaining > 0:
            step = min(chunk, remaining)
            run_concurrently(embedders, itertools.islice(requests, step))
            remaining -= step
            final = rss_bytes()
            peak = max(peak, final)
        seconds = time.perf_counter() - start
    finally:
        for client in embedders:
            client.close()
    mb = 1024.0 * 1024.0
    return Leak(base / mb, final / mb, peak / mb, total, seconds)
