"""The test harness: tiny GGUF stores and real servers on loopback (fixtures: conftest.py).

Every server here is uvicorn running `create_app` in a background thread on
127.0.0.1 with an ephemeral port, backed by the real llama.cpp backend and
spoken to with httpx over real HTTP. `RecordingBackend` wraps that backend to
count loads, keep the loaded models at hand (for their decode counters and
whether they were closed) and, when gated, hold a load until the test lets
it go.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from starlette.applications import Starlette

from emberd.backends.base import (
    BackendError,
    DecodeStats,
    FloatMatrix,
    LoadOptions,
    ModelFacts,
)
from emberd.backends.runner import RemoteModel, RunnerBackend
from emberd.models.store import FileVersion
from emberd.server.config import Settings
from emberd.server.http.app import create_app
from emberd.server.http.serving import GracefulServer, Listener, uvicorn_config
from tests.support.tiny_model import write_ollama_layout

# Names the stores below serve.
TINY = "tiny"  # mean pooling, dropped into the emberd store as tiny.gguf
TINY_CLS = "tiny-cls"  # CLS pooling, dropped in as tiny-cls.gguf
OLLAMA_TINY = "ollama-tiny"  # in the Ollama store, params layer {"num_ctx": 64}
OLLAMA_NUM_CTX = 64
OLLAMA_PARAMS = "ollama-params"  # in the Ollama store, with sampling options as well
OLLAMA_PARAMS_LAYER: dict[str, Any] = {
    "num_ctx": 32,
    "stop": ["</s>", "<|end|>"],
    "temperature": 0.5,
    "penalize_newline": True,
}
TINY_CONTEXT = 128  # the tiny models' trained context
TINY_DIM = 32  # the tiny models' embedding length

# How long a test waits for something that should happen at once.
DEADLINE_S = 10.0

# Fixed modification times, so /api/tags has a known newest-first order.
_MTIMES = {
    OLLAMA_PARAMS: 1_500_000_000,
    OLLAMA_TINY: 1_600_000_000,
    TINY: 1_700_000_000,
    TINY_CLS: 1_750_000_000,
}


@dataclass(frozen=True)
class ModelFiles:
    """The session's tiny GGUF files, outside any store."""

    mean: Path
    cls: Path


@dataclass(frozen=True)
class Stores:
    """An emberd store and an Ollama store, and a valid GGUF lying outside both."""

    emberd: Path
    ollama: Path
    outside: Path


def make_stores(root: Path, files: ModelFiles) -> Stores:
    """Lay out both stores under `root` with the tiny models and fixed mtimes."""
    emberd = root / "emberd"
    emberd.mkdir(parents=True)
    for name, source in ((TINY, files.mean), (TINY_CLS, files.cls)):
        target = emberd / f"{name}.gguf"
        target.write_bytes(source.read_bytes())
        os.utime(target, (_MTIMES[name], _MTIMES[name]))
    ollama = root / "ollama"
    layers: dict[str, dict[str, Any]] = {
        OLLAMA_TINY: {"num_ctx": OLLAMA_NUM_CTX},
        OLLAMA_PARAMS: OLLAMA_PARAMS_LAYER,
    }
    for name, params in layers.items():
        write_ollama_layout(ollama, files.mean, name=name, params=params)
        manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / name / "latest"
        os.utime(manifest, (_MTIMES[name], _MTIMES[name]))
    outside = root / "outside.gguf"
    outside.write_bytes(files.mean.read_bytes())
    return Stores(emberd=emberd, ollama=ollama, outside=outside)


# -- a backend that counts, remembers and gates loads -----------------------------


class TrackedModel:
    """A real llama.cpp model that remembers whether it was closed.

    Every decode waits for `gate` first, after setting `decoding`; `held`
    counts the decodes that came to the gate.
    """

    def __init__(
        self,
        inner: RemoteModel,
        path: Path,
        options: LoadOptions,
        gate: threading.Event,
        decoding: threading.Event,
    ) -> None:
        self._inner = inner
        self._gate = gate
        self._decoding = decoding
        self.path = path
        self.options = options
        self.closed = False
        self.held = 0
        self.facts: ModelFacts = inner.facts
        self.stats: DecodeStats = inner.stats  # the same counters the real model updates

    async def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return await self._inner.tokenize(texts)

    async def detokenize(self, tokens: Sequence[int]) -> str:
        return await self._inner.detokenize(tokens)

    def alive(self) -> bool:
        return self._inner.alive()

    @property
    def pid(self) -> int:
        """The runner process serving the model."""
        return self._inner.pid

    def max_batch_tokens(self) -> int:
        return self._inner.max_batch_tokens()

    def max_batch_sequences(self) -> int:
        return self._inner.max_batch_sequences()

    def parallel_decodes(self) -> int:
        return self._inner.parallel_decodes()

    def _hold(self) -> None:
        self.held += 1
        self._decoding.set()
        if not self._gate.wait(DEADLINE_S):
            raise TimeoutError("the test never released the held decode")

    async def decode(
        self, batches: Sequence[Sequence[Sequence[int]]]
    ) -> list[FloatMatrix | BackendError]:
        await asyncio.to_thread(self._hold)
        return await self._inner.decode(batches)

    async def embed_text(self, text: str, limit: int, truncate: bool) -> tuple[FloatMatrix, int]:
        await asyncio.to_thread(self._hold)
        return await self._inner.embed_text(text, limit, truncate)

    def close(self) -> None:
        self.closed = True
        self._inner.close()

    async def wait_closed(self) -> None:
        await self._inner.wait_closed()


class RecordingBackend:
    """`RunnerBackend` with every load counted and remembered.

    `gated` holds every load, and `hold_decodes` every decode, until `release()`.
    `fail_with` makes every load raise that exception instead, for tests of how
    the server answers a fault it did not foresee.
    """

    def __init__(
        self,
        *,
        gated: bool = False,
        hold_decodes: bool = False,
        fail_with: Exception | None = None,
    ) -> None:
        self._inner = RunnerBackend()
        self._fail_with = fail_with
        self._lock = threading.Lock()
        self._gate = threading.Event()
        if not gated:
            self._gate.set()
        self._decode_gate = threading.Event()
        if not hold_decodes:
            self._decode_gate.set()
        self.entered = threading.Event()  # set once a load has started
        self.decoding = threading.Event()  # set once a decode has started
        self.load_calls = 0
        self.models: list[TrackedModel] = []

    def gpu_devices(self) -> int:
        return self._inner.gpu_devices()

    def close(self) -> None:
        self._inner.close()

    def load(
        self, path: Path, options: LoadOptions, version: FileVersion | None = None
    ) -> TrackedModel:
        with self._lock:
            self.load_calls += 1
        self.entered.set()
        if not self._gate.wait(DEADLINE_S):
            raise TimeoutError("the test never released the gated load")
        if self._fail_with is not None:
            raise self._fail_with
        inner = self._inner.load(path, options, version)
        model = TrackedModel(inner, path, options, self._decode_gate, self.decoding)
        with self._lock:
            self.models.append(model)
        return model

    def release(self) -> None:
        """Let held and future loads and decodes proceed."""
        self._gate.set()
        self._decode_gate.set()


# -- live servers ------------------------------------------------------------------


@dataclass
class LiveServer:
    """A running server: its base URL, app (for its runtime) and an httpx client."""

    url: str
    app: Starlette
    client: httpx.Client
    backend: RecordingBackend | None
    server: GracefulServer | None = None

    def embed(self, body: Mapping[str, Any]) -> httpx.Response:
        """POST /api/embed."""
        return self.client.post("/api/embed", json=body)

    def post_ok(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST `body` to `path`, assert a 200, and return the JSON answer."""
        response = self.client.post(path, json=body)
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        return data

    def vectors(self, model: str, texts: str | list[str], **extra: Any) -> np.ndarray:
        """The /api/embed vectors of `texts`, asserting success."""
        response = self.embed({"model": model, "input": texts, **extra})
        assert response.status_code == 200, response.text
        return np.asarray(response.json()["embeddings"], dtype=np.float64)

    def ps(self) -> list[dict[str, Any]]:
        """GET /api/ps's models."""
        response = self.client.get("/api/ps")
        assert response.status_code == 200, response.text
        models: list[dict[str, Any]] = response.json()["models"]
        return models

    def loaded_names(self) -> list[str]:
        """The names /api/ps lists."""
        return [entry["name"] for entry in self.ps()]

    @property
    def pending(self) -> int:
        """Requests the runtime has admitted and not finished."""
        pending: int = self.app.state.engine.runtime.pending
        return pending

    @property
    def queued(self) -> int:
        """Requests waiting in a batch queue for a decode to take them up."""
        queued: int = self.app.state.engine.runtime.queued
        return queued


def wait_until(check: Callable[[], bool], deadline_s: float = DEADLINE_S) -> float:
    """Poll `check` until true; return the seconds it took, fail at the deadline."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > deadline_s:
            pytest.fail(f"condition not met within {deadline_s} s")
        time.sleep(0.01)
    return time.monotonic() - started


# Servers told to stop, joined at the end of the session: uvicorn's shutdown takes
# a fixed 0.1-0.2 s, which would otherwise add up over a few dozen servers.
_STOPPING: list[threading.Thread] = []


def _listening_socket() -> socket.socket:
    """A TCP socket listening on 127.0.0.1 at a port the kernel picks."""
    # IPPROTO_TCP spelled out: asyncio turns Nagle off only for sockets whose
    # proto says TCP, and with it on every response waits ~40 ms for an ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


@contextlib.contextmanager
def running_server(
    settings: Settings, backend: RecordingBackend | None = None
) -> Iterator[LiveServer]:
    """Serve `create_app(settings)` on 127.0.0.1:<ephemeral> until the block ends.

    Leaving the block tells the server to stop (it drains and unloads its
    models in its own thread); the session joins it at its end.
    """
    app = create_app(settings, backend=backend)
    sock = _listening_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    # The serve command's own limits and timeouts, so the tests see what users get.
    config = uvicorn_config(app, Listener("127.0.0.1", 0, "warning", grace_s=5.0))
    server = GracefulServer(config, grace_s=5.0)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="emberd-test-server", daemon=True
    )
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive())
    assert server.started, "the server did not start"
    client = httpx.Client(base_url=url, timeout=DEADLINE_S)
    try:
        yield LiveServer(url=url, app=app, client=client, backend=backend, server=server)
    finally:
        client.close()
        if backend is not None:
            backend.release()
        server.should_exit = True
        _STOPPING.append(thread)


def settings_for(
    stores: Stores, env: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Settings reading `stores`, plus extra variables and flag overrides."""
    base = {
        "HOME": str(stores.emberd.parent),
        "EMBERD_MODELS": str(stores.emberd),
        "OLLAMA_MODELS": str(stores.ollama),
        # One thread: llama.cpp's threads spin at barriers, which stalls for long
        # stretches when the test machine's few cores are busy with other work.
        "EMBERD_NUM_THREAD": "1",
    }
    return Settings.from_env({**base, **(env or {})}, **overrides)


ServerFactory = Callable[..., LiveServer]


def join_stopped_servers() -> None:
    """Wait for every server told to stop; fail if one does not."""
    for thread in _STOPPING:
        thread.join(DEADLINE_S)
    assert not any(thread.is_alive() for thread in _STOPPING), "a test server did not stop"


# -- texts the HTTP tests share

SKY = "why is the sky blue"


# -- requests from other threads


def in_background(call: Callable[[], httpx.Response]) -> Callable[[], httpx.Response]:
    """Run `call` in a thread now; the returned function joins it and gives its response."""
    box: list[httpx.Response | BaseException] = []

    def run() -> None:
        try:
            box.append(call())
        except BaseException as exc:  # handed to the test thread below
            box.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result() -> httpx.Response:
        thread.join(DEADLINE_S)
        assert not thread.is_alive(), "the request did not finish"
        outcome = box[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    return result


def post_embed(live: LiveServer, body: dict) -> Callable[[], httpx.Response]:
    # A client per thread: httpx.Client is not meant to be shared across threads.
    def call() -> httpx.Response:
        with httpx.Client(base_url=live.url, timeout=DEADLINE_S) as client:
            return client.post("/api/embed", json=body)

    return call
