"""POST /api/embeddings: Ollama's legacy `prompt` dialect and the OpenAI one on the same path."""

from __future__ import annotations

import numpy as np

from tests.support.float_text import NUMBER, assert_shortest_float32_text
from tests.support.harness import (
    SKY,
    TINY,
    TINY_CONTEXT,
    TINY_DIM,
    LiveServer,
    ServerFactory,
)


def legacy(live: LiveServer, body: dict) -> dict:
    response = live.client.post("/api/embeddings", json=body)
    assert response.status_code == 200, response.text
    data: dict = response.json()
    return data


def test_prompt_gives_one_unnormalised_embedding(server: LiveServer) -> None:
    data = legacy(server, {"model": TINY, "prompt": SKY})
    assert set(data) == {"embedding"}
    raw = np.asarray(data["embedding"], dtype=np.float64)
    assert raw.shape == (TINY_DIM,)
    norm = float(np.linalg.norm(raw))
    assert abs(norm - 1.0) > 1e-3
    normalised = server.vectors(TINY, SKY)[0]
    np.testing.assert_allclose(raw, normalised * norm, rtol=1e-4, atol=1e-5)


def test_legacy_floats_are_the_shortest_float32_text(server: LiveServer) -> None:
    response = server.client.post("/api/embeddings", json={"model": TINY, "prompt": SKY})
    raw = response.text
    numbers = NUMBER.findall(raw[raw.index("[") : raw.index("]")])
    assert len(numbers) == TINY_DIM
    assert_shortest_float32_text(numbers)


def test_empty_prompt_loads_the_model_and_returns_an_empty_embedding(serve: ServerFactory) -> None:
    live = serve()
    assert live.loaded_names() == []
    assert legacy(live, {"model": TINY, "prompt": ""}) == {"embedding": []}
    assert live.loaded_names() == ["tiny:latest"]


def test_absent_prompt_with_no_input_is_the_legacy_dialect(server: LiveServer) -> None:
    assert legacy(server, {"model": TINY}) == {"embedding": []}


def test_over_long_prompt_is_truncated(server: LiveServer) -> None:
    words = ["sky", "blue", "why", "is", "the", "sun", "red"]
    prompt = " ".join(words[i % len(words)] for i in range(400))
    raw = np.asarray(legacy(server, {"model": TINY, "prompt": prompt})["embedding"])
    assert raw.shape == (TINY_DIM,)
    # The trained context is 128: the first 126 words are kept, [CLS] and [SEP] added.
    kept = " ".join(prompt.split()[: TINY_CONTEXT - 2])
    expected = server.vectors(TINY, kept, truncate=False)[0]
    np.testing.assert_allclose(raw / np.linalg.norm(raw), expected, atol=1e-5)


def test_legacy_options_truncate_like_embed(server: LiveServer) -> None:
    options = {"num_ctx": 8}
    long_prompt = "why is the sky blue and the grass is green"
    kept = "why is the sky blue and"
    raw = np.asarray(
        legacy(server, {"model": TINY, "prompt": long_prompt, "options": options})["embedding"]
    )
    expected = server.vectors(TINY, kept, options=options)[0]
    np.testing.assert_allclose(raw / np.linalg.norm(raw), expected, atol=1e-5)


def test_legacy_errors_use_the_ollama_shape(server: LiveServer) -> None:
    response = server.client.post("/api/embeddings", json={"model": "nope", "prompt": SKY})
    assert response.status_code == 404
    assert response.json() == {"error": 'model "nope" not found, try pulling it first'}
    response = server.client.post("/api/embeddings", json={"prompt": SKY})
    assert response.status_code == 400
    assert response.json() == {"error": "model is required"}


def test_input_without_prompt_answers_in_the_openai_shape(server: LiveServer) -> None:
    data = legacy(server, {"model": TINY, "input": SKY})
    assert data["object"] == "list"
    assert data["model"] == TINY
    assert data["usage"] == {"prompt_tokens": 7, "total_tokens": 7}
    (item,) = data["data"]
    assert item["object"] == "embedding"
    assert item["index"] == 0
    np.testing.assert_allclose(item["embedding"], server.vectors(TINY, SKY)[0], atol=1e-6)


def test_input_list_without_prompt_answers_in_the_openai_shape(server: LiveServer) -> None:
    data = legacy(server, {"model": TINY, "input": [SKY, "hello"]})
    assert [item["index"] for item in data["data"]] == [0, 1]
    assert data["usage"]["prompt_tokens"] == 7 + 3


def test_openai_dialect_errors_use_the_openai_shape(server: LiveServer) -> None:
    response = server.client.post("/api/embeddings", json={"model": "nope", "input": SKY})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "not_found_error"
    assert error["param"] is None and error["code"] is None
    assert error["message"] == 'model "nope" not found, try pulling it first'


def test_prompt_wins_when_both_are_given(server: LiveServer) -> None:
    data = legacy(server, {"model": TINY, "prompt": SKY, "input": "hello"})
    assert set(data) == {"embedding"}
