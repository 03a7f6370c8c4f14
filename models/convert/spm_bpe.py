"""SentencePiece BPE vocabularies (Gemma's), as llama.cpp's `llama` (SPM) tokenizer.

tokenizer.json holds them as a `BPE` model with byte fallback: pieces with
U+2581 for spaces, merges by rank, `<0xNN>` byte pieces for text no piece
covers. llama.cpp's SPM tokenizer merges the adjacent pair whose joined
piece scores highest, so each piece's score is minus the rank of the first
merge that makes it: the same order of merges. Spaces become U+2581 in
both; no space is prepended (`add_space_prefix` false), as Gemma's
normaliser prepends none. Other normalisers or pre-tokenizers are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from emberd.models.convert.vocab import (
    GGUFVocab,
    TokenizerFiles,
    TokenType,
    bpe_tokens,
    one_affix,
    pad_to,
    post_processor_affixes,
    special_ids,
)
from emberd.models.errors import CheckpointError

_SPACE = "\u2581"
_BYTE = re.compile(r"<0x[0-9A-F]{2}>")


def read_spm_bpe_vocab(files: TokenizerFiles, vocab_size: int) -> GGUFVocab:
    """The tokenizer.json byte-fallback BPE vocabulary as llama.cpp's SPM tokenizer reads it."""
    where = files.tokenizer_path
    data: Mapping[str, Any] = files.tokenizer or {}
    model = files.model("BPE")
    if not model.get("byte_fallback"):
        raise CheckpointError(f"{where}: a SentencePiece BPE vocabulary needs byte_fallback")
    vocab = bpe_tokens(model, files)
    tokens = vocab.tokens
    token_types = [vocab.added_types.get(i, _type(vocab.by_id.get(i))) for i in range(len(tokens))]
    ids = {text: i for i, text in reversed(list(enumerate(tokens)))}
    unk = model.get("unk_token")
    if isinstance(unk, str) and unk in ids:
        token_types[ids[unk]] = TokenType.UNKNOWN
    scores = _scores(tokens, model.get("merges") or [], where)
    pad_to(tokens, token_types, scores, vocab_size, where)
    before, after = post_processor_affixes(files)
    bos = one_affix(before, ids, "before", where)
    eos = one_affix(after, ids, "after", where)
    special = special_ids(
        files, ids, {"bos": ("bos",), "eos": ("eos",), "unk": ("unk",), "pad": ("pad",)}
    )
    if bos is not None:
        special["bos"] = bos
    if eos is not None:
        special["eos"] = eos
    _check_text_handling(data, where)
    return GGUFVocab(
        model="llama",
        pre="default",
        tokens=tokens,
        token_types=token_types,
        scores=scores,
        special=special,
        add_bos=bos is not None,
        add_eos=eos is not None,
        flags={"add_space_prefix": False},
    )


def _type(text: str | None) -> int:
    if text is None:
        return TokenType.UNUSED
    return TokenType.BYTE if _BYTE.fullmatch(text) else TokenType.NORMAL


def _scores(tokens: list[str], merges: list[Any], where: object) -> list[float]:
    """Minus the rank of the first merge making each piece; pieces no merge makes score 0."""
    rank: dict[str, int] = {}
    for i, merge in enumerate(merges):
        if isinstance(merge, str):
            left, sep, right = merge.partition(" ")
            if not sep:
                raise CheckpointError(f"{where}: unreadable merge {merge!r}")
        elif isinstance(merge, list) and len(merge) == 2:
            left, right = str(merge[0]), str(merge[1])
        else:
            raise CheckpointError(f"{where}: unreadable merge {merge!r}")
        rank.setdefault(left + right, i)
    return [-float(rank[t]) if t in rank else 0.0 for t in tokens]


def _check_text_handling(data: Mapping[str, Any], where: object) -> None:
    """Only spaces replaced by U+2581 and no other splitting, as llama.cpp's SPM does."""
    normalizer = data.get("normalizer")
    replaces_spaces = (
        isinstance(normalizer, dict)
        and normalizer.get("type") == "Replace"
        and (normalizer.get("pattern") or {}).get("String") == " "
        and normalizer.get("content") == _SPACE
    )
    if not replaces_spaces:
        kind = normalizer.get("type") if isinstance(normalizer, dict) else normalizer
        raise CheckpointError(
            f"{where}: unsupported normalizer {kind!r}; SentencePiece BPE here needs "
            "spaces replaced by U+2581 and nothing else"
        )
    pre = data.get("pre_tokenizer")
    # Splitting on " " after spaces became U+2581 splits nothing.
    if pre is not None and not (
        isinstance(pre, dict)
        and pre.get("type") == "Split"
        and (pre.get("pattern") or {}).get("String") == " "
    ):
        kind = pre.get("type") if isinstance(pre, dict) else pre
        raise CheckpointError(f"{where}: unsupported pre_tokenizer {kind!r}")
