"""SIGTERM: requests in flight get the shutdown grace, then the process exits.

Each server here is a child process, so a server that never exits fails its
test instead of hanging the run.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest

from emberd.server.http.serving import FORCED_EXIT_MARGIN_S
from tests.support.harness import DEADLINE_S, TINY, Stores, wait_until
from tests.support.raw_http import raw_post
from tests.support.subprocess_server import REPO, ChildServer, child_server

pytestmark = pytest.mark.slow  # starts child processes

GRACE_S = 1.0
# SIGTERM is re-raised once uvicorn has shut down, so the status says how it ended.
EXIT_STATUSES = (0, -signal.SIGTERM, 128 + signal.SIGTERM)


class SilentRegistry:
    """A registry that accepts connections and never answers: a pull hangs on it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent_registry() -> Iterator[SilentRegistry]:
    registry = SilentRegistry()
    yield registry
    registry.close()


def start(stores: Stores, tmp_path: Path, *flags: str) -> AbstractContextManager[ChildServer]:
    return child_server(
        stores.emberd,
        stores.ollama,
        tmp_path / "server.log",
        "--default-model",
        TINY,
        "--shutdown-grace",
        f"{GRACE_S:g}s",
        *flags,
    )


def in_background(call: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def terminate_and_time(server: ChildServer) -> tuple[int, float]:
    started = time.monotonic()
    server.terminate()
    status = server.wait(GRACE_S + FORCED_EXIT_MARGIN_S + DEADLINE_S)
    return status, time.monotonic() - started


def test_a_stuck_request_does_not_keep_the_process(
    stores: Stores, tmp_path: Path, silent_registry: SilentRegistry
) -> None:
    with start(stores, tmp_path, "--registry", silent_registry.url) as server:
        body = {"model": "library/stuck", "stream": False}
        in_background(lambda: httpx.post(f"{server.url}/api/pull", json=body, timeout=60))
        wait_until(lambda: bool(silent_registry.accepted))  # the pull waits on the registry
        try:
            status, took = terminate_and_time(server)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not exit after SIGTERM:\n{server.log()}")
        assert status in EXIT_STATUSES, server.log()
        assert took < GRACE_S + FORCED_EXIT_MARGIN_S + 2, (took, server.log())


def test_an_abandoned_request_does_not_delay_the_exit(
    stores: Stores, tmp_path: Path, silent_registry: SilentRegistry
) -> None:
    with start(stores, tmp_path, "--registry", silent_registry.url) as server:
        body = b'{"model": "library/stuck", "stream": false}'
        with raw_post(server.url, "/api/pull", body):
            wait_until(lambda: bool(silent_registry.accepted))
        # The client has gone: its request is dropped, so nothing is left to wait for.
        status, took = terminate_and_time(server)
        assert status in EXIT_STATUSES, server.log()
        assert took < GRACE_S, (took, server.log())


def test_work_in_flight_finishes_within_the_grace(stores: Stores, tmp_path: Path) -> None:
    # 800 x 122 tokens: seconds of decoding, well inside the wait for the exit on a busy machine
    texts = ["why is the sky blue " * 24] * 800
    with start(stores, tmp_path, "--shutdown-grace", "30") as server:
        answers: list[httpx.Response] = []
        posted = in_background(
            lambda: answers.append(
                httpx.post(
                    f"{server.url}/api/embed", json={"model": TINY, "input": texts}, timeout=60
                )
            )
        )
        wait_until(lambda: _busy(server))
        assert not answers  # still in flight when the signal comes
        status, _ = terminate_and_time(server)
        posted.join(DEADLINE_S)
        assert answers and answers[0].status_code == 200, server.log()
        assert len(answers[0].json()["embeddings"]) == len(texts)
        assert status in EXIT_STATUSES, server.log()


def _busy(server: ChildServer) -> bool:
    """Whether the server has a request in its queue (its metrics say so)."""
    metrics = httpx.get(f"{server.url}/metrics", timeout=DEADLINE_S).text
    for line in metrics.splitlines():
        if line.startswith("emberd_queue_depth "):
            return float(line.split()[1]) > 0
    return False


# An app whose shutdown never ends (it holds the event loop): only the watchdog can end it.
_HUNG_SHUTDOWN = """
import sys, time
from emberd.server.http.serving import GracefulServer, Listener, uvicorn_config

async def app(scope, receive, send):
    assert scope["type"] == "lifespan"
    await receive()
    await send({"type": "lifespan.startup.complete"})
    print("ready", flush=True)
    await receive()
    time.sleep(3600)

listener = Listener("127.0.0.1", 0, "warning", grace_s=0.2)
GracefulServer(uvicorn_config(app, listener), listener.grace_s).run()
"""


def test_a_shutdown_that_hangs_is_ended_by_the_watchdog() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _HUNG_SHUTDOWN],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == b"ready"
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            status = process.wait(0.2 + FORCED_EXIT_MARGIN_S + DEADLINE_S)
            took = time.monotonic() - started
        finally:
            process.kill()
    assert status == 128 + signal.SIGTERM
    assert FORCED_EXIT_MARGIN_S <= took < 0.2 + FORCED_EXIT_MARGIN_S + 3
