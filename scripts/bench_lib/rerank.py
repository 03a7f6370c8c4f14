"""Rerank throughput: pairs per second, emberd against llama-server `--reranking`.

One query and N documents of about W words (one token each for an English
vocabulary) go to each server's `/v1/rerank`, one request after another,
after a warm-up request of 10 documents; pairs per second is documents x requests over the
time taken. Both servers read the same GGUF with the same thread count.

    python -m scripts.bench_lib.rerank --model reranker.gguf [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from scripts.bench_lib import llama_server, procs
from scripts.bench_lib.texts import WORDS

REPO = Path(__file__).resolve().parents[2]
NAME = "bench-reranker"


def documents(count: int, words: int, seed: int) -> tuple[str, list[str]]:
    """A query of 8 words and `count` documents of `words` words."""
    rng = random.Random(seed)
    query = " ".join(rng.choice(WORDS) for _ in range(8))
    return query, [" ".join(rng.choice(WORDS) for _ in range(words)) for _ in range(count)]


def post(port: int, body: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/rerank on 127.0.0.1:`port`; the JSON answer."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/rerank",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def measure(port: int, query: str, docs: list[str], requests: int) -> tuple[float, int]:
    """(pairs per second, prompt tokens of one request) over `requests` requests."""
    body = {"model": NAME, "query": query, "documents": docs, "top_n": len(docs)}
    warm = post(port, {**body, "documents": docs[:10], "top_n": 10})  # load, first graphs
    tokens = int(warm.get("usage", {}).get("prompt_tokens", 0)) * len(docs) // 10
    started = time.perf_counter()
    for _ in range(requests):
        answer = post(port, body)
        if len(answer["results"]) != len(docs):
            raise procs.BenchError(f"{len(answer['results'])} results for {len(docs)} documents")
    return len(docs) * requests / (time.perf_counter() - started), tokens


def start_emberd(model: Path, cache: Path, threads: int) -> procs.Server:
    """emberd with a store holding only `model`, as NAME."""
    store = cache / "rerank-store"
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    (store / f"{NAME}.gguf").symlink_to(model.resolve())
    empty = cache / "empty-ollama-store"
    empty.mkdir(parents=True, exist_ok=True)
    env = procs.base_env()
    env.update(EMBERD_MODELS=str(store), OLLAMA_MODELS=str(empty), EMBERD_NUM_THREAD=str(threads))
    port = procs.free_port()
    argv = [sys.executable, "-m", "emberd.server.cli", "serve", "--port", str(port)]
    server = procs.spawn("emberd", argv, port, cache / "logs" / "emberd-rerank.log", env, REPO)
    procs.wait_ready(server, "/")
    return server


def start_llama_server(
    binary: Path,
    model: Path,
    cache: Path,
    threads: int,
    config: llama_server.ServerConfig,
    extra: Sequence[str] = (),
) -> procs.Server:
    """llama-server `--reranking` on `model` with `config`'s slots and micro-batch."""
    port = procs.free_port()
    argv = llama_server.server_argv(
        binary, model, context=512, threads=threads, pooling=4, config=config, port=port,
    )  # fmt: skip
    argv += ["--reranking", "--alias", NAME, *extra]
    log = cache / "logs" / "llama-server-rerank.log"
    server = procs.spawn("llama-server", argv, port, log, procs.base_env(), REPO)
    procs.wait_ready(server, "/health", timeout_s=300)
    return server


def main() -> None:
    """Run both servers on the model and print pairs per second."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="reranker GGUF")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--documents", type=int, default=100)
    parser.add_argument("--words", type=int, default=100)
    parser.add_argument("--requests", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=REPO / ".bench")
    parser.add_argument(
        "--llama-config", action="append", default=[], metavar="NP:UB",
        help="llama-server slots and micro-batch, repeatable (default 8:512)",
    )  # fmt: skip
    parser.add_argument("--skip-emberd", action="store_true")
    args = parser.parse_args()
    configs = [
        llama_server.ServerConfig(*(int(part) for part in spec.split(":")))
        for spec in args.llama_config
    ] or [llama_server.DEFAULT_CONFIG]
    cache: Path = args.cache.resolve()
    query, docs = documents(args.documents, args.words, seed=7)
    binary = llama_server.ensure_binary(cache, llama_server.pinned_version(), args.threads, print)
    contenders: list[tuple[str, Callable[[], procs.Server]]] = [
        (
            f"llama-server {config.label}",
            partial(start_llama_server, binary, args.model, cache, args.threads, config),
        )
        for config in configs
    ]
    if not args.skip_emberd:
        contenders.insert(0, ("emberd", partial(start_emberd, args.model, cache, args.threads)))
    for name, start in contenders:
        server = start()
        watch = procs.CpuWatch.start()
        try:
            rate, tokens = measure(server.port, query, docs, args.requests)
        finally:
            server.stop()  # waited for: its CPU time counts as this process's own
        others = watch.others_share()
        per_pair = f"{tokens / len(docs):.0f} tokens per pair" if tokens else "tokens unknown"
        print(f"{name}: {rate:.1f} pairs/s ({len(docs)} documents, {per_pair}, "
              f"{args.requests} requests, {args.threads} threads; "
              f"other work used {others:.0%} of the CPUs meanwhile)")  # fmt: skip


if __name__ == "__main__":
    main()
