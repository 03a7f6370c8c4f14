"""What a GGUF can do (embed or rerank), and how a reranker's head becomes a score.

A reranker (cross-encoder) reads a (query, document) pair and its classifier
head gives one or two values. Which value is the relevance score, and
whether a softmax is applied, is decided here from the GGUF's header, so
that `/api/show`, the README and the scores agree. Models whose scores
llama.cpp 0.3.36 would compute wrongly are refused here, by name of the
reason, before llama.cpp sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt

from emberd.models.errors import ModelError
from emberd.models.gguf_meta import GGUFInfo

# Architectures whose llama.cpp graph ends a rank-pooled head with a softmax.
_GRAPH_SOFTMAX = frozenset({"qwen3", "qwen3vl"})
# Label names that mean "relevant" in a two-label head; otherwise the second label is.
_POSITIVE_LABELS = frozenset(
    {"yes", "relevant", "true", "positive", "1", "label_1", "entailment", "related"}
)


class Capability(str, Enum):
    """What a model is for, as `/api/show` lists it."""

    EMBEDDING = "embedding"
    RERANK = "rerank"


class UnsupportedReranker(ModelError):
    """A reranker this server refuses: llama.cpp would not compute the model's scores."""


# GGUF's `<arch>.pooling_type` numbers, as llama.cpp names them.
_POOLING_NAMES = {1: "mean", 2: "cls", 3: "last"}


def capabilities(info: GGUFInfo) -> list[Capability]:
    """`/api/show`'s capabilities: rerank, or embedding for every other model."""
    if info.is_reranker:
        return [Capability.RERANK]
    return [Capability.EMBEDDING] if info.is_embedding else []


def embedding_pooling(info: GGUFInfo) -> str:
    """How an embedding model's token vectors become one vector, in words (for `/api/show`).

    A model that declares no pooling (or pooling "none") is pooled by mean.
    """
    declared = _POOLING_NAMES.get(info.pooling_type or 0)
    return declared or "mean (the model declares no pooling)"


@dataclass(frozen=True)
class RerankHead:
    """How the values a reranker's head gives per pair become one relevance score."""

    outputs: int  # values per pair (llama.cpp's n_cls_out)
    positive: int  # which of them is the score (after the softmax, if any)
    softmax: bool  # a softmax over the values gives the score
    label: str | None  # the positive value's label, when the GGUF names it
    graph_softmax: bool = False  # llama.cpp applied that softmax already

    def describe(self) -> str:
        """Which score `relevance_score` is, in words (for `/api/show`)."""
        if not self.softmax:
            return "raw logit of the classifier's single output"
        if self.graph_softmax:
            return (
                f"probability of label {self.label!r} (output {self.positive}), "
                "from the softmax in the model's graph"
            )
        return f"softmax probability of label {self.label!r} (output {self.positive})"

    def scores(self, values: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        """One score per row of head values (rows of `outputs` values)."""
        wide: npt.NDArray[np.float64] = values.astype(np.float64)
        if not self.softmax or self.graph_softmax:
            return wide[:, self.positive]
        shifted = wide - wide.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        probabilities: npt.NDArray[np.float64] = exp[:, self.positive] / exp.sum(axis=1)
        return probabilities


def rerank_head(info: GGUFInfo) -> RerankHead:
    """The head of a reranker GGUF, or UnsupportedReranker saying why it is refused."""
    _refuse_unsupported(info)
    labels = info.classifier_labels or ()
    if len(labels) <= 1:
        return RerankHead(1, 0, softmax=False, label=labels[0] if labels else None)
    if len(labels) > 2:
        raise UnsupportedReranker(
            f"this classifier has {len(labels)} output labels; a reranker has one output "
            "or a label pair"
        )
    named = [i for i, label in enumerate(labels) if label.strip().lower() in _POSITIVE_LABELS]
    positive = named[0] if len(named) == 1 else 1
    in_graph = info.architecture in _GRAPH_SOFTMAX
    return RerankHead(2, positive, softmax=True, label=labels[positive], graph_softmax=in_graph)


def _refuse_unsupported(info: GGUFInfo) -> None:
    kv = info.model_info
    token_types = kv.get("tokenizer.ggml.token_type_count")
    wordpiece = kv.get("tokenizer.ggml.model") == "bert"
    if (isinstance(token_types, int) and token_types >= 2) or wordpiece:
        raise UnsupportedReranker(
            "BERT cross-encoders (such as ms-marco-MiniLM) are not supported: llama.cpp "
            "scores them without their pooler and with token type 0 for the document, "
            "which is not the model's function; XLM-R rerankers such as "
            "bge-reranker-v2-m3 are supported"
        )
