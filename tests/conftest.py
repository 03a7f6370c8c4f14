"""Fixtures for the HTTP tests: tiny GGUF stores and real servers on loopback.

Every server here is uvicorn running `create_app` in a background thread on
127.0.0.1 with an ephemeral port, backed by the real llama.cpp backend and
spoken to with httpx over real HTTP. `RecordingBackend` wraps that backend to
count loads, keep the loaded models at hand (for their decode counters and
whether they were closed) and, when gated, hold a load until the test lets
it go.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette

from backends.base import DecodeStats, FloatMatrix, LoadOptions, ModelFacts
from backends.llama_cpp import LlamaCppBackend
from server.app import create_app
from server.config import Settings
from tests.tiny_model import write_ollama_layout, write_tiny_bert

# Names the stores below serve.
TINY = "tiny"  # mean pooling, dropped into the emberd store as tiny.gguf
TINY_CLS = "tiny-cls"  # CLS pooling, dropped in as tiny-cls.gguf
OLLAMA_TINY = "ollama-tiny"  # in the Ollama store, params layer {"num_ctx": 64}
OLLAMA_NUM_CTX = 64
TINY_CONTEXT = 128  # the tiny models' trained context
TINY_DIM = 32  # the tiny models' embedding length

# How long a test waits for something that should happen at once.
DEADLINE_S = 10.0

# Fixed modification times, so /api/tags has a known newest-first order.
_MTIMES = {OLLAMA_TINY: 1_600_000_000, TINY: 1_700_000_000, TINY_CLS: 1_750_000_000}


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


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    """A mean-pooled and a CLS-pooled tiny BERT GGUF, written once."""
    root = tmp_path_factory.mktemp("gguf")
    return ModelFiles(
        mean=write_tiny_bert(root / "tiny-mean.gguf", pooling=1, seed=0),
        cls=write_tiny_bert(root / "tiny-cls.gguf", pooling=2, seed=1),
    )


def make_stores(root: Path, files: ModelFiles) -> Stores:
    """Lay out both stores under `root` with the tiny models and fixed mtimes."""
    emberd = root / "emberd"
    emberd.mkdir(parents=True)
    for name, source in ((TINY, files.mean), (TINY_CLS, files.cls)):
        target = emberd / f"{name}.gguf"
        target.write_bytes(source.read_bytes())
        os.utime(target, (_MTIMES[name], _MTIMES[name]))
    ollama = write_ollama_layout(
        root / "ollama", files.mean, name=OLLAMA_TINY, params={"num_ctx": OLLAMA_NUM_CTX}
    )
    manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / OLLAMA_TINY / "latest"
    os.utime(manifest, (_MTIMES[OLLAMA_TINY], _MTIMES[OLLAMA_TINY]))
    outside = root / "outside.gguf"
    outside.write_bytes(files.mean.read_bytes())
    return Stores(emberd=emberd, ollama=ollama, outside=outside)


@pytest.fixture(scope="session")
def stores(tmp_path_factory: pytest.TempPathFactory, model_files: ModelFiles) -> Stores:
    """The shared stores; tests must not write into them."""
    return make_stores(tmp_path_factory.mktemp("stores"), model_files)


# -- a backend that counts, remembers and gates loads -----------------------------


class TrackedModel:
    """A real llama.cpp model that remembers whether it was closed."""

    def __init__(self, inner: Any, path: Path, options: LoadOptions) -> None:
        self._inner = inner
        self.path = path
        self.options = options
        self.closed = False

    @property
    def facts(self) -> ModelFacts:
        return self._inner.facts  # type: ignore[no-any-return]

    @property
    def stats(self) -> DecodeStats:
        return self._inner.stats  # type: ignore[no-any-return]

    def tokenize(self, text: str) -> list[int]:
        return self._inner.tokenize(text)  # type: ignore[no-any-return]

    def max_batch_tokens(self) -> int:
        return self._inner.max_batch_tokens()  # type: ignore[no-any-return]

    def max_batch_sequences(self) -> int:
        return self._inner.max_batch_sequences()  # type: ignore[no-any-return]

    def embed(self, sequences: Sequence[Sequence[int]]) -> FloatMatrix:
        return self._inner.embed(sequences)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.closed = True
        self._inner.close()


class RecordingBackend:
    """`LlamaCppBackend` with every load counted and, when gated, held until `release()`.

    `fail_with` makes every load raise that exception instead, for tests of how
    the server answers a fault it did not foresee.
    """

    def __init__(self, *, gated: bool = False, fail_with: Exception | None = None) -> None:
        self._inner = LlamaCppBackend()
        self._fail_with = fail_with  # raised by every load instead of loading
        self._lock = threading.Lock()
        self._gate = threading.Event()
        if not gated:
            self._gate.set()
        self.entered = threading.Event()  # set once a load has started
        self.load_calls = 0
        self.models: list[TrackedModel] = []

    def load(self, path: Path, options: LoadOptions) -> TrackedModel:
        with self._lock:
            self.load_calls += 1
        self.entered.set()
        if not self._gate.wait(DEADLINE_S):
            raise TimeoutError("the test never released the gated load")
        if self._fail_with is not None:
            raise self._fail_with
        model = TrackedModel(self._inner.load(path, options), path, options)
        with self._lock:
            self.models.append(model)
        return model

    def release(self) -> None:
        """Let held and future loads proceed."""
        self._gate.set()


# -- live servers ------------------------------------------------------------------


@dataclass
class LiveServer:
    """A running server: its base URL, app (for its runtime) and an httpx client."""

    url: str
    app: Starlette
    client: httpx.Client
    backend: RecordingBackend | None

    def embed(self, body: Mapping[str, Any]) -> httpx.Response:
        """POST /api/embed."""
        return self.client.post("/api/embed", json=body)

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
        return self.app.state.engine.runtime.pending  # type: ignore[no-any-return]


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


@pytest.fixture(scope="session", autouse=True)
def _join_stopped_servers() -> Iterator[None]:
    yield
    for thread in _STOPPING:
        thread.join(DEADLINE_S)
    assert not any(thread.is_alive() for thread in _STOPPING), "a test server did not stop"


@contextlib.contextmanager
def running_server(
    settings: Settings, backend: RecordingBackend | None = None
) -> Iterator[LiveServer]:
    """Serve `create_app(settings)` on 127.0.0.1:<ephemeral> until the block ends.

    Leaving the block tells the server to stop (it drains and unloads its
    models in its own thread); the session joins it at its end.
    """
    app = create_app(settings, backend=backend)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="emberd-test-server", daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive())
    assert server.started, "the server did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=DEADLINE_S)
    try:
        yield LiveServer(url=url, app=app, client=client, backend=backend)
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


@pytest.fixture
def serve(stores: Stores) -> Iterator[ServerFactory]:
    """Start servers with custom settings: `serve(backend=..., env=..., stores=..., **flags)`."""
    with contextlib.ExitStack() as stack:

        def start(
            *,
            backend: RecordingBackend | None = None,
            env: Mapping[str, str] | None = None,
            stores_: Stores | None = None,
            **overrides: Any,
        ) -> LiveServer:
            settings = settings_for(stores_ or stores, env, **overrides)
            return stack.enter_context(running_server(settings, backend))

        yield start


@pytest.fixture(scope="session")
def server(stores: Stores) -> Iterator[LiveServer]:
    """One server shared by tests that do not depend on what is loaded."""
    with running_server(settings_for(stores)) as live:
        yield live
