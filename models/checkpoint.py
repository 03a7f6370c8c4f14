"""Read and check a BERT checkpoint directory (Hugging Face / sentence-transformers layout).

A BERT checkpoint directory holds the encoder and what sentence-transformers
adds around it:

    config.json                    BertConfig: sizes, layer count, heads, ...
    model.safetensors              weights by Hugging Face name (or shards and
                                   model.safetensors.index.json)
    tokenizer.json or vocab.txt    the WordPiece vocabulary
    tokenizer_config.json          lower-casing and special tokens
    special_tokens_map.json        special tokens
    modules.json                   the module pipeline: Transformer, Pooling,
                                   Normalize
    1_Pooling/config.json          which pooling (mean, CLS, last token)
    sentence_bert_config.json      max_seq_length

This module owns what is BERT's in those files (the files every family
shares are read by `models.hf_source`): `read_checkpoint` checks that the
directory describes something llama.cpp's BERT graph can run and returns it
as a `Checkpoint` (hyper-parameters, WordPiece vocabulary with its special
tokens and normalisation, pooling); `read_wordpiece_vocab` and
`bert_hparams` serve the other BERT-shaped families; `open_weights` reads
the weights one tensor at a time. Anything unsupported is a
`CheckpointError` naming the file at fault.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from emberd.models.bert_gguf import BertHParams, WordPieceVocab, gguf_tensor_name
from emberd.models.errors import CheckpointError
from emberd.models.hf_source import (
    Modules,
    config_int,
    read_json_file,
    read_max_seq_length,
    read_modules,
    token_text,
    weight_files,
)
from emberd.models.hf_source import open_weights as hf_open_weights

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "bert_hparams",
    "open_weights",
    "read_checkpoint",
    "read_wordpiece_vocab",
    "refuse_dense",
]

_SPECIAL = {"cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]", "unk": "[UNK]", "mask": "[MASK]"}
# Activations llama.cpp's BERT graph computes (GELU); the tanh forms differ only slightly.
_GELU = frozenset({"gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast"})


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint directory says, checked and ready to convert."""

    source: Path
    weight_files: tuple[Path, ...]
    tokenizer_file: Path
    hparams: BertHParams
    vocab: WordPieceVocab
    pooling: str  # "mean", "cls" or "lasttoken"
    normalize: bool  # a Normalize module follows pooling (emberd normalises on /api/embed anyway)
    max_seq_length: int | None  # sentence-transformers' truncation length, if set


# -- reading the checkpoint


def read_checkpoint(source: Path) -> Checkpoint:
    """Read and check the checkpoint directory `source`; CheckpointError if unsupported."""
    source = Path(source)
    if not source.is_dir():
        raise CheckpointError(f"{source}: not a directory")
    modules = read_modules(source)
    refuse_dense(source, modules)
    model_dir = source / modules.transformer_path
    config = read_json_file(model_dir / "config.json", required=True)
    where = model_dir / "config.json"
    if config.get("model_type") != "bert":
        raise CheckpointError(
            f"{where}: unsupported model_type {config.get('model_type')!r}; only 'bert' encoders "
            "(WordPiece vocabulary, absolute positions) are read here"
        )
    context = config_int(config, "max_position_embeddings", where)
    hparams = bert_hparams(where, config, modules.pooling_type, context)
    vocab_size = config_int(config, "vocab_size", model_dir / "config.json")
    vocab, tokenizer_file = read_wordpiece_vocab(source, model_dir, vocab_size)
    return Checkpoint(
        source=source,
        weight_files=weight_files(model_dir),
        tokenizer_file=tokenizer_file,
        hparams=hparams,
        vocab=vocab,
        pooling=modules.pooling,
        normalize=modules.normalize,
        max_seq_length=read_max_seq_length(source, model_dir),
    )


def refuse_dense(source: Path, modules: Modules) -> None:
    """CheckpointError for a Dense module, which only some architectures can run."""
    if modules.dense:
        raise CheckpointError(
            f"{source}: unsupported sentence-transformers module "
            f"'sentence_transformers.models.Dense' ({modules.dense[0].name}); "
            "llama.cpp applies Dense modules only to Gemma3 embedding models"
        )


def bert_hparams(
    where: Path, config: Mapping[str, Any], pooling_type: int, context_length: int
) -> BertHParams:
    """The hyper-parameters of a BERT-shaped encoder's config.json (BERT, XLM-RoBERTa)."""
    position = config.get("position_embedding_type", "absolute")
    if position != "absolute":
        raise CheckpointError(f"{where}: unsupported position_embedding_type {position!r}")
    act = config.get("hidden_act", "gelu")
    if act not in _GELU:
        raise CheckpointError(f"{where}: unsupported hidden_act {act!r} (llama.cpp uses GELU)")
    eps = config.get("layer_norm_eps", 1e-12)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool):
        raise CheckpointError(f"{where}: layer_norm_eps is not a number")
    try:
        return BertHParams(
            context_length=context_length,
            embedding_length=config_int(config, "hidden_size", where),
            block_count=config_int(config, "num_hidden_layers", where),
            feed_forward_length=config_int(config, "intermediate_size", where),
            head_count=config_int(config, "num_attention_heads", where),
            layer_norm_epsilon=float(eps),
            pooling=pooling_type,
        )
    except ValueError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc


# -- the vocabulary


def read_wordpiece_vocab(
    source: Path, model_dir: Path, vocab_size: int
) -> tuple[WordPieceVocab, Path]:
    """The WordPiece vocabulary, its special tokens and normalisation; and the file read.

    Raises CheckpointError when the tokenizer is not WordPiece or lacks a special token.
    """
    tok_config = read_json_file(model_dir / "tokenizer_config.json") or {}
    special_map = read_json_file(model_dir / "special_tokens_map.json") or {}
    tokenizer_json = read_json_file(model_dir / "tokenizer.json")
    extra_control: set[int] = set()
    normalizer = _Normalizer()
    if tokenizer_json is not None:
        file = model_dir / "tokenizer.json"
        tokens, extra_control, normalizer = _tokenizer_json_vocab(file, tokenizer_json)
    elif (model_dir / "vocab.txt").is_file():
        file = model_dir / "vocab.txt"
        tokens = file.read_text(encoding="utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
    else:
        raise CheckpointError(f"{model_dir}: no tokenizer.json or vocab.txt")
    ids = {token: i for i, token in enumerate(tokens)}
    for key, value in (tok_config.get("added_tokens_decoder") or {}).items():
        if isinstance(value, dict) and value.get("special") and str(key).isdigit():
            extra_control.add(int(key))
    texts = {
        role: token_text(tok_config.get(f"{role}_token"))
        or token_text(special_map.get(f"{role}_token"))
        or default
        for role, default in _SPECIAL.items()
    }
    absent = [f"{role} {text!r}" for role, text in texts.items() if text not in ids]
    # A vocabulary without a mask token never needs one for embedding.
    if any(not a.startswith("mask ") for a in absent):
        raise CheckpointError(f"{file}: special tokens not in the vocabulary: {', '.join(absent)}")
    special = {role: ids[text] for role, text in texts.items() if text in ids}
    special.setdefault("mask", special["unk"])
    if len(tokens) > vocab_size:
        raise CheckpointError(
            f"{file}: {len(tokens)} tokens, more than config.json's vocab_size {vocab_size}"
        )
    # Embedding rows beyond the vocabulary get placeholder control tokens.
    extra_control |= set(range(len(tokens), vocab_size))
    tokens = tokens + [f"[PAD{i}]" for i in range(len(tokens), vocab_size)]
    lowercase, strip = _normalization(tok_config, normalizer)
    try:
        vocab = WordPieceVocab(
            tokens=tuple(tokens),
            cls_id=special["cls"],
            sep_id=special["sep"],
            pad_id=special["pad"],
            unk_id=special["unk"],
            mask_id=special["mask"],
            lowercase=lowercase,
            strip_accents=strip,
            extra_control_ids=frozenset(i for i in extra_control if 0 <= i < len(tokens)),
        )
    except ValueError as exc:
        raise CheckpointError(f"{file}: {exc}") from exc
    st_config = read_json_file(model_dir / "sentence_bert_config.json") or read_json_file(
        source / "sentence_bert_config.json"
    )
    if st_config and st_config.get("do_lower_case") is True and not vocab.lowercase:
        # sentence-transformers lower-cases the text itself before tokenizing.
        vocab = dataclasses.replace(vocab, lowercase=True)
    return vocab, file


def _tokenizer_json_vocab(
    file: Path, data: dict[str, Any]
) -> tuple[list[str], set[int], _Normalizer]:
    """Tokens by id, ids of special added tokens, and the normalizer of a tokenizer.json."""
    model = data.get("model")
    if not isinstance(model, dict) or model.get("type") != "WordPiece":
        kind = model.get("type") if isinstance(model, dict) else None
        raise CheckpointError(f"{file}: unsupported tokenizer model {kind!r}; need WordPiece")
    if model.get("continuing_subword_prefix", "##") != "##":
        raise CheckpointError(f"{file}: continuing_subword_prefix must be '##'")
    by_id: dict[int, str] = {}
    for token, i in (model.get("vocab") or {}).items():
        by_id[int(i)] = token
    special: set[int] = set()
    for added in data.get("added_tokens") or []:
        if isinstance(added, dict) and isinstance(added.get("id"), int):
            by_id.setdefault(added["id"], str(added.get("content", "")))
            if added.get("special"):
                special.add(added["id"])
    if sorted(by_id) != list(range(len(by_id))):
        raise CheckpointError(f"{file}: token ids are not 0..{len(by_id) - 1} without gaps")
    normalizer = data.get("normalizer")
    return [by_id[i] for i in range(len(by_id))], special, _read_normalizer(normalizer)


@dataclass(frozen=True)
class _Normalizer:
    """What a tokenizer.json normalizer does about case and accents; None: not said."""

    lowercase: bool | None = None
    strip_accents: bool | None = None


def _read_normalizer(normalizer: object) -> _Normalizer:
    """The case and accent settings of a tokenizer.json normalizer."""
    if not isinstance(normalizer, dict):
        return _Normalizer()
    kind = normalizer.get("type")
    if kind == "BertNormalizer":
        strip = normalizer.get("strip_accents")
        return _Normalizer(
            lowercase=bool(normalizer.get("lowercase", True)),
            strip_accents=strip if isinstance(strip, bool) else None,
        )
    if kind == "Lowercase":
        return _Normalizer(lowercase=True)
    if kind == "StripAccents":
        return _Normalizer(strip_accents=True)
    if kind == "Sequence":
        lowercase, strip = None, None
        for inner in normalizer.get("normalizers") or []:
            found = _read_normalizer(inner)
            lowercase = lowercase or found.lowercase
            strip = strip or found.strip_accents
        return _Normalizer(lowercase, strip)
    return _Normalizer()


def _normalization(tok_config: dict[str, Any], normalizer: _Normalizer) -> tuple[bool, bool | None]:
    """(lowercase, strip_accents): tokenizer_config.json wins, as transformers applies it.

    BertTokenizer lower-cases unless told otherwise.
    """
    lowercase = tok_config.get("do_lower_case", normalizer.lowercase)
    strip = tok_config.get("strip_accents", normalizer.strip_accents)
    return lowercase is not False, strip if isinstance(strip, bool) else None


# -- the weights


@contextlib.contextmanager
def open_weights(files: tuple[Path, ...]) -> Iterator[Mapping[str, npt.NDArray[np.floating]]]:
    """The tensors of a BERT checkpoint's safetensors `files`, read on access."""
    with hf_open_weights(files, _is_weight) as tensors:
        yield tensors


def _is_weight(name: str) -> bool:
    """True for tensors that go into the GGUF (unknown names are reported later)."""
    try:
        return gguf_tensor_name(name) is not None
    except ValueError:
        return False
