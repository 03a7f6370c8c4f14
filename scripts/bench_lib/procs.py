"""Server processes: free ports, start and wait for readiness, resident memory, stop."""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil


class BenchError(RuntimeError):
    """Something the bench cannot go on without; the message says what."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident set size of process `pid` (VmRSS), in bytes."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no VmRSS for process {pid}")


@dataclass
class Server:
    """A server process listening on 127.0.0.1:`port`, its output going to `log`."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    started_at: float  # perf_counter() just before spawning

    def rss_bytes(self) -> int:
        """The resident memory of the server and its child processes (emberd's runners) now."""
        pids = [self.process.pid]
        with contextlib.suppress(psutil.Error):
            pids += [c.pid for c in psutil.Process(self.process.pid).children(recursive=True)]
        total = 0
        for pid in pids:
            with contextlib.suppress(OSError, BenchError):
                total += rss_bytes(pid)
        return total

    def stop(self) -> None:
        """Terminate the process (kill it after 10 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's output, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def spawn(
    name: str, argv: Sequence[str], port: int, log: Path, env: Mapping[str, str], cwd: Path
) -> Server:
    """Start `argv` with its output to `log`; the caller waits for it with `wait_ready`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            list(argv), stdout=out, stderr=subprocess.STDOUT, env=dict(env), cwd=cwd
        )
    return Server(name=name, process=process, port=port, log=log, started_at=started)


def wait_ready(server: Server, path: str, timeout_s: float = 60.0) -> None:
    """Poll `GET path` until it answers 200; BenchError if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchError(
                f"{server.name} exited with status {server.process.returncode}:\n"
                + server.log_tail()
            )
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.01)
    server.stop()
    raise BenchError(f"{server.name} did not answer GET {path} in {timeout_s:.0f} s")


def base_env() -> dict[str, str]:
    """The environment for child processes, without variables that would change them."""
    env = dict(os.environ)
    for key in list(env):
        if key.startswith(("EMBERD_", "OLLAMA_", "LLAMA_ARG_")):
            del env[key]
    return env


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and of the children it has waited for."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass(frozen=True)
class CpuWatch:
    """Measures how much of the machine's CPU others used while the bench ran.

    Start it, run a contender (its processes are this one's children and
    must have been waited for), then ask `others_share`.
    """

    busy: int
    total: int
    own: float

    @classmethod
    def start(cls) -> CpuWatch:
        """Begin watching now."""
        busy, total = _cpu_times()
        return cls(busy, total, _own_cpu_seconds())

    def others_share(self) -> float:
        """The share (0..1) of all cores busy with other work since `start`."""
        busy, total = _cpu_times()
        tick = os.sysconf("SC_CLK_TCK")
        others = (busy - self.busy) / tick - (_own_cpu_seconds() - self.own)
        return max(0.0, others / max(1e-9, (total - self.total) / tick))
