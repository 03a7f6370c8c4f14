"""Rerankers on the llama.cpp backend: rank pooling, pairs, and scores against numpy."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from emberd.backends.base import LoadOptions, Pooling
from emberd.server.core.rerank import build_pairs
from tests.support.runners import DrivenModel, loaded_in_runner
from tests.support.tiny_reranker import (
    BOS,
    EOS,
    XlmrWeights,
    piece_ids,
    reference_pair,
    reference_scores,
    write_xlmr_reranker,
    xlmr_weights,
)

OPTIONS = LoadOptions(
    num_ctx=4096,
    num_batch=2048,
    num_gpu=0,
    main_gpu=0,
    use_mmap=True,
    use_mlock=False,
    num_thread=1,
)
QUERY = "why is the sky blue"
DOCUMENTS = (
    "the sky is blue",
    "green grass and red fire",
    "hello world",
    "the sea water is cold and blue",
    "a big old cat and a small dog",
    "what colour is the sun",
    "",
)
# llama.cpp's fp16 GELU table and flash attention account for about 2e-3.
TOLERANCE = 5e-3


@pytest.fixture(scope="module")
def weights() -> XlmrWeights:
    return xlmr_weights(seed=7)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, weights: XlmrWeights) -> Iterator[DrivenModel]:
    """The tiny XLM-R reranker without a pooling key: found by its classifier tensors."""
    path = write_xlmr_reranker(
        tmp_path_factory.mktemp("rerank") / "xlmr.gguf", weights, pooling_key=False
    )
    with loaded_in_runner(path, OPTIONS) as loaded:
        yield loaded


def pairs_of(model: DrivenModel, documents: Sequence[str]) -> list[list[int]]:
    """The model's (QUERY, document) pairs."""
    return model.run(build_pairs(model.model, QUERY, documents, limit=64, truncate=True))


def decode_all(driven: DrivenModel, pairs: list[list[int]]) -> np.ndarray:
    """Head values of `pairs`, several pairs per decode as they fit."""
    model = driven.model
    rows, batch = [], []
    for pair in pairs:
        if batch and sum(map(len, batch)) + len(pair) > model.max_batch_tokens():
            rows.append(driven.embed(batch))
            batch = []
        batch.append(pair)
    rows.append(driven.embed(batch))
    assert len(rows) < len(pairs)  # some decodes held more than one pair
    return np.concatenate(rows)


def test_loads_with_rank_pooling(model: DrivenModel) -> None:
    facts = model.model.facts
    assert facts.pooling == Pooling.RANK
    assert facts.n_cls_out == 1 and facts.width == 1
    # Special ids come from the GGUF: <s> before, </s> after, a second </s> between.
    assert (facts.prefix, facts.suffix, facts.pair_separator) == ((BOS,), (EOS,), (EOS,))


def test_pairs_are_joined_as_xlmr_joins_them(model: DrivenModel) -> None:
    assert model.tokenize("the sky is blue") == piece_ids("the sky is blue")
    pairs = pairs_of(model, ["the sky is blue", ""])
    assert pairs == [reference_pair(QUERY, "the sky is blue"), reference_pair(QUERY, "")]


def test_scores_match_an_independent_forward_pass(model: DrivenModel, weights: XlmrWeights) -> None:
    pairs = pairs_of(model, DOCUMENTS)
    scores = decode_all(model, pairs)[:, 0]
    expected = reference_scores(weights, QUERY, DOCUMENTS)
    np.testing.assert_allclose(scores, expected, atol=TOLERANCE, rtol=0)
    # The scores are far enough apart for the order to be a real check.
    gaps = np.diff(np.sort(expected))
    assert gaps.min() > 4 * TOLERANCE, gaps
    assert np.argsort(-scores).tolist() == np.argsort(-expected).tolist()


def test_a_pair_scores_the_same_alone_and_in_a_batch(model: DrivenModel) -> None:
    pairs = pairs_of(model, DOCUMENTS)
    together = decode_all(model, pairs)[:, 0]
    alone = np.array([model.embed([pair])[0, 0] for pair in pairs])
    np.testing.assert_allclose(together, alone, atol=1e-4)


def test_a_label_pair_head_gives_two_values(tmp_path: Path) -> None:
    weights = xlmr_weights(labels=("irrelevant", "relevant"), seed=5)
    path = write_xlmr_reranker(tmp_path / "pair.gguf", weights)
    with loaded_in_runner(path, OPTIONS) as loaded:
        assert loaded.model.facts.n_cls_out == 2
        values = decode_all(loaded, pairs_of(loaded, DOCUMENTS))
    assert values.shape == (len(DOCUMENTS), 2)
    exp = np.exp(values - values.max(1, keepdims=True))
    probabilities = exp[:, 1] / exp.sum(1)
    np.testing.assert_allclose(
        probabilities, reference_scores(weights, QUERY, DOCUMENTS), atol=TOLERANCE
    )
