"""Fixtures of the pull tests: the tiny GGUF's bytes (`gguf`), a loopback registry
(`registry`), and the tiny BERT published there as `library/tiny:latest` with a
params layer `{"num_ctx": 64}` (`published`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.registry_server import Published, RegistryServer, registry_server
from tests.support.tiny_model import write_tiny_bert

PARAMS = {"num_ctx": 64}


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The tiny BERT's bytes."""
    return write_tiny_bert(tmp_path_factory.mktemp("pull") / "tiny.gguf").read_bytes()


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with registry_server() as server:
        yield server


@pytest.fixture
def published(registry: RegistryServer, gguf: bytes) -> Published:
    return registry.state.publish("library/tiny", "latest", gguf, PARAMS)
