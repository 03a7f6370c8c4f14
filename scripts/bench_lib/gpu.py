"""The `--gpu` run: emberd and llama-server on the GPU, the same GGUF, side by side.

Batch (short and long texts), 32 concurrent clients and single-text latency
against each server with every layer offloaded, then rerank pairs per
second when a reranker GGUF is given. llama-server is built from the
pinned llama-cpp-python's vendored llama.cpp with the same GPU backend as
emberd's build (CUDA: `EMBERD_CUDA_ARCH`, default 90). On a machine where
this build finds no GPU the run says so and does nothing else.

The goal: at least 1.25x llama-server on batch and concurrent work, where
the batching is emberd's own.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scripts.bench_lib import llama_server, procs, rerank, runner
from scripts.bench_lib.client import OLLAMA, OPENAI, Endpoint
from scripts.bench_lib.report import table
from scripts.bench_lib.results import BATCH_LONG, BATCH_SHORT, CONC, LATENCY_P50, Measurement

Say = Callable[[str], None]
GOAL = 1.25
METRICS = (BATCH_SHORT, BATCH_LONG, CONC, LATENCY_P50)
# Every layer on the GPU, as emberd does by default.
ALL_LAYERS = ("-ngl", "999")


@dataclass(frozen=True)
class GpuCheck:
    """What this build computes on, in the words of emberd's start-up line."""

    found: bool
    line: str
    backends: tuple[str, ...]


def check() -> GpuCheck:
    """Whether emberd's llama.cpp build finds a GPU here."""
    from emberd.backends.devices import describe_compute
    from emberd.backends.llama_cpp import compute_devices

    compute = compute_devices()
    backends = tuple(gpu.backend for gpu in compute.gpus)
    return GpuCheck(bool(compute.gpus), describe_compute(compute), backends)


def cmake_options(backends: tuple[str, ...]) -> tuple[str, ...]:
    """The llama-server build flags for the GPU backend emberd's build runs on."""
    if "CUDA" in backends:
        arch = os.environ.get("EMBERD_CUDA_ARCH", "90")
        return ("-DGGML_CUDA=ON", f"-DCMAKE_CUDA_ARCHITECTURES={arch}")
    return ()  # Metal is on by default on Apple Silicon


def run(opts: runner.Options, found: GpuCheck, rerank_model: Path | None, say: Say) -> str:
    """Both servers on the GPU; the table, the goal and the rerank figures."""
    flavour = "-".join(found.backends[:1]).lower()
    binary = llama_server.ensure_binary(
        opts.cache,
        llama_server.pinned_version(),
        os.cpu_count() or 1,
        say,
        flavour=flavour,
        extra=cmake_options(found.backends),
    )
    measurements: list[Measurement] = []
    starts: list[tuple[str, str, Callable[[], procs.Server]]] = [
        (runner.EMBERD, OLLAMA, lambda: runner.start_emberd(opts, procs.free_port())),
        (
            runner.LLAMA_SERVER,
            OPENAI,
            functools.partial(
                runner.start_llama_server,
                opts,
                binary,
                llama_server.DEFAULT_CONFIG,
                extra=ALL_LAYERS,
            ),
        ),
    ]
    for name, dialect, start in starts:
        say(f"gpu: {name}")
        server = start()
        try:
            endpoint = Endpoint(server.port, dialect, opts.model.name)
            measurements += runner.http_suite(name, endpoint, opts, METRICS, "GPU")
        finally:
            server.stop()
    lines = [found.line, "", table(measurements, (runner.EMBERD, runner.LLAMA_SERVER)), ""]
    lines += goal_lines(measurements)
    if rerank_model is None:
        lines.append("rerank: skipped (give --rerank-model a reranker GGUF)")
    else:
        lines += _rerank(opts, binary, rerank_model, say)
    return "\n".join(lines)


def goal_lines(measurements: list[Measurement]) -> list[str]:
    """emberd against llama-server on the batch and concurrent workloads."""
    values = {(m.contender, m.metric): m.value for m in measurements}
    lines = []
    for metric in (BATCH_SHORT, BATCH_LONG, CONC):
        ours = values.get((runner.EMBERD, metric))
        theirs = values.get((runner.LLAMA_SERVER, metric))
        if ours is None or not theirs:
            continue
        ratio = ours / theirs
        verdict = "met" if ratio >= GOAL else "MISSED"
        lines.append(f"{metric}: {ratio:.2f}x llama-server (goal {GOAL}x): {verdict}")
    return lines


def _rerank(opts: runner.Options, binary: Path, model: Path, say: Say) -> list[str]:
    query, docs = rerank.documents(100, 100, seed=7)
    lines = []
    starts = [
        ("emberd", lambda: rerank.start_emberd(model, opts.cache, opts.threads)),
        (
            "llama-server",
            lambda: rerank.start_llama_server(
                binary, model, opts.cache, opts.threads, llama_server.DEFAULT_CONFIG,
                extra=ALL_LAYERS,
            ),
        ),
    ]  # fmt: skip
    for name, start in starts:
        say(f"gpu: {name} rerank")
        server = start()
        try:
            rate, _ = rerank.measure(server.port, query, docs, 3)
        finally:
            server.stop()
        lines.append(f"rerank {name}: {rate:.1f} pairs/s (100 documents of 100 words)")
    return lines
