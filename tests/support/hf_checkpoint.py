"""A tiny fake sentence-transformers checkpoint (Hugging Face layout) for import tests.

The weights are the random BERT of tests/tiny_model.py (seeded), saved as
`model.safetensors` under Hugging Face's names together with what real
checkpoints carry beside them (`embeddings.position_ids`, a `pooler`);
the vocabulary is tiny_model's plus a few capitalised words, so cased and
uncased tokenization differ. Every file sentence-transformers writes is
there and can be varied or left out.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

from emberd.models.bert_gguf import BertHParams, WordPieceVocab
from tests.support.tiny_model import TINY_TOKENS, tiny_tensors

# Words that exist only capitalised, and one spelled both ways.
CASED_WORDS = ("Hello", "World", "Sky", "##Blue")
CHECKPOINT_TOKENS: tuple[str, ...] = (*TINY_TOKENS, *CASED_WORDS)
SIZES = {"context_length": 128, "embedding_length": 32, "block_count": 2, "ff": 64}
HEADS = 2
POOLING_FLAGS = {
    "mean": "pooling_mode_mean_tokens",
    "cls": "pooling_mode_cls_token",
    "lasttoken": "pooling_mode_lasttoken",
    "max": "pooling_mode_max_tokens",
    "weightedmean": "pooling_mode_weightedmean_tokens",
}


@dataclass(frozen=True)
class CheckpointSpec:
    """How to write the fake checkpoint; the defaults mirror all-MiniLM-L6-v2's files."""

    pooling: str | None = "mean"  # a key of POOLING_FLAGS; None: no Pooling module
    lowercase: bool = True
    tokenizer: str = "vocab.txt"  # or "tokenizer.json"
    dtype: str = "F32"  # F32, F16 or BF16
    seed: int = 0
    max_seq_length: int | None = 64
    normalize: bool = True
    model_type: str = "bert"
    # False: no tokenizer_config.json, so case comes from tokenizer.json's normalizer.
    tokenizer_config: bool = True


def checkpoint_tensors(spec: CheckpointSpec) -> dict[str, np.ndarray]:
    """The encoder's weights by Hugging Face name, as float32 equal to what is saved."""
    tensors = tiny_tensors(**SIZES, seed=spec.seed)
    rng = np.random.default_rng(spec.seed + 1)
    rows, e = len(CHECKPOINT_TOKENS), SIZES["embedding_length"]
    tensors["embeddings.word_embeddings.weight"] = (rng.standard_normal((rows, e)) * 0.02).astype(
        np.float32
    )
    if spec.dtype == "F16":
        return {k: v.astype(np.float16).astype(np.float32) for k, v in tensors.items()}
    if spec.dtype == "BF16":
        return {
            k: (_bf16_bits(v).astype(np.uint32) << 16).view(np.float32) for k, v in tensors.items()
        }
    return tensors


def expected_hparams(spec: CheckpointSpec) -> BertHParams:
    """The hyper-parameters an import of `spec` must produce."""
    pooling = {None: 1, "mean": 1, "cls": 2, "lasttoken": 3}[spec.pooling]
    return BertHParams(
        context_length=SIZES["context_length"],
        embedding_length=SIZES["embedding_length"],
        block_count=SIZES["block_count"],
        feed_forward_length=SIZES["ff"],
        head_count=HEADS,
        layer_norm_epsilon=1e-12,
        pooling=pooling,
    )


def expected_vocab(spec: CheckpointSpec) -> WordPieceVocab:
    """The vocabulary an import of `spec` must produce."""
    ids = {t: i for i, t in enumerate(CHECKPOINT_TOKENS)}
    return WordPieceVocab(
        tokens=CHECKPOINT_TOKENS,
        cls_id=ids["[CLS]"],
        sep_id=ids["[SEP]"],
        pad_id=ids["[PAD]"],
        unk_id=ids["[UNK]"],
        mask_id=ids["[MASK]"],
        lowercase=spec.lowercase,
    )


def write_checkpoint(directory: Path, spec: CheckpointSpec | None = None) -> Path:
    """Write a checkpoint for `spec` into `directory` (created); return `directory`."""
    spec = spec or CheckpointSpec()
    directory.mkdir(parents=True, exist_ok=True)
    _write_json(directory / "config.json", _config(spec))
    _write_weights(directory / "model.safetensors", checkpoint_tensors(spec), spec.dtype, spec.seed)
    if spec.tokenizer == "tokenizer.json":
        _write_json(directory / "tokenizer.json", _tokenizer_json(spec))
    else:
        (directory / "vocab.txt").write_text("\n".join(CHECKPOINT_TOKENS) + "\n", encoding="utf-8")
    special = {f"{r}_token": f"[{r.upper()}]" for r in ("unk", "sep", "pad", "cls", "mask")}
    _write_json(directory / "special_tokens_map.json", special)
    if spec.tokenizer_config:
        _write_json(
            directory / "tokenizer_config.json",
            {"do_lower_case": spec.lowercase, "strip_accents": None, **special},
        )
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
    ]
    if spec.pooling is not None:
        modules.append(_module(len(modules), "1_Pooling", "Pooling"))
        flags = {flag: name == spec.pooling for name, flag in POOLING_FLAGS.items()}
        _write_json(
            directory / "1_Pooling" / "config.json",
            {"word_embedding_dimension": SIZES["embedding_length"], **flags},
        )
    if spec.normalize:
        modules.append(_module(len(modules), "2_Normalize", "Normalize"))
    _write_json(directory / "modules.json", modules)
    if spec.max_seq_length is not None:
        _write_json(
            directory / "sentence_bert_config.json",
            {"max_seq_length": spec.max_seq_length, "do_lower_case": False},
        )
    return directory


def write_safetensors(path: Path, tensors: Mapping[str, tuple[str, Sequence[int], bytes]]) -> None:
    """Write a safetensors file by hand: name -> (dtype, shape, little-endian bytes).

    The safetensors package cannot write bfloat16 from numpy; the format is
    an 8-byte header length, a JSON header and the concatenated data.
    """
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + len(data)],
        }
        offset += len(data)
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as out:
        out.write(struct.pack("<Q", len(encoded)))
        out.write(encoded)
        for _, _, data in tensors.values():
            out.write(data)


def _write_weights(path: Path, tensors: dict[str, np.ndarray], dtype: str, seed: int) -> None:
    rng = np.random.default_rng(seed + 2)
    e = SIZES["embedding_length"]
    extras = {
        "pooler.dense.weight": (rng.standard_normal((e, e)) * 0.02).astype(np.float32),
        "pooler.dense.bias": np.zeros(e, np.float32),
    }
    position_ids = np.arange(SIZES["context_length"], dtype=np.int64)[None, :]
    if dtype == "BF16":
        raw = {
            k: ("BF16", v.shape, _bf16_bits(v).tobytes()) for k, v in {**tensors, **extras}.items()
        }
        raw["embeddings.position_ids"] = ("I64", position_ids.shape, position_ids.tobytes())
        write_safetensors(path, raw)
        return
    numpy_dtype = {"F32": np.float32, "F16": np.float16}[dtype]
    arrays = {k: v.astype(numpy_dtype) for k, v in {**tensors, **extras}.items()}
    save_file({**arrays, "embeddings.position_ids": position_ids}, str(path), {"format": "pt"})


def _bf16_bits(array: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, rounding to nearest even."""
    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def _config(spec: CheckpointSpec) -> dict[str, object]:
    return {
        "architectures": ["BertModel"],
        "model_type": spec.model_type,
        "hidden_act": "gelu",
        "hidden_size": SIZES["embedding_length"],
        "intermediate_size": SIZES["ff"],
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": SIZES["context_length"],
        "num_attention_heads": HEADS,
        "num_hidden_layers": SIZES["block_count"],
        "position_embedding_type": "absolute",
        "type_vocab_size": 2,
        "vocab_size": len(CHECKPOINT_TOKENS),
    }


def _tokenizer_json(spec: CheckpointSpec) -> dict[str, object]:
    ids = {t: i for i, t in enumerate(CHECKPOINT_TOKENS)}
    added = [
        {"id": ids[t], "content": t, "special": True, "normalized": False}
        for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    ]
    return {
        "version": "1.0",
        "added_tokens": added,
        "normalizer": {
            "type": "BertNormalizer",
            "clean_text": True,
            "handle_chinese_chars": True,
            "strip_accents": None,
            "lowercase": spec.lowercase,
        },
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "model": {
            "type": "WordPiece",
            "unk_token": "[UNK]",
            "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100,
            "vocab": ids,
        },
    }


def _module(idx: int, path: str, kind: str) -> dict[str, object]:
    return {
        "idx": idx,
        "name": str(idx),
        "path": path,
        "type": f"sentence_transformers.models.{kind}",
    }


def _write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")
