"""A model file's first load and decode, tried in a short-lived child process.

llama.cpp runs inside the server, and a malformed file can reach one of its C
asserts, which ends the process with every other model in it. The header
checks (models/gguf_checks.py) refuse what is known to do that; this catches
the rest. Before a file is loaded for the first time, a child process loads
it on the CPU and embeds one short text. A child that crashes, fails or hangs
costs its requests a clear error and the server nothing.

Verdicts are kept by the file's identity (the content digest the stores
already know): a good one on disk, so a file is tried once per machine and a
cold start pays nothing; a bad one in memory only, so a failure caused by the
moment (memory, a slow disk) is tried again after a restart.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from emberd.backends.base import ModelLoadError

log = logging.getLogger("emberd.probe")

# A child gets this long, plus time to read the file, before it counts as hung.
_BASE_TIMEOUT_S = 60.0
_SECONDS_PER_GB = 30.0
# Lines of a failed child's output kept for the log.
_TAIL_LINES = 12
_IDENTITY = re.compile(r"[0-9A-Za-z._:-]{1,200}")


class LoadProbe:
    """Tries each model file's first load in a child process; remembers the verdicts."""

    def __init__(self, verdict_dir: Path | None) -> None:
        self._dir = verdict_dir
        self._lock = threading.Lock()
        self._good: set[str] = set()
        self._bad: dict[str, str] = {}

    def vet(self, path: Path, identity: str) -> None:
        """Return once `path` is known to load; raise ModelLoadError if it does not.

        Blocks while a child tries the file (the first time only): call it
        from a worker thread.
        """
        if not _IDENTITY.fullmatch(identity):
            raise ModelLoadError(f"unusable file identity {identity!r}")
        with self._lock:
            if identity in self._good:
                return
            if identity in self._bad:
                raise ModelLoadError(self._bad[identity])
        if self._recorded(identity):
            with self._lock:
                self._good.add(identity)
            return
        failure = run_probe(path)
        with self._lock:
            if failure is None:
                self._good.add(identity)
            else:
                self._bad[identity] = failure
        if failure is not None:
            raise ModelLoadError(failure)
        self._record(identity)

    def _recorded(self, identity: str) -> bool:
        return self._dir is not None and (self._dir / identity).is_file()

    def _record(self, identity: str) -> None:
        if self._dir is None:
            return
        try:
            self._dir.mkdir(parents=True, exist_ok=True)
            (self._dir / identity).touch()
        except OSError as exc:  # a read-only store: the verdict lasts this process
            log.debug("cannot record the verdict for %s: %s", identity, exc)


def run_probe(path: Path) -> str | None:
    """Load `path` and embed one text in a child process; None if it worked, else why not."""
    try:
        size_gb = path.stat().st_size / 1e9
    except OSError as exc:
        return f"cannot read the model file: {exc.strerror}"
    timeout = _BASE_TIMEOUT_S + _SECONDS_PER_GB * size_gb
    command = [sys.executable, "-m", "emberd.backends.probe_child", str(path)]
    log.info("trying the first load of %s in a child process", path)
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        log.error("first load of %s did not finish in %.0f s", path, timeout)
        return f"the first load of this model did not finish within {timeout:.0f} s"
    if done.returncode == 0:
        return None
    tail = "\n".join((done.stderr or "").strip().splitlines()[-_TAIL_LINES:])
    log.error("first load of %s failed (exit %d):\n%s", path, done.returncode, tail)
    if done.returncode < 0:
        return f"llama.cpp crashed loading this model ({_signal_name(-done.returncode)})"
    reason = (done.stdout or "").strip().splitlines()
    return reason[-1] if reason else f"loading this model failed (exit {done.returncode})"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
