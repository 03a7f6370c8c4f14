"""The OpenAI dialect (/v1/embeddings, /v1/models) with the official `openai` client and raw HTTP.

Token-id inputs (switched on: they are off by default, see
test_token_input.py) go to the model exactly as given: the server adds no special
tokens, so ids that spell `[CLS] ... [SEP]` give the text's vector, and ids
without them give the vector of the bare words.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from emberd.server.http.routes.openai import encode_base64
from tests.support.harness import (
    TINY,
    TINY_CLS,
    TINY_CONTEXT,
    TINY_DIM,
    LiveServer,
    ModelFiles,
    ServerFactory,
    Stores,
    make_stores,
    running_server,
    settings_for,
)
from tests.support.tiny_model import TINY_TOKENS, tiny_token_id

SKY = "why is the sky blue"
TEXTS = [SKY, "the grass is green", "hello world"]
WORD_IDS = [tiny_token_id(word) for word in SKY.split()]
WITH_SPECIALS = [tiny_token_id("[CLS]"), *WORD_IDS, tiny_token_id("[SEP]")]


@pytest.fixture
def client(server: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as client:
        yield client


def post(live: LiveServer, body: dict[str, Any]) -> httpx.Response:
    return live.client.post("/v1/embeddings", json=body)


def ok(live: LiveServer, body: dict[str, Any]) -> dict[str, Any]:
    return live.post_ok("/v1/embeddings", body)


def embed_raw(live: LiveServer, texts: list[str], **extra: Any) -> dict[str, Any]:
    return live.post_ok("/api/embed", {"model": TINY, "input": texts, **extra})


def openai_error(response: httpx.Response, status: int, kind: str) -> str:
    """The message of an OpenAI-shaped error, after checking the whole shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == kind
    assert error["param"] is None and error["code"] is None
    message: str = error["message"]
    return message


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def assert_same_vectors(got: list[list[float]], want: list[list[float]]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert len(a) == len(b)
        assert cosine(np.asarray(a), np.asarray(b)) > 0.99999
    np.testing.assert_allclose(got, want, atol=1e-6)


# -- base64 ------------------------------------------------------------------------


def test_encode_base64_is_little_endian_float32() -> None:
    assert encode_base64(np.array([0.1, -0.2, 0.3], dtype=np.float32)) == "zczMPc3MTL6amZk+"
    assert encode_base64(np.array([0.1, -0.2, 0.3])) == "zczMPc3MTL6amZk+"  # float64 in


def test_served_base64_decodes_to_the_float_response(server: LiveServer) -> None:
    floats = ok(server, {"model": TINY, "input": TEXTS})
    encoded = ok(server, {"model": TINY, "input": TEXTS, "encoding_format": "base64"})
    assert encoded["usage"] == floats["usage"]
    for packed, plain in zip(encoded["data"], floats["data"], strict=True):
        assert packed["index"] == plain["index"]
        decoded = np.frombuffer(base64.b64decode(packed["embedding"]), dtype="<f4")
        assert decoded.shape == (TINY_DIM,)
        np.testing.assert_array_equal(decoded, np.asarray(plain["embedding"], dtype=np.float32))


@pytest.mark.parametrize("spelling", ["BASE64", "Base64", "FLOAT", "Float"])
def test_encoding_format_is_case_insensitive(server: LiveServer, spelling: str) -> None:
    item = ok(server, {"model": TINY, "input": SKY, "encoding_format": spelling})["data"][0]
    assert isinstance(item["embedding"], str if spelling.lower() == "base64" else list)


@pytest.mark.parametrize("value", ["int8", "floats", "binary"])
def test_unknown_encoding_format_is_400(server: LiveServer, value: str) -> None:
    response = post(server, {"model": TINY, "input": SKY, "encoding_format": value})
    assert openai_error(response, 400, "invalid_request_error") == (
        f"Invalid value for 'encoding_format' = {value}. Supported values: ['float', 'base64']."
    )


# -- the official client -----------------------------------------------------------


def test_client_default_base64_matches_api_embed(server: LiveServer, client: openai.OpenAI) -> None:
    result = client.embeddings.create(model=TINY, input=TEXTS)  # asks for base64
    raw = embed_raw(server, TEXTS)
    assert result.model == TINY
    assert [item.index for item in result.data] == [0, 1, 2]
    assert_same_vectors([item.embedding for item in result.data], raw["embeddings"])
    assert result.usage.prompt_tokens == result.usage.total_tokens == raw["prompt_eval_count"]


def test_client_float_matches_api_embed(server: LiveServer, client: openai.OpenAI) -> None:
    result = client.embeddings.create(model=TINY, input=TEXTS, encoding_format="float")
    raw = embed_raw(server, TEXTS)
    assert_same_vectors([item.embedding for item in result.data], raw["embeddings"])
    assert result.usage.prompt_tokens == raw["prompt_eval_count"] == 7 + 6 + 4


@pytest.mark.parametrize(
    ("d", "message"),
    [
        (0, "dimensions must be at least 1, got 0"),
        (-1, "dimensions must be at least 1, got -1"),
        (10**9, f"dimensions {10**9} is more than the model's embedding length of {TINY_DIM}"),
    ],
)
def test_dimensions_out_of_range_are_400(server: LiveServer, d: int, message: str) -> None:
    response = post(server, {"model": TINY, "input": "sky", "dimensions": d})
    assert openai_error(response, 400, "invalid_request_error") == message


def test_client_dimensions_match_api_embed(server: LiveServer, client: openai.OpenAI) -> None:
    result = client.embeddings.create(model=TINY, input=TEXTS, dimensions=8)
    raw = embed_raw(server, TEXTS, dimensions=8)
    vectors = [item.embedding for item in result.data]
    assert all(len(v) == 8 for v in vectors)
    assert_same_vectors(vectors, raw["embeddings"])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_client_single_string(server: LiveServer, client: openai.OpenAI) -> None:
    result = client.embeddings.create(model=TINY_CLS, input=SKY, encoding_format="float")
    raw = server.vectors(TINY_CLS, SKY)
    assert len(result.data) == 1
    np.testing.assert_allclose(result.data[0].embedding, raw[0], atol=1e-6)


# -- token ids -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokens_on(stores: Stores) -> Iterator[LiveServer]:
    """A server with token-id input switched on (it is off by default)."""
    with running_server(settings_for(stores, allow_token_input=True)) as live:
        yield live


@pytest.fixture
def token_client(tokens_on: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{tokens_on.url}/v1", api_key="x", max_retries=0) as client:
        yield client


def test_token_ids_with_specials_equal_the_text(
    tokens_on: LiveServer, token_client: openai.OpenAI
) -> None:
    result = token_client.embeddings.create(model=TINY, input=WITH_SPECIALS)
    raw = embed_raw(tokens_on, [SKY])
    assert_same_vectors([result.data[0].embedding], raw["embeddings"])
    assert result.usage.prompt_tokens == len(WITH_SPECIALS) == raw["prompt_eval_count"]


def test_token_ids_get_no_specials_added(
    tokens_on: LiveServer, token_client: openai.OpenAI
) -> None:
    result = token_client.embeddings.create(model=TINY, input=WORD_IDS, encoding_format="float")
    assert result.usage.prompt_tokens == len(WORD_IDS)
    bare = np.asarray(result.data[0].embedding)
    text = tokens_on.vectors(TINY, SKY)[0]
    assert cosine(bare, text) < 0.9999  # a different sequence, so a different vector
    np.testing.assert_allclose(np.linalg.norm(bare), 1.0, atol=1e-5)


def test_lists_of_token_ids(tokens_on: LiveServer, token_client: openai.OpenAI) -> None:
    other = "the grass is green"
    other_ids = [
        tiny_token_id("[CLS]"),
        *(tiny_token_id(w) for w in other.split()),
        tiny_token_id("[SEP]"),
    ]
    result = token_client.embeddings.create(model=TINY, input=[WITH_SPECIALS, other_ids])
    raw = embed_raw(tokens_on, [SKY, other])
    assert_same_vectors([item.embedding for item in result.data], raw["embeddings"])
    assert result.usage.total_tokens == raw["prompt_eval_count"] == 7 + 6


def test_token_ids_longer_than_the_context_are_cut(tokens_on: LiveServer) -> None:
    ids = [tiny_token_id("sky")] * (TINY_CONTEXT + 50)
    data = ok(tokens_on, {"model": TINY, "input": ids})
    assert data["usage"]["prompt_tokens"] == TINY_CONTEXT


@pytest.mark.parametrize("bad", [len(TINY_TOKENS), 10**9, -1])
def test_out_of_vocabulary_token_id_is_400(tokens_on: LiveServer, bad: int) -> None:
    for value in ([*WORD_IDS, bad], [WORD_IDS, [bad]]):
        response = post(tokens_on, {"model": TINY, "input": value})
        message = openai_error(response, 400, "invalid_request_error")
        assert str(bad) in message


def test_client_raises_bad_request_for_an_out_of_vocabulary_id(
    token_client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        token_client.embeddings.create(model=TINY, input=[len(TINY_TOKENS)])
    assert caught.value.status_code == 400


# -- inputs and errors -----------------------------------------------------------------


def test_empty_string_is_one_empty_input(server: LiveServer) -> None:
    data = ok(server, {"model": TINY, "input": ""})
    assert len(data["data"]) == 1
    assert data["usage"]["prompt_tokens"] == 2  # [CLS] [SEP]
    np.testing.assert_allclose(
        data["data"][0]["embedding"], server.vectors(TINY, [""])[0], atol=1e-6
    )


@pytest.mark.parametrize(
    "body",
    [
        {"model": TINY},
        {"model": TINY, "input": None},
        {"model": TINY, "input": []},
        {"model": TINY, "input": [[]]},
        {"model": TINY, "input": 5},
        {"model": TINY, "input": {"text": SKY}},
        {"model": TINY, "input": [SKY, 5]},
        {"model": TINY, "input": [1, [2]]},
        {"model": TINY, "input": [True, False]},
    ],
)
def test_missing_or_malformed_input_is_400(server: LiveServer, body: dict[str, Any]) -> None:
    response = post(server, body)
    assert openai_error(response, 400, "invalid_request_error") == "invalid input"


def test_model_is_required(server: LiveServer) -> None:
    response = post(server, {"input": SKY})
    assert openai_error(response, 400, "invalid_request_error") == "model is required"


def test_unknown_model_is_404_not_found_error(server: LiveServer) -> None:
    response = post(server, {"model": "nope", "input": SKY})
    message = openai_error(response, 404, "not_found_error")
    assert message == 'model "nope" not found, try pulling it first'


def test_client_raises_not_found_for_an_unknown_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.embeddings.create(model="nope", input=SKY)


def test_response_shape_and_model_echo(server: LiveServer) -> None:
    data = ok(server, {"model": "TINY:latest", "input": [SKY, SKY], "user": "someone"})
    assert set(data) == {"object", "data", "model", "usage"}
    assert data["object"] == "list"
    assert data["model"] == "TINY:latest"
    assert [set(item) for item in data["data"]] == [{"object", "embedding", "index"}] * 2
    assert [item["object"] for item in data["data"]] == ["embedding"] * 2
    assert data["usage"] == {"prompt_tokens": 14, "total_tokens": 14}


# -- models ------------------------------------------------------------------------------


def tag_names(live: LiveServer) -> list[str]:
    return [m["name"] for m in live.client.get("/api/tags").json()["models"]]


def test_models_list_has_the_tags_names(server: LiveServer, client: openai.OpenAI) -> None:
    response = server.client.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert [item["id"] for item in body["data"]] == tag_names(server)
    for item in body["data"]:
        assert item["object"] == "model"
        assert isinstance(item["created"], int) and item["created"] > 0
        assert isinstance(item["owned_by"], str) and item["owned_by"]
    assert [model.id for model in client.models.list()] == tag_names(server)


def test_models_list_leaves_out_corrupt_files_as_tags_does(
    serve: ServerFactory, tmp_path: Path, model_files: ModelFiles
) -> None:
    stores = make_stores(tmp_path, model_files)
    (stores.emberd / "bad.gguf").write_bytes(b"not a GGUF" * 100)
    (stores.emberd / "cut.gguf").write_bytes(model_files.mean.read_bytes()[:200])
    live = serve(model_stores=stores)
    ids = [item["id"] for item in live.client.get("/v1/models").json()["data"]]
    assert "bad:latest" not in ids and "cut:latest" not in ids
    assert ids == tag_names(live)


def test_model_by_name(server: LiveServer, client: openai.OpenAI) -> None:
    response = server.client.get(f"/v1/models/{TINY}")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == "tiny:latest" and body["object"] == "model"
    assert client.models.retrieve(TINY).id == "tiny:latest"
    namespaced = server.client.get("/v1/models/library/tiny:latest")
    assert namespaced.status_code == 200 and namespaced.json()["id"] == "tiny:latest"


def test_unknown_model_by_name_is_404(server: LiveServer, client: openai.OpenAI) -> None:
    response = server.client.get("/v1/models/nope")
    openai_error(response, 404, "not_found_error")
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
