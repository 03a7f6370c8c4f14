"""Clients that reach the server through other shapes: AI gateways and LangChain.

AI gateways (AIGNE Hub and the like) post OpenAI-shaped bodies to Ollama's
/api/embeddings; `langchain-ollama` posts /api/embed with an `options` dict
whose every value is null.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from langchain_ollama import OllamaEmbeddings

from tests.support.harness import TINY, TINY_DIM, LiveServer

SKY = "why is the sky blue"
TEXTS = [SKY, "the grass is green", "hello world"]


def gateway(live: LiveServer, body: dict[str, Any]) -> dict[str, Any]:
    return live.post_ok("/api/embeddings", body)


def api_embed(live: LiveServer, texts: list[str], **extra: Any) -> dict[str, Any]:
    return live.post_ok("/api/embed", {"model": TINY, "input": texts, **extra})


# -- AI gateways on /api/embeddings -------------------------------------------------------


def test_gateway_body_gets_the_openai_shape(server: LiveServer) -> None:
    data = gateway(server, {"model": TINY, "input": TEXTS})
    raw = api_embed(server, TEXTS)
    assert set(data) == {"object", "data", "model", "usage"}
    assert data["object"] == "list" and data["model"] == TINY
    assert [item["index"] for item in data["data"]] == [0, 1, 2]
    vectors = [item["embedding"] for item in data["data"]]
    np.testing.assert_allclose(vectors, raw["embeddings"], atol=1e-6)
    count = raw["prompt_eval_count"]
    assert data["usage"] == {"prompt_tokens": count, "total_tokens": count}


def test_gateway_body_with_encoding_and_dimensions(server: LiveServer) -> None:
    body = {
        "model": TINY,
        "input": TEXTS,
        "encoding_format": "base64",
        "dimensions": 8,
        "user": "gateway-user",
    }
    data = gateway(server, body)
    raw = api_embed(server, TEXTS, dimensions=8)
    decoded = [np.frombuffer(base64.b64decode(item["embedding"]), "<f4") for item in data["data"]]
    np.testing.assert_allclose(decoded, raw["embeddings"], atol=1e-6)


def test_gateway_single_string_input(server: LiveServer) -> None:
    data = gateway(server, {"model": TINY, "input": SKY})
    assert len(data["data"]) == 1
    np.testing.assert_allclose(
        data["data"][0]["embedding"], server.vectors(TINY, SKY)[0], atol=1e-6
    )


def test_prompt_body_keeps_the_legacy_shape(server: LiveServer) -> None:
    data = gateway(server, {"model": TINY, "prompt": SKY})
    assert set(data) == {"embedding"}
    assert len(data["embedding"]) == TINY_DIM
    assert abs(float(np.linalg.norm(data["embedding"])) - 1.0) > 1e-3  # not normalised


def test_prompt_and_input_together_is_legacy(server: LiveServer) -> None:
    both = gateway(server, {"model": TINY, "input": ["hello world"], "prompt": SKY})
    alone = gateway(server, {"model": TINY, "prompt": SKY})
    assert set(both) == {"embedding"}
    np.testing.assert_allclose(both["embedding"], alone["embedding"], atol=1e-6)


def test_gateway_errors_use_the_openai_shape(server: LiveServer) -> None:
    response = server.client.post("/api/embeddings", json={"model": TINY, "input": []})
    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "message": "invalid input",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }


# -- langchain-ollama ---------------------------------------------------------------------


@contextlib.contextmanager
def recording(
    live: LiveServer, **fields: Any
) -> Iterator[tuple[OllamaEmbeddings, list[dict[str, Any]]]]:
    """LangChain embeddings for `live`, and the JSON bodies it posts."""
    sent: list[dict[str, Any]] = []

    def hook(request: httpx.Request) -> None:
        sent.append(orjson.loads(request.content))

    hooks = {"event_hooks": {"request": [hook]}}
    embeddings = OllamaEmbeddings(model=TINY, base_url=live.url, sync_client_kwargs=hooks, **fields)
    try:
        yield embeddings, sent
    finally:  # LangChain never closes its client's connections itself
        assert embeddings._client is not None
        embeddings._client.close()


def test_langchain_embed_documents_and_query(server: LiveServer) -> None:
    with recording(server) as (embeddings, sent):
        documents = embeddings.embed_documents(TEXTS)
        query = embeddings.embed_query(SKY)
    raw = api_embed(server, TEXTS)["embeddings"]
    np.testing.assert_allclose(documents, raw, atol=1e-6)
    np.testing.assert_allclose(query, raw[0], atol=1e-6)
    # What it sends: options present, every value null (meaning "unset").
    options = sent[0]["options"]
    assert options and all(value is None for value in options.values())
    assert "num_ctx" in options and "temperature" in options


@pytest.mark.parametrize("field", ["num_ctx", "num_thread", "temperature", "top_k"])
def test_langchain_set_fields_are_honoured_or_ignored(server: LiveServer, field: str) -> None:
    value = {"num_ctx": 5, "num_thread": 1, "temperature": 0.3, "top_k": 4}[field]
    with recording(server, **{field: value}) as (embeddings, sent):
        vector = embeddings.embed_query(SKY)
    assert sent[0]["options"][field] == value
    if field == "num_ctx":  # a load option: truncation to 5 tokens changes the vector
        cut = server.vectors(TINY, SKY, options={"num_ctx": 5})[0]
        np.testing.assert_allclose(vector, cut, atol=1e-6)
    else:
        np.testing.assert_allclose(vector, server.vectors(TINY, SKY)[0], atol=1e-6)


def test_langchain_dimensions(server: LiveServer) -> None:
    with recording(server, dimensions=8) as (embeddings, sent):
        documents = embeddings.embed_documents(TEXTS)
    assert sent[0]["dimensions"] == 8
    assert all(len(vector) == 8 for vector in documents)
    np.testing.assert_allclose(
        documents, api_embed(server, TEXTS, dimensions=8)["embeddings"], atol=1e-6
    )


def test_langchain_async(server: LiveServer) -> None:
    embeddings = OllamaEmbeddings(model=TINY, base_url=server.url)

    async def embed() -> list[list[float]]:
        try:
            return await embeddings.aembed_documents(TEXTS)
        finally:  # its client would otherwise outlive the event loop
            assert embeddings._async_client is not None
            await embeddings._async_client.close()

    documents = asyncio.run(embed())
    np.testing.assert_allclose(documents, api_embed(server, TEXTS)["embeddings"], atol=1e-6)
