"""Tiny random checkpoints of every architecture family `emberd import` converts.

Each writer lays out a directory as Hugging Face and sentence-transformers
save it (config.json, model.safetensors, tokenizer.json and its configs,
modules.json, 1_Pooling/, Dense modules) and returns a `Family` with the
float32 tensors written, so a test can run the same weights through
`tests.reference_forward`. Every tensor is random, norms and biases
included, so a tensor mapped to the wrong place changes the vectors. The
tokenizers cover accents, CJK, emoji, byte fallback and long words.
"""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

# Texts whose token ids must agree between llama.cpp and the reference tokenizer.
TOKENIZER_TEXTS = (
    "why is the sky blue?",
    "Hello World, hello world!",
    "café naïve über façade Straße",
    "日本語のテキストと中文",
    "emoji 😀 🎉 and a rocket 🚀",
    "supercalifragilisticexpialidocious",
    "a" * 70 + "b" * 30,
    "x multiple   spaces and\ttabs",
    "numbers 12345 and 3.14",
)
# Texts embedded by llama.cpp and by the numpy reference.
EMBED_TEXTS = (
    "why is the sky blue?",
    "café naïve über",
    "日本語 😀 world",
    "supercalifragilisticexpialidocious",
)


@dataclass(frozen=True)
class Family:
    """A written checkpoint: its directory, config.json and float32 tensors by name."""

    directory: Path
    config: Mapping[str, Any]
    tensors: Mapping[str, np.ndarray]
    pooling: str
    dense: tuple[np.ndarray, ...] = ()  # Dense module weights, in order


class Random:
    """Seeded random tensors: matrices scaled by 1/sqrt(fan-in), norms around 1."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def matrix(self, rows: int, cols: int) -> np.ndarray:
        return (self.rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)

    def embedding(self, rows: int, cols: int) -> np.ndarray:
        return self.rng.standard_normal((rows, cols)).astype(np.float32)

    def bias(self, n: int) -> np.ndarray:
        return (self.rng.standard_normal(n) * 0.1).astype(np.float32)

    def norm(self, n: int) -> np.ndarray:
        return (1.0 + self.rng.standard_normal(n) * 0.2).astype(np.float32)


# -- files


def write_json(path: Path, value: object) -> None:
    """`value` as JSON at `path` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=1, ensure_ascii=False), encoding="utf-8")


def write_modules(
    directory: Path, pooling: str, embedding_dim: int, dense: tuple[str, ...] = ()
) -> None:
    """modules.json: Transformer, Pooling (`pooling`), the Dense module paths, Normalize."""
    names = ["Transformer", "Pooling", *(["Dense"] * len(dense)), "Normalize"]
    paths = ["", "1_Pooling", *dense, f"{len(dense) + 2}_Normalize"]
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
        for i, (kind, path) in enumerate(zip(names, paths, strict=True))
    ]
    write_json(directory / "modules.json", modules)
    flags = {
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_lasttoken": pooling == "lasttoken",
        "pooling_mode_max_tokens": False,
    }
    write_json(
        directory / "1_Pooling" / "config.json",
        {"word_embedding_dimension": embedding_dim, **flags},
    )
    write_json(directory / "sentence_bert_config.json", {"max_seq_length": 64})


def write_weights(directory: Path, tensors: Mapping[str, np.ndarray]) -> None:
    save_file(dict(tensors), str(directory / "model.safetensors"), {"format": "pt"})


# -- XLM-RoBERTa: SentencePiece unigram


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
        {
            "id": i,
            "content": p,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
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


def write_xlm_roberta(
    directory: Path, seed: int = 0, pooling: str = "cls", tokenizer: dict[str, Any] | None = None
) -> Family:
    """A tiny XLMRobertaModel with a unigram tokenizer.json (bge-m3's layout)."""
    tokenizer = tokenizer or unigram_tokenizer(seed)
    vocab_size = len(tokenizer["model"]["vocab"])
    e, f, layers, heads, pad = 64, 128, 2, 4, 1
    positions = 64 + pad + 1
    config = {
        "architectures": ["XLMRobertaModel"],
        "model_type": "xlm-roberta",
        "hidden_act": "gelu",
        "hidden_size": e,
        "intermediate_size": f,
        "layer_norm_eps": 1e-5,
        "max_position_embeddings": positions,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "pad_token_id": pad,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "position_embedding_type": "absolute",
        "type_vocab_size": 1,
        "vocab_size": vocab_size,
    }
    r = Random(seed)
    tensors = {
        "embeddings.word_embeddings.weight": r.embedding(vocab_size, e),
        "embeddings.position_embeddings.weight": r.embedding(positions, e),
        "embeddings.token_type_embeddings.weight": r.embedding(1, e),
        "embeddings.LayerNorm.weight": r.norm(e),
        "embeddings.LayerNorm.bias": r.bias(e),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}"
        for part in (
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ):
            tensors[f"{p}.{part}.weight"] = r.matrix(e, e)
            tensors[f"{p}.{part}.bias"] = r.bias(e)
        tensors[f"{p}.intermediate.dense.weight"] = r.matrix(f, e)
        tensors[f"{p}.intermediate.dense.bias"] = r.bias(f)
        tensors[f"{p}.output.dense.weight"] = r.matrix(e, f)
        tensors[f"{p}.output.dense.bias"] = r.bias(e)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            tensors[f"{p}.{norm}.weight"] = r.norm(e)
            tensors[f"{p}.{norm}.bias"] = r.bias(e)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "config.json", config)
    write_weights(directory, {f"roberta.{k}": v for k, v in tensors.items()})
    write_json(directory / "tokenizer.json", tokenizer)
    special = {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "sep_token": "</s>",
        "pad_token": "<pad>",
        "cls_token": "<s>",
        "mask_token": "<mask>",
    }
    write_json(directory / "special_tokens_map.json", special)
    write_json(directory / "tokenizer_config.json", {"model_max_length": 64, **special})
    write_modules(directory, pooling, e)
    return Family(directory, config, tensors, pooling)


Writer = Callable[[Path], Family]


# -- nomic-bert: WordPiece


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
    added = [
        {
            "id": vocab[t],
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for t in special
    ]
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


def _write_wordpiece(directory: Path, tokenizer: dict[str, Any]) -> None:
    write_json(directory / "tokenizer.json", tokenizer)
    special = {f"{r}_token": f"[{r.upper()}]" for r in ("unk", "sep", "pad", "cls", "mask")}
    write_json(directory / "special_tokens_map.json", special)
    write_json(directory / "tokenizer_config.json", {"do_lower_case": True, **special})


def write_nomic_bert(directory: Path, seed: int = 1, pooling: str = "mean") -> Family:
    """A tiny NomicBertModel (nomic-embed-text's layout) with attention biases."""
    tokenizer = wordpiece_tokenizer()
    vocab_size = len(tokenizer["model"]["vocab"])
    e, f, layers, heads = 64, 96, 2, 4
    config = {
        "architectures": ["NomicBertModel"],
        "model_type": "nomic_bert",
        "activation_function": "swiglu",
        "causal": False,
        "n_embd": e,
        "n_head": heads,
        "n_inner": f,
        "n_layer": layers,
        "n_positions": 256,
        "max_trained_positions": 128,
        "layer_norm_epsilon": 1e-12,
        "prenorm": False,
        "qkv_proj_bias": True,
        "mlp_fc1_bias": False,
        "mlp_fc2_bias": False,
        "rotary_emb_base": 1000,
        "rotary_emb_fraction": 1.0,
        "rotary_emb_interleaved": False,
        "rotary_emb_scale_base": None,
        "type_vocab_size": 2,
        "vocab_size": vocab_size,
    }
    r = Random(seed)
    tensors = {
        "embeddings.word_embeddings.weight": r.embedding(vocab_size, e),
        "embeddings.token_type_embeddings.weight": r.embedding(2, e),
        "emb_ln.weight": r.norm(e),
        "emb_ln.bias": r.bias(e),
    }
    for i in range(layers):
        p = f"encoder.layers.{i}"
        tensors[f"{p}.attn.Wqkv.weight"] = r.matrix(3 * e, e)
        tensors[f"{p}.attn.Wqkv.bias"] = r.bias(3 * e)
        tensors[f"{p}.attn.out_proj.weight"] = r.matrix(e, e)
        tensors[f"{p}.attn.out_proj.bias"] = r.bias(e)
        tensors[f"{p}.mlp.fc11.weight"] = r.matrix(f, e)
        tensors[f"{p}.mlp.fc12.weight"] = r.matrix(f, e)
        tensors[f"{p}.mlp.fc2.weight"] = r.matrix(e, f)
        for norm in ("norm1", "norm2"):
            tensors[f"{p}.{norm}.weight"] = r.norm(e)
            tensors[f"{p}.{norm}.bias"] = r.bias(e)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "config.json", config)
    write_weights(directory, tensors)
    _write_wordpiece(directory, tokenizer)
    write_modules(directory, pooling, e)
    return Family(directory, config, tensors, pooling)


# -- Qwen3: byte-level BPE


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
    added = [
        {
            "id": n + i,
            "content": s,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, s in enumerate(specials)
    ]
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


def write_qwen3(directory: Path, seed: int = 2, pooling: str = "lasttoken") -> Family:
    """A tiny Qwen3Model as Qwen3-Embedding ships it (last-token pooling, EOS appended)."""
    tokenizer, vocab_size = byte_bpe_tokenizer()
    e, f, layers, heads, kv_heads, d = 64, 96, 2, 4, 2, 32
    config = {
        "architectures": ["Qwen3Model"],
        "model_type": "qwen3",
        "hidden_act": "silu",
        "hidden_size": e,
        "intermediate_size": f,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": d,
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "use_sliding_window": False,
        "tie_word_embeddings": True,
        "vocab_size": vocab_size,
    }
    r = Random(seed)
    tensors = {"embed_tokens.weight": r.embedding(vocab_size, e), "norm.weight": r.norm(e)}
    for i in range(layers):
        p = f"layers.{i}"
        tensors[f"{p}.input_layernorm.weight"] = r.norm(e)
        tensors[f"{p}.post_attention_layernorm.weight"] = r.norm(e)
        tensors[f"{p}.self_attn.q_proj.weight"] = r.matrix(heads * d, e)
        tensors[f"{p}.self_attn.k_proj.weight"] = r.matrix(kv_heads * d, e)
        tensors[f"{p}.self_attn.v_proj.weight"] = r.matrix(kv_heads * d, e)
        tensors[f"{p}.self_attn.o_proj.weight"] = r.matrix(e, heads * d)
        tensors[f"{p}.self_attn.q_norm.weight"] = r.norm(d)
        tensors[f"{p}.self_attn.k_norm.weight"] = r.norm(d)
        tensors[f"{p}.mlp.gate_proj.weight"] = r.matrix(f, e)
        tensors[f"{p}.mlp.up_proj.weight"] = r.matrix(f, e)
        tensors[f"{p}.mlp.down_proj.weight"] = r.matrix(e, f)
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "config.json", config)
    write_weights(directory, tensors)
    write_json(directory / "tokenizer.json", tokenizer)
    write_json(
        directory / "tokenizer_config.json",
        {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None},
    )
    write_modules(directory, pooling, e)
    return Family(directory, config, tensors, pooling)


# -- Gemma3 embedding: SentencePiece BPE with byte fallback, Dense modules


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
    added = [
        {
            "id": vocab[t],
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for t in specials
    ]
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


def write_gemma3(directory: Path, seed: int = 3, pooling: str = "mean") -> Family:
    """A tiny EmbeddingGemma: Gemma3TextModel, mean pooling, 2_Dense and 3_Dense."""
    tokenizer, vocab_size = spm_bpe_tokenizer()
    e, f, heads, kv_heads, d, k = 64, 96, 2, 1, 32, 128
    layer_types = ["sliding_attention", "full_attention", "sliding_attention"]
    config = {
        "architectures": ["Gemma3TextModel"],
        "model_type": "gemma3_text",
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": e,
        "intermediate_size": f,
        "num_hidden_layers": len(layer_types),
        "layer_types": layer_types,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": d,
        "query_pre_attn_scalar": d,
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0,
        "sliding_window": 8,
        "use_bidirectional_attention": True,
        "attn_logit_softcapping": None,
        "final_logit_softcapping": None,
        "vocab_size": vocab_size,
    }
    r = Random(seed)

    # Gemma's norm weights are offsets from 1: small values around 0.
    def offset(n: int) -> np.ndarray:
        return r.norm(n) - np.float32(1.0)

    tensors = {"embed_tokens.weight": r.embedding(vocab_size, e) / 8, "norm.weight": offset(e)}
    for i in range(len(layer_types)):
        p = f"layers.{i}"
        for norm in (
            "input_layernorm",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ):
            tensors[f"{p}.{norm}.weight"] = offset(e)
        tensors[f"{p}.self_attn.q_proj.weight"] = r.matrix(heads * d, e)
        tensors[f"{p}.self_attn.k_proj.weight"] = r.matrix(kv_heads * d, e)
        tensors[f"{p}.self_attn.v_proj.weight"] = r.matrix(kv_heads * d, e)
        tensors[f"{p}.self_attn.o_proj.weight"] = r.matrix(e, heads * d)
        tensors[f"{p}.self_attn.q_norm.weight"] = offset(d)
        tensors[f"{p}.self_attn.k_norm.weight"] = offset(d)
        tensors[f"{p}.mlp.gate_proj.weight"] = r.matrix(f, e)
        tensors[f"{p}.mlp.up_proj.weight"] = r.matrix(f, e)
        tensors[f"{p}.mlp.down_proj.weight"] = r.matrix(e, f)
    dense = (r.matrix(k, e), r.matrix(e, k))
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "config.json", config)
    write_weights(directory, tensors)
    write_json(directory / "tokenizer.json", tokenizer)
    write_json(
        directory / "tokenizer_config.json",
        {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"},
    )
    dense_paths = ("2_Dense", "3_Dense")
    for path, weight in zip(dense_paths, dense, strict=True):
        write_json(
            directory / path / "config.json",
            {
                "in_features": weight.shape[1],
                "out_features": weight.shape[0],
                "bias": False,
                "activation_function": "torch.nn.modules.linear.Identity",
            },
        )
        save_file({"linear.weight": weight}, str(directory / path / "model.safetensors"))
    write_modules(directory, pooling, e, dense_paths)
    return Family(directory, config, tensors, pooling, dense)


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
