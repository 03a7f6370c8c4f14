"""SentencePiece unigram vocabularies (XLM-RoBERTa's), as llama.cpp's `t5` (UGM) tokenizer.

Read from tokenizer.json's `Unigram` model: pieces with their log
probabilities as scores, the unknown piece, added tokens as control (special)
or user-defined tokens. llama.cpp's UGM tokenizer replaces spaces by U+2581,
prepends one (`add_space_prefix`), may merge runs of spaces
(`remove_extra_whitespaces`) and applies SentencePiece's precompiled
normalisation map, which is copied over as is. Any other normaliser or
pre-tokenizer is refused: llama.cpp would tokenize differently.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emberd.models.convert.sentencepiece_model import UNIGRAM, read_sentencepiece_model
from emberd.models.convert.vocab import (
    GGUFVocab,
    TokenizerFiles,
    TokenType,
    one_affix,
    pad_to,
    post_processor_affixes,
    special_ids,
)
from emberd.models.errors import CheckpointError

_SPACE = "\u2581"
_KNOWN_TYPES = frozenset(int(t) for t in TokenType)


def read_unigram_vocab(files: TokenizerFiles, vocab_size: int, token_type_count: int) -> GGUFVocab:
    """The Unigram vocabulary as llama.cpp's UGM tokenizer reads it.

    From tokenizer.json when there is one, else from XLM-RoBERTa's
    `sentencepiece.bpe.model`.
    """
    model_file = files.directory / "sentencepiece.bpe.model"
    if files.tokenizer is None and model_file.is_file():
        return _fairseq_vocab(model_file, vocab_size, token_type_count)
    where = files.tokenizer_path
    model = files.model("Unigram")
    if model.get("byte_fallback"):
        raise CheckpointError(f"{where}: byte_fallback unigram models are not supported")
    tokens: list[str] = []
    scores: list[float] = []
    for entry in model.get("vocab") or []:
        if not (isinstance(entry, list) and len(entry) == 2):
            raise CheckpointError(f"{where}: Unigram vocab entries must be [piece, score]")
        tokens.append(str(entry[0]))
        scores.append(float(entry[1]))
    if not tokens:
        raise CheckpointError(f"{where}: the Unigram vocabulary is empty")
    types = [int(TokenType.NORMAL)] * len(tokens)
    for token_id, text, is_special in files.added_tokens():
        if not 0 <= token_id < len(tokens) or tokens[token_id] != text:
            raise CheckpointError(f"{where}: added token {text!r} is not vocabulary id {token_id}")
        types[token_id] = TokenType.CONTROL if is_special else TokenType.USER_DEFINED
    unk_id = model.get("unk_id")
    if isinstance(unk_id, int) and 0 <= unk_id < len(tokens):
        types[unk_id] = TokenType.UNKNOWN
    else:
        raise CheckpointError(f"{where}: the Unigram model has no unk_id")
    pad_to(tokens, types, scores, vocab_size, where)

    ids = {text: i for i, text in reversed(list(enumerate(tokens)))}
    before, after = post_processor_affixes(files)
    bos = one_affix(before, ids, "before", where)
    eos = one_affix(after, ids, "after", where)
    special = special_ids(files, ids, {"pad": ("pad",), "mask": ("mask",), "sep": ("sep", "eos")})
    special["unk"] = unk_id
    if bos is not None:
        special["bos"] = bos
    if eos is not None:
        special["eos"] = eos
    charsmap, merge_spaces = _normalizer(files.tokenizer or {}, where)
    return GGUFVocab(
        model="t5",
        pre="default",
        tokens=tokens,
        token_types=types,
        scores=scores,
        special=special,
        add_bos=bos is not None,
        add_eos=eos is not None,
        flags={
            "add_space_prefix": _prepends_space(files.tokenizer or {}, where),
            "remove_extra_whitespaces": merge_spaces,
        },
        precompiled_charsmap=charsmap,
        token_type_count=token_type_count,
    )


def _normalizer(data: Mapping[str, Any], where: object) -> tuple[bytes | None, bool]:
    """(precompiled charsmap, whether runs of spaces are merged) of the normalizer."""
    normalizer = data.get("normalizer")
    parts = (
        normalizer.get("normalizers")
        if isinstance(normalizer, dict) and (normalizer.get("type") == "Sequence")
        else [normalizer]
    )
    charsmap: bytes | None = None
    merge_spaces = False
    for part in parts or []:
        if part is None:
            continue
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "Precompiled":
            try:
                charsmap = base64.b64decode(part.get("precompiled_charsmap") or "", validate=True)
            except (binascii.Error, ValueError) as exc:
                raise CheckpointError(f"{where}: precompiled_charsmap is not base64") from exc
        elif kind == "Replace" and _is_space_merge(part):
            merge_spaces = True
        else:
            raise CheckpointError(
                f"{where}: unsupported normalizer {kind!r} for a unigram vocabulary "
                "(llama.cpp applies only SentencePiece's precompiled map and space merging)"
            )
    return charsmap or None, merge_spaces


def _is_space_merge(part: Mapping[str, Any]) -> bool:
    pattern = part.get("pattern") or {}
    return pattern.get("Regex") == " {2,}" and part.get("content") == " "


def _prepends_space(data: Mapping[str, Any], where: object) -> bool:
    """Whether the Metaspace pre-tokenizer prepends U+2581 to the text."""
    pre = data.get("pre_tokenizer")
    parts = (
        pre.get("pretokenizers")
        if isinstance(pre, dict) and pre.get("type") == "Sequence"
        else [pre]
    )
    for part in parts or []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "WhitespaceSplit":
            continue
        if (
            not isinstance(part, dict)
            or kind != "Metaspace"
            or (part.get("replacement", _SPACE) != _SPACE)
        ):
            raise CheckpointError(
                f"{where}: unsupported pre_tokenizer {kind!r} for a unigram vocabulary "
                "(llama.cpp splits like SentencePiece's Metaspace)"
            )
        scheme = part.get("prepend_scheme")
        return (
            scheme != "never"
            if scheme is not None
            else part.get("add_prefix_space", True) is not False
        )
    raise CheckpointError(f"{where}: a unigram vocabulary needs a Metaspace pre_tokenizer")


# fairseq's ids for XLM-RoBERTa: four specials first, SentencePiece's pieces
# shifted by one after its own <unk>, <s>, </s>, and <mask> last.
_FAIRSEQ = (
    ("<s>", TokenType.CONTROL),
    ("<pad>", TokenType.CONTROL),
    ("</s>", TokenType.CONTROL),
    ("<unk>", TokenType.UNKNOWN),
)


def _fairseq_vocab(path: Path, vocab_size: int, token_type_count: int) -> GGUFVocab:
    """An XLM-RoBERTa `sentencepiece.bpe.model` with fairseq's ids, as the model was trained."""
    model = read_sentencepiece_model(path)
    if model.model_type != UNIGRAM:
        raise CheckpointError(f"{path}: not a unigram SentencePiece model")
    tokens = [text for text, _ in _FAIRSEQ]
    types = [int(kind) for _, kind in _FAIRSEQ]
    scores = [0.0] * len(_FAIRSEQ)
    for piece in model.pieces[3:]:
        tokens.append(piece.text)
        types.append(piece.kind if piece.kind in _KNOWN_TYPES else int(TokenType.NORMAL))
        scores.append(piece.score)
    tokens.append("<mask>")
    types.append(TokenType.CONTROL)
    scores.append(0.0)
    pad_to(tokens, types, scores, vocab_size, path)
    return GGUFVocab(
        model="t5",
        pre="default",
        tokens=tokens,
        token_types=types,
        scores=scores,
        special={"bos": 0, "pad": 1, "eos": 2, "sep": 2, "unk": 3, "mask": len(model.pieces) + 1},
        add_bos=True,
        add_eos=True,
        flags={
            "add_space_prefix": model.add_dummy_prefix,
            "remove_extra_whitespaces": model.remove_extra_whitespaces,
        },
        precompiled_charsmap=model.precompiled_charsmap or None,
        token_type_count=token_type_count,
    )
