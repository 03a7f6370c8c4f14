"""The rerank routes over real HTTP, on tiny reranker GGUFs run by llama.cpp."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.harness import (
    TINY,
    LiveServer,
    ModelFiles,
    RecordingBackend,
    Stores,
    in_background,
    make_stores,
    running_server,
    settings_for,
    wait_until,
)
from tests.support.tiny_model import write_ollama_layout
from tests.support.tiny_reranker import (
    WORDS,
    XlmrWeights,
    reference_scores,
    write_bert_cross_encoder,
    write_xlmr_reranker,
    xlmr_weights,
)

RERANKER = "xlmr-reranker"  # in emberd's store, rank pooling declared
PAIR_RERANKER = "xlmr-pair"  # a two-label head: softmax probability of "relevant"
BERT_CE = "bert-cross-encoder"  # refused
OLLAMA_RERANKER = "bge-reranker"  # in Ollama's store, no pooling key
QUERY = "why is the sky blue"
DOCUMENTS = ["the sky is blue", "green grass and red fire", "hello world",
             "the sea water is cold and blue", "what colour is the sun"]  # fmt: skip
TOLERANCE = 5e-3


@dataclass(frozen=True)
class RerankStores:
    stores: Stores
    weights: XlmrWeights
    pair_weights: XlmrWeights


@pytest.fixture(scope="module")
def rerank_stores(
    tmp_path_factory: pytest.TempPathFactory, model_files: ModelFiles
) -> RerankStores:
    root = tmp_path_factory.mktemp("rerank-stores")
    stores = make_stores(root, model_files)
    weights = xlmr_weights(seed=7)
    pair_weights = xlmr_weights(labels=("irrelevant", "relevant"), seed=5)
    write_xlmr_reranker(stores.emberd / f"{RERANKER}.gguf", weights)
    write_xlmr_reranker(stores.emberd / f"{PAIR_RERANKER}.gguf", pair_weights)
    write_bert_cross_encoder(stores.emberd / f"{BERT_CE}.gguf")
    loose = write_xlmr_reranker(root / "loose.gguf", weights, pooling_key=False)
    write_ollama_layout(stores.ollama, loose, name=OLLAMA_RERANKER)
    return RerankStores(stores, weights, pair_weights)


@pytest.fixture(scope="module")
def server(rerank_stores: RerankStores) -> Iterator[LiveServer]:
    with running_server(settings_for(rerank_stores.stores)) as live:
        yield live


def rerank(server: LiveServer, path: str = "/v1/rerank", **body: Any) -> dict[str, Any]:
    return server.post_ok(path, {"model": RERANKER, "query": QUERY, **body})


def scores_by_index(answer: dict[str, Any]) -> dict[int, float]:
    return {item["index"]: item["relevance_score"] for item in answer["results"]}


# -- the Jina/Cohere dialect --------------------------------------------------------


def test_documents_come_back_ordered_by_the_models_score(
    server: LiveServer, rerank_stores: RerankStores
) -> None:
    answer = rerank(server, documents=DOCUMENTS)
    assert answer["model"] == RERANKER and answer["object"] == "list"
    expected = reference_scores(rerank_stores.weights, QUERY, DOCUMENTS)
    assert [item["index"] for item in answer["results"]] == np.argsort(-expected).tolist()
    got = scores_by_index(answer)
    np.testing.assert_allclose([got[i] for i in range(len(DOCUMENTS))], expected, atol=TOLERANCE)
    assert all("document" not in item for item in answer["results"])
    # <s> q </s></s> d </s>: 5 query tokens, the document's and 4 special tokens per pair.
    tokens = sum(5 + len(d.split()) + 4 for d in DOCUMENTS)
    assert answer["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}


@pytest.mark.parametrize("path", ["/rerank", "/v1/reranking"])
def test_the_other_paths_answer_the_same(server: LiveServer, path: str) -> None:
    assert rerank(server, path, documents=DOCUMENTS) == rerank(server, documents=DOCUMENTS)


def test_top_n_keeps_the_best(server: LiveServer) -> None:
    full = rerank(server, documents=DOCUMENTS)["results"]
    assert rerank(server, documents=DOCUMENTS, top_n=2)["results"] == full[:2]
    assert rerank(server, documents=DOCUMENTS, top_n=50)["results"] == full


def test_return_documents_and_text_objects(server: LiveServer) -> None:
    objects = [{"text": d} if i % 2 else d for i, d in enumerate(DOCUMENTS)]
    answer = rerank(server, documents=objects, return_documents=True)
    for item in answer["results"]:
        assert item["document"] == {"text": DOCUMENTS[item["index"]]}
    assert scores_by_index(answer) == scores_by_index(rerank(server, documents=DOCUMENTS))


def test_an_empty_document_is_scored(server: LiveServer, rerank_stores: RerankStores) -> None:
    answer = rerank(server, documents=["", "the sky is blue"])
    expected = reference_scores(rerank_stores.weights, QUERY, ["", "the sky is blue"])
    got = scores_by_index(answer)
    np.testing.assert_allclose([got[0], got[1]], expected, atol=TOLERANCE)


def test_a_thousand_documents(server: LiveServer) -> None:
    documents = [f"{a} {b} {c}" for a, b, c in itertools.product(WORDS[:10], repeat=3)]
    answer = rerank(server, documents=documents)
    results = answer["results"]
    assert sorted(item["index"] for item in results) == list(range(1000))
    scores = [item["relevance_score"] for item in results]
    assert scores == sorted(scores, reverse=True)
    few = scores_by_index(rerank(server, documents=documents[:7]))
    many = scores_by_index(answer)
    np.testing.assert_allclose([many[i] for i in range(7)], [few[i] for i in range(7)], atol=1e-4)


def test_a_label_pair_head_gives_probabilities(
    server: LiveServer, rerank_stores: RerankStores
) -> None:
    got = scores_by_index(rerank(server, model=PAIR_RERANKER, documents=DOCUMENTS))
    expected = reference_scores(rerank_stores.pair_weights, QUERY, DOCUMENTS)
    np.testing.assert_allclose([got[i] for i in range(len(DOCUMENTS))], expected, atol=TOLERANCE)
    assert all(0.0 <= s <= 1.0 for s in got.values())


def test_concurrent_rerank_requests_share_decodes(rerank_stores: RerankStores) -> None:
    backend = RecordingBackend(hold_decodes=True)
    with running_server(settings_for(rerank_stores.stores), backend) as live:

        def post(documents: list[str]) -> Any:
            def call() -> httpx.Response:
                with httpx.Client(base_url=live.url, timeout=10) as client:
                    body = {"model": RERANKER, "query": QUERY, "documents": documents}
                    return client.post("/v1/rerank", json=body)

            return in_background(call)

        first = post(DOCUMENTS[:2])
        assert backend.decoding.wait(10)  # the first request's decode is held
        # Both fit one decode: the context (64) bounds a decode's tokens.
        others = [post(["hello world"]), post(["hello world", "the sky is blue"])]
        wait_until(lambda: live.queued == 2)  # both wait behind the held decode
        backend.release()
        answers = [call().json() for call in (first, *others)]
        (model,) = backend.models
    assert [len(a["results"]) for a in answers] == [2, 1, 2]
    # One decode for the first request, one shared by the two that waited.
    assert (model.stats.decodes, model.stats.sequences) == (2, 5)


# -- over the context ------------------------------------------------------------------


def test_truncate_cuts_the_document_not_the_query(server: LiveServer) -> None:
    # Context 64: 4 special tokens and the 5-token query leave 55 for the document.
    long_doc, cut_doc = " ".join(["blue"] * 80), " ".join(["blue"] * 55)
    answer = server.post_ok(
        "/api/rerank", {"model": RERANKER, "query": QUERY, "documents": [long_doc, cut_doc]}
    )
    got = scores_by_index(answer)
    assert got[0] == pytest.approx(got[1], abs=1e-5)
    assert answer["prompt_eval_count"] == 2 * 64
    refused = server.client.post(
        "/api/rerank",
        json={"model": RERANKER, "query": QUERY, "documents": [long_doc], "truncate": False},
    )
    assert refused.status_code == 400
    assert refused.json() == {"error": "the input length exceeds the context length"}
    # The Jina/Cohere dialect always truncates.
    assert scores_by_index(rerank(server, documents=[long_doc]))[0] == pytest.approx(got[0])


def test_a_query_that_fills_the_context_is_refused(server: LiveServer) -> None:
    response = server.client.post(
        "/v1/rerank", json={"model": RERANKER, "query": "sky " * 70, "documents": ["a"]}
    )
    assert response.status_code == 400
    assert "query leaves no room" in response.json()["error"]["message"]


# -- Ollama's conventions ----------------------------------------------------------------


def test_api_rerank_shape_and_keep_alive(server: LiveServer) -> None:
    answer = server.post_ok(
        "/api/rerank",
        {"model": RERANKER, "query": QUERY, "documents": DOCUMENTS, "top_n": 3,
         "return_documents": True, "keep_alive": 0, "options": {"num_ctx": 64}},
    )  # fmt: skip
    assert set(answer) == {"model", "results", "total_duration", "load_duration",
                           "prompt_eval_count"}  # fmt: skip
    assert len(answer["results"]) == 3 and answer["results"][0]["document"]["text"]
    assert answer["total_duration"] >= answer["load_duration"] > 0
    assert RERANKER not in [name.split(":")[0] for name in server.loaded_names()]


def test_a_reranker_in_ollamas_store_is_served_in_place(
    server: LiveServer, rerank_stores: RerankStores
) -> None:
    before = sorted(os.listdir(rerank_stores.stores.emberd))
    answer = server.post_ok(
        "/api/rerank", {"model": OLLAMA_RERANKER, "query": QUERY, "documents": DOCUMENTS}
    )
    expected = reference_scores(rerank_stores.weights, QUERY, DOCUMENTS)
    got = scores_by_index(answer)
    np.testing.assert_allclose([got[i] for i in range(len(DOCUMENTS))], expected, atol=TOLERANCE)
    assert sorted(os.listdir(rerank_stores.stores.emberd)) == before
    assert f"{OLLAMA_RERANKER}:latest" in server.loaded_names()


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/rerank", "/api/rerank"])
def test_empty_documents_are_a_400(server: LiveServer, path: str) -> None:
    response = server.client.post(path, json={"model": RERANKER, "query": QUERY, "documents": []})
    assert response.status_code == 400
    body = response.json()
    message = body["error"]["message"] if path.startswith("/v1") else body["error"]
    assert message == "documents must not be empty"
    if path.startswith("/v1"):
        assert body["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"documents": ["a"]}, "query is required and must be a string"),
        ({"query": "a"}, "documents is required and must be a list"),
        ({"query": "a", "documents": [{"title": "x"}]}, "each document must be a string"),
        ({"query": "a", "documents": [3]}, "each document must be a string"),
        ({"query": "a", "documents": ["a"], "top_n": 0}, "top_n must be a positive integer"),
    ],
)
def test_malformed_requests_are_400s(
    server: LiveServer, body: dict[str, Any], message: str
) -> None:
    response = server.client.post("/v1/rerank", json={"model": RERANKER, **body})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith(message)


def test_an_embedding_model_on_a_rerank_route(server: LiveServer) -> None:
    response = server.client.post(
        "/v1/rerank", json={"model": TINY, "query": QUERY, "documents": DOCUMENTS}
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        f'"{TINY}" does not support reranking (its capability is embedding)'
    )
    response = server.client.post(
        "/api/rerank", json={"model": TINY, "query": QUERY, "documents": DOCUMENTS}
    )
    assert response.status_code == 400 and "capability is embedding" in response.json()["error"]


@pytest.mark.parametrize(
    ("path", "body"),
    [("/api/embed", {"input": "hello"}), ("/v1/embeddings", {"input": "hello"}),
     ("/api/embeddings", {"prompt": "hello"})],
)  # fmt: skip
def test_a_reranker_on_an_embedding_route(
    server: LiveServer, path: str, body: dict[str, Any]
) -> None:
    response = server.client.post(path, json={"model": RERANKER, **body})
    assert response.status_code == 400
    error = response.json()["error"]
    message = error["message"] if isinstance(error, dict) else error
    assert message == f'"{RERANKER}" does not support embeddings (its capability is rerank)'


def test_a_bert_cross_encoder_is_refused_clearly(server: LiveServer) -> None:
    response = server.client.post(
        "/api/rerank", json={"model": BERT_CE, "query": QUERY, "documents": DOCUMENTS}
    )
    assert response.status_code == 400
    assert "BERT cross-encoders" in response.json()["error"]
    assert server.post_ok("/api/embed", {"model": TINY, "input": "still serving"})["embeddings"]


# -- listing and showing -------------------------------------------------------------------


def test_show_lists_the_rerank_capability_and_the_score(server: LiveServer) -> None:
    shown = server.post_ok("/api/show", {"model": RERANKER})
    assert shown["capabilities"] == ["rerank"]
    assert shown["rerank"] == {"score": "raw logit of the classifier's single output"}
    pair = server.post_ok("/api/show", {"model": PAIR_RERANKER})
    assert pair["rerank"]["score"] == "softmax probability of label 'relevant' (output 1)"
    labels = "bert.classifier.output_labels"  # llama.cpp runs XLM-R as bert
    assert pair["model_info"][labels] is None
    verbose = server.post_ok("/api/show", {"model": PAIR_RERANKER, "verbose": True})
    assert verbose["model_info"][labels] == ["irrelevant", "relevant"]
    refused = server.post_ok("/api/show", {"model": BERT_CE})
    assert "BERT cross-encoders" in refused["rerank"]["unsupported"]
    assert server.post_ok("/api/show", {"model": TINY})["capabilities"] == ["embedding"]


def test_tags_and_models_list_rerankers(server: LiveServer) -> None:
    tags = [m["name"] for m in server.client.get("/api/tags").json()["models"]]
    models = [m["id"] for m in server.client.get("/v1/models").json()["data"]]
    for name in (RERANKER, PAIR_RERANKER, OLLAMA_RERANKER):
        assert f"{name}:latest" in tags and f"{name}:latest" in models


# -- a real client, unchanged ----------------------------------------------------------------


def test_litellm_rerank_against_v1_rerank(
    server: LiveServer, rerank_stores: RerankStores, monkeypatch: pytest.MonkeyPatch
) -> None:
    # litellm would fetch its price list from the network when imported.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    response = litellm.rerank(
        model=f"jina_ai/{RERANKER}",
        query=QUERY,
        documents=DOCUMENTS,
        top_n=3,
        return_documents=True,
        api_base=server.url,
        api_key="unused",
    )
    expected = reference_scores(rerank_stores.weights, QUERY, DOCUMENTS)
    best = np.argsort(-expected)[:3].tolist()
    assert [result["index"] for result in response.results] == best
    for result in response.results:
        assert result["document"] == {"text": DOCUMENTS[result["index"]]}
        assert result["relevance_score"] == pytest.approx(expected[result["index"]], abs=TOLERANCE)
