"""An emberd server in a child process, for behaviour that could end a process.

A test whose failure would be a crash (a C assert inside llama.cpp, a
SIGBUS) talks to a server of its own in a child process, so the suite
survives to report it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
START_DEADLINE_S = 30.0


@dataclass
class ChildServer:
    """A running `emberd serve` child: its URL, process and an httpx client."""

    url: str
    process: subprocess.Popen[bytes]
    client: httpx.Client
    log: Path

    def alive(self) -> bool:
        """Whether the child is still running."""
        return self.process.poll() is None

    def log_text(self) -> str:
        """What the child has logged so far."""
        return self.log.read_text(errors="replace")


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def child_server(
    home: Path, env: Mapping[str, str] | None = None, args: tuple[str, ...] = ()
) -> Iterator[ChildServer]:
    """Run `emberd serve` on loopback with HOME (and default stores) under `home`."""
    port = free_port()
    full_env = {
        **os.environ,
        "HOME": str(home),
        "EMBERD_MODELS": str(home / "emberd"),
        "OLLAMA_MODELS": str(home / "ollama"),
        "EMBERD_NUM_THREAD": "1",
        "EMBERD_DEFAULT_MODEL": "none-here",
        "PYTHONPATH": str(ROOT),
        **(env or {}),
    }
    log = home / f"server-{port}.log"
    command = [sys.executable, "-m", "server.cli", "serve", "--host", "127.0.0.1",
               "--port", str(port), *args]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=30.0)
    try:
        _wait_ready(client, process, log)
        yield ChildServer(url, process, client, log)
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
        process.wait(10)


def _wait_ready(client: httpx.Client, process: subprocess.Popen[bytes], log: Path) -> None:
    started = time.monotonic()
    while time.monotonic() - started < START_DEADLINE_S:
        if process.poll() is not None:
            raise AssertionError(f"the server exited at start:\n{log.read_text()}")
        with contextlib.suppress(httpx.HTTPError):
            if client.get("/").status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"the server did not start:\n{log.read_text()}")
