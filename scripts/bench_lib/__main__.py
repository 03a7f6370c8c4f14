"""`scripts/bench`: emberd against llama-server, Llama.embed and sentence-transformers.

One run, contenders one after another on the same model file and thread
count; prints a table of figures with their ratios to llama-server and the
targets of the throughput issue, and writes the same as JSON. `--paired`
instead measures emberd and llama-server side by side in alternating rounds
(scripts/bench_lib/paired.py), for comparisons a drifting machine would skew.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from scripts.bench_lib import gpu, llama_server, paired, procs, report, runner
from scripts.bench_lib.busy import BusySizes
from scripts.bench_lib.busy import table as busy_table
from scripts.bench_lib.model import DEFAULT_MODEL, prepare_model
from scripts.bench_lib.procs import BenchError
from scripts.bench_lib.workloads import Sizes

REPO = Path(__file__).resolve().parents[2]
QUICK_LEAK_REQUESTS = 2000
BUSY_SHARE = 0.05  # other work using more of the CPU than this makes the figures noisy


def build_parser() -> argparse.ArgumentParser:
    """The bench's command line."""
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    add = parser.add_argument
    add("--model", default=DEFAULT_MODEL, help="model name or GGUF path (default all-minilm)")
    add("--threads", type=int, default=os.cpu_count() or 1, help="threads for every contender")
    add("--quick", action="store_true", help="smaller workloads for a fast check")
    add("--only", help=f"comma-separated contenders among {','.join(runner.CONTENDERS)}")
    add("--skip-sweep", action="store_true", help="run llama-server on one default setting")
    add("--leak-requests", type=int, help="requests of the leak check (0 skips it)")
    add("--json", type=Path, help="also write the JSON report here")
    add("--st-python", help="an interpreter with sentence-transformers (and torch)")
    add("--st-model", type=Path, help="sentence-transformers checkpoint of --model")
    add("--cache", type=Path, default=REPO / ".bench", help="build, store and results directory")
    add(
        "--busy",
        action="store_true",
        help="after the quiet workloads, measure emberd and llama-server under CPU hogs",
    )
    add("--busy-only", action="store_true", help="only the busy workload")
    add(
        "--baseline",
        type=Path,
        help="the Python of another emberd install (a venv of an older checkout): measured "
        "as emberd-before, right after emberd, quiet and busy",
    )
    add(
        "--paired",
        type=int,
        metavar="ROUNDS",
        help="only emberd (and --baseline) and llama-server, all up at once, measured in "
        "ROUNDS alternating rounds: paired ratios that a drifting machine does not skew",
    )
    add(
        "--gpu",
        action="store_true",
        help="only emberd and llama-server on the GPU (says so and exits 0 without one)",
    )
    add("--rerank-model", type=Path, help="a reranker GGUF for --gpu's rerank figures")
    add(
        "--hogs",
        type=int,
        default=os.cpu_count() or 1,
        help="CPU hogs of the busy workload (default: one per core)",
    )
    return parser


def _contenders(only: str | None) -> tuple[str, ...]:
    if not only:
        return runner.CONTENDERS
    chosen = tuple(c.strip() for c in only.split(",") if c.strip())
    unknown = [c for c in chosen if c not in runner.CONTENDERS]
    if unknown:
        raise BenchError(f"unknown contender {unknown[0]!r}; choose among {runner.CONTENDERS}")
    return chosen


def _with_baseline(contenders: Sequence[str]) -> list[str]:
    """The contenders as the table shows them: emberd-before right after emberd."""
    shown = []
    for contender in contenders:
        shown.append(contender)
        if contender == runner.EMBERD:
            shown.append(runner.EMBERD_BEFORE)
    return shown


def _st_python(given: str | None) -> str | None:
    """The interpreter for sentence-transformers: the one given, else this one if it has it."""
    if given:
        check = [given, "-c", "import sentence_transformers"]
        if subprocess.run(check, capture_output=True).returncode != 0:
            raise BenchError(f"{given} cannot import sentence_transformers")
        return given
    return sys.executable if importlib.util.find_spec("sentence_transformers") else None


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _machine() -> dict[str, object]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def run(args: argparse.Namespace) -> int:
    """Run the bench as `args` say; the exit status."""
    if args.gpu:
        return _run_gpu(args)
    contenders = _contenders(args.only)
    sizes = Sizes().quick() if args.quick else Sizes()
    leak = args.leak_requests
    if leak is None:
        leak = QUICK_LEAK_REQUESTS if args.quick else sizes.leak_requests
    sizes = dataclasses.replace(sizes, leak_requests=leak)
    cache: Path = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    model = prepare_model(args.model, cache, args.st_model, _say)
    opts = runner.Options(
        model=model,
        threads=args.threads,
        sizes=sizes,
        sweep=not args.skip_sweep,
        cache=cache,
        repo=REPO,
        baseline=args.baseline,
    )
    outcome = runner.Outcome()
    version = llama_server.pinned_version()
    if args.paired:
        binary = llama_server.ensure_binary(cache, version, os.cpu_count() or 1, _say)
        print(_summary(opts, outcome, version))
        print(paired.table(paired.run(opts, binary, args.paired, _say), args.paired))
        return 0
    if args.busy_only:
        _run_busy(args, opts, contenders, version)
        return 0
    busy = _run_contenders(args, opts, contenders, version, outcome)
    targets = report.evaluate(outcome.measurements, model.name)
    print(_summary(opts, outcome, version))
    print(report.table(outcome.measurements, _with_baseline(contenders)))
    print()
    print(report.targets_text(targets))
    for note in outcome.notes:
        print(f"note: {note}")
    doc = report.document(
        outcome.measurements,
        targets,
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        machine=_machine(),
        threads=args.threads,
        quick=args.quick,
        model=_model_json(model),
        sizes=dataclasses.asdict(sizes),
        tokens_per_text=outcome.tokens_per_text,
        llama_cpp_python=version,
        llama_server_sweep=[_sweep_json(p) for p in outcome.sweep],
        notes=outcome.notes,
        cpu_used_by_others=busy,
    )
    text = json.dumps(doc, indent=2)
    paths = [cache / f"results-{time.strftime('%Y%m%d-%H%M%S')}.json"]
    paths += [args.json] if args.json else []
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    _say(f"JSON written to {', '.join(str(p) for p in paths)}")
    if args.busy:
        _run_busy(args, opts, contenders, version)
    return 0


def _run_gpu(args: argparse.Namespace) -> int:
    """The GPU comparison, or a line saying there is no GPU to compare on."""
    found = gpu.check()
    if not found.found:
        print(f"bench --gpu: no GPU here ({found.line}); nothing measured")
        return 0
    cache: Path = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    model = prepare_model(args.model, cache, args.st_model, _say)
    sizes = Sizes().quick() if args.quick else Sizes()
    opts = runner.Options(
        model=model,
        threads=args.threads,
        sizes=dataclasses.replace(sizes, leak_requests=0),
        sweep=False,
        cache=cache,
        repo=REPO,
    )
    print(gpu.run(opts, found, args.rerank_model, _say))
    return 0


def _run_busy(
    args: argparse.Namespace, opts: runner.Options, contenders: Sequence[str], version: str
) -> None:
    """The busy workload and its table."""
    binary = None
    if runner.LLAMA_SERVER in contenders:
        binary = llama_server.ensure_binary(opts.cache, version, os.cpu_count() or 1, _say)
    sizes = BusySizes().quick() if args.quick else BusySizes()
    rows = runner.run_busy(opts, binary, args.hogs, sizes, _say)
    print()
    print(busy_table(rows, args.hogs, os.cpu_count() or 1))


def _run_contenders(
    args: argparse.Namespace,
    opts: runner.Options,
    contenders: Sequence[str],
    version: str,
    outcome: runner.Outcome,
) -> dict[str, float]:
    """Each contender in turn; the share of the CPU other work used during each."""
    binary = None
    if runner.LLAMA_SERVER in contenders:
        binary = llama_server.ensure_binary(opts.cache, version, os.cpu_count() or 1, _say)
    busy: dict[str, float] = {}
    for contender in contenders:
        watch = procs.CpuWatch.start()
        if contender == runner.EMBERD:
            runner.run_emberd(opts, outcome, _say)
            if opts.baseline is not None:
                runner.run_emberd(opts, outcome, _say, runner.EMBERD_BEFORE, opts.baseline)
        elif contender == runner.LLAMA_SERVER and binary is not None:
            runner.run_llama_server(opts, binary, outcome, _say)
        elif contender == runner.LLAMA_CPP:
            gguf = opts.model.gguf
            runner.run_worker(opts, runner.LLAMA_CPP, sys.executable, gguf, outcome, _say)
        elif contender == runner.SENTENCE_TRANSFORMERS:
            _run_st(args, opts, outcome)
        busy[contender] = watch.others_share()
        if busy[contender] > BUSY_SHARE:
            _say(
                f"warning: other work kept {busy[contender]:.0%} of the CPU busy during {contender}"
            )
    noisy = ", ".join(f"{c} {v:.0%}" for c, v in busy.items() if v > BUSY_SHARE)
    if noisy:
        outcome.notes.append(f"CPU used by other work during: {noisy} (noisy figures)")
    return busy


def _run_st(args: argparse.Namespace, opts: runner.Options, outcome: runner.Outcome) -> None:
    python = _st_python(args.st_python)
    if python is None:
        outcome.notes.append("sentence-transformers: skipped (not importable; see --st-python)")
    elif opts.model.checkpoint is None:
        outcome.notes.append("sentence-transformers: skipped (no checkpoint; see --st-model)")
    else:
        engine = runner.SENTENCE_TRANSFORMERS
        runner.run_worker(opts, engine, python, opts.model.checkpoint, outcome, _say)


def _summary(opts: runner.Options, outcome: runner.Outcome, version: str) -> str:
    m = opts.model
    tokens = ", ".join(f"{k} {v:.1f}" for k, v in outcome.tokens_per_text.items())
    lines = [
        f"model {m.name} ({m.file_type}, context {m.context}) {m.gguf}",
        f"threads {opts.threads}; llama.cpp from llama-cpp-python {version}"
        + (f"; tokens per text: {tokens}" if tokens else ""),
    ]
    points = [p for p in outcome.sweep if p.value is not None]
    if points:
        lines.append("llama-server sweep (texts/s, one run each):")
        for metric in runner.THROUGHPUT:
            cells = [f"{p.config.label}: {p.value:.0f}" for p in points if p.metric == metric]
            lines.append(f"  {metric}: " + "; ".join(cells))
    return "\n".join(lines) + "\n"


def _model_json(model: object) -> dict[str, object]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(model).items()}  # type: ignore[call-overload]


def _sweep_json(point: runner.SweepPoint) -> dict[str, object]:
    return {
        "np": point.config.parallel,
        "ub": point.config.ubatch,
        "metric": point.metric,
        "texts_per_s": point.value,
        "error": point.error,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run, report errors in one line."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
