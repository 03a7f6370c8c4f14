"""Write a BERT encoder as a GGUF file that llama.cpp loads as an embedding model.

Input is data in Hugging Face's terms (tensor names and numpy shapes of a
`BertModel` checkpoint, the WordPiece vocabulary of `vocab.txt`); output is
one GGUF file for llama.cpp's `bert` architecture. The file appears
atomically: it is written next to its destination and renamed into place.

Layout written (GGUF keys and tensor names as llama.cpp reads them):

- `bert.*` hyper-parameters, `bert.attention.causal = false` and
  `bert.pooling_type`;
- `tokenizer.ggml.model = "bert"`, the vocabulary rewritten the way
  llama.cpp's WordPiece tokenizer matches it (word-initial pieces start with
  U+2581, `##` continuations lose their marker, control tokens stay as they
  are), token types, the token type count and the special token ids;
- tensors in Hugging Face's numpy shapes; 1-D tensors in F32, matrices in the
  chosen file type.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import gguf
import numpy as np
import numpy.typing as npt

from emberd.models.gguf_out import (
    FileType,
    TensorOut,
    add_file_type,
    gguf_names,
    storage_type,
    write_gguf,
)

__all__ = [
    "ARCHITECTURE",
    "BertHParams",
    "FileType",
    "WordPieceVocab",
    "add_bert_hparams",
    "add_wordpiece_vocab",
    "bert_tensors",
    "expected_shapes",
    "gguf_tensor_name",
    "gguf_token_texts",
    "write_bert_gguf",
]

ARCHITECTURE = "bert"

# GGUF pooling numbering (llama.cpp's enum llama_pooling_type): none, mean, CLS,
# last. Rank pooling needs a classification head, which is not written here.
POOLING_TYPES = frozenset({0, 1, 2, 3})

# llama.cpp's token types.
_TOKEN_NORMAL = 1
_TOKEN_CONTROL = 3
_WORD_START = "\u2581"


@dataclass(frozen=True)
class BertHParams:
    """Hyper-parameters of a BERT encoder (Hugging Face `BertConfig` names in comments)."""

    context_length: int  # max_position_embeddings
    embedding_length: int  # hidden_size
    block_count: int  # num_hidden_layers
    feed_forward_length: int  # intermediate_size
    head_count: int  # num_attention_heads
    layer_norm_epsilon: float  # layer_norm_eps
    pooling: int  # GGUF numbering: 0 none, 1 mean, 2 CLS, 3 last

    def __post_init__(self) -> None:
        for name in (
            "context_length",
            "embedding_length",
            "block_count",
            "feed_forward_length",
            "head_count",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.embedding_length % self.head_count:
            raise ValueError(
                f"embedding_length {self.embedding_length} is not a multiple of "
                f"head_count {self.head_count}"
            )
        if not self.layer_norm_epsilon > 0:
            raise ValueError(f"layer_norm_epsilon must be positive, got {self.layer_norm_epsilon}")
        if self.pooling not in POOLING_TYPES:
            raise ValueError(f"unsupported pooling type {self.pooling}")


@dataclass(frozen=True)
class WordPieceVocab:
    """A WordPiece vocabulary as in `vocab.txt`: the token of id N is line N."""

    tokens: Sequence[str]  # e.g. "[CLS]", "hello", "##lo"
    cls_id: int
    sep_id: int
    pad_id: int
    unk_id: int
    mask_id: int
    lowercase: bool = True
    # None follows `lowercase`, as Hugging Face's BertNormalizer does.
    strip_accents: bool | None = None
    # Ids of further control tokens, besides the five special ones.
    extra_control_ids: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not self.tokens:
            raise ValueError("vocabulary is empty")
        bad = sorted(i for i in self.control_ids if not 0 <= i < len(self.tokens))
        if bad:
            raise ValueError(f"special token ids out of range of {len(self.tokens)} tokens: {bad}")

    @property
    def control_ids(self) -> frozenset[int]:
        """Ids written as control tokens."""
        special = {self.cls_id, self.sep_id, self.pad_id, self.unk_id, self.mask_id}
        return frozenset(special) | self.extra_control_ids


_EMBEDDINGS = {
    "embeddings.word_embeddings": "token_embd",
    "embeddings.position_embeddings": "position_embd",
    "embeddings.token_type_embeddings": "token_types",
    "embeddings.LayerNorm": "token_embd_norm",
}
_LAYER_PARTS = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
# Older checkpoints name LayerNorm parameters gamma and beta.
_SUFFIXES = {"weight": "weight", "bias": "bias", "gamma": "weight", "beta": "bias"}
_LAYER = re.compile(r"encoder\.layer\.(\d+)\.(.+)")


def gguf_tensor_name(hf_name: str) -> str | None:
    """The GGUF name of a Hugging Face BERT tensor; None for tensors that are dropped.

    Raises ValueError for a name that is not part of a BERT encoder.
    """
    name = hf_name.removeprefix("bert.")
    if name == "embeddings.position_ids" or name.startswith("pooler."):
        return None
    stem, _, suffix = name.rpartition(".")
    if suffix not in _SUFFIXES:
        raise ValueError(f"unsupported tensor {hf_name!r}")
    if stem in _EMBEDDINGS:
        return f"{_EMBEDDINGS[stem]}.{_SUFFIXES[suffix]}"
    match = _LAYER.fullmatch(stem)
    if match is None or match.group(2) not in _LAYER_PARTS:
        raise ValueError(f"unsupported tensor {hf_name!r}")
    return f"blk.{int(match.group(1))}.{_LAYER_PARTS[match.group(2)]}.{_SUFFIXES[suffix]}"


def expected_shapes(
    hparams: BertHParams, vocab_size: int, token_type_count: int
) -> dict[str, tuple[int, ...]]:
    """Every tensor a BERT GGUF needs, by GGUF name, in Hugging Face's numpy shapes."""
    e, f = hparams.embedding_length, hparams.feed_forward_length
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (vocab_size, e),
        "position_embd.weight": (hparams.context_length, e),
        "token_types.weight": (token_type_count, e),
        "token_embd_norm.weight": (e,),
        "token_embd_norm.bias": (e,),
    }
    per_layer: dict[str, tuple[int, ...]] = {
        "ffn_up.weight": (f, e),
        "ffn_up.bias": (f,),
        "ffn_down.weight": (e, f),
        "ffn_down.bias": (e,),
    }
    for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
        per_layer[f"{part}.weight"] = (e, e)
        per_layer[f"{part}.bias"] = (e,)
    for norm in ("attn_output_norm", "layer_output_norm"):
        per_layer[f"{norm}.weight"] = (e,)
        per_layer[f"{norm}.bias"] = (e,)
    for i in range(hparams.block_count):
        shapes.update({f"blk.{i}.{key}": shape for key, shape in per_layer.items()})
    return shapes


def gguf_token_texts(vocab: WordPieceVocab) -> list[str]:
    """The vocabulary as llama.cpp's WordPiece tokenizer matches it."""
    control = vocab.control_ids
    texts = []
    for i, token in enumerate(vocab.tokens):
        if i in control:
            texts.append(token)
        elif token.startswith("##") and len(token) > 2:
            texts.append(token[2:])
        else:
            texts.append(_WORD_START + token)
    return texts


def _storage_type(
    gguf_name: str, shape: tuple[int, ...], file_type: FileType
) -> gguf.GGMLQuantizationType:
    # llama.cpp adds a raw row of token_types to F32 activations; any other type
    # aborts the process at the first decode. Position tables stay unquantized.
    return storage_type(
        shape,
        file_type,
        keep_f32=gguf_name == "token_types.weight",
        keep_f16=gguf_name == "position_embd.weight",
    )


def bert_tensors(
    hparams: BertHParams,
    vocab_size: int,
    tensors: Mapping[str, npt.NDArray[np.floating]],
    file_type: FileType,
    rename: Callable[[str], str | None] = gguf_tensor_name,
    position_offset: int = 0,
) -> tuple[list[TensorOut], int]:
    """Map, check and type every tensor of a BERT encoder; returns them and the type count.

    `rename` maps a checkpoint name to its GGUF name (None: dropped; ValueError:
    unsupported). The checkpoint's position table may have `position_offset`
    leading rows that the GGUF leaves out (RoBERTa counts positions after its
    padding id). Raises ValueError for unsupported, missing, duplicated or
    misshapen tensors.
    """
    by_gguf = gguf_names(tensors, rename)

    types_source = by_gguf.get("token_types.weight")
    type_count = int(tensors[types_source].shape[0]) if types_source is not None else 0
    expected = expected_shapes(hparams, vocab_size, type_count)
    missing = sorted(set(expected) - set(by_gguf))
    if missing:
        raise ValueError(f"missing tensors (GGUF names): {', '.join(missing)}")
    extra = sorted(by_gguf[name] for name in set(by_gguf) - set(expected))
    if extra:
        raise ValueError(f"tensors beyond block_count {hparams.block_count}: {', '.join(extra)}")

    planned: list[TensorOut] = []
    for name, shape in expected.items():
        source = by_gguf[name]
        value = tensors[source]
        skip = position_offset if name == "position_embd.weight" else 0
        wanted = (shape[0] + skip, *shape[1:])
        actual = tuple(int(d) for d in value.shape)
        if actual != wanted:
            raise ValueError(f"tensor {source!r} has shape {actual}, expected {wanted}")
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(f"tensor {source!r} has dtype {value.dtype}, not float")
        qtype = _storage_type(name, shape, file_type)
        planned.append(TensorOut(name, shape, qtype, _reader(tensors, source, skip)))
    if type_count < 1:
        raise ValueError("token type embeddings have no rows")
    return planned, type_count


def _reader(
    tensors: Mapping[str, npt.NDArray[np.floating]], source: str, skip_rows: int
) -> Callable[[], npt.NDArray[np.floating]]:
    return lambda: tensors[source][skip_rows:]


class EncoderHParams(Protocol):
    """What every BERT-family encoder's hyper-parameters hold (BERT, XLM-R, nomic-bert)."""

    @property
    def context_length(self) -> int: ...
    @property
    def embedding_length(self) -> int: ...
    @property
    def block_count(self) -> int: ...
    @property
    def feed_forward_length(self) -> int: ...
    @property
    def head_count(self) -> int: ...
    @property
    def layer_norm_epsilon(self) -> float: ...
    @property
    def pooling(self) -> int: ...


def add_bert_hparams(writer: gguf.GGUFWriter, arch: str, hparams: EncoderHParams) -> None:
    """The hyper-parameter keys of llama.cpp's BERT-family encoders."""
    writer.add_uint32(f"{arch}.context_length", hparams.context_length)
    writer.add_uint32(f"{arch}.embedding_length", hparams.embedding_length)
    writer.add_uint32(f"{arch}.block_count", hparams.block_count)
    writer.add_uint32(f"{arch}.feed_forward_length", hparams.feed_forward_length)
    writer.add_uint32(f"{arch}.attention.head_count", hparams.head_count)
    writer.add_float32(f"{arch}.attention.layer_norm_epsilon", hparams.layer_norm_epsilon)
    writer.add_bool(f"{arch}.attention.causal", False)
    writer.add_uint32(f"{arch}.pooling_type", hparams.pooling)


def add_wordpiece_vocab(
    writer: gguf.GGUFWriter, vocab: WordPieceVocab, token_type_count: int
) -> None:
    """The tokenizer keys of a WordPiece vocabulary, as llama.cpp's `bert` tokenizer reads them."""
    control = vocab.control_ids
    writer.add_string("tokenizer.ggml.model", "bert")
    writer.add_array("tokenizer.ggml.tokens", gguf_token_texts(vocab))
    writer.add_array(
        "tokenizer.ggml.token_type",
        [_TOKEN_CONTROL if i in control else _TOKEN_NORMAL for i in range(len(vocab.tokens))],
    )
    writer.add_uint32("tokenizer.ggml.token_type_count", token_type_count)
    writer.add_uint32("tokenizer.ggml.bos_token_id", vocab.cls_id)
    writer.add_uint32("tokenizer.ggml.seperator_token_id", vocab.sep_id)
    writer.add_uint32("tokenizer.ggml.padding_token_id", vocab.pad_id)
    writer.add_uint32("tokenizer.ggml.unknown_token_id", vocab.unk_id)
    writer.add_uint32("tokenizer.ggml.mask_token_id", vocab.mask_id)
    writer.add_bool("tokenizer.ggml.add_bos_token", True)
    writer.add_bool("tokenizer.ggml.add_eos_token", False)
    writer.add_bool("tokenizer.ggml.add_sep_token", True)
    strip = vocab.lowercase if vocab.strip_accents is None else vocab.strip_accents
    writer.add_bool("tokenizer.ggml.normalizer.lowercase", vocab.lowercase)
    writer.add_bool("tokenizer.ggml.normalizer.strip_accents", strip)


def write_bert_gguf(
    path: Path,
    name: str,
    hparams: BertHParams,
    vocab: WordPieceVocab,
    tensors: Mapping[str, npt.NDArray[np.floating]],
    file_type: FileType = FileType.F16,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Write a BERT encoder as a GGUF file at `path`, replacing any file there.

    `tensors` holds a `BertModel`'s weights by Hugging Face name (optionally
    prefixed `bert.`); `pooler.*` and `embeddings.position_ids` are ignored.
    Each value is read for its shape and dtype first, then for its data, one
    tensor at a time, so a lazily loading mapping keeps memory to one tensor.
    `progress(done, total)` is called after each tensor, in bytes written.

    Raises ValueError, before anything is written, for unsupported, missing,
    duplicated or misshapen tensors.
    """
    planned, token_type_count = bert_tensors(hparams, len(vocab.tokens), tensors, file_type)

    def metadata(writer: gguf.GGUFWriter) -> None:
        add_file_type(writer, name, file_type)
        add_bert_hparams(writer, ARCHITECTURE, hparams)
        add_wordpiece_vocab(writer, vocab, token_type_count)

    write_gguf(Path(path), ARCHITECTURE, metadata, planned, progress)
