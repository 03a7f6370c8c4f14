"""POST /api/embed over HTTP against the real llama.cpp backend and the tiny BERT."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.float_text import NUMBER, assert_shortest_float32_text
from tests.support.harness import (
    SKY,
    TINY,
    TINY_CONTEXT,
    TINY_DIM,
    LiveServer,
    RecordingBackend,
    ServerFactory,
)
from tests.support.tiny_model import TINY_TOKENS

# Sentences of whole vocabulary words: each word is exactly one token.
WORDS = ("why", "is", "the", "sky", "blue", "grass", "green", "sun", "red", "sea", "water", "tree")
SPECIALS = 2  # [CLS] and [SEP]


def expected_tokens(text: str) -> int:
    """Tokens of a text made of whole vocabulary words, specials included."""
    words = text.split()
    assert all(word in TINY_TOKENS for word in words)
    return len(words) + SPECIALS


def norms(vectors: np.ndarray) -> np.ndarray:
    return np.linalg.norm(vectors, axis=1)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- input forms -------------------------------------------------------------------


def test_string_input_is_one_normalised_embedding(server: LiveServer) -> None:
    response = server.embed({"model": TINY, "input": SKY})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == TINY
    vectors = np.asarray(body["embeddings"])
    assert vectors.shape == (1, TINY_DIM)
    np.testing.assert_allclose(norms(vectors), 1.0, atol=1e-5)
    assert body["prompt_eval_count"] == expected_tokens(SKY) == 7


def test_list_input_keeps_order_and_matches_single_inputs(server: LiveServer) -> None:
    texts = ["why is the sky blue", "the grass is green", "hello world"]
    together = server.vectors(TINY, texts)
    assert together.shape == (3, TINY_DIM)
    np.testing.assert_allclose(norms(together), 1.0, atol=1e-5)
    for i, text in enumerate(texts):
        alone = server.vectors(TINY, text)[0]
        assert cosine(together[i], alone) > 0.9999
    # The inputs are different texts, so the rows must differ.
    assert cosine(together[0], together[1]) < 0.999


def test_list_input_counts_tokens_of_every_input(server: LiveServer) -> None:
    texts = ["why is the sky blue", "the sun", "red"]
    response = server.embed({"model": TINY, "input": texts})
    assert response.status_code == 200, response.text
    assert response.json()["prompt_eval_count"] == sum(expected_tokens(t) for t in texts) == 14


@pytest.mark.parametrize(
    "body",
    [{"input": ""}, {"input": None}, {}, {"input": []}],
    ids=["empty", "null", "absent", "empty-list"],
)
def test_no_input_loads_the_model_and_returns_no_embeddings(
    serve: ServerFactory, body: dict
) -> None:
    live = serve()
    assert live.loaded_names() == []
    response = live.embed({"model": TINY, **body})
    assert response.status_code == 200, response.text
    assert response.json() == {"model": TINY, "embeddings": []}  # Ollama's exact answer
    assert live.loaded_names() == ["tiny:latest"]


def test_empty_string_in_a_list_is_embedded(server: LiveServer) -> None:
    response = server.embed({"model": TINY, "input": ["", SKY]})
    assert response.status_code == 200, response.text
    data = response.json()
    assert len(data["embeddings"]) == 2
    assert len(data["embeddings"][0]) == TINY_DIM
    # "" is still [CLS] [SEP]: two tokens, and a real vector.
    assert data["prompt_eval_count"] == SPECIALS + expected_tokens(SKY)
    np.testing.assert_allclose(norms(np.asarray(data["embeddings"])), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "value",
    [["ok", 5], ["ok", None], [["nested"]], [{"a": 1}], 5, 1.5, True, {"text": "x"}],
    ids=["int-item", "null-item", "list-item", "object-item", "int", "float", "bool", "object"],
)
def test_wrong_input_types_are_400(server: LiveServer, value: object) -> None:
    response = server.embed({"model": TINY, "input": value})
    assert response.status_code == 400
    assert response.json() == {"error": "invalid input type"}


def test_model_is_echoed_as_sent_and_matched_case_insensitively(server: LiveServer) -> None:
    for sent in ("TINY", "Tiny:Latest", "tiny:latest"):
        response = server.embed({"model": sent, "input": SKY})
        assert response.status_code == 200, response.text
        assert response.json()["model"] == sent
    upper = server.vectors("TINY", SKY)
    lower = server.vectors(TINY, SKY)
    np.testing.assert_allclose(upper, lower, atol=1e-6)


@pytest.mark.parametrize("body", [{}, {"model": ""}], ids=["absent", "empty"])
def test_model_is_required(server: LiveServer, body: dict) -> None:
    response = server.embed({**body, "input": SKY})
    assert response.status_code == 400
    assert response.json() == {"error": "model is required"}


@pytest.mark.parametrize(
    "name", ["no-such-model:v2", "Ghost", "example.com:5000/team/ghost:1.0", "tiny:v9"]
)
@pytest.mark.parametrize("body", [{"input": SKY}, {}], ids=["input", "no-input"])
def test_unknown_model_is_404_with_the_contract_message(
    server: LiveServer, name: str, body: dict
) -> None:
    response = server.embed({"model": name, **body})
    assert response.status_code == 404
    assert response.json() == {"error": f'model "{name}" not found, try pulling it first'}


# -- dimensions --------------------------------------------------------------------


@pytest.mark.parametrize("d", [1, 8, TINY_DIM - 1])
def test_dimensions_cut_and_renormalise(server: LiveServer, d: int) -> None:
    full = server.vectors(TINY, SKY)[0]
    cut = server.vectors(TINY, SKY, dimensions=d)[0]
    assert cut.shape == (d,)
    assert np.linalg.norm(cut) == pytest.approx(1.0, abs=1e-5)
    prefix = full[:d] / np.linalg.norm(full[:d])
    np.testing.assert_allclose(cut, prefix, atol=1e-5)


def test_dimensions_of_the_full_length_change_nothing(server: LiveServer) -> None:
    full = server.vectors(TINY, SKY)[0]
    same = server.vectors(TINY, SKY, dimensions=TINY_DIM)[0]
    np.testing.assert_allclose(same, full, atol=1e-6)


@pytest.mark.parametrize("d", [0, -1, -3])
def test_dimensions_below_one_are_400(server: LiveServer, d: int) -> None:
    response = server.embed({"model": TINY, "input": SKY, "dimensions": d})
    assert response.status_code == 400
    assert response.json() == {"error": f"dimensions must be at least 1, got {d}"}


@pytest.mark.parametrize("d", [TINY_DIM + 1, 10**9])
def test_dimensions_above_the_model_are_400(server: LiveServer, d: int) -> None:
    # Refused, as OpenAI refuses more dimensions than a model has: a full-length
    # vector would not be the length the client's index expects.
    response = server.embed({"model": TINY, "input": SKY, "dimensions": d})
    assert response.status_code == 400
    assert response.json() == {
        "error": f"dimensions {d} is more than the model's embedding length of {TINY_DIM}"
    }


# -- durations and number format ---------------------------------------------------


def test_durations_are_integer_nanoseconds(serve: ServerFactory) -> None:
    live = serve()
    first = live.embed({"model": TINY, "input": SKY}).json()
    second = live.embed({"model": TINY, "input": SKY}).json()
    for data in (first, second):
        for key in ("total_duration", "load_duration", "prompt_eval_count"):
            assert type(data[key]) is int, key
        assert data["total_duration"] >= data["load_duration"] >= 0
    assert first["load_duration"] > 0
    # Nanoseconds: a first load takes well over a microsecond, and well under a minute.
    assert 1_000 < first["load_duration"] < 60 * 10**9
    # The second request found the model loaded: no load in its load_duration.
    assert second["load_duration"] < first["load_duration"]


def test_floats_are_the_shortest_float32_text(server: LiveServer) -> None:
    response = server.embed({"model": TINY, "input": [SKY, "hello world", "the sun is hot"]})
    assert response.status_code == 200
    raw = response.text
    start = raw.index('"embeddings":') + len('"embeddings":')
    numbers = NUMBER.findall(raw[start : raw.index("]]", start)])
    assert len(numbers) == 3 * TINY_DIM
    assert_shortest_float32_text(numbers)


# -- truncation --------------------------------------------------------------------


def long_text(n_words: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(n_words))


def test_long_input_is_truncated_to_num_ctx(server: LiveServer) -> None:
    num_ctx = 8
    text = long_text(20)
    kept = long_text(num_ctx - SPECIALS)
    options = {"num_ctx": num_ctx}
    response = server.embed({"model": TINY, "input": text, "options": options})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["prompt_eval_count"] == num_ctx
    expected = server.vectors(TINY, kept, options=options)[0]
    np.testing.assert_allclose(data["embeddings"][0], expected, atol=1e-5)
    # Truncation really dropped something: the whole text embeds differently.
    whole = server.vectors(TINY, text)[0]
    assert cosine(whole, expected) < 0.9999


@pytest.mark.parametrize("n_words", [3 * TINY_CONTEXT, 2000], ids=["short", "over-4k-chars"])
def test_input_over_the_trained_context_is_truncated_by_default(
    server: LiveServer, n_words: int
) -> None:
    text = long_text(n_words)
    response = server.embed({"model": TINY, "input": [text, "sky"]})
    assert response.status_code == 200, response.text
    assert response.json()["prompt_eval_count"] == TINY_CONTEXT + 3
    kept = server.vectors(TINY, long_text(TINY_CONTEXT - SPECIALS), truncate=False)[0]
    np.testing.assert_allclose(response.json()["embeddings"][0], kept, atol=1e-5)


def test_input_exactly_at_the_limit_is_not_truncated(server: LiveServer) -> None:
    text = long_text(8 - SPECIALS)
    response = server.embed(
        {"model": TINY, "input": text, "truncate": False, "options": {"num_ctx": 8}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["prompt_eval_count"] == 8


def test_truncate_false_over_the_limit_is_400(server: LiveServer) -> None:
    response = server.embed(
        {"model": TINY, "input": long_text(7), "truncate": False, "options": {"num_ctx": 8}}
    )
    assert response.status_code == 400
    assert response.json() == {"error": "the input length exceeds the context length"}


@pytest.mark.parametrize("num_ctx", [0, 1, 2])
def test_no_room_after_specials_is_400_naming_num_ctx(server: LiveServer, num_ctx: int) -> None:
    response = server.embed({"model": TINY, "input": SKY, "options": {"num_ctx": num_ctx}})
    assert response.status_code == 400
    assert response.json() == {
        "error": 'input after truncation exceeds maximum context length: option "num_ctx" '
        "leaves no room for input beside the model's special tokens"
    }


def test_one_bad_input_fails_the_whole_request(server: LiveServer) -> None:
    response = server.embed(
        {
            "model": TINY,
            "input": ["why", long_text(10), "sky"],
            "truncate": False,
            "options": {"num_ctx": 8},
        }
    )
    assert response.status_code == 400
    body = response.json()
    assert body == {"error": "the input length exceeds the context length"}
    assert "embeddings" not in body


# -- batching ----------------------------------------------------------------------


def test_many_inputs_batch_into_fewer_decodes_with_the_same_vectors(serve: ServerFactory) -> None:
    backend = RecordingBackend()
    live = serve(backend=backend)
    n = 40
    texts = [f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7) % len(WORDS)]} is {i}" for i in range(n)]
    singles = np.stack([live.vectors(TINY, text)[0] for text in texts])
    (model,) = backend.models
    before = model.stats.decodes
    assert before == n  # one decode per single request
    batched = live.vectors(TINY, texts)
    decodes = model.stats.decodes - before
    assert 1 <= decodes < n
    assert model.stats.sequences == 2 * n
    for a, b in zip(batched, singles, strict=True):
        assert cosine(a, b) > 0.9999
