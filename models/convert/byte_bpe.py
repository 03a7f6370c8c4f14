"""Byte-level BPE vocabularies (Qwen's), as llama.cpp's `gpt2` tokenizer.

Read from tokenizer.json's `BPE` model: tokens by id in the byte-to-unicode
alphabet both sides use, merges by rank, added tokens as control (special)
or user-defined tokens. llama.cpp splits the text with a fixed regex chosen
by name (`tokenizer.ggml.pre`), so the tokenizer.json's Split regex must be
one whose name is known here; anything else is refused. llama.cpp applies
no Unicode normalisation: an NFC normaliser is accepted, as text that is
already NFC (nearly all text) tokenizes the same.
"""

from __future__ import annotations

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

# tokenizer.json Split regexes -> llama.cpp's pre-tokenizer name for the same split.
PRE_TOKENIZERS: Mapping[str, str] = {
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
}


def read_byte_bpe_vocab(files: TokenizerFiles, vocab_size: int) -> GGUFVocab:
    """The tokenizer.json byte-level BPE vocabulary as llama.cpp's `gpt2` tokenizer reads it."""
    where = files.tokenizer_path
    data: Mapping[str, Any] = files.tokenizer or {}
    model = files.model("BPE")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise CheckpointError(f"{where}: unsupported BPE {key} {model[key]!r}")
    if model.get("byte_fallback"):
        raise CheckpointError(f"{where}: byte_fallback is not byte-level BPE")
    vocab = bpe_tokens(model, files)
    tokens = vocab.tokens
    token_types = [
        vocab.added_types.get(i, TokenType.NORMAL if i in vocab.by_id else TokenType.UNUSED)
        for i in range(len(tokens))
    ]
    pad_to(tokens, token_types, None, vocab_size, where)
    ids = {text: i for i, text in reversed(list(enumerate(tokens)))}
    before, after = post_processor_affixes(files)
    bos = one_affix(before, ids, "before", where)
    eos = one_affix(after, ids, "after", where)
    special = special_ids(files, ids, {"eos": ("eos",), "pad": ("pad",), "bos": ("bos",)})
    if bos is not None:
        special["bos"] = bos
    if eos is not None:
        special["eos"] = eos
    _check_normalizer(data.get("normalizer"), where)
    return GGUFVocab(
        model="gpt2",
        pre=_pre_tokenizer(data.get("pre_tokenizer"), where),
        tokens=tokens,
        token_types=token_types,
        merges=_merges(model.get("merges") or [], where),
        special=special,
        add_bos=bos is not None,
        add_eos=eos is not None,
    )


def _merges(merges: list[Any], where: object) -> list[str]:
    """Merges as "left right" strings (tokenizer.json writes strings or pairs)."""
    out = []
    for merge in merges:
        if isinstance(merge, str):
            out.append(merge)
        elif isinstance(merge, list) and len(merge) == 2:
            if " " in merge[0] or " " in merge[1]:
                raise CheckpointError(f"{where}: a merge contains a space: {merge!r}")
            out.append(f"{merge[0]} {merge[1]}")
        else:
            raise CheckpointError(f"{where}: unreadable merge {merge!r}")
    return out


def _check_normalizer(normalizer: object, where: object) -> None:
    kind = normalizer.get("type") if isinstance(normalizer, dict) else None
    if normalizer is not None and kind != "NFC":
        raise CheckpointError(
            f"{where}: unsupported normalizer {kind!r} for byte-level BPE (llama.cpp has none)"
        )


def _pre_tokenizer(pre: object, where: object) -> str:
    """llama.cpp's name for a Sequence of a Split regex and ByteLevel without its own regex."""
    parts = (
        pre.get("pretokenizers")
        if isinstance(pre, dict) and pre.get("type") == "Sequence"
        else None
    )
    if isinstance(parts, list) and len(parts) == 2:
        split, byte_level = parts
        regex = (split.get("pattern") or {}).get("Regex") if isinstance(split, dict) else None
        if (
            isinstance(split, dict)
            and split.get("type") == "Split"
            and split.get("behavior") == "Isolated"
            and not split.get("invert")
            and isinstance(byte_level, dict)
            and byte_level.get("type") == "ByteLevel"
            and byte_level.get("use_regex") is False
            and not byte_level.get("add_prefix_space")
        ):
            if isinstance(regex, str) and regex in PRE_TOKENIZERS:
                return PRE_TOKENIZERS[regex]
            raise CheckpointError(
                f"{where}: unsupported pre-tokenizer regex {regex!r}; "
                f"llama.cpp runs the splits of {', '.join(PRE_TOKENIZERS.values())}"
            )
    raise CheckpointError(
        f"{where}: unsupported pre_tokenizer; byte-level BPE needs a Split regex and ByteLevel"
    )
