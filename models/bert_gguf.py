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

import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt
from gguf.quants import quantize

ARCHITECTURE = "bert"

# GGUF pooling numbering (llama.cpp's enum llama_pooling_type): none, mean, CLS,
# last. Rank pooling needs a classification head, which is not written here.
POOLING_TYPES = frozenset({0, 1, 2, 3})

# llama.cpp's token types.
_TOKEN_NORMAL = 1
_TOKEN_CONTROL = 3
_WORD_START = "\u2581"


class FileType(Enum):
    """Storage type of the matrices; values are llama.cpp's LLAMA_FTYPE numbers."""

    F32 = 0
    F16 = 1
    Q8_0 = 7


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


@dataclass(frozen=True)
class _TensorPlan:
    """One tensor to write: where it comes from and how it is stored."""

    source: str
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType


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
    qt = gguf.GGMLQuantizationType
    # llama.cpp adds a raw row of token_types to F32 activations; any other type
    # aborts the process at the first decode.
    if len(shape) == 1 or file_type is FileType.F32 or gguf_name == "token_types.weight":
        return qt.F32
    if file_type is FileType.F16:
        return qt.F16
    # llama.cpp's own quantizer leaves position embeddings unquantized.
    block = gguf.GGML_QUANT_SIZES[qt.Q8_0][0]
    if gguf_name == "position_embd.weight" or shape[-1] % block:
        return qt.F16
    return qt.Q8_0


def _plan(
    hparams: BertHParams,
    vocab: WordPieceVocab,
    tensors: Mapping[str, npt.NDArray[np.floating]],
    file_type: FileType,
) -> tuple[dict[str, _TensorPlan], int]:
    """Map, check and type every tensor; returns the plan and the token type count."""
    by_gguf: dict[str, str] = {}
    unsupported: list[str] = []
    for hf_name in tensors:
        try:
            target = gguf_tensor_name(hf_name)
        except ValueError:
            unsupported.append(hf_name)
            continue
        if target is None:
            continue
        if target in by_gguf:
            raise ValueError(f"tensors {by_gguf[target]!r} and {hf_name!r} are the same tensor")
        by_gguf[target] = hf_name
    if unsupported:
        raise ValueError(f"unsupported tensors: {', '.join(sorted(unsupported))}")

    types_source = by_gguf.get("token_types.weight")
    type_count = int(tensors[types_source].shape[0]) if types_source is not None else 0
    expected = expected_shapes(hparams, len(vocab.tokens), type_count)
    missing = sorted(set(expected) - set(by_gguf))
    if missing:
        raise ValueError(f"missing tensors (GGUF names): {', '.join(missing)}")
    extra = sorted(by_gguf[name] for name in set(by_gguf) - set(expected))
    if extra:
        raise ValueError(f"tensors beyond block_count {hparams.block_count}: {', '.join(extra)}")

    plan: dict[str, _TensorPlan] = {}
    for name, shape in expected.items():
        source = by_gguf[name]
        value = tensors[source]
        actual = tuple(int(d) for d in value.shape)
        if actual != shape:
            raise ValueError(f"tensor {source!r} has shape {actual}, expected {shape}")
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(f"tensor {source!r} has dtype {value.dtype}, not float")
        plan[name] = _TensorPlan(source, shape, _storage_type(name, shape, file_type))
    if type_count < 1:
        raise ValueError("token type embeddings have no rows")
    return plan, type_count


def _encode(array: npt.NDArray[np.floating], qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    data = np.ascontiguousarray(array, dtype=np.float32)
    if qtype == gguf.GGMLQuantizationType.F32:
        return data
    if qtype == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16)
    return quantize(data, qtype)


def _stored_nbytes(plan: _TensorPlan) -> int:
    block, size = gguf.GGML_QUANT_SIZES[plan.qtype]
    return int(np.prod(plan.shape)) // block * size


def _add_metadata(
    writer: gguf.GGUFWriter,
    name: str,
    hparams: BertHParams,
    vocab: WordPieceVocab,
    token_type_count: int,
    file_type: FileType,
) -> None:
    arch = ARCHITECTURE
    writer.add_string("general.name", name)
    writer.add_uint32("general.file_type", file_type.value)
    if file_type is FileType.Q8_0:
        writer.add_uint32("general.quantization_version", gguf.GGML_QUANT_VERSION)
    writer.add_uint32(f"{arch}.context_length", hparams.context_length)
    writer.add_uint32(f"{arch}.embedding_length", hparams.embedding_length)
    writer.add_uint32(f"{arch}.block_count", hparams.block_count)
    writer.add_uint32(f"{arch}.feed_forward_length", hparams.feed_forward_length)
    writer.add_uint32(f"{arch}.attention.head_count", hparams.head_count)
    writer.add_float32(f"{arch}.attention.layer_norm_epsilon", hparams.layer_norm_epsilon)
    writer.add_bool(f"{arch}.attention.causal", False)
    writer.add_uint32(f"{arch}.pooling_type", hparams.pooling)

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
    plan, token_type_count = _plan(hparams, vocab, tensors, file_type)
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    writer = gguf.GGUFWriter(tmp, ARCHITECTURE)
    try:
        _add_metadata(writer, name, hparams, vocab, token_type_count, file_type)
        for gguf_name, item in plan.items():
            # Quantized data is declared by its logical shape; llama.cpp derives the bytes.
            writer.add_tensor_info(
                gguf_name, item.shape, np.dtype(np.float32), _stored_nbytes(item), item.qtype
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = sum(_stored_nbytes(item) for item in plan.values())
        done = 0
        for item in plan.values():
            writer.write_tensor_data(_encode(tensors[item.source], item.qtype))
            done += _stored_nbytes(item)
            if progress is not None:
                progress(done, total)
        assert writer.fout is not None
        writer.flush()
        for out in writer.fout:
            os.fsync(out.fileno())
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
