"""tokenizer.json files (and a SentencePiece model) for the tiny test checkpoints.

Each builder writes what Hugging Face's converters write for one tokenizer
family, with a vocabulary made up to cover `tests.support.hf_families.TOKENIZER_TEXTS`:
SentencePiece unigram (XLM-RoBERTa), WordPiece (BERT, nomic-bert), byte-level
BPE (Qwen) and SentencePiece BPE with byte fallback (Gemma).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

_UNIGRAM_WORDS = (
    "why",
    "is",
    "the",
    "sky",
    "blue",
    "hello",
    "world",
    "café",
    "naïve",
    "über",
    "emoji",
    "and",
    "a",
    "rocket",
    "numbers",
    "super",
    "cali",
    "fragil",
    "istic",
    "expi",
    "ali",
    "docious",
    "multiple",
    "spaces",
    "tabs",
)

_UNIGRAM_PIECES = (
    "日本",
    "語",
    "の",
    "テキスト",
    "と",
    "中文",
    "😀",
    "🎉",
    "ça",
    "ade",
    "Straße",
    "He",
    "llo",
    "Wor",
    "ld",
    "12",
    "345",
    "3.",
    "14",
    "aaaa",
    "bbb",
)

_CHARS = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-"
    "éïüçßà日本語中文テキストのと"
)


def special_token(token_id: int, content: str) -> dict[str, Any]:
    """An `added_tokens` entry of tokenizer.json for a special token."""
    return {
        "id": token_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def unigram_tokenizer(
    seed: int, pieces: list[tuple[str, float]] | None = None, charsmap: bytes = b""
) -> dict[str, Any]:
    """A tokenizer.json as Hugging Face converts an XLM-RoBERTa SentencePiece model.

    The pieces are made up to cover the test texts, unless `pieces` (a
    SentencePiece model's normal pieces and scores) and its precompiled
    normalisation map `charsmap` are given.
    """
    vocab: list[list[Any]] = [["<s>", 0.0], ["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0]]
    if pieces is None:
        vocab += _made_up_pieces(np.random.default_rng(seed))
    else:
        vocab += [[text, score] for text, score in pieces]
    vocab.append(["<mask>", 0.0])
    added = [
        special_token(i, p)
        for i, (p, _) in enumerate(vocab)
        if p in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
    ]
    precompiled = {
        "type": "Precompiled",
        "precompiled_charsmap": base64.b64encode(charsmap).decode(),
    }
    merge_spaces = {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}
    metaspace = {
        "type": "Metaspace",
        "replacement": "\u2581",
        "prepend_scheme": "always",
        "split": True,
    }
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {
            "type": "Sequence",
            "normalizers": [precompiled, merge_spaces] if charsmap else [merge_spaces],
        },
        "pre_tokenizer": metaspace,
        "post_processor": {
            "type": "RobertaProcessing",
            "sep": ["</s>", 2],
            "cls": ["<s>", 0],
            "trim_offsets": True,
            "add_prefix_space": True,
        },
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": 3, "vocab": vocab, "byte_fallback": False},
    }


def _made_up_pieces(rng: np.random.Generator) -> list[list[Any]]:
    """Pieces and scores covering the test texts: words, word parts, single characters."""
    pieces: dict[str, float] = {"\u2581": -3.0}
    for word in _UNIGRAM_WORDS:
        pieces.setdefault("\u2581" + word, round(float(rng.uniform(-9, -4)), 4))
        pieces.setdefault(word, round(float(rng.uniform(-10, -6)), 4))
    for piece in _UNIGRAM_PIECES:
        pieces.setdefault(piece, round(float(rng.uniform(-9, -5)), 4))
        pieces.setdefault("\u2581" + piece, round(float(rng.uniform(-9, -5)), 4))
    for char in _CHARS:
        pieces.setdefault(char, round(float(rng.uniform(-12, -10)), 4))
    return [[piece, score] for piece, score in pieces.items()]


_WORDPIECE_WORDS = (
    "why",
    "is",
    "the",
    "sky",
    "blue",
    "hello",
    "world",
    "cafe",
    "naive",
    "uber",
    "facade",
    "emoji",
    "and",
    "a",
    "rocket",
    "numbers",
    "super",
    "multiple",
    "spaces",
    "tabs",
    "strasse",
)

_WORDPIECE_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789日本語中文のテキストと😀🎉ß"

_PUNCT = ".,!?'-"


def wordpiece_tokenizer() -> dict[str, Any]:
    """A lower-casing BERT tokenizer.json whose vocabulary covers the test texts."""
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = [
        *special,
        *_WORDPIECE_WORDS,
        *_PUNCT,
        *_WORDPIECE_CHARS,
        *(f"##{c}" for c in _WORDPIECE_CHARS),
        "##ing",
        "##er",
        "##ali",
        "##cious",
    ]
    vocab = {p: i for i, p in enumerate(dict.fromkeys(pieces))}
    added = [special_token(vocab[t], t) for t in special]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {
            "type": "BertNormalizer",
            "clean_text": True,
            "handle_chinese_chars": True,
            "strip_accents": None,
            "lowercase": True,
        },
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "BertProcessing",
            "sep": ["[SEP]", vocab["[SEP]"]],
            "cls": ["[CLS]", vocab["[CLS]"]],
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {
            "type": "WordPiece",
            "unk_token": "[UNK]",
            "continuing_subword_prefix": "##",
            "max_input_chars_per_word": 100,
            "vocab": vocab,
        },
    }


QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_BPE_WORDS = (
    "why",
    " why",
    " is",
    " the",
    " sky",
    " blue",
    "Hello",
    " World",
    " hello",
    " world",
    " café",
    " naïve",
    " über",
    " façade",
    " Straße",
    "日本",
    "語",
    "のテキスト",
    "中文",
    " 😀",
    " emoji",
    " and",
    " a",
    " rocket",
    "super",
    "cal",
    "ifrag",
    "aaaa",
    "bbbb",
    " multiple",
    " spaces",
    " numbers",
    "12",
    "345",
)


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode table: printable bytes as themselves, the rest shifted."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, shifted = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + shifted)
            shifted += 1
    return [table[b] for b in range(256)]


def byte_bpe_tokenizer(extra_rows: int = 5) -> tuple[dict[str, Any], int]:
    """A Qwen-style tokenizer.json (and the embedding rows) appending <|endoftext|>."""
    alphabet = _byte_alphabet()
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    merges: list[list[str]] = []
    for word in _BPE_WORDS:
        text = "".join(alphabet[b] for b in word.encode("utf-8"))
        for k in range(2, len(text) + 1):
            if text[:k] not in vocab:
                merges.append([text[: k - 1], text[k - 1]])
                vocab[text[:k]] = len(vocab)
    n = len(vocab)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    added = [special_token(n + i, s) for i, s in enumerate(specials)]
    eot = {"id": "<|endoftext|>", "type_id": 0}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": QWEN2_SPLIT},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {
                    "type": "ByteLevel",
                    "add_prefix_space": False,
                    "trim_offsets": False,
                    "use_regex": False,
                },
            ],
        },
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": eot}],
            "pair": [
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": eot},
                {"Sequence": {"id": "B", "type_id": 0}},
                {"SpecialToken": eot},
            ],
            "special_tokens": {
                "<|endoftext|>": {"id": "<|endoftext|>", "ids": [n], "tokens": ["<|endoftext|>"]}
            },
        },
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": True,
            "use_regex": True,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }
    return tokenizer, n + len(specials) + extra_rows


_SPM_WORDS = (
    "▁why",
    "▁is",
    "▁the",
    "▁sky",
    "▁blue",
    "Hello",
    "▁World",
    "▁hello",
    "▁world",
    "▁café",
    "▁naïve",
    "▁über",
    "▁Straße",
    "▁日本",
    "語",
    "のテキスト",
    "中文",
    "▁😀",
    "▁emoji",
    "▁and",
    "▁a",
    "▁rocket",
    "super",
    "cali",
    "▁multiple",
    "▁spaces",
    "aaaa",
    "bbbb",
    "▁numbers",
)

_SPM_CHARS = "▁abcdefghijklmnopqrstuvwxyzHSW0123456789.,!?'-éïüß日本語中文のテキスト😀"


def spm_bpe_tokenizer(extra_rows: int = 3) -> tuple[dict[str, Any], int]:
    """A Gemma-style tokenizer.json (byte fallback, <bos> ... <eos>) and the embedding rows."""
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    vocab = {t: i for i, t in enumerate(specials)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for ch in _SPM_CHARS:
        vocab.setdefault(ch, len(vocab))
    for word in _SPM_WORDS:
        for k in range(2, len(word) + 1):
            vocab.setdefault(word[:k], len(vocab))
    # As Hugging Face converts a SentencePiece model: every split of a piece into
    # two pieces is a merge, ranked by the piece's id.
    merges = [
        [piece[:k], piece[k:]]
        for piece in vocab
        if piece not in specials and not piece.startswith("<0x")
        for k in range(1, len(piece))
        if piece[:k] in vocab and piece[k:] in vocab
    ]
    added = [special_token(vocab[t], t) for t in specials]
    bos, eos = {"id": "<bos>", "type_id": 0}, {"id": "<eos>", "type_id": 0}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                {"SpecialToken": bos},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": eos},
            ],
            "pair": [
                {"SpecialToken": bos},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": eos},
                {"Sequence": {"id": "B", "type_id": 0}},
                {"SpecialToken": eos},
            ],
            "special_tokens": {
                "<bos>": {"id": "<bos>", "ids": [vocab["<bos>"]], "tokens": ["<bos>"]},
                "<eos>": {"id": "<eos>", "ids": [vocab["<eos>"]], "tokens": ["<eos>"]},
            },
        },
        "decoder": None,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "<unk>",
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": merges,
        },
    }
    return tokenizer, len(vocab) + extra_rows


def write_sentencepiece_model(path: Path, tokenizer: Mapping[str, Any]) -> None:
    """The unigram `tokenizer` as XLM-RoBERTa's sentencepiece.bpe.model (protobuf by hand).

    SentencePiece numbers <unk>, <s>, </s> 0, 1, 2 and its pieces from 3;
    fairseq's ids (tokenizer.json's) put <s>, <pad>, </s>, <unk> first and
    <mask> last, so the pieces are tokenizer.json's ids 4 to the last but one.
    """

    def varint(n: int) -> bytes:
        out = b""
        while True:
            byte, n = n & 0x7F, n >> 7
            out += bytes([byte | (0x80 if n else 0)])
            if not n:
                return out

    def field(number: int, payload: bytes) -> bytes:
        return varint(number << 3 | 2) + varint(len(payload)) + payload

    def piece(text: str, score: float, kind: int) -> bytes:
        body = field(1, text.encode()) + varint(2 << 3 | 5) + struct.pack("<f", score)
        return field(1, body + varint(3 << 3) + varint(kind))

    vocab = tokenizer["model"]["vocab"]
    data = piece("<unk>", 0.0, 2) + piece("<s>", 0.0, 3) + piece("</s>", 0.0, 3)
    for text, score in vocab[4:-1]:
        data += piece(text, score, 1)
    data += field(2, varint(3 << 3) + varint(1))  # trainer_spec.model_type = UNIGRAM
    normalizer = field(1, b"identity") + varint(3 << 3) + varint(1) + varint(4 << 3) + varint(1)
    data += field(3, normalizer)
    path.write_bytes(data)
