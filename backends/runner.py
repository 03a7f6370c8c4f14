"""Models in runner processes: the server's side of backends/runner_process.py.

`RunnerBackend` is the Backend the server uses. Each model it loads lives in
a runner process of its own, which alone maps llama.cpp: whatever a model
file or an input makes llama.cpp do (an assert, an uncaught exception, a
crash) ends that process and fails only the requests it was serving, as
`ModelCrashed`. Unloading a model ends its process, which hands all of its
memory back to the system, a GPU context included.

One runner is kept started ahead of need, with llama.cpp initialised, so a
cold load pays only for reading the model; after each load the next one
starts once requests pause for a moment, so that starting it takes no core
from the work the new model was loaded for.

Each runner has two channels, both driven by the event loop once the model
is loaded: decodes go over one (the model's batcher keeps one in flight),
tokenizing over the other, so a new request is tokenized while a decode is
under way. No thread stands between a request and its runner: a decode's
answer wakes the waiting request directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from emberd.backends import handover, ipc
from emberd.backends.base import (
    BackendError,
    DecodeStats,
    FloatMatrix,
    LoadOptions,
    ModelCrashed,
    ModelFacts,
    ModelLoadError,
    Pooling,
)
from emberd.backends.devices import Compute, describe_compute
from emberd.backends.gathering import TokenizeGathering
from emberd.models.store import FileVersion

log = logging.getLogger("emberd.runner")

# A runner that does not say hello in this long is broken (importing
# llama.cpp takes well under a second).
_HELLO_TIMEOUT_S = 60.0
# After its channel closes, a runner's exit status is waited for this long.
_EXIT_WAIT_S = 2.0
# A tokenize request unanswered this long means a stuck runner.
_TOKENIZE_TIMEOUT_S = 60.0
# A decode unfinished this long means a runner stuck inside llama.cpp (a hung
# GPU kernel, a livelock): far beyond the longest decode of the largest batch
# on a slow CPU.
DECODE_TIMEOUT_S = 300.0
# A runner told to stop gets this long before it is killed.
_STOP_WAIT_S = 1.0
# After a load, the next spare runner starts once no model has had a request
# for this long: starting one (a Python, llama.cpp's libraries) takes a core
# for about half a second, which requests need more. Under load without a
# pause it starts this long after the load all the same.
SPARE_DELAY_S = 2.0
SPARE_LATEST_S = 60.0
# ggml answers an abort by attaching a debugger for a backtrace, which takes
# seconds and fills the log; the exit status says enough.
_NO_BACKTRACE = {"GGML_NO_BACKTRACE": "1"}


class RunnerProcess:
    """One runner process and the server's ends of its two channels."""

    def __init__(self, log_level: str) -> None:
        decode, decode_child = socket.socketpair()
        tokenize, tokenize_child = socket.socketpair()
        command = [
            sys.executable,
            "-m",
            "emberd.backends.runner_process",
            "--log-level",
            log_level,
        ]
        try:
            self.process = handover.start(
                command, (decode_child, tokenize_child), {**os.environ, **_NO_BACKTRACE}
            )
        except OSError:
            decode.close()
            tokenize.close()
            raise
        self.decode = decode
        self.tokenize = tokenize
        self._hello: ipc.Header | None = None

    @property
    def pid(self) -> int:
        """The runner's process id."""
        return self.process.pid

    def hello(self) -> ipc.Header:
        """What the runner said when it started (its GPU count); waits for it once."""
        if self._hello is None:
            self.decode.settimeout(_HELLO_TIMEOUT_S)
            try:
                header, _ = ipc.recv(self.decode)
            finally:
                self.decode.settimeout(None)
            if header.get("op") != "hello":
                raise ipc.ChannelClosed("no hello")
            self._hello = header
        return self._hello

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def exit_reason(self) -> str:
        """How the process ended, in words (waits briefly for it; kills one that hangs on)."""
        try:
            code = self.process.wait(timeout=_EXIT_WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return "it broke off its channel and was ended"
        return describe_exit(code)

    def stop(self) -> None:
        """End the process: ask it to stop, then kill it if it does not."""
        try:
            ipc.send(self.decode, {"op": "stop"})
            self.process.wait(timeout=_STOP_WAIT_S)
        except (ipc.ChannelClosed, subprocess.TimeoutExpired):
            pass
        self.kill()

    def kill(self) -> None:
        """Kill the process (if still running), reap it and close the channels."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.decode.close()
        self.tokenize.close()


def describe_exit(code: int) -> str:
    """An exit status in words: "exited with status 1", "killed by SIGKILL"."""
    if code >= 0:
        return f"exited with status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return "aborted (SIGABRT)" if name == "SIGABRT" else f"killed by {name}"


class RunnerBackend:
    """Loads each model into a runner process of its own; keeps one runner spare."""

    def __init__(
        self,
        *,
        log_level: str = "warning",
        decode_timeout_s: float = DECODE_TIMEOUT_S,
        spare_delay_s: float = SPARE_DELAY_S,
    ) -> None:
        self._decode_timeout_s = decode_timeout_s
        self._spare_delay_s = spare_delay_s
        self._last_request = 0.0  # time.monotonic() of the latest request to any runner
        self._log_level = log_level
        self._lock = threading.Lock()
        self._closed = False
        self._spare: RunnerProcess | None = None  # started by gpu_devices() or after a load
        self._refill_timer: threading.Timer | None = None
        self._refill_deadline = 0.0
        self._described = False

    @property
    def has_spare(self) -> bool:
        """Whether a spare runner is started (it may still be initialising)."""
        with self._lock:
            return self._spare is not None

    def gpu_devices(self) -> int:
        """How many GPUs a `main_gpu` may choose among, as the runners' llama.cpp reports.

        The first answer also logs what computes ("compute: CUDA0 NVIDIA H200, 141 GB").
        """
        process = self._take()
        try:
            hello = process.hello()
        finally:
            self._give_back(process)
        if not self._described:
            self._described = True
            with contextlib.suppress(KeyError, TypeError, ValueError):
                log.info("%s", describe_compute(Compute.from_dict(hello["compute"])))
        return int(hello.get("devices", 0))

    def load(self, path: Path, options: LoadOptions, version: FileVersion | None) -> RemoteModel:
        """Load `path` in a runner; ModelLoadError if it refuses, ModelCrashed if it dies."""
        process = self._ready_runner()
        try:
            ipc.send(
                process.decode,
                {
                    "op": "load",
                    "path": str(path),
                    "options": _options_header(options),
                    "version": list(version) if version is not None else None,
                },
            )
            reply, _ = ipc.recv(process.decode)
        except ipc.ChannelClosed:
            raise ModelCrashed(process.exit_reason()) from None
        finally:
            self._refill()  # the next spare, for the next model
        if "error" in reply:
            process.stop()
            raise ModelLoadError(str(reply["error"]))
        try:
            return RemoteModel(process, reply, self._decode_timeout_s, self._note_request)
        except (KeyError, TypeError, ValueError) as exc:
            process.kill()
            raise ModelCrashed(f"it described the model wrongly ({exc})") from None

    def close(self) -> None:
        """End the spare runner; loaded models end with their own close()."""
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, None
            if self._refill_timer is not None:
                self._refill_timer.cancel()
        if spare is not None:
            spare.kill()

    def _ready_runner(self) -> RunnerProcess:
        """A runner that has said hello: the spare, or a new one if the spare has died."""
        process = self._take()
        try:
            process.hello()
        except ipc.ChannelClosed:
            log.warning("a spare runner ended (%s); starting another", process.exit_reason())
            process.kill()
            process = RunnerProcess(self._log_level)
            try:
                process.hello()
            except ipc.ChannelClosed:
                raise ModelCrashed(process.exit_reason()) from None
        return process

    def _take(self) -> RunnerProcess:
        with self._lock:
            if self._closed:
                raise BackendError("the backend is closed")
            process, self._spare = self._spare, None
        if process is None or not process.alive():
            if process is not None:
                process.kill()
            process = RunnerProcess(self._log_level)
        return process

    def _give_back(self, process: RunnerProcess) -> None:
        with self._lock:
            if self._spare is None and not self._closed:
                self._spare, process = process, None  # type: ignore[assignment]
        if process is not None:
            process.kill()

    def _note_request(self) -> None:
        self._last_request = time.monotonic()

    def _refill(self) -> None:
        """Start the next spare runner once requests pause, unless one is there or coming."""
        with self._lock:
            if self._spare is not None or self._closed or self._refill_timer is not None:
                return
            self._refill_deadline = time.monotonic() + SPARE_LATEST_S
            self._arm_refill(self._spare_delay_s)

    def _arm_refill(self, delay: float) -> None:
        timer = self._refill_timer = threading.Timer(delay, self._start_spare)
        timer.daemon = True
        timer.start()

    def _start_spare(self) -> None:
        with self._lock:
            self._refill_timer = None
            if self._spare is not None or self._closed:
                return
            now = time.monotonic()
            quiet_at = self._last_request + self._spare_delay_s
            if now < quiet_at and now < self._refill_deadline:  # requests are still coming
                self._arm_refill(min(quiet_at, self._refill_deadline) - now)
                return
            self._spare = RunnerProcess(self._log_level)


def _options_header(options: LoadOptions) -> dict[str, Any]:
    return {
        "num_ctx": options.num_ctx,
        "num_batch": options.num_batch,
        "num_gpu": options.num_gpu,
        "main_gpu": options.main_gpu,
        "use_mmap": options.use_mmap,
        "use_mlock": options.use_mlock,
        "num_thread": options.num_thread,
    }


def _facts(raw: dict[str, Any]) -> ModelFacts:
    template = raw.get("rerank_template")
    return ModelFacts(
        n_embd=int(raw["n_embd"]),
        n_ctx_train=int(raw["n_ctx_train"]),
        n_vocab=int(raw["n_vocab"]),
        pooling=Pooling(int(raw["pooling"])),
        prefix=tuple(int(t) for t in raw["prefix"]),
        suffix=tuple(int(t) for t in raw["suffix"]),
        gpu_layers=int(raw["gpu_layers"]),
        n_layers=int(raw["n_layers"]),
        n_cls_out=int(raw["n_cls_out"]),
        pair_separator=tuple(int(t) for t in raw["pair_separator"]),
        rerank_template=None if template is None else str(template),
        decode_budget=None if raw.get("decode_budget") is None else int(raw["decode_budget"]),
    )


class RemoteModel:
    """A model loaded in a runner process, used as if it were here."""

    def __init__(
        self,
        process: RunnerProcess,
        reply: ipc.Header,
        decode_timeout_s: float = DECODE_TIMEOUT_S,
        on_request: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_request` is told of every request sent to the runner."""
        self.facts = _facts(reply["facts"])
        limits = reply["limits"]
        self._max_tokens = int(limits["max_batch_tokens"])
        self._max_sequences = int(limits["max_batch_sequences"])
        self._lanes = int(limits["parallel_decodes"])
        self.stats = DecodeStats()
        self._process = process
        self._closed = False
        self._tokenizer = _Channel(
            process,
            process.tokenize,
            _TOKENIZE_TIMEOUT_S,
            "it stopped answering and was ended",
            on_request,
        )
        self._gathering = TokenizeGathering(self._tokenize_all)
        self._decoder = _Channel(
            process,
            process.decode,
            decode_timeout_s,
            f"it did not finish a decode within {decode_timeout_s:.0f} s",
            on_request,
        )

    @property
    def pid(self) -> int:
        """The runner's process id."""
        return self._process.pid

    def alive(self) -> bool:
        """Whether the runner is still running (and not closed)."""
        return not self._closed and self._process.alive()

    async def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, tokenized in the runner (with the other requests of
        this loop turn, in one exchange)."""
        return await self._gathering.tokenize(texts)

    async def _tokenize_all(self, texts: list[str]) -> list[list[int] | BackendError]:
        """Token ids, or that text's error, for each of `texts`: one exchange."""
        header, payload = await self._tokenizer.call({"op": "tokenize", "texts": texts})
        lists = ipc.unpack_sequences(header.get("lengths") or [], payload)
        failed = header.get("failed") or []
        if len(lists) != len(texts) or not isinstance(failed, list):
            raise ModelCrashed("it answered a tokenize request wrongly")
        results: list[list[int] | BackendError] = list(lists)
        try:
            for index, error in failed:
                results[int(index)] = ipc.unpack_error(error)
        except (TypeError, ValueError, IndexError):
            raise ModelCrashed("it answered a tokenize request wrongly") from None
        return results

    async def detokenize(self, tokens: Sequence[int]) -> str:
        """The text of `tokens`, written out in the runner."""
        lengths, payload = ipc.pack_sequences([tokens])
        header, _ = await self._tokenizer.call({"op": "detokenize", "lengths": lengths}, payload)
        return str(header.get("text", ""))

    def max_batch_tokens(self) -> int:
        """Most tokens one decode takes."""
        return self._max_tokens

    def max_batch_sequences(self) -> int:
        """Most sequences one decode takes."""
        return self._max_sequences

    def parallel_decodes(self) -> int:
        """How many decodes the runner runs side by side."""
        return self._lanes

    async def decode(
        self, batches: Sequence[Sequence[Sequence[int]]]
    ) -> list[FloatMatrix | BackendError]:
        """One decode per batch, side by side in the runner."""
        if self._closed:
            raise BackendError("the model has been unloaded")
        lengths, payload = ipc.pack_sequences([s for batch in batches for s in batch])
        request = {"op": "embed", "lengths": lengths, "batches": [len(b) for b in batches]}
        header, data = await self._decoder.call(request, payload)
        results = self._split([len(b) for b in batches], header.get("results"), data)
        self.stats.count(batches)
        return results

    async def embed_text(self, text: str, limit: int, truncate: bool) -> tuple[FloatMatrix, int]:
        """A lone text tokenized, fitted and decoded in one exchange with the runner."""
        if self._closed:
            raise BackendError("the model has been unloaded")
        request = {"op": "embed_text", "text": text, "limit": limit, "truncate": truncate}
        header, data = await self._decoder.call(request)
        (result,) = self._split([1], header.get("results"), data)
        if isinstance(result, BackendError):
            raise result
        tokens = header.get("tokens")
        if not isinstance(tokens, int) or tokens < 1:
            raise ModelCrashed("it answered a decode wrongly (no token count)")
        self.stats.add(1, tokens)
        return result, tokens

    def _split(
        self, rows: Sequence[int], shapes: Any, data: bytes
    ) -> list[FloatMatrix | BackendError]:
        """Each batch's matrix (or error) out of one reply, its shape checked against the
        batch's `rows` and the model's width."""
        if not isinstance(shapes, list) or len(shapes) != len(rows):
            raise ModelCrashed("it answered a decode wrongly")
        width = self.facts.width
        results: list[FloatMatrix | BackendError] = []
        offset = 0
        try:
            for wanted, shape in zip(rows, shapes, strict=True):
                if isinstance(shape, dict):
                    results.append(ipc.unpack_error(shape))
                    continue
                got, cols = int(shape[0]), int(shape[1])
                if got != wanted or cols != width:
                    raise ValueError(f"{got}x{cols} for {wanted} sequences")
                size = got * cols * 4
                results.append(ipc.unpack_matrix(got, cols, data[offset : offset + size]))
                offset += size
        except (TypeError, ValueError, IndexError, ipc.ChannelClosed) as exc:
            raise ModelCrashed(f"it answered a decode wrongly ({exc})") from None
        return results

    def close(self) -> None:
        """End the runner, and with it all the model's memory (blocks: call it from a thread).

        The caller has let every decode finish first.
        """
        if self._closed:
            return
        self._closed = True
        self._tokenizer.closing = self._decoder.closing = True
        self._process.stop()

    async def wait_closed(self) -> None:
        """Wait until both channels have seen the runner go and closed their streams."""
        await self._tokenizer.finished()
        await self._decoder.finished()


class _Channel(asyncio.Protocol):
    """Requests on one of a runner's channels, answered by id, driven by the event loop.

    The loop that first uses it drives it: answers are handed to their
    callers as they arrive, and every caller fails with ModelCrashed when the
    runner goes. A request unanswered for `timeout_s` means a runner stuck
    inside llama.cpp: it is killed, and the waiting callers told `stuck`.
    One timer watches the oldest request (the runner answers in order), so
    a request costs no timer of its own.
    """

    def __init__(
        self,
        process: RunnerProcess,
        sock: socket.socket,
        timeout_s: float,
        stuck: str,
        on_request: Callable[[], None],
    ) -> None:
        self._process = process
        self._on_request = on_request
        self._sock = sock
        self._timeout_s = timeout_s
        self._stuck = stuck
        self._ids = itertools.count()
        # Request id -> (its caller's future, when it was sent), oldest first.
        self._pending: dict[int, tuple[asyncio.Future[tuple[ipc.Header, bytes]], float]] = {}
        self._watchdog: asyncio.TimerHandle | None = None
        self._parser = ipc.FrameParser()
        self._transport: asyncio.Transport | None = None
        self._opening: asyncio.Task[None] | None = None
        self._lost: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self.closing = False

    async def call(self, header: ipc.Header, payload: bytes = b"") -> tuple[ipc.Header, bytes]:
        """Send one request and wait for its answer; its error is raised as the backend's."""
        if self._transport is None:
            if self._opening is None:
                self._opening = asyncio.get_running_loop().create_task(self._open())
            await asyncio.shield(self._opening)
        if self._failure is not None:
            raise self._failure
        assert self._transport is not None
        loop = asyncio.get_running_loop()
        self._on_request()
        request_id = next(self._ids)
        future = loop.create_future()
        self._pending[request_id] = (future, loop.time())
        if self._watchdog is None:
            self._watchdog = loop.call_later(self._timeout_s, self._watch)
        try:
            # A closing transport means a runner that has gone: the request then
            # waits for `_fail`, which tells why, like the requests already sent.
            if not self._transport.is_closing():
                self._transport.write(b"".join(ipc.encode({**header, "id": request_id}, payload)))
            reply, data = await future
        finally:
            self._pending.pop(request_id, None)
        if "error" in reply:
            raise ipc.unpack_error(reply["error"])
        return reply, data

    def _watch(self) -> None:
        """Fail the requests waiting longer than the timeout, and end the runner; or look
        again when the oldest one would be due."""
        self._watchdog = None
        if not self._pending:
            return
        loop = asyncio.get_running_loop()
        _, sent = next(iter(self._pending.values()))
        due = sent + self._timeout_s - loop.time()
        if due > 0:
            self._watchdog = loop.call_later(due, self._watch)
            return
        # Its callers learn once it is gone, and learn why (not just "killed").
        failure = self._failure = ModelCrashed(self._stuck)
        ending = loop.run_in_executor(None, self._process.kill)
        ending.add_done_callback(lambda _: self._fail(failure))

    async def finished(self) -> None:
        """Wait until the channel has closed (it closes when the runner's end does)."""
        if self._opening is not None:
            await asyncio.shield(self._opening)
        if self._lost is not None:
            await asyncio.wait_for(self._lost.wait(), _EXIT_WAIT_S)

    async def _open(self) -> None:
        # The transport owns a copy of the socket: the process's own copy may be
        # closed from another thread while the transport still uses this one.
        loop = asyncio.get_running_loop()
        self._lost = asyncio.Event()
        transport, _ = await loop.connect_accepted_socket(lambda: self, self._sock.dup())
        # uvloop may call connection_made only after this returns.
        self._transport = cast(asyncio.Transport, transport)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            frames = self._parser.feed(data)
        except ipc.ChannelClosed:
            assert self._transport is not None
            self._transport.close()  # connection_lost fails the callers
            return
        for header, payload in frames:
            waiting = self._pending.get(header.get("id", -1))
            if waiting is not None and not waiting[0].done():
                waiting[0].set_result((header, payload))

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost is not None:
            self._lost.set()
        if self.closing:
            self._fail(ModelCrashed("it was stopped"))
            return
        # How the process ended takes a moment to learn: off the loop.
        waiting = asyncio.get_running_loop().run_in_executor(None, self._process.exit_reason)
        waiting.add_done_callback(lambda done: self._fail(ModelCrashed(done.result())))

    def _fail(self, failure: BaseException) -> None:
        """Fail every waiting caller, with the first reason the channel learnt."""
        if self._failure is None:
            self._failure = failure
        for future, _ in self._pending.values():
            if not future.done():
                future.set_exception(self._failure)
