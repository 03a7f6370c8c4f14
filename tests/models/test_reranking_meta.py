"""models.reranking: telling rerankers from embedding models, refusals, and the score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emberd.models.capabilities import Capability, UnsupportedReranker, capabilities, rerank_head
from emberd.models.gguf_meta import read_gguf_info
from tests.support.gguf_files import write_gguf
from tests.support.tiny_reranker import write_bert_cross_encoder, write_xlmr_reranker, xlmr_weights


def test_rank_pooling_makes_a_reranker(tmp_path: Path) -> None:
    info = read_gguf_info(write_gguf(tmp_path / "m.gguf", pooling_type=4))
    assert info.is_reranker and not info.is_embedding
    assert capabilities(info) == [Capability.RERANK]


def test_classifier_tensors_make_a_reranker_without_a_pooling_key(tmp_path: Path) -> None:
    path = write_xlmr_reranker(
        tmp_path / "m.gguf", xlmr_weights(), pooling_key=False, labels_key=False
    )
    info = read_gguf_info(path)
    assert info.pooling_type is None and info.classifier_labels is None
    assert "cls.output.weight" in info.tensor_names
    assert capabilities(info) == [Capability.RERANK]


def test_output_labels_make_a_reranker_and_are_decoded(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "m.gguf",
        pooling_type=None,
        extra={"bert.classifier.output_labels": ["no", "yes"]},
    )
    info = read_gguf_info(path)
    assert info.classifier_labels == ("no", "yes")
    assert info.is_reranker
    # /api/show keeps showing non-empty arrays as null, as for every other array.
    assert info.model_info["bert.classifier.output_labels"] is None


def test_embedding_models_stay_embedding_models(tmp_path: Path) -> None:
    info = read_gguf_info(write_gguf(tmp_path / "m.gguf", pooling_type=1))
    assert capabilities(info) == [Capability.EMBEDDING]
    info = read_gguf_info(write_gguf(tmp_path / "n.gguf", pooling_type=None))
    assert capabilities(info) == [Capability.EMBEDDING]  # pooled by mean


def test_one_output_is_the_raw_logit(tmp_path: Path) -> None:
    info = read_gguf_info(write_xlmr_reranker(tmp_path / "m.gguf", xlmr_weights()))
    head = rerank_head(info)
    assert (head.outputs, head.positive, head.softmax, head.label) == (1, 0, False, "LABEL_0")
    assert head.describe() == "raw logit of the classifier's single output"
    values = np.array([[2.5], [-1.0]], dtype=np.float32)
    assert head.scores(values).tolist() == [2.5, -1.0]


@pytest.mark.parametrize(
    ("labels", "positive"),
    [
        (("irrelevant", "relevant"), 1),
        (("yes", "no"), 0),
        (("LABEL_0", "LABEL_1"), 1),
        (("a", "b"), 1),
    ],
)
def test_a_label_pair_gets_a_softmax(
    tmp_path: Path, labels: tuple[str, str], positive: int
) -> None:
    info = read_gguf_info(write_xlmr_reranker(tmp_path / "m.gguf", xlmr_weights(labels=labels)))
    head = rerank_head(info)
    assert (head.outputs, head.positive, head.softmax) == (2, positive, True)
    assert head.label == labels[positive]
    assert repr(labels[positive]) in head.describe()
    values = np.array([[0.0, 0.0], [1.0, 3.0]], dtype=np.float32)
    expected = np.exp([0.0, 3.0 if positive else 1.0]) / np.array([2.0, np.exp(1) + np.exp(3)])
    np.testing.assert_allclose(head.scores(values), expected)


def test_many_labels_are_refused(tmp_path: Path) -> None:
    path = write_xlmr_reranker(tmp_path / "m.gguf", xlmr_weights(labels=("a", "b", "c")))
    with pytest.raises(UnsupportedReranker, match="3 output labels"):
        rerank_head(read_gguf_info(path))


def test_bert_cross_encoders_are_refused(tmp_path: Path) -> None:
    info = read_gguf_info(write_bert_cross_encoder(tmp_path / "m.gguf"))
    assert capabilities(info) == [Capability.RERANK]
    with pytest.raises(UnsupportedReranker, match=r"BERT cross-encoders .* without their pooler"):
        rerank_head(info)
