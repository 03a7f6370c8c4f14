"""The bench's own code paths on the tiny model, with tiny workloads (no llama-server).

Keeps `scripts/bench` from rotting: emberd is started as the bench starts
it, Llama.embed runs in the bench's worker process, and the report is built
from what they measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.bench_lib import (
    busy,
    gpu,
    llama_server,
    paired,
    procs,
    report,
    runner,
    texts,
    workloads,
)
from scripts.bench_lib.model import LINKED_NAME, prepare_model
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
    to_json,
)
from scripts.bench_lib.worker import LLAMA_CPP, Job
from tests.support.harness import ModelFiles

pytestmark = pytest.mark.slow  # starts child processes

REPO = Path(__file__).resolve().parents[2]
TINY_SIZES = workloads.Sizes(
    short_batch=6,
    long_batch=2,
    conc_requests=6,
    conc_clients=3,
    latency_requests=4,
    latency_warmup=1,
    repeats=1,
    leak_requests=12,
    leak_clients=2,
    leak_samples=2,
)


def test_texts_are_deterministic_and_sized() -> None:
    assert texts.short_texts(3, 0) == texts.short_texts(3, 0)
    assert texts.short_texts(3, 0) != texts.short_texts(3, 1)
    assert [len(t.split()) for t in texts.short_texts(3, 0)] == [texts.SHORT_WORDS] * 3
    (long_text,) = texts.long_texts(1, 0)
    assert len(long_text.split()) == texts.LONG_WORDS
    assert long_text.count(".") == texts.LONG_WORDS // texts.SENTENCE_WORDS
    sizes = [len(r) for r in texts.mixed_requests(10, 0)]
    assert sizes == [1, 1, 2, 1, 1, 8, 1, 1, 1, 4]


def test_percentile_interpolates() -> None:
    assert workloads.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert workloads.percentile([0.0, 10.0], 99) == pytest.approx(9.9)


def test_machine_readings() -> None:
    watch = procs.CpuWatch.start()
    sum(range(200_000))  # the bench's own work is not counted
    assert 0.0 <= watch.others_share() <= 1.0
    assert procs.rss_bytes(os.getpid()) > 1_000_000


def test_sweep_grid_and_server_argv() -> None:
    grid = llama_server.sweep_grid(context=512, longest_tokens=300)
    assert llama_server.ServerConfig(32, 256) not in grid  # too small for 300 tokens
    assert llama_server.ServerConfig(32, 512) in grid
    assert llama_server.ServerConfig(1, 1024) not in grid  # more than one slot's context
    config = llama_server.ServerConfig(parallel=4, ubatch=512)
    argv = llama_server.server_argv(
        Path("/bin/llama-server"),
        Path("/m.gguf"),
        context=512,
        threads=2,
        pooling=1,
        config=config,
        port=8080,
    )

    def flag(name: str) -> str:
        return argv[argv.index(name) + 1]

    assert flag("-c") == "2048"  # the model's context for each of 4 slots
    assert flag("-ub") == flag("-b") == "512"
    assert flag("--pooling") == "mean"


def test_targets_are_judged() -> None:
    ms = [
        Measurement("emberd", BATCH_SHORT, 130.0),
        Measurement("llama-server", BATCH_SHORT, 100.0),
        Measurement("emberd", BATCH_LONG, 120.0),
        Measurement("llama-server", BATCH_LONG, 100.0),
        Measurement("emberd", CONC, 100.0),
        Measurement("emberd", LATENCY_P50, 2.5),
        Measurement("llama-server", LATENCY_P50, 2.0),
        Measurement("emberd", COLD, 350.0),
        Measurement("emberd", LEAK, 1.0),
    ]
    got = [t.status for t in report.evaluate(ms, "all-minilm")]
    assert got == [
        report.MET,  # batch-short 1.30x
        report.MISSED,  # batch-long 1.20x
        report.UNKNOWN,  # conc-32: no llama-server figure
        report.UNKNOWN,  # no sentence-transformers
        report.UNKNOWN,
        report.MISSED,  # conc 100 < 0.85 * 130
        report.MET,  # +0.5 ms
        report.MISSED,  # 350 ms
        report.MET,  # +1%
    ]
    assert "(1.30x)" in report.table(ms, runner.CONTENDERS)


def test_job_round_trip() -> None:
    job = Job(LLAMA_CPP, "/m.gguf", 2, 512, TINY_SIZES, seed=3)
    assert Job.from_json(job.to_json()) == job
    ms = [Measurement("a", RSS, 1.5, "n")]
    assert from_json(json.loads(json.dumps(to_json(ms)))) == ms


def test_emberd_and_llama_embed_on_tiny_model(tmp_path: Path, model_files: ModelFiles) -> None:
    model = prepare_model(str(model_files.mean), tmp_path, None, print)
    assert model.name == LINKED_NAME and model.context == 128
    opts = runner.Options(
        model=model, threads=1, sizes=TINY_SIZES, sweep=False, cache=tmp_path, repo=REPO
    )
    outcome = runner.Outcome()
    runner.run_emberd(opts, outcome, print)
    runner.run_worker(opts, LLAMA_CPP, sys.executable, model.gguf, outcome, print)
    assert outcome.notes == []
    found = {(m.contender, m.metric): m.value for m in outcome.measurements}
    every = (BATCH_SHORT, BATCH_LONG, CONC, LATENCY_P50, LATENCY_P99, COLD, RSS)
    for contender in ("emberd", LLAMA_CPP):
        for metric in every:
            assert found[(contender, metric)] > 0, (contender, metric)
    assert ("emberd", LEAK) in found
    assert outcome.tokens_per_text["short"] > 2
    targets = report.evaluate(outcome.measurements, model.name)
    doc = report.document(outcome.measurements, targets, model=model.name)
    assert json.loads(json.dumps(doc))["targets"][0]["status"] == report.UNKNOWN
    assert LLAMA_CPP in report.table(outcome.measurements, runner.CONTENDERS)


# -- the GPU run and the busy table ---------------------------------------------------


def test_gpu_run_without_a_gpu_says_so_and_exits_0(tmp_path: Path) -> None:
    if gpu.check().found:
        pytest.skip("this machine has a GPU: --gpu would measure it for minutes")
    done = subprocess.run(
        [sys.executable, "-m", "scripts.bench_lib", "--gpu", "--cache", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("bench --gpu: no GPU here (compute: CPU")
    assert list(tmp_path.iterdir()) == []  # nothing built, nothing prepared


def test_gpu_builds_and_goals() -> None:
    assert "-DGGML_CUDA=ON" in gpu.cmake_options(("CUDA",))
    assert gpu.cmake_options(("Metal",)) == ()
    assert llama_server.binary_path(REPO, "1", "cuda").parent.parent.name == "build-cuda"
    lines = gpu.goal_lines(
        [
            Measurement(runner.EMBERD, BATCH_SHORT, 1300.0),
            Measurement(runner.LLAMA_SERVER, BATCH_SHORT, 1000.0),
            Measurement(runner.EMBERD, CONC, 1100.0),
            Measurement(runner.LLAMA_SERVER, CONC, 1000.0),
        ]
    )
    assert lines == [
        "batch-short: 1.30x llama-server (goal 1.25x): met",
        "conc-32: 1.10x llama-server (goal 1.25x): MISSED",
    ]


def test_the_busy_table_judges_the_first_requests_after_idle() -> None:
    def row(server: str, threads: int, first: float) -> busy.BusyRow:
        return busy.BusyRow(server, threads, 9.0, 17.0, 20.0, 200.0, 16.0, first_p99_ms=first)

    good = busy.table([row("emberd", 2, 25.0), row("llama-server", 2, 500.0)], 2, 2)
    assert "| emberd | 2 | 25.0 | 9.0 | 17.0 |" in good
    assert "emberd p99 25.0 ms, goal <= 60 ms: met" in good
    bad = busy.table([row("emberd", 2, 600.0), row("llama-server", 2, 500.0)], 2, 2)
    assert "emberd p99 600.0 ms, goal <= 60 ms: MISSED" in bad


def test_the_busy_verdicts_compare_with_llama_server_not_the_baseline() -> None:
    def row(server: str, threads: int, p99: float, conc: float) -> busy.BusyRow:
        return busy.BusyRow(server, threads, 9.0, p99, p99, conc, 16.0)

    rows = [row("emberd", 2, 20.0, 210.0), row("emberd-before", 2, 25.0, 400.0)]
    rows.append(row("llama-server -np 8 -ub 512", 2, 1000.0, 50.0))
    text = busy.table(rows, 2, 2)
    assert "llama-server at 2 threads 1000.0 ms (50.0x better)" in text
    assert "conc-32: 4.20x llama-server's best" in text


def test_paired_ratios_are_means_of_per_round_ratios_to_llama_server() -> None:
    def figures(p50: float, short: float) -> dict[str, float]:
        return {"latency-p50": p50, "batch-short": short, "batch-long": 1.0, "conc-32": 1.0}

    rows = paired._rows(
        {
            runner.EMBERD: [figures(4.0, 110.0), figures(6.0, 90.0)],
            runner.LLAMA_SERVER: [figures(3.0, 100.0), figures(5.0, 100.0)],
        }
    )
    by = {(r.contender, r.metric): r for r in rows}
    p50 = by[runner.EMBERD, "latency-p50"]
    assert (p50.median, p50.difference, p50.difference_se) == (5.0, 1.0, 0.0)
    short = by[runner.EMBERD, "batch-short"]
    assert short.ratio == pytest.approx(1.0) and short.ratio_se == pytest.approx(0.1)
    text = paired.table(rows, 2)
    assert (
        "latency-p50  ms       emberd             5.00  1.267x +- 0.067 (+1.00 +- 0.00 ms)" in text
    )
