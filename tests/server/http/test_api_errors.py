"""Bad requests and broken models over HTTP: clear errors, and the server keeps serving."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from emberd.models.bert_gguf import FileType, write_bert_gguf
from tests.support.harness import (
    SKY,
    TINY,
    LiveServer,
    ModelFiles,
    RecordingBackend,
    ServerFactory,
    Stores,
    make_stores,
)
from tests.support.tiny_model import TINY_VOCAB, tiny_hparams, tiny_tensors, tiny_token_id

GOOD = {"model": TINY, "input": SKY}


def assert_still_serving(live: LiveServer) -> None:
    response = live.embed(GOOD)
    assert response.status_code == 200, response.text
    assert len(response.json()["embeddings"]) == 1


# -- health and version ------------------------------------------------------------


def test_root_says_ollama_is_running(server: LiveServer) -> None:
    response = server.client.get("/")
    assert response.status_code == 200
    assert response.text == "Ollama is running"
    assert response.headers["content-type"].startswith("text/plain")


def test_root_head_is_ok(server: LiveServer) -> None:
    response = server.client.head("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.content == b""


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_version(server: LiveServer, method: str) -> None:
    response = server.client.request(method, "/api/version")
    assert response.status_code == 200
    if method == "GET":
        version = response.json()["version"]
        parts = version.split(".")
        assert len(parts) == 3 and all(p.isdigit() for p in parts), version


# -- malformed requests ------------------------------------------------------------

RAW_BODIES = {
    "malformed-json": b'{"model": "tiny", "input": ',
    "trailing-garbage": b'{"model": "tiny"} x',
    "not-json": b"model=tiny&input=sky",
    "empty": b"",
    "whitespace": b"  \n ",
    "array": b'["tiny", "sky"]',
    "string": b'"tiny"',
    "number": b"5",
    "null": b"null",
    "invalid-utf8": b'{"model": "tiny", "input": "\xff\xfe"}',
}


@pytest.mark.parametrize("path", ["/api/embed", "/api/embeddings", "/api/show", "/v1/embeddings"])
@pytest.mark.parametrize("raw", RAW_BODIES.values(), ids=RAW_BODIES.keys())
def test_unreadable_bodies_are_400(server: LiveServer, path: str, raw: bytes) -> None:
    response = server.client.post(path, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    message = error["message"] if path.startswith("/v1/") else error
    assert isinstance(message, str) and message
    assert_still_serving(server)


WRONG_TYPES = {
    "model-int": ({"model": 5, "input": SKY}, "model"),
    "model-list": ({"model": ["tiny"], "input": SKY}, "model"),
    "truncate-string": ({**GOOD, "truncate": "yes"}, "truncate"),
    "truncate-int": ({**GOOD, "truncate": 1}, "truncate"),
    "dimensions-string": ({**GOOD, "dimensions": "8"}, "dimensions"),
    "dimensions-float": ({**GOOD, "dimensions": 8.5}, "dimensions"),
    "options-list": ({**GOOD, "options": [1, 2]}, "options"),
    "num_ctx-string": ({**GOOD, "options": {"num_ctx": "big"}}, "num_ctx"),
    "num_batch-bool": ({**GOOD, "options": {"num_batch": True}}, "num_batch"),
    "use_mmap-int": ({**GOOD, "options": {"use_mmap": 1}}, "use_mmap"),
    "temperature-string": ({**GOOD, "options": {"temperature": "hot"}}, "temperature"),
    "stop-string": ({**GOOD, "options": {"stop": "x"}}, "stop"),
}


@pytest.mark.parametrize(("body", "field"), WRONG_TYPES.values(), ids=WRONG_TYPES.keys())
def test_wrong_field_types_are_400_naming_the_field(
    server: LiveServer, body: dict, field: str
) -> None:
    response = server.embed(body)
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]
    assert_still_serving(server)


def test_wrong_option_type_has_ollamas_message(server: LiveServer) -> None:
    response = server.embed({**GOOD, "options": {"num_ctx": "big"}})
    assert response.json() == {"error": 'option "num_ctx" must be of type integer'}


def test_unknown_options_and_fields_are_ignored_with_a_warning(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="emberd"):
        response = server.embed(
            {**GOOD, "options": {"no_such_option": 1, "seed": 42, "top_k": 5}, "extra_field": [1]}
        )
    assert response.status_code == 200, response.text
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("no_such_option" in message for message in warnings), warnings
    assert not any("seed" in message or "top_k" in message for message in warnings), warnings


def test_legacy_wrong_types_are_400(server: LiveServer) -> None:
    for body in ({"model": TINY, "prompt": 5}, {"model": 5, "prompt": SKY}):
        response = server.client.post("/api/embeddings", json=body)
        assert response.status_code == 400, response.text
        assert "error" in response.json()
    assert_still_serving(server)


def test_unknown_paths_and_wrong_methods(server: LiveServer) -> None:
    assert server.client.get("/api/nothing-here").status_code == 404
    assert server.client.get("/api/embed").status_code == 405
    assert server.client.post("/api/ps").status_code == 405
    assert_still_serving(server)


# -- broken model files ------------------------------------------------------------


@pytest.fixture
def broken_stores(tmp_path: Path, model_files: ModelFiles) -> Stores:
    """Stores whose emberd store also holds a garbage GGUF and two truncated copies."""
    stores = make_stores(tmp_path, model_files)
    (stores.emberd / "bad.gguf").write_bytes(b"this is not a GGUF file\x00" * 100)
    whole = model_files.mean.read_bytes()
    (stores.emberd / "cut-header.gguf").write_bytes(whole[:200])
    (stores.emberd / "cut-tensors.gguf").write_bytes(whole[: len(whole) // 2])
    return stores


@pytest.mark.parametrize("name", ["bad", "cut-header", "cut-tensors"])
def test_a_corrupt_gguf_is_a_500_and_the_server_survives(
    serve: ServerFactory, broken_stores: Stores, name: str
) -> None:
    live = serve(model_stores=broken_stores)
    for attempt in range(2):  # a failed load is not cached as loaded
        response = live.embed({"model": name, "input": SKY})
        assert response.status_code == 500, (attempt, response.text)
        message = response.json()["error"]
        assert message.startswith("failed to load model"), message
        assert live.ps() == []
    openai = live.client.post("/v1/embeddings", json={"model": name, "input": SKY})
    assert openai.status_code == 500
    assert openai.json()["error"]["type"] == "api_error"
    assert_still_serving(live)
    assert live.loaded_names() == ["tiny:latest"]


def test_corrupt_files_are_left_out_of_tags(serve: ServerFactory, broken_stores: Stores) -> None:
    live = serve(model_stores=broken_stores)
    names = {m["name"] for m in live.client.get("/api/tags").json()["models"]}
    assert names == {"tiny:latest", "tiny-cls:latest", "ollama-tiny:latest", "ollama-params:latest"}


def test_a_gguf_removed_after_listing_is_a_clean_error(
    serve: ServerFactory, broken_stores: Stores
) -> None:
    live = serve(model_stores=broken_stores)
    assert live.client.post("/api/show", json={"model": "tiny-cls"}).status_code == 200
    os.remove(broken_stores.emberd / "tiny-cls.gguf")
    response = live.embed({"model": "tiny-cls", "input": SKY})
    assert response.status_code == 404
    assert response.json() == {"error": 'model "tiny-cls" not found, try pulling it first'}
    assert_still_serving(live)


def test_a_gguf_removed_after_its_load_fails_is_a_404(
    serve: ServerFactory, broken_stores: Stores
) -> None:
    live = serve(model_stores=broken_stores)
    assert live.embed({"model": "bad", "input": SKY}).status_code == 500
    os.remove(broken_stores.emberd / "bad.gguf")
    assert live.embed({"model": "bad", "input": SKY}).status_code == 404


# -- faults the server did not foresee ---------------------------------------------


def test_an_unexpected_fault_is_a_500_and_the_connection_stays_usable(serve: ServerFactory) -> None:
    live = serve(backend=RecordingBackend(fail_with=RuntimeError("something odd")))
    for _ in range(5):
        response = live.embed(GOOD)
        assert response.status_code == 500
        assert response.json() == {"error": "internal server error"}
        # The same keep-alive connection serves the next request.
        assert live.client.get("/api/version").status_code == 200
    openai = live.client.post("/v1/embeddings", json=GOOD)
    assert openai.status_code == 500
    assert openai.json()["error"] == {
        "message": "internal server error",
        "type": "api_error",
        "param": None,
        "code": None,
    }
    assert live.client.get("/").text == "Ollama is running"


@pytest.fixture
def nan_stores(tmp_path: Path, model_files: ModelFiles) -> Stores:
    """Stores that also hold `poison`, a tiny model whose "sky" embeds to NaN."""
    stores = make_stores(tmp_path, model_files)
    tensors = tiny_tensors(context_length=128, embedding_length=32, block_count=2, ff=64, seed=0)
    tensors["embeddings.word_embeddings.weight"][tiny_token_id("sky")] = np.inf
    write_bert_gguf(
        stores.emberd / "poison.gguf", "poison", tiny_hparams(), TINY_VOCAB, tensors, FileType.F32
    )
    return stores


def test_nan_in_an_embedding_is_a_500_never_invalid_json(
    serve: ServerFactory, nan_stores: Stores
) -> None:
    live = serve(model_stores=nan_stores)
    fine = live.embed({"model": "poison", "input": "why is the blue sea"})
    assert fine.status_code == 200, fine.text
    for body in ({"input": "the sky"}, {"input": ["blue", "sky", "sea"]}):
        response = live.embed({"model": "poison", **body})
        assert response.status_code == 500
        assert response.json() == {"error": "embedding contains NaN or Inf values"}
    legacy = live.client.post("/api/embeddings", json={"model": "poison", "prompt": "sky"})
    assert legacy.status_code == 500
    assert legacy.json() == {"error": "embedding contains NaN or Inf values"}
    openai = live.client.post("/v1/embeddings", json={"model": "poison", "input": "sky"})
    assert openai.status_code == 500
    assert openai.json()["error"]["message"] == "embedding contains NaN or Inf values"
    assert live.embed({"model": "poison", "input": "blue"}).status_code == 200
