"""The official `ollama` Python client against a running server: it must not notice."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timezone

import numpy as np
import ollama
import pytest

from tests.support.harness import (
    OLLAMA_NUM_CTX,
    OLLAMA_TINY,
    TINY,
    TINY_DIM,
    LiveServer,
    ServerFactory,
)

TEXTS = ["why is the sky blue", "the grass is green", ""]


@pytest.fixture
def client(server: LiveServer) -> Iterator[ollama.Client]:
    with ollama.Client(host=server.url) as client:
        yield client


def raw_embed(live: LiveServer, body: dict) -> dict:
    response = live.embed(body)
    assert response.status_code == 200, response.text
    data: dict = response.json()
    return data


def test_no_input_gives_no_embeddings(client: ollama.Client) -> None:
    assert client.embed(model=TINY, input="").embeddings == []
    assert client.embeddings(model=TINY, prompt="").embedding == []


def test_embed_matches_raw_http(server: LiveServer, client: ollama.Client) -> None:
    result = client.embed(model=TINY, input=TEXTS)
    raw = raw_embed(server, {"model": TINY, "input": TEXTS})
    assert result.model == TINY
    assert len(result.embeddings) == len(TEXTS)
    np.testing.assert_allclose(result.embeddings, raw["embeddings"], atol=1e-6)
    assert result.prompt_eval_count == raw["prompt_eval_count"]
    assert isinstance(result.total_duration, int) and result.total_duration > 0


def test_embed_with_options_truncate_and_dimensions(client: ollama.Client) -> None:
    result = client.embed(
        model=TINY,
        input="why is the sky blue",
        options={"num_ctx": 5},
        dimensions=8,
        keep_alive="5m",
    )
    assert result.prompt_eval_count == 5
    assert len(result.embeddings[0]) == 8
    with pytest.raises(ollama.ResponseError) as caught:
        client.embed(
            model=TINY, input="why is the sky blue", options={"num_ctx": 5}, truncate=False
        )
    assert caught.value.status_code == 400
    assert caught.value.error == "the input length exceeds the context length"


def test_embeddings_matches_raw_http(server: LiveServer, client: ollama.Client) -> None:
    result = client.embeddings(model=TINY, prompt="why is the sky blue")
    response = server.client.post(
        "/api/embeddings", json={"model": TINY, "prompt": "why is the sky blue"}
    )
    assert response.status_code == 200
    np.testing.assert_allclose(result.embedding, response.json()["embedding"], atol=1e-6)
    assert len(result.embedding) == TINY_DIM
    assert abs(float(np.linalg.norm(result.embedding)) - 1.0) > 1e-3


def test_unknown_model_raises_response_error_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as caught:
        client.embed(model="missing", input="sky")
    assert caught.value.status_code == 404
    assert caught.value.error == 'model "missing" not found, try pulling it first'


def test_list_show_and_ps_parse(serve: ServerFactory) -> None:
    live = serve()
    with ollama.Client(host=live.url) as client:
        check_list_show_and_ps(client)


def check_list_show_and_ps(client: ollama.Client) -> None:
    listed = client.list()
    assert [m.model for m in listed.models] == [
        "tiny-cls:latest",
        "tiny:latest",
        "ollama-tiny:latest",
        "ollama-params:latest",
    ]
    assert all(isinstance(m.modified_at, datetime) for m in listed.models)
    assert listed.models[0].details is not None
    assert listed.models[0].details.family == "bert"
    shown = client.show(OLLAMA_TINY)
    assert shown.capabilities == ["embedding"]
    assert shown.modelinfo is not None
    assert shown.modelinfo["bert.embedding_length"] == TINY_DIM
    client.embed(model=OLLAMA_TINY, input="sky")
    (loaded,) = client.ps().models
    assert loaded.model == "ollama-tiny:latest"
    assert loaded.context_length == OLLAMA_NUM_CTX
    assert loaded.expires_at is not None
    assert loaded.expires_at > datetime.now(timezone.utc)


def test_async_client_embeds_concurrently(server: LiveServer) -> None:
    texts = TEXTS[:2]

    async def run() -> list[ollama.EmbedResponse]:
        client = ollama.AsyncClient(host=server.url)
        try:
            return await asyncio.gather(*(client.embed(model=TINY, input=t) for t in texts))
        finally:
            await client.close()

    results = asyncio.run(run())
    together = raw_embed(server, {"model": TINY, "input": texts})["embeddings"]
    for result, expected in zip(results, together, strict=True):
        np.testing.assert_allclose(result.embeddings[0], expected, atol=1e-5)
