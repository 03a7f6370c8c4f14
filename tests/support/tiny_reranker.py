"""Tiny random reranker GGUFs for tests, and an independent numpy forward pass of them.

Two shapes, as llama.cpp's converter writes real ones:

- XLM-R (bge-reranker-v2-m3 style): `bert` architecture, a SentencePiece
  (UGM, `tokenizer.ggml.model = "t5"`) vocabulary, one token type, position
  embeddings that start at pad + 1 (the converter drops the first two rows),
  and RoBERTa's classification head: `cls` (dense + tanh) then `cls.output`.
- BERT cross-encoder (ms-marco-MiniLM style): WordPiece vocabulary, two
  token types, and only `cls.output` (the converter drops BERT's pooler).

Weights are kept in Hugging Face's terms (`XlmrWeights`), so that
`reference_scores` computes what transformers would from them, with no
code shared with the server: HF position ids, exact-erf GELU, the pair
`<s> q </s></s> d </s>` spelled with this vocabulary's ids.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from emberd.models.bert_gguf import gguf_tensor_name, gguf_token_texts
from tests.support.tiny_model import TINY_VOCAB, tiny_tensors

# SentencePiece vocabulary in XLM-R's order: <s> <pad> </s> <unk>, then pieces.
BOS, PAD, EOS, UNK = 0, 1, 2, 3
_WORD_START = "\u2581"
# fmt: off
WORDS = (
    "why", "is", "the", "sky", "blue", "grass", "green", "sun", "red", "sea", "water",
    "tree", "leaf", "fire", "night", "day", "a", "and", "are", "cat", "dog", "hello",
    "world", "what", "colour", "of", "hot", "cold", "big", "small", "old", "new",
)
# fmt: on
_CHARACTERS = "abcdefghijklmnopqrstuvwxyz?.,"


def vocabulary(words: Sequence[str]) -> tuple[str, ...]:
    """Special pieces, whole words, then single characters (so any text tokenizes)."""
    return (
        "<s>", "<pad>", "</s>", "<unk>",
        *(_WORD_START + w for w in words),
        _WORD_START, *_CHARACTERS,
        "<mask>",
    )  # fmt: skip


PIECES = vocabulary(WORDS)
_NORMAL, _UNKNOWN, _CONTROL = 1, 2, 3
POSITION_OFFSET = PAD + 1  # RoBERTa's position ids start after the padding id
LAYER_NORM_EPS = 1e-5


def piece_ids(text: str) -> list[int]:
    """Ids of a text made of WORDS separated by single spaces (the reference's tokenizer)."""
    return [PIECES.index(_WORD_START + word) for word in text.split()]


@dataclass(frozen=True)
class XlmrWeights:
    """A tiny XLM-R sequence classifier, by Hugging Face tensor name."""

    tensors: dict[str, np.ndarray]
    context_length: int  # usable positions (the GGUF's context length)
    heads: int
    labels: tuple[str, ...]
    pieces: tuple[str, ...] = PIECES


def xlmr_weights(
    *,
    context_length: int = 64,
    embedding_length: int = 32,
    block_count: int = 2,
    heads: int = 2,
    ff: int = 64,
    labels: tuple[str, ...] = ("LABEL_0",),
    seed: int = 0,
    matrix_scale: float = 0.25,
    words: Sequence[str] = WORDS,
) -> XlmrWeights:
    """Random weights scaled so that different pairs get clearly different scores."""
    rng = np.random.default_rng(seed)
    tensors = tiny_tensors(
        context_length=context_length + POSITION_OFFSET,
        embedding_length=embedding_length,
        block_count=block_count,
        ff=ff,
        seed=seed,
    )
    e = embedding_length

    def normal(scale: float, *shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    pieces = vocabulary(words)
    tensors["embeddings.word_embeddings.weight"] = normal(0.5, len(pieces), e)
    tensors["embeddings.position_embeddings.weight"] = normal(0.1, context_length + 2, e)
    tensors["embeddings.token_type_embeddings.weight"] = normal(0.1, 1, e)
    # Matrices of ~1/sqrt(E): each token's state depends on the whole pair.
    for name, value in list(tensors.items()):
        if name.startswith("encoder.") and value.ndim == 2:
            tensors[name] = normal(matrix_scale, *value.shape)
    tensors["classifier.dense.weight"] = normal(0.3, e, e)
    tensors["classifier.dense.bias"] = normal(0.1, e)
    tensors["classifier.out_proj.weight"] = normal(0.5, len(labels), e)
    tensors["classifier.out_proj.bias"] = normal(0.1, len(labels))
    return XlmrWeights(tensors, context_length, heads, labels, pieces)


def write_xlmr_reranker(
    path: Path,
    weights: XlmrWeights,
    *,
    pooling_key: bool = True,
    labels_key: bool = True,
    f16: bool = False,
) -> Path:
    """Write `weights` as llama.cpp's converter writes an XLM-R reranker; return `path`.

    `pooling_key=False` leaves out `bert.pooling_type`, and `labels_key=False`
    the output labels, as many real conversions do: the classifier tensors
    must then be enough to recognise a reranker. `f16` stores matrices in F16.
    """
    pieces = weights.pieces
    words = len(pieces) - 6 - len(_CHARACTERS)  # less 5 specials and the lone word start
    writer = gguf.GGUFWriter(path, "bert")
    _hparams(writer, weights, token_types=1, pooling_key=pooling_key)
    if labels_key:
        writer.add_array("bert.classifier.output_labels", list(weights.labels))
    writer.add_string("tokenizer.ggml.model", "t5")
    writer.add_string("tokenizer.ggml.pre", "default")
    writer.add_array("tokenizer.ggml.tokens", list(pieces))
    scores = [0.0] * 4 + [-1.0] * words + [-10.0] * (len(pieces) - 5 - words) + [0.0]
    writer.add_array("tokenizer.ggml.scores", [float(s) for s in scores])
    types = [_CONTROL, _CONTROL, _CONTROL, _UNKNOWN] + [_NORMAL] * (len(pieces) - 5) + [_CONTROL]
    writer.add_array("tokenizer.ggml.token_type", types)
    writer.add_bool("tokenizer.ggml.add_space_prefix", True)
    writer.add_bool("tokenizer.ggml.remove_extra_whitespaces", True)
    writer.add_uint32("tokenizer.ggml.token_type_count", 1)
    for key, value in (("bos", BOS), ("eos", EOS), ("unknown", UNK), ("seperator", EOS),
                       ("padding", PAD), ("cls", BOS), ("mask", len(pieces) - 1)):  # fmt: skip
        writer.add_uint32(f"tokenizer.ggml.{key}_token_id", value)
    for flag in ("bos", "eos", "sep"):
        writer.add_bool(f"tokenizer.ggml.add_{flag}_token", True)
    tensors = dict(weights.tensors)
    # The converter drops the positions before pad + 1: GGUF position 0 is HF's 2.
    positions = tensors.pop("embeddings.position_embeddings.weight")
    tensors["embeddings.position_embeddings.weight"] = positions[POSITION_OFFSET:]
    _tensors(writer, tensors, f16=f16)
    return path


def write_bert_cross_encoder(path: Path, *, seed: int = 0) -> Path:
    """A loadable BERT cross-encoder GGUF (WordPiece, two token types, no pooler)."""
    e, context = 32, 64
    tensors = tiny_tensors(
        context_length=context, embedding_length=e, block_count=1, ff=64, seed=seed
    )
    rng = np.random.default_rng(seed)
    tensors["classifier.out_proj.weight"] = rng.standard_normal((1, e)).astype(np.float32)
    tensors["classifier.out_proj.bias"] = np.zeros(1, np.float32)
    weights = XlmrWeights(tensors, context, 2, ("LABEL_0",))
    writer = gguf.GGUFWriter(path, "bert")
    _hparams(writer, weights, token_types=2, pooling_key=True)
    writer.add_string("tokenizer.ggml.model", "bert")
    writer.add_array("tokenizer.ggml.tokens", gguf_token_texts(TINY_VOCAB))
    control = TINY_VOCAB.control_ids
    writer.add_array(
        "tokenizer.ggml.token_type",
        [_CONTROL if i in control else _NORMAL for i in range(len(TINY_VOCAB.tokens))],
    )
    writer.add_uint32("tokenizer.ggml.token_type_count", 2)
    writer.add_uint32("tokenizer.ggml.bos_token_id", TINY_VOCAB.cls_id)
    writer.add_uint32("tokenizer.ggml.seperator_token_id", TINY_VOCAB.sep_id)
    writer.add_uint32("tokenizer.ggml.padding_token_id", TINY_VOCAB.pad_id)
    writer.add_uint32("tokenizer.ggml.unknown_token_id", TINY_VOCAB.unk_id)
    writer.add_uint32("tokenizer.ggml.mask_token_id", TINY_VOCAB.mask_id)
    _tensors(writer, tensors)
    return path


def _hparams(
    writer: gguf.GGUFWriter, weights: XlmrWeights, *, token_types: int, pooling_key: bool
) -> None:
    t = weights.tensors
    e = t["embeddings.word_embeddings.weight"].shape[1]
    blocks = sum(1 for name in t if name.endswith("attention.self.query.weight"))
    writer.add_string("general.name", "tiny-reranker")
    writer.add_uint32("general.file_type", 0)
    writer.add_uint32("bert.context_length", weights.context_length)
    writer.add_uint32("bert.embedding_length", e)
    writer.add_uint32("bert.block_count", blocks)
    writer.add_uint32("bert.feed_forward_length", t["encoder.layer.0.intermediate.dense.bias"].size)
    writer.add_uint32("bert.attention.head_count", weights.heads)
    writer.add_float32("bert.attention.layer_norm_epsilon", LAYER_NORM_EPS)
    writer.add_bool("bert.attention.causal", False)
    if pooling_key:
        writer.add_uint32("bert.pooling_type", 4)


_HEAD = {
    "classifier.dense.weight": "cls.weight",
    "classifier.dense.bias": "cls.bias",
    "classifier.out_proj.weight": "cls.output.weight",
    "classifier.out_proj.bias": "cls.output.bias",
}


def _tensors(writer: gguf.GGUFWriter, tensors: dict[str, np.ndarray], f16: bool = False) -> None:
    for hf_name, value in tensors.items():
        name = _HEAD.get(hf_name) or gguf_tensor_name(hf_name)
        if name is None:
            continue
        data = np.ascontiguousarray(value, dtype=np.float32)
        # llama.cpp adds token_types to F32 activations as they are: it stays F32.
        if f16 and data.ndim == 2 and name != "token_types.weight":
            data = data.astype(np.float16)
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# -- the reference: what transformers computes for XLMRobertaForSequenceClassification --


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + LAYER_NORM_EPS) * weight + bias


_erf = np.vectorize(math.erf)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _linear(t: dict[str, np.ndarray], name: str, x: np.ndarray) -> np.ndarray:
    return x @ t[f"{name}.weight"].astype(np.float64).T + t[f"{name}.bias"]


def reference_logits(weights: XlmrWeights, ids: Sequence[int]) -> np.ndarray:
    """The classifier's outputs for one token sequence, in float64."""
    t = weights.tensors
    n = len(ids)
    positions = np.arange(n) + POSITION_OFFSET
    x = (
        t["embeddings.word_embeddings.weight"][list(ids)].astype(np.float64)
        + t["embeddings.position_embeddings.weight"][positions]
        + t["embeddings.token_type_embeddings.weight"][0]
    )
    x = _layer_norm(x, t["embeddings.LayerNorm.weight"], t["embeddings.LayerNorm.bias"])
    blocks = sum(1 for name in t if name.endswith("attention.self.query.weight"))
    for i in range(blocks):
        p = f"encoder.layer.{i}"
        heads = weights.heads
        d = x.shape[1] // heads
        q, k, v = (
            _linear(t, f"{p}.attention.self.{part}", x).reshape(n, heads, d).transpose(1, 0, 2)
            for part in ("query", "key", "value")
        )
        att = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        context = (att @ v).transpose(1, 0, 2).reshape(n, heads * d)
        attended = _linear(t, f"{p}.attention.output.dense", context)
        x = _layer_norm(
            x + attended,
            t[f"{p}.attention.output.LayerNorm.weight"],
            t[f"{p}.attention.output.LayerNorm.bias"],
        )
        hidden = _gelu(_linear(t, f"{p}.intermediate.dense", x))
        x = _layer_norm(
            x + _linear(t, f"{p}.output.dense", hidden),
            t[f"{p}.output.LayerNorm.weight"],
            t[f"{p}.output.LayerNorm.bias"],
        )
    pooled = np.tanh(_linear(t, "classifier.dense", x[0]))
    logits: np.ndarray = _linear(t, "classifier.out_proj", pooled)
    return logits


def reference_pair(query: str, document: str) -> list[int]:
    """`<s> q </s></s> d </s>`, as XLM-R's tokenizer joins a pair."""
    return [BOS, *piece_ids(query), EOS, EOS, *piece_ids(document), EOS]


def reference_scores(weights: XlmrWeights, query: str, documents: Sequence[str]) -> np.ndarray:
    """Relevance scores as the server should give them: the logit, or softmax of a pair."""
    logits = np.stack([reference_logits(weights, reference_pair(query, d)) for d in documents])
    if logits.shape[1] == 1:
        return logits[:, 0]
    exp = np.exp(logits - logits.max(1, keepdims=True))
    return exp[:, 1] / exp.sum(1)  # the second label is the relevant one in these tests
