"""Runs the contenders one after another and collects their measurements."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from scripts.bench_lib import busy, llama_server, procs, texts, workloads
from scripts.bench_lib.client import OLLAMA, OPENAI, Endpoint, HttpEmbedder, token_count
from scripts.bench_lib.llama_server import ServerConfig
from scripts.bench_lib.model import BenchModel
from scripts.bench_lib.results import (
    BATCH_LONG,
    BATCH_SHORT,
    COLD,
    CONC,
    LATENCY_P50,
    LATENCY_P99,
    LEAK,
    RSS,
    Measurement,
    from_json,
)
from scripts.bench_lib.worker import LLAMA_CPP, SENTENCE_TRANSFORMERS, Job

EMBERD = "emberd"
# The same bench against another emberd install (`--baseline PYTHON`), run right
# after emberd so both see the same machine.
EMBERD_BEFORE = "emberd-before"
LLAMA_SERVER = "llama-server"
CONTENDERS: tuple[str, ...] = (EMBERD, LLAMA_SERVER, LLAMA_CPP, SENTENCE_TRANSFORMERS)
THROUGHPUT: tuple[str, ...] = (BATCH_SHORT, BATCH_LONG, CONC)
Say = Callable[[str], None]


@dataclass(frozen=True)
class Options:
    """One bench run."""

    model: BenchModel
    threads: int
    sizes: workloads.Sizes
    sweep: bool  # sweep llama-server's settings (else one default setting)
    cache: Path  # builds, stores, logs and results
    repo: Path  # the checkout, where child processes run
    seed: int = 0
    baseline: Path | None = None  # the Python of another emberd install, for EMBERD_BEFORE


@dataclass(frozen=True)
class SweepPoint:
    """One llama-server setting on one workload (a single run), or why it failed."""

    config: ServerConfig
    metric: str
    value: float | None
    error: str = ""


@dataclass
class Outcome:
    """Everything a run measured."""

    measurements: list[Measurement] = field(default_factory=list)
    sweep: list[SweepPoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tokens_per_text: dict[str, float] = field(default_factory=dict)  # "short", "long"


def http_suite(
    name: str, endpoint: Endpoint, opts: Options, metrics: Sequence[str], note: str = ""
) -> list[Measurement]:
    """The HTTP workloads among `metrics` against `endpoint`, as measurements of `name`."""

    def factory() -> workloads.Embedder:
        return HttpEmbedder(endpoint)

    sizes, seed = opts.sizes, opts.seed
    best = f"best of {sizes.repeats}" + (f"; {note}" if note else "")
    out: list[Measurement] = []
    if BATCH_SHORT in metrics:
        rate = workloads.batch_rate(
            factory, lambda s: texts.short_texts(sizes.short_batch, seed + s), sizes.repeats
        )
        out.append(Measurement(name, BATCH_SHORT, rate, best))
    if BATCH_LONG in metrics:
        rate = workloads.batch_rate(
            factory, lambda s: texts.long_texts(sizes.long_batch, seed + s), sizes.repeats
        )
        out.append(Measurement(name, BATCH_LONG, rate, best))
    if CONC in metrics:
        rate = workloads.concurrent_rate(
            factory,
            lambda s: texts.short_texts(sizes.conc_requests, seed + 1000 + s),
            sizes.conc_clients,
            sizes.repeats,
        )
        out.append(Measurement(name, CONC, rate, best))
    if LATENCY_P50 in metrics:
        batch = texts.short_texts(sizes.latency_requests + sizes.latency_warmup, seed + 2000)
        lat = workloads.latency(factory, batch, sizes.latency_warmup)
        out.append(Measurement(name, LATENCY_P50, lat.p50_ms, note))
        out.append(Measurement(name, LATENCY_P99, lat.p99_ms, note))
    return out


def _first_embedding_ms(server: procs.Server, endpoint: Endpoint) -> tuple[float, float]:
    """(first request ms, spawn-to-first-embedding ms) for a server that has not served yet."""
    text = texts.short_texts(1, 99)
    start = time.perf_counter()
    client = HttpEmbedder(endpoint)
    try:
        client.embed(text)
    finally:
        client.close()
    end = time.perf_counter()
    return (end - start) * 1000.0, (end - server.started_at) * 1000.0


# -- emberd


def start_emberd(opts: Options, port: int, python: Path | None = None) -> procs.Server:
    """emberd (of `python`'s install, by default this one) serving the bench model's store
    on `port`, ready for requests."""
    env = procs.base_env()
    env["EMBERD_MODELS"] = str(opts.model.emberd_dir)
    ollama_dir = opts.model.ollama_dir or opts.cache / "empty-ollama-store"
    ollama_dir.mkdir(parents=True, exist_ok=True)
    env["OLLAMA_MODELS"] = str(ollama_dir)
    env["EMBERD_NUM_THREAD"] = str(opts.threads)
    interpreter = str(python or sys.executable)
    script = Path(interpreter).with_name("emberd")
    command = [str(script)] if script.is_file() else [interpreter, "-m", "emberd.server.cli"]
    log = opts.cache / "logs" / f"emberd-{port}.log"
    server = procs.spawn(
        EMBERD, [*command, "serve", "--port", str(port)], port, log, env, opts.repo
    )
    procs.wait_ready(server, "/")
    return server


def run_emberd(
    opts: Options, outcome: Outcome, say: Say, name: str = EMBERD, python: Path | None = None
) -> None:
    """Every workload, then the leak check, against one emberd process (measured as `name`)."""
    port = procs.free_port()
    server = start_emberd(opts, port, python)
    endpoint = Endpoint(port, OLLAMA, opts.model.name)
    try:
        cold, spawn_to_first = _first_embedding_ms(server, endpoint)
        outcome.measurements.append(
            Measurement(
                name,
                COLD,
                cold,
                f"first request, load included; {spawn_to_first:.0f} ms from spawn",
            )
        )
        for kind, make in (("short", texts.short_texts), ("long", texts.long_texts)):
            sample = make(20, 7)
            outcome.tokens_per_text[kind] = token_count(endpoint, sample) / len(sample)
        say(f"{name}: workloads")
        outcome.measurements += http_suite(name, endpoint, opts, (*THROUGHPUT, LATENCY_P50))
        outcome.measurements.append(Measurement(name, RSS, server.rss_bytes() / 2**20))
        if opts.sizes.leak_requests > 0:
            say(f"{name}: leak check, {opts.sizes.leak_requests} requests")
            leak = workloads.leak_check(
                lambda: HttpEmbedder(endpoint), opts.sizes, server.rss_bytes, opts.seed
            )
            outcome.measurements.append(
                Measurement(name, LEAK, leak.growth_percent, leak.summary())
            )
    finally:
        server.stop()


# -- llama-server


def start_llama_server(
    opts: Options, binary: Path, config: ServerConfig, extra: Sequence[str] = ()
) -> procs.Server:
    """llama-server with `config` (and `extra` arguments) on a free port, model loaded."""
    port = procs.free_port()
    argv = llama_server.server_argv(
        binary,
        opts.model.gguf,
        context=opts.model.context,
        threads=opts.threads,
        pooling=opts.model.pooling,
        config=config,
        port=port,
        clients=opts.sizes.conc_clients,
    )
    argv += extra
    log = opts.cache / "logs" / f"llama-server-{port}.log"
    server = procs.spawn(LLAMA_SERVER, argv, port, log, procs.base_env(), opts.repo)
    procs.wait_ready(server, "/health")
    return server


def _sweep(opts: Options, binary: Path, outcome: Outcome, say: Say) -> dict[str, ServerConfig]:
    """One run of each throughput workload per setting; the best setting of each."""
    grid = llama_server.sweep_grid(opts.model.context)
    one = replace(opts, sizes=replace(opts.sizes, repeats=1))
    best: dict[str, tuple[float, ServerConfig]] = {}
    for config in grid:
        say(f"llama-server sweep: {config.label}")
        try:
            server = start_llama_server(opts, binary, config)
        except procs.BenchError as exc:
            outcome.sweep += [SweepPoint(config, m, None, str(exc)[-200:]) for m in THROUGHPUT]
            continue
        endpoint = Endpoint(server.port, OPENAI, opts.model.name)
        try:
            for metric in THROUGHPUT:
                try:
                    (m,) = http_suite(LLAMA_SERVER, endpoint, one, (metric,))
                except procs.BenchError as exc:
                    outcome.sweep.append(SweepPoint(config, metric, None, str(exc)[:200]))
                    continue
                outcome.sweep.append(SweepPoint(config, metric, m.value))
                if metric not in best or m.value > best[metric][0]:
                    best[metric] = (m.value, config)
        finally:
            server.stop()
    return {metric: config for metric, (_, config) in best.items()}


def run_llama_server(opts: Options, binary: Path, outcome: Outcome, say: Say) -> None:
    """The sweep (unless skipped), then each workload on its best setting, with repeats."""
    chosen = (
        _sweep(opts, binary, outcome, say)
        if opts.sweep
        else dict.fromkeys(THROUGHPUT, llama_server.DEFAULT_CONFIG)
    )
    if not chosen:
        outcome.notes.append("llama-server: no setting of the sweep worked")
        return
    configs = list(dict.fromkeys(chosen.values()))
    latencies: list[Measurement] = []
    for i, config in enumerate(configs):
        say(f"llama-server: workloads on {config.label}")
        server = start_llama_server(opts, binary, config)
        endpoint = Endpoint(server.port, OPENAI, opts.model.name)
        try:
            if i == 0:
                _, spawn_to_first = _first_embedding_ms(server, endpoint)
                outcome.measurements.append(
                    Measurement(
                        LLAMA_SERVER,
                        COLD,
                        spawn_to_first,
                        f"spawn to first embedding; {config.label}",
                    )
                )
            metrics = [m for m, c in chosen.items() if c == config]
            found = http_suite(LLAMA_SERVER, endpoint, opts, (*metrics, LATENCY_P50), config.label)
            outcome.measurements += [
                _with_sweep(m, config, outcome.sweep) for m in found if m.metric in metrics
            ]
            latencies += [m for m in found if m.metric in (LATENCY_P50, LATENCY_P99)]
            if i == 0:
                rss = server.rss_bytes() / 2**20
                outcome.measurements.append(Measurement(LLAMA_SERVER, RSS, rss, config.label))
        finally:
            server.stop()
    p50s = [m for m in latencies if m.metric == LATENCY_P50]
    fastest = min(p50s, key=lambda m: m.value)
    outcome.measurements.append(fastest)
    outcome.measurements += [
        m for m in latencies if m.metric == LATENCY_P99 and m.note == fastest.note
    ][:1]


def _with_sweep(m: Measurement, config: ServerConfig, sweep: Sequence[SweepPoint]) -> Measurement:
    """The better of `m` and the sweep's run of the same setting: the sweep run is one more
    sample, so a slow moment during the final runs does not flatter the others."""
    same = [p.value for p in sweep if p.config == config and p.metric == m.metric and p.value]
    if same and max(same) > m.value:
        return Measurement(m.contender, m.metric, max(same), f"{m.note}; the sweep's run")
    return m


# -- the busy workload


def run_busy(
    opts: Options, binary: Path | None, hog_count: int, sizes: busy.BusySizes, say: Say
) -> list[busy.BusyRow]:
    """emberd, then llama-server at the same threads and at one, each under `hog_count` hogs."""
    servers = [
        busy.BusyServer(EMBERD, opts.threads, OLLAMA, lambda: start_emberd(opts, procs.free_port()))
    ]
    if opts.baseline is not None:
        baseline = opts.baseline
        servers.append(
            busy.BusyServer(
                EMBERD_BEFORE,
                opts.threads,
                OLLAMA,
                lambda: start_emberd(opts, procs.free_port(), baseline),
            )
        )
    if binary is not None:
        label = f"{LLAMA_SERVER} {llama_server.DEFAULT_CONFIG.label}"
        for threads in dict.fromkeys((opts.threads, 1)):
            chosen = replace(opts, threads=threads)
            servers.append(
                busy.BusyServer(
                    label,
                    threads,
                    OPENAI,
                    functools.partial(
                        start_llama_server, chosen, binary, llama_server.DEFAULT_CONFIG
                    ),
                )
            )
    return busy.run(servers, opts.model.name, sizes, hog_count, say)


# -- in-process contenders


def run_worker(
    opts: Options, engine: str, python: str, model: Path, outcome: Outcome, say: Say
) -> None:
    """Run `engine` in a child interpreter `python`; its measurements join the outcome."""
    job = Job(engine, str(model), opts.threads, opts.model.context, opts.sizes, opts.seed)
    log = opts.cache / "logs" / f"worker-{engine}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    say(f"{engine}: workloads in process ({python})")
    with open(log, "wb") as err:
        done = subprocess.run(
            [python, "-m", "scripts.bench_lib.worker"],
            input=job.to_json().encode(),
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=opts.repo,
        )
    if done.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        outcome.notes.append(f"{engine}: failed ({done.returncode}): " + " | ".join(tail))
        return
    lines = done.stdout.decode().strip().splitlines()
    outcome.measurements += from_json(json.loads(lines[-1])["measurements"])
