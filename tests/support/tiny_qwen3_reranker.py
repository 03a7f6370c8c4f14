"""A tiny random Qwen3-Reranker GGUF, as llama.cpp's converter writes one, and numpy of it.

The converter turns Qwen3-Reranker into a `qwen3` GGUF with rank pooling, the
labels `["yes", "no"]`, a `cls.output` made of the lm_head rows of "yes" and
"no", and a rerank prompt (`tokenizer.chat_template.rerank`) with `{query}`
and `{document}` in it. The score is the probability of "yes": the softmax of
the two values at the prompt's last token.

The vocabulary is byte-level BPE with the 256 byte symbols and one merge
that test texts never trigger, so a text is one token per byte (the special
tokens aside): `reference_ids` tokenizes without llama.cpp.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# The prompt llama.cpp's converter writes for Qwen3-Reranker.
TEMPLATE = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
    'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
    "<|im_start|>user\n<Instruct>: Given a web search query, retrieve relevant passages that "
    "answer the query\n<Query>: {query}\n<Document>: {document}<|im_end|>\n"
    "<|im_start|>assistant\n<think>\n\n</think>\n\n"
)
RMS_EPS = 1e-6
ROPE_BASE = 10000.0


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each byte, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    symbols, extra = {}, 0
    for b in range(256):
        if b in keep:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


BYTES = _byte_symbols()
# One merge, of two bytes no test text holds next to each other.
MERGE = ("Q", "Z")
TOKENS = (*BYTES, "QZ", *SPECIALS)


def reference_ids(text: str) -> list[int]:
    """Token ids of `text`: special tokens whole, every other byte its own token."""
    ids: list[int] = []
    for part in re.split("(" + "|".join(re.escape(s) for s in SPECIALS) + ")", text):
        if part in SPECIALS:
            ids.append(TOKENS.index(part))
        else:
            ids.extend(part.encode("utf-8"))
    return ids


@dataclass(frozen=True)
class Qwen3Weights:
    """A tiny Qwen3 decoder with its yes/no head, by GGUF tensor name."""

    tensors: dict[str, np.ndarray]
    heads: int
    kv_heads: int
    head_dim: int
    context_length: int


def qwen3_weights(
    *, embedding_length: int = 32, block_count: int = 2, heads: int = 4, kv_heads: int = 2,
    head_dim: int = 8, ff: int = 64, context_length: int = 1024, seed: int = 0,
) -> Qwen3Weights:  # fmt: skip
    """Random weights; the head's two rows differ enough for clear probabilities."""
    rng = np.random.default_rng(seed)
    e = embedding_length

    def normal(scale: float, *shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    t = {
        "token_embd.weight": normal(1.0, len(TOKENS), e),
        "output_norm.weight": 1 + normal(0.1, e),
        "cls.output.weight": normal(0.5, 2, e),
    }
    for i in range(block_count):
        p = f"blk.{i}"
        t[f"{p}.attn_norm.weight"] = 1 + normal(0.1, e)
        t[f"{p}.attn_q.weight"] = normal(0.3, heads * head_dim, e)
        t[f"{p}.attn_k.weight"] = normal(0.3, kv_heads * head_dim, e)
        t[f"{p}.attn_v.weight"] = normal(0.3, kv_heads * head_dim, e)
        t[f"{p}.attn_output.weight"] = normal(0.2, e, heads * head_dim)
        t[f"{p}.attn_q_norm.weight"] = 1 + normal(0.1, head_dim)
        t[f"{p}.attn_k_norm.weight"] = 1 + normal(0.1, head_dim)
        t[f"{p}.ffn_norm.weight"] = 1 + normal(0.1, e)
        t[f"{p}.ffn_gate.weight"] = normal(0.2, ff, e)
        t[f"{p}.ffn_up.weight"] = normal(0.2, ff, e)
        t[f"{p}.ffn_down.weight"] = normal(0.2, e, ff)
    return Qwen3Weights(t, heads, kv_heads, head_dim, context_length)


def write_qwen3_reranker(path: Path, weights: Qwen3Weights) -> Path:
    """Write `weights` as a Qwen3-Reranker GGUF; return `path`."""
    t = weights.tensors
    e = t["token_embd.weight"].shape[1]
    blocks = sum(1 for name in t if name.endswith("attn_q.weight"))
    w = gguf.GGUFWriter(path, "qwen3")
    w.add_string("general.name", "tiny-qwen3-reranker")
    w.add_uint32("general.file_type", 0)
    for key, value in (
        ("context_length", weights.context_length), ("embedding_length", e),
        ("block_count", blocks), ("feed_forward_length", t["blk.0.ffn_up.weight"].shape[0]),
        ("attention.head_count", weights.heads), ("attention.head_count_kv", weights.kv_heads),
        ("attention.key_length", weights.head_dim), ("attention.value_length", weights.head_dim),
        ("pooling_type", 4),
    ):  # fmt: skip
        w.add_uint32(f"qwen3.{key}", value)
    w.add_float32("qwen3.rope.freq_base", ROPE_BASE)
    w.add_float32("qwen3.attention.layer_norm_rms_epsilon", RMS_EPS)
    w.add_array("qwen3.classifier.output_labels", ["yes", "no"])
    w.add_string("tokenizer.ggml.model", "gpt2")
    w.add_string("tokenizer.ggml.pre", "qwen2")
    w.add_array("tokenizer.ggml.tokens", list(TOKENS))
    w.add_array("tokenizer.ggml.token_type", [1] * (len(TOKENS) - len(SPECIALS)) + [3] * 3)
    w.add_array("tokenizer.ggml.merges", [" ".join(MERGE)])
    w.add_uint32("tokenizer.ggml.eos_token_id", TOKENS.index("<|im_end|>"))
    w.add_uint32("tokenizer.ggml.padding_token_id", TOKENS.index("<|endoftext|>"))
    w.add_uint32("tokenizer.ggml.bos_token_id", TOKENS.index("<|endoftext|>"))
    w.add_bool("tokenizer.ggml.add_bos_token", False)
    w.add_string("tokenizer.chat_template.rerank", TEMPLATE)
    for name, value in t.items():
        w.add_tensor(name, np.ascontiguousarray(value, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# -- the reference: Qwen3's forward pass, the last token's yes/no softmax --------------------


def _rms(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + RMS_EPS) * weight


def _rope(x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Rotary embedding, halves rotated (NEOX order), on (tokens, heads, dim)."""
    half = x.shape[-1] // 2
    freq = ROPE_BASE ** (-np.arange(half) * 2.0 / x.shape[-1])
    angle = positions[:, None, None] * freq
    cos, sin = np.cos(angle), np.sin(angle)
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


def reference_probability(weights: Qwen3Weights, ids: list[int]) -> float:
    """P("yes") for one token sequence, in float64."""
    t = {k: v.astype(np.float64) for k, v in weights.tensors.items()}
    n, h, kvh, d = len(ids), weights.heads, weights.kv_heads, weights.head_dim
    x = t["token_embd.weight"][ids]
    positions = np.arange(n, dtype=np.float64)
    causal = np.triu(np.full((n, n), -np.inf), 1)
    blocks = sum(1 for name in t if name.endswith("attn_q.weight"))
    for i in range(blocks):
        p = f"blk.{i}"
        a = _rms(x, t[f"{p}.attn_norm.weight"])
        q = _rms((a @ t[f"{p}.attn_q.weight"].T).reshape(n, h, d), t[f"{p}.attn_q_norm.weight"])
        k = _rms((a @ t[f"{p}.attn_k.weight"].T).reshape(n, kvh, d), t[f"{p}.attn_k_norm.weight"])
        v = (a @ t[f"{p}.attn_v.weight"].T).reshape(n, kvh, d)
        q, k = _rope(q, positions), _rope(k, positions)
        k, v = np.repeat(k, h // kvh, axis=1), np.repeat(v, h // kvh, axis=1)
        scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(d) + causal
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        context = np.einsum("hqk,khd->qhd", scores, v).reshape(n, h * d)
        x = x + context @ t[f"{p}.attn_output.weight"].T
        f = _rms(x, t[f"{p}.ffn_norm.weight"])
        gate = f @ t[f"{p}.ffn_gate.weight"].T
        x = (
            x
            + (gate / (1 + np.exp(-gate)) * (f @ t[f"{p}.ffn_up.weight"].T))
            @ t[f"{p}.ffn_down.weight"].T
        )
    last = _rms(x, t["output_norm.weight"])[-1]
    logits = t["cls.output.weight"] @ last
    exp = np.exp(logits - logits.max())
    return float(exp[0] / exp.sum())


def reference_scores(weights: Qwen3Weights, query: str, documents: list[str]) -> np.ndarray:
    """P("yes") for each document, the prompt filled in as the converter's template says."""
    prompts = [TEMPLATE.replace("{query}", query).replace("{document}", d) for d in documents]
    return np.array([reference_probability(weights, reference_ids(p)) for p in prompts])
