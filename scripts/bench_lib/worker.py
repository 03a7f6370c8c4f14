"""In-process contenders, run in a child interpreter: `python -m scripts.bench_lib.worker`.

Reads a JSON job on stdin (engine, model, threads, context, sizes, seed),
runs the workloads on the engine in this process and prints one JSON line of
measurements. The child may be another virtual environment (one with torch
and sentence-transformers), so this module and what it imports use only the
standard library until the engine itself is imported.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scripts.bench_lib import results, texts, workloads

LLAMA_CPP = "llama-cpp-python"
SENTENCE_TRANSFORMERS = "sentence-transformers"


@dataclass(frozen=True)
class Job:
    """What the parent asks the worker to run."""

    engine: str
    model: str  # a GGUF file (llama-cpp-python) or a checkpoint directory
    threads: int
    context: int
    sizes: workloads.Sizes
    seed: int = 0

    def to_json(self) -> str:
        """The job as the worker reads it."""
        return json.dumps({**asdict(self), "sizes": asdict(self.sizes)})

    @classmethod
    def from_json(cls, text: str) -> Job:
        """Parse `to_json`'s output."""
        raw = json.loads(text)
        return cls(**{**raw, "sizes": workloads.Sizes(**raw["sizes"])})


class _Locked:
    """An in-process model shared by client threads, one call at a time."""

    def __init__(self, embed: Any, lock: threading.Lock) -> None:
        self._embed = embed
        self._lock = lock

    def embed(self, batch: Sequence[str]) -> None:
        with self._lock:
            count = len(self._embed(list(batch)))
        if count != len(batch):
            raise RuntimeError(f"asked for {len(batch)} embeddings, got {count}")

    def close(self) -> None:
        pass


def _import(engine: str) -> Callable[[Job], Any]:
    """Import `engine`; return its loader (a job's model, loaded as a user would: its embed)."""
    if engine == LLAMA_CPP:
        from llama_cpp import Llama

        def load_llama(job: Job) -> Any:
            llm = Llama(
                model_path=job.model,
                embedding=True,
                n_ctx=job.context,
                n_threads=job.threads,
                n_threads_batch=job.threads,
                verbose=False,
            )
            return llm.embed

        return load_llama
    if engine == SENTENCE_TRANSFORMERS:
        import torch
        from sentence_transformers import SentenceTransformer

        def load_st(job: Job) -> Any:
            torch.set_num_threads(job.threads)
            return SentenceTransformer(job.model, device="cpu").encode

        return load_st
    raise ValueError(f"unknown engine {engine!r}")


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def run(job: Job) -> list[results.Measurement]:
    """Every workload of the job on its engine."""
    name, sizes, seed = job.engine, job.sizes, job.seed
    start = time.perf_counter()
    load = _import(job.engine)
    import_ms = (time.perf_counter() - start) * 1000.0
    start = time.perf_counter()
    embed = load(job)
    embed([texts.short_texts(1, seed + 99)[0]])
    cold_ms = (time.perf_counter() - start) * 1000.0
    lock = threading.Lock()

    def factory() -> workloads.Embedder:
        return _Locked(embed, lock)

    short = workloads.batch_rate(
        factory, lambda s: texts.short_texts(sizes.short_batch, seed + s), sizes.repeats
    )
    long_ = workloads.batch_rate(
        factory, lambda s: texts.long_texts(sizes.long_batch, seed + s), sizes.repeats
    )
    conc = workloads.concurrent_rate(
        factory,
        lambda s: texts.short_texts(sizes.conc_requests, seed + 1000 + s),
        sizes.conc_clients,
        sizes.repeats,
    )
    lat = workloads.latency(
        factory,
        texts.short_texts(sizes.latency_requests + sizes.latency_warmup, seed + 2000),
        sizes.latency_warmup,
    )
    best = f"best of {sizes.repeats}"
    return [
        results.Measurement(name, results.BATCH_SHORT, short, best),
        results.Measurement(name, results.BATCH_LONG, long_, best),
        results.Measurement(name, results.CONC, conc, f"{best}; calls serialised by a lock"),
        results.Measurement(name, results.LATENCY_P50, lat.p50_ms),
        results.Measurement(name, results.LATENCY_P99, lat.p99_ms),
        results.Measurement(
            name, results.COLD, cold_ms, f"load + first call; import {import_ms:.0f} ms before"
        ),
        results.Measurement(name, results.RSS, _rss_bytes() / (1024.0 * 1024.0), "whole process"),
    ]


def main() -> int:
    """Read the job from stdin, print the measurements as one JSON line."""
    job = Job.from_json(sys.stdin.read())
    measured = run(job)
    print(json.dumps({"measurements": results.to_json(measured)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
