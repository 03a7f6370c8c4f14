"""Rerankers driven by a rerank prompt (Qwen3-Reranker), on a tiny random Qwen3 GGUF."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from emberd.backends.base import LoadOptions, Pooling
from emberd.models.capabilities import rerank_head
from emberd.models.gguf_meta import read_gguf_info
from emberd.server.core.rerank import build_pairs, fill_template
from tests.support.harness import LiveServer, ModelFiles, make_stores, running_server, settings_for
from tests.support.runners import DrivenModel, loaded_in_runner
from tests.support.tiny_qwen3_reranker import (
    TEMPLATE,
    Qwen3Weights,
    qwen3_weights,
    reference_ids,
    reference_scores,
    write_qwen3_reranker,
)

OPTIONS = LoadOptions(
    num_ctx=1024,
    num_batch=1024,
    num_gpu=0,
    main_gpu=0,
    use_mmap=True,
    use_mlock=False,
    num_thread=1,
)
QUERY = "why is the sky blue?"
DOCUMENTS = ["the sky is blue because of rayleigh scattering", "grass is green",
             "hello world", ""]  # fmt: skip
NAME = "qwen3-reranker"
TOLERANCE = 5e-3


@pytest.fixture(scope="module")
def weights() -> Qwen3Weights:
    return qwen3_weights(seed=1)


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory: pytest.TempPathFactory, weights: Qwen3Weights) -> Path:
    return write_qwen3_reranker(tmp_path_factory.mktemp("qwen3") / f"{NAME}.gguf", weights)


@pytest.fixture(scope="module")
def model(gguf_path: Path) -> Iterator[DrivenModel]:
    with loaded_in_runner(gguf_path, OPTIONS) as loaded:
        yield loaded


def test_the_head_is_the_probability_of_yes(gguf_path: Path) -> None:
    head = rerank_head(read_gguf_info(gguf_path))
    assert (head.outputs, head.positive, head.label, head.graph_softmax) == (2, 0, "yes", True)
    values = np.array([[0.25, 0.75]], dtype=np.float32)
    assert head.scores(values).tolist() == [0.25]  # llama.cpp's softmax is not applied twice


def test_pairs_are_the_filled_prompt(model: DrivenModel) -> None:
    facts = model.model.facts
    assert facts.pooling == Pooling.RANK and facts.rerank_template == TEMPLATE
    pairs = model.run(build_pairs(model.model, QUERY, DOCUMENTS, limit=1024, truncate=True))
    expected = [reference_ids(fill_template(TEMPLATE, QUERY, d)) for d in DOCUMENTS]
    assert pairs == expected


def test_a_placeholder_inside_a_text_is_left_alone() -> None:
    filled = fill_template("q={query} d={document}", "{document}", "x")
    assert filled == "q={document} d=x"


def test_scores_match_an_independent_forward_pass(
    model: DrivenModel, weights: Qwen3Weights
) -> None:
    pairs = model.run(build_pairs(model.model, QUERY, DOCUMENTS, limit=1024, truncate=True))
    head = rerank_head(read_gguf_info(model.path))
    alone = head.scores(np.concatenate([model.embed([pair]) for pair in pairs]))
    together = head.scores(model.embed(pairs[:1] + pairs[3:]))  # two pairs in one decode
    expected = reference_scores(weights, QUERY, DOCUMENTS)
    np.testing.assert_allclose(alone, expected, atol=TOLERANCE)
    np.testing.assert_allclose(together, alone[[0, 3]], atol=1e-4)
    assert np.argsort(-alone).tolist() == np.argsort(-expected).tolist()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, model_files: ModelFiles, gguf_path: Path
) -> Iterator[LiveServer]:
    stores = make_stores(tmp_path_factory.mktemp("qwen3-stores"), model_files)
    (stores.emberd / gguf_path.name).write_bytes(gguf_path.read_bytes())
    with running_server(settings_for(stores)) as live:
        yield live


def test_rerank_route_with_a_prompt_model(server: LiveServer, weights: Qwen3Weights) -> None:
    answer = server.post_ok("/v1/rerank", {"model": NAME, "query": QUERY, "documents": DOCUMENTS})
    expected = reference_scores(weights, QUERY, DOCUMENTS)
    assert [item["index"] for item in answer["results"]] == np.argsort(-expected).tolist()
    for item in answer["results"]:
        assert item["relevance_score"] == pytest.approx(expected[item["index"]], abs=TOLERANCE)
    shown = server.post_ok("/api/show", {"model": NAME})
    assert shown["capabilities"] == ["rerank"]
    assert "probability of label 'yes'" in shown["rerank"]["score"]


def test_a_long_document_is_cut_to_fit_the_prompt(
    server: LiveServer, weights: Qwen3Weights
) -> None:
    num_ctx = 384
    room = num_ctx - len(reference_ids(fill_template(TEMPLATE, QUERY, "")))
    document = "the sky is blue " * 20  # 320 bytes, one token each
    body = {"model": NAME, "query": QUERY, "documents": [document], "options": {"num_ctx": num_ctx}}
    answer = server.post_ok("/api/rerank", body)
    assert answer["prompt_eval_count"] == num_ctx
    expected = reference_scores(weights, QUERY, [document[:room]])[0]
    assert answer["results"][0]["relevance_score"] == pytest.approx(expected, abs=TOLERANCE)
    refused = server.client.post("/api/rerank", json={**body, "truncate": False})
    assert refused.status_code == 400
    assert refused.json() == {"error": "the input length exceeds the context length"}
