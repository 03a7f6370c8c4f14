"""A tokenizer as llama.cpp reads it from GGUF, and the reading of tokenizer.json's common parts.

Every tokenizer reader (`unigram`, `byte_bpe`, `spm_bpe`) produces a
`GGUFVocab`: the `tokenizer.ggml.*` keys llama.cpp's vocabulary loader
reads (model, pre-tokenizer, tokens with their types and scores, merges,
special token ids and the flags that add them around a text).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any

import gguf

from emberd.models.errors import CheckpointError
from emberd.models.hf_source import read_json_file, token_text


class TokenType(IntEnum):
    """llama.cpp's token types (`tokenizer.ggml.token_type`)."""

    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


# Special token roles -> llama.cpp's key suffix (its own spelling of separator).
_SPECIAL_KEYS = {
    "bos": "bos_token_id",
    "eos": "eos_token_id",
    "unk": "unknown_token_id",
    "sep": "seperator_token_id",
    "pad": "padding_token_id",
    "mask": "mask_token_id",
}


@dataclass(frozen=True)
class GGUFVocab:
    """Everything written under `tokenizer.ggml.*`."""

    model: str  # "t5", "gpt2", "llama", ...
    tokens: Sequence[str]
    token_types: Sequence[int]
    special: Mapping[str, int]  # role ("bos", "eos", "unk", "sep", "pad", "mask") -> id
    add_bos: bool
    add_eos: bool
    pre: str | None = None  # pre-tokenizer name (BPE)
    scores: Sequence[float] | None = None
    merges: Sequence[str] | None = None
    add_sep: bool | None = None
    flags: Mapping[str, bool] = field(default_factory=dict)  # e.g. add_space_prefix
    precompiled_charsmap: bytes | None = None
    token_type_count: int | None = None

    def __post_init__(self) -> None:
        n = len(self.tokens)
        if len(self.token_types) != n or (self.scores is not None and len(self.scores) != n):
            raise ValueError("tokens, token types and scores differ in length")
        bad = {role: i for role, i in self.special.items() if not 0 <= i < n}
        if bad:
            raise ValueError(f"special token ids out of range of {n} tokens: {bad}")


def add_vocab(writer: gguf.GGUFWriter, vocab: GGUFVocab) -> None:
    """Write `vocab` as llama.cpp's tokenizer keys."""
    writer.add_string("tokenizer.ggml.model", vocab.model)
    if vocab.pre is not None:
        writer.add_string("tokenizer.ggml.pre", vocab.pre)
    writer.add_array("tokenizer.ggml.tokens", list(vocab.tokens))
    if vocab.scores is not None:
        writer.add_array("tokenizer.ggml.scores", [float(s) for s in vocab.scores])
    writer.add_array("tokenizer.ggml.token_type", [int(t) for t in vocab.token_types])
    if vocab.merges is not None:
        writer.add_array("tokenizer.ggml.merges", list(vocab.merges))
    if vocab.token_type_count is not None:
        writer.add_uint32("tokenizer.ggml.token_type_count", vocab.token_type_count)
    for role, token_id in vocab.special.items():
        writer.add_uint32(f"tokenizer.ggml.{_SPECIAL_KEYS[role]}", token_id)
    writer.add_bool("tokenizer.ggml.add_bos_token", vocab.add_bos)
    writer.add_bool("tokenizer.ggml.add_eos_token", vocab.add_eos)
    if vocab.add_sep is not None:
        writer.add_bool("tokenizer.ggml.add_sep_token", vocab.add_sep)
    for key, value in vocab.flags.items():
        writer.add_bool(f"tokenizer.ggml.{key}", value)
    if vocab.precompiled_charsmap:
        # bytes are written as a UINT8 array, the type llama.cpp accepts.
        writer.add_array("tokenizer.ggml.precompiled_charsmap", vocab.precompiled_charsmap)


# -- tokenizer files


@dataclass(frozen=True)
class TokenizerFiles:
    """The JSON tokenizer files of a model directory (empty dicts when absent)."""

    directory: Path
    tokenizer: Mapping[str, Any] | None  # tokenizer.json
    config: Mapping[str, Any]  # tokenizer_config.json
    special_map: Mapping[str, Any]  # special_tokens_map.json

    @property
    def tokenizer_path(self) -> Path:
        """tokenizer.json's path, for messages."""
        return self.directory / "tokenizer.json"

    def special_text(self, role: str) -> str | None:
        """The text of special token `role` ("bos", "eos", "cls", ...) as the configs name it."""
        key = f"{role}_token"
        return token_text(self.config.get(key)) or token_text(self.special_map.get(key))

    def model(self, kind: str) -> Mapping[str, Any]:
        """tokenizer.json's `model` section, which must be of type `kind`."""
        model = (self.tokenizer or {}).get("model")
        found = model.get("type") if isinstance(model, dict) else None
        if found != kind:
            raise CheckpointError(
                f"{self.tokenizer_path}: unsupported tokenizer model {found!r}; need {kind}"
            )
        assert isinstance(model, dict)
        return model

    def added_tokens(self) -> list[tuple[int, str, bool]]:
        """(id, text, special) of tokenizer.json's added tokens."""
        found = []
        for added in (self.tokenizer or {}).get("added_tokens") or []:
            if isinstance(added, dict) and isinstance(added.get("id"), int):
                found.append(
                    (added["id"], str(added.get("content", "")), bool(added.get("special")))
                )
        return found


def read_tokenizer_files(model_dir: Path) -> TokenizerFiles:
    """tokenizer.json, tokenizer_config.json and special_tokens_map.json of `model_dir`."""
    return TokenizerFiles(
        directory=model_dir,
        tokenizer=read_json_file(model_dir / "tokenizer.json"),
        config=read_json_file(model_dir / "tokenizer_config.json") or {},
        special_map=read_json_file(model_dir / "special_tokens_map.json") or {},
    )


@dataclass(frozen=True)
class BpeTokens:
    """A tokenizer.json BPE vocabulary with its added tokens, in id order."""

    by_id: Mapping[int, str]  # only the ids the files name
    tokens: list[str]  # every id below the largest; a gap is "[PAD<id>]"
    added_types: Mapping[int, int]  # added tokens: CONTROL if special, else USER_DEFINED


def bpe_tokens(model: Mapping[str, Any], files: TokenizerFiles) -> BpeTokens:
    """The `vocab` of a BPE `model` in tokenizer.json, with the files' added tokens over it."""
    by_id: dict[int, str] = {int(i): str(t) for t, i in (model.get("vocab") or {}).items()}
    types: dict[int, int] = {}
    for token_id, text, is_special in files.added_tokens():
        by_id[token_id] = text
        types[token_id] = TokenType.CONTROL if is_special else TokenType.USER_DEFINED
    size = max(by_id, default=-1) + 1
    return BpeTokens(by_id, [by_id.get(i, f"[PAD{i}]") for i in range(size)], types)


def special_ids(
    files: TokenizerFiles, ids: Mapping[str, int], roles: Mapping[str, Sequence[str]]
) -> dict[str, int]:
    """Ids of special tokens: for each role, the first configured name in `roles[role]`.

    `roles` maps a GGUF role to the config names that may give it, e.g.
    {"sep": ("sep", "eos")}. A role no config names is left out; one named
    but not in the vocabulary is a CheckpointError.
    """
    found: dict[str, int] = {}
    for role, names in roles.items():
        for name in names:
            text = files.special_text(name)
            if text is None:
                continue
            if text not in ids:
                raise CheckpointError(
                    f"{files.directory}: special token {name} {text!r} is not in the vocabulary"
                )
            found[role] = ids[text]
            break
    return found


def pad_to(
    tokens: list[str], types: list[int], scores: list[float] | None, size: int, where: Path
) -> None:
    """Extend the vocabulary to the embedding's `size` rows with unused placeholders."""
    if len(tokens) > size:
        raise CheckpointError(
            f"{where}: {len(tokens)} tokens, more than config.json's vocab_size {size}"
        )
    for i in range(len(tokens), size):
        tokens.append(f"[PAD{i}]")
        types.append(TokenType.UNUSED)
        if scores is not None:
            scores.append(-10000.0)


def post_processor_affixes(files: TokenizerFiles) -> tuple[list[str], list[str]]:
    """The special tokens tokenizer.json's post-processor puts before and after one text.

    Understands TemplateProcessing, BertProcessing / RobertaProcessing and
    Sequences of them with ByteLevel; no post-processor adds nothing.
    """
    processor = (files.tokenizer or {}).get("post_processor")
    return _affixes(processor, files.tokenizer_path)


def _affixes(processor: object, where: Path) -> tuple[list[str], list[str]]:
    if processor is None:
        return [], []
    if not isinstance(processor, dict):
        raise CheckpointError(f"{where}: post_processor is not an object")
    kind = processor.get("type")
    if kind in ("BertProcessing", "RobertaProcessing"):
        return [str(processor["cls"][0])], [str(processor["sep"][0])]
    if kind == "ByteLevel":
        return [], []
    if kind == "Sequence":
        before: list[str] = []
        after: list[str] = []
        for inner in processor.get("processors") or []:
            b, a = _affixes(inner, where)
            before, after = before + b, after + a
        return before, after
    if kind == "TemplateProcessing":
        before, after, seen = [], [], False
        for piece in processor.get("single") or []:
            if "Sequence" in piece:
                seen = True
            elif "SpecialToken" in piece:
                (after if seen else before).append(str(piece["SpecialToken"]["id"]))
        return before, after
    raise CheckpointError(f"{where}: unsupported post_processor {kind!r}")


def one_affix(texts: list[str], ids: Mapping[str, int], what: str, where: Path) -> int | None:
    """The id of the single special token added on one side of a text (llama.cpp adds one)."""
    if not texts:
        return None
    if len(texts) > 1:
        raise CheckpointError(
            f"{where}: the tokenizer adds {len(texts)} tokens {what} a text ({', '.join(texts)}); "
            "llama.cpp adds one"
        )
    if texts[0] not in ids:
        raise CheckpointError(
            f"{where}: post_processor token {texts[0]!r} is not in the vocabulary"
        )
    return ids[texts[0]]
