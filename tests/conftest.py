"""Fixtures shared by every test package: tiny GGUF stores and live servers.

What they build lives in `tests/support/harness.py`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tests.support.harness import (
    LiveServer,
    ModelFiles,
    RecordingBackend,
    ServerFactory,
    Stores,
    join_stopped_servers,
    make_stores,
    running_server,
    settings_for,
)
from tests.support.tiny_model import write_tiny_bert


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> ModelFiles:
    """A mean-pooled and a CLS-pooled tiny BERT GGUF, written once."""
    root = tmp_path_factory.mktemp("gguf")
    return ModelFiles(
        mean=write_tiny_bert(root / "tiny-mean.gguf", pooling=1, seed=0),
        cls=write_tiny_bert(root / "tiny-cls.gguf", pooling=2, seed=1),
    )


@pytest.fixture(scope="session")
def stores(tmp_path_factory: pytest.TempPathFactory, model_files: ModelFiles) -> Stores:
    """The shared stores; tests must not write into them."""
    return make_stores(tmp_path_factory.mktemp("stores"), model_files)


@pytest.fixture(scope="session", autouse=True)
def _join_stopped_servers() -> Iterator[None]:
    yield
    join_stopped_servers()


@pytest.fixture
def serve(stores: Stores) -> Iterator[ServerFactory]:
    """Start servers: `serve(backend=..., env={VAR: value}, model_stores=..., **settings)`."""
    with contextlib.ExitStack() as stack:

        def start(
            *,
            backend: RecordingBackend | None = None,
            env: Mapping[str, str] | None = None,
            model_stores: Stores | None = None,
            **overrides: Any,
        ) -> LiveServer:
            settings = settings_for(model_stores or stores, env, **overrides)
            return stack.enter_context(running_server(settings, backend))

        yield start


@pytest.fixture(scope="session")
def server(stores: Stores) -> Iterator[LiveServer]:
    """One server shared by tests that do not depend on what is loaded."""
    with running_server(settings_for(stores)) as live:
        yield live
