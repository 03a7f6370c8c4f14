"""`emberd serve` as a child process, for behaviour that a test server in a thread
cannot show: signals, exit, and failures that would take the test run with them
(a C assert inside llama.cpp, a SIGBUS), so that a regression shows as a dead
server instead of a dead test run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
STARTUP_S = 60.0


@dataclass
class ChildServer:
    """A running `emberd serve` child: its URL, process, a client, and its log file."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    client: httpx.Client

    def log(self) -> str:
        """What the server has logged so far."""
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def terminate(self) -> None:
        """Send SIGTERM, as a service manager does."""
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """The exit status, waiting at most `timeout` seconds."""
        return self.process.wait(timeout)


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def child_server(
    models: Path,
    ollama_models: Path,
    log_path: Path,
    *flags: str,
    env: Mapping[str, str] | None = None,
) -> Iterator[ChildServer]:
    """Start `python -m server.cli serve` on a free loopback port; kill it when done.

    No default model is prepared unless `--default-model` is among `flags`.
    """
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "emberd.server.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--models",
        str(models),
        "--ollama-models",
        str(ollama_models),
        "--num-thread",
        "1",
        *flags,
    ]
    child_env = {
        **os.environ,
        "HOME": str(models.parent),
        "EMBERD_DEFAULT_MODEL": "no-default-model",
        **(env or {}),
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO, env=child_env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
    url = f"http://127.0.0.1:{port}"
    server = ChildServer(url, process, log_path, httpx.Client(base_url=url, timeout=30.0))
    try:
        _wait_until_up(server)
        yield server
    finally:
        server.client.close()
        if process.poll() is None:
            process.kill()
        process.wait(10)


def _wait_until_up(server: ChildServer) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited at start:\n{server.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the server did not start within {STARTUP_S} s:\n{server.log()}")


def child_server_in(home: Path, *flags: str) -> contextlib.AbstractContextManager[ChildServer]:
    """`child_server` with both stores and the log under `home`."""
    return child_server(home / "emberd", home / "ollama", home / "server.log", *flags)
