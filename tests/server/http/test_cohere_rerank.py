"""POST /v2/rerank: Cohere's v2 dialect, with Cohere's own SDK and litellm's `cohere/` route."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.harness import (
    LiveServer,
    ModelFiles,
    make_stores,
    running_server,
    settings_for,
)
from tests.support.tiny_reranker import (
    XlmrWeights,
    reference_scores,
    write_xlmr_reranker,
    xlmr_weights,
)

RERANKER = "xlmr-reranker"
QUERY = "why is the sky blue"
DOCUMENTS = ["the sky is blue", "green grass and red fire", "hello world",
             "the sea water is cold and blue", "what colour is the sun"]  # fmt: skip
TOLERANCE = 5e-3


@pytest.fixture(scope="module")
def weights() -> XlmrWeights:
    return xlmr_weights(seed=7)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, model_files: ModelFiles, weights: XlmrWeights
) -> Iterator[LiveServer]:
    stores = make_stores(tmp_path_factory.mktemp("cohere-stores"), model_files)
    write_xlmr_reranker(Path(stores.emberd) / f"{RERANKER}.gguf", weights)
    with running_server(settings_for(stores)) as live:
        yield live


@pytest.fixture
def cohere_client(server: LiveServer) -> Iterator[Any]:
    """Cohere's v2 client on the server, its connections closed afterwards."""
    import cohere

    with httpx.Client() as http:
        yield cohere.ClientV2(base_url=server.url, api_key="unused", httpx_client=http)


def test_cohere_client_v2_rerank(cohere_client: Any, weights: XlmrWeights) -> None:
    client = cohere_client
    response = client.rerank(model=RERANKER, query=QUERY, documents=DOCUMENTS, top_n=3)
    expected = reference_scores(weights, QUERY, DOCUMENTS)
    assert [r.index for r in response.results] == np.argsort(-expected)[:3].tolist()
    for result in response.results:
        assert result.relevance_score == pytest.approx(expected[result.index], abs=TOLERANCE)
    assert response.id
    assert response.meta is not None and response.meta.api_version is not None
    assert response.meta.api_version.version == "2"
    assert response.meta.tokens is not None
    # <s> q </s></s> d </s>: 5 query tokens, the document's and 4 special tokens per pair.
    assert response.meta.tokens.input_tokens == sum(5 + len(d.split()) + 4 for d in DOCUMENTS)


def test_max_tokens_per_doc_cuts_each_document(server: LiveServer) -> None:
    long = "the sea water is cold and blue"
    cut = server.post_ok(
        "/v2/rerank",
        {"model": RERANKER, "query": QUERY, "documents": [long], "max_tokens_per_doc": 2},
    )
    short = server.post_ok(
        "/v2/rerank", {"model": RERANKER, "query": QUERY, "documents": ["the sea"]}
    )
    assert cut["results"][0]["relevance_score"] == pytest.approx(
        short["results"][0]["relevance_score"], abs=1e-6
    )
    assert cut["meta"]["tokens"]["input_tokens"] == 5 + 2 + 4


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"documents": []}, "documents must not be empty"),
        ({"documents": ["a"], "max_tokens_per_doc": 0}, "max_tokens_per_doc must be a positive"),
        ({"documents": "a"}, "documents is required and must be a list"),
    ],
)
def test_errors_come_in_cohere_shape(
    server: LiveServer, body: dict[str, object], message: str
) -> None:
    response = server.client.post("/v2/rerank", json={"model": RERANKER, "query": QUERY, **body})
    assert response.status_code == 400
    assert set(response.json()) == {"message"}
    assert response.json()["message"].startswith(message)


def test_cohere_client_sees_a_bad_request(cohere_client: Any) -> None:
    import cohere

    with pytest.raises(cohere.BadRequestError) as info:
        cohere_client.rerank(model=RERANKER, query=QUERY, documents=[])
    assert "documents must not be empty" in str(info.value.body)


def test_litellm_cohere_route_posts_to_v2_rerank(
    server: LiveServer, weights: XlmrWeights, monkeypatch: pytest.MonkeyPatch
) -> None:
    # litellm would fetch its price list from the network when imported.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    response = litellm.rerank(
        model=f"cohere/{RERANKER}",
        query=QUERY,
        documents=DOCUMENTS,
        top_n=2,
        api_base=server.url,
        api_key="unused",
    )
    expected = reference_scores(weights, QUERY, DOCUMENTS)
    assert [r["index"] for r in response.results] == np.argsort(-expected)[:2].tolist()
    for result in response.results:
        assert result["relevance_score"] == pytest.approx(expected[result["index"]], abs=TOLERANCE)
