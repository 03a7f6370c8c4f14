"""Independent numpy forward passes of the architectures `emberd import` converts.

Each function takes the checkpoint's tensors by their Hugging Face names and
its config.json, and computes what the Hugging Face model (and the
sentence-transformers modules after it) would: float64 throughout, written
from the architectures' published definitions, sharing nothing with the
converters. Tests compare llama.cpp's vectors of the imported GGUF with these.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Tensors = Mapping[str, np.ndarray]
Matrix = np.ndarray

_erf = np.vectorize(math.erf)


def _w(tensors: Tensors, name: str) -> np.ndarray:
    return np.asarray(tensors[name], dtype=np.float64)


def linear(tensors: Tensors, prefix: str, x: Matrix, bias: bool = True) -> Matrix:
    """x @ W.T (+ b), W in PyTorch's (out, in) layout."""
    out = x @ _w(tensors, f"{prefix}.weight").T
    return out + _w(tensors, f"{prefix}.bias") if bias else out


def layer_norm(tensors: Tensors, prefix: str, x: Matrix, eps: float) -> Matrix:
    """LayerNorm over the last axis with weight and bias."""
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * _w(tensors, f"{prefix}.weight") + _w(
        tensors, f"{prefix}.bias"
    )


def rms_norm(x: Matrix, weight: np.ndarray, eps: float) -> Matrix:
    """RMSNorm over the last axis, times `weight`."""
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * weight


def gelu(x: Matrix) -> Matrix:
    """GELU with the exact erf, as PyTorch's default."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def gelu_tanh(x: Matrix) -> Matrix:
    """GELU's tanh approximation (`gelu_pytorch_tanh`)."""
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def silu(x: Matrix) -> Matrix:
    """x * sigmoid(x)."""
    return x / (1.0 + np.exp(-x))


def rotate(x: Matrix, positions: np.ndarray, base: float) -> Matrix:
    """Rotary embedding, non-interleaved halves (GPT-NeoX / Hugging Face's rotate_half).

    `x` is (tokens, heads, head_dim).
    """
    half = x.shape[-1] // 2
    inv = base ** (-np.arange(half, dtype=np.float64) * 2 / x.shape[-1])
    angles = positions[:, None].astype(np.float64) * inv[None, :]  # (tokens, half)
    cos, sin = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    first, second = x[..., :half], x[..., half:]
    return np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


def attention(q: Matrix, k: Matrix, v: Matrix, mask: np.ndarray, scale: float) -> Matrix:
    """Multi-head attention; q (T, H, D), k and v (T, Hkv, D); mask (T, T) True = attend."""
    heads, kv_heads = q.shape[1], k.shape[1]
    k = np.repeat(k, heads // kv_heads, axis=1)
    v = np.repeat(v, heads // kv_heads, axis=1)
    scores = np.einsum("thd,shd->hts", q, k) * scale
    scores = np.where(mask[None], scores, -np.inf)
    scores -= scores.max(-1, keepdims=True)
    probs = np.exp(scores)
    probs /= probs.sum(-1, keepdims=True)
    return np.einsum("hts,shd->thd", probs, v).reshape(q.shape[0], -1)


def pool(hidden: Matrix, pooling: str) -> np.ndarray:
    """sentence-transformers' pooling of one sequence's token vectors."""
    if pooling == "mean":
        return np.asarray(hidden.mean(0))
    if pooling == "cls":
        return np.asarray(hidden[0])
    if pooling == "lasttoken":
        return np.asarray(hidden[-1])
    raise ValueError(pooling)


# -- BERT and XLM-RoBERTa


def bert_hidden(
    tensors: Tensors, config: Mapping[str, Any], ids: Sequence[int], position_ids: np.ndarray
) -> Matrix:
    """Token vectors of Hugging Face's BertModel / XLMRobertaModel (post-norm encoder)."""
    eps = float(config["layer_norm_eps"])
    heads = int(config["num_attention_heads"])
    ids_array = np.asarray(ids)
    x = (
        _w(tensors, "embeddings.word_embeddings.weight")[ids_array]
        + _w(tensors, "embeddings.position_embeddings.weight")[position_ids]
        + _w(tensors, "embeddings.token_type_embeddings.weight")[0]
    )
    x = layer_norm(tensors, "embeddings.LayerNorm", x, eps)
    t, e = x.shape
    d = e // heads
    mask = np.ones((t, t), dtype=bool)
    for i in range(int(config["num_hidden_layers"])):
        p = f"encoder.layer.{i}"
        q, k, v = (
            linear(tensors, f"{p}.attention.self.{part}", x).reshape(t, heads, d)
            for part in ("query", "key", "value")
        )
        a = linear(tensors, f"{p}.attention.output.dense", attention(q, k, v, mask, d**-0.5))
        x = layer_norm(tensors, f"{p}.attention.output.LayerNorm", a + x, eps)
        h = gelu(linear(tensors, f"{p}.intermediate.dense", x))
        y = linear(tensors, f"{p}.output.dense", h)
        x = layer_norm(tensors, f"{p}.output.LayerNorm", y + x, eps)
    return x


def bert_embedding(
    tensors: Tensors, config: Mapping[str, Any], ids: Sequence[int], pooling: str
) -> np.ndarray:
    """BERT: positions count from 0."""
    return pool(bert_hidden(tensors, config, ids, np.arange(len(ids))), pooling)


def xlm_roberta_embedding(
    tensors: Tensors, config: Mapping[str, Any], ids: Sequence[int], pooling: str
) -> np.ndarray:
    """XLM-RoBERTa: positions count from pad_token_id + 1."""
    start = int(config["pad_token_id"]) + 1
    positions = np.arange(start, start + len(ids))
    return pool(bert_hidden(tensors, config, ids, positions), pooling)


# -- nomic-bert


def nomic_bert_embedding(
    tensors: Tensors, config: Mapping[str, Any], ids: Sequence[int], pooling: str
) -> np.ndarray:
    """NomicBertModel: post-norm, rotary attention with a fused QKV, SwiGLU without biases."""
    eps = float(config["layer_norm_epsilon"])
    heads, e = int(config["n_head"]), int(config["n_embd"])
    d = e // heads
    ids_array = np.asarray(ids)
    x = (
        _w(tensors, "embeddings.word_embeddings.weight")[ids_array]
        + _w(tensors, "embeddings.token_type_embeddings.weight")[0]
    )
    x = layer_norm(tensors, "emb_ln", x, eps)
    t = len(ids)
    positions = np.arange(t)
    mask = np.ones((t, t), dtype=bool)
    bias = bool(config.get("qkv_proj_bias"))
    for i in range(int(config["n_layer"])):
        p = f"encoder.layers.{i}"
        qkv = linear(tensors, f"{p}.attn.Wqkv", x, bias)
        q, k, v = (qkv[:, j * e : (j + 1) * e].reshape(t, heads, d) for j in range(3))
        base = float(config["rotary_emb_base"])
        q, k = rotate(q, positions, base), rotate(k, positions, base)
        a = linear(tensors, f"{p}.attn.out_proj", attention(q, k, v, mask, d**-0.5), bias)
        x = layer_norm(tensors, f"{p}.norm1", a + x, eps)
        up = linear(tensors, f"{p}.mlp.fc11", x, False)
        gate = linear(tensors, f"{p}.mlp.fc12", x, False)
        y = linear(tensors, f"{p}.mlp.fc2", up * silu(gate), False)
        x = layer_norm(tensors, f"{p}.norm2", y + x, eps)
    return pool(x, pooling)


# -- Qwen3


def qwen3_embedding(
    tensors: Tensors, config: Mapping[str, Any], ids: Sequence[int], pooling: str
) -> np.ndarray:
    """Qwen3Model: causal pre-norm decoder, per-head q/k RMSNorm, GQA, SwiGLU."""
    eps = float(config["rms_norm_eps"])
    heads, kv_heads = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    d = int(config["head_dim"])
    x = _w(tensors, "embed_tokens.weight")[np.asarray(ids)]
    t = len(ids)
    positions = np.arange(t)
    causal = np.tril(np.ones((t, t), dtype=bool))
    base = float(config["rope_theta"])
    for i in range(int(config["num_hidden_layers"])):
        p = f"layers.{i}"
        h = rms_norm(x, _w(tensors, f"{p}.input_layernorm.weight"), eps)
        q = linear(tensors, f"{p}.self_attn.q_proj", h, False).reshape(t, heads, d)
        k = linear(tensors, f"{p}.self_attn.k_proj", h, False).reshape(t, kv_heads, d)
        v = linear(tensors, f"{p}.self_attn.v_proj", h, False).reshape(t, kv_heads, d)
        q = rotate(rms_norm(q, _w(tensors, f"{p}.self_attn.q_norm.weight"), eps), positions, base)
        k = rotate(rms_norm(k, _w(tensors, f"{p}.self_attn.k_norm.weight"), eps), positions, base)
        x = x + linear(tensors, f"{p}.self_attn.o_proj", attention(q, k, v, causal, d**-0.5), False)
        h = rms_norm(x, _w(tensors, f"{p}.post_attention_layernorm.weight"), eps)
        gate = linear(tensors, f"{p}.mlp.gate_proj", h, False)
        up = linear(tensors, f"{p}.mlp.up_proj", h, False)
        x = x + linear(tensors, f"{p}.mlp.down_proj", silu(gate) * up, False)
    return pool(rms_norm(x, _w(tensors, "norm.weight"), eps), pooling)


# -- Gemma3 embedding


def _gemma_norm(x: Matrix, tensors: Tensors, name: str, eps: float) -> Matrix:
    """Gemma3RMSNorm: multiplies by (1 + weight)."""
    return rms_norm(x, 1.0 + _w(tensors, name), eps)


def gemma3_embedding(
    tensors: Tensors,
    config: Mapping[str, Any],
    ids: Sequence[int],
    pooling: str,
    dense: Sequence[np.ndarray] = (),
) -> np.ndarray:
    """Gemma3TextModel with bidirectional attention, then pooling and the Dense modules."""
    eps = float(config["rms_norm_eps"])
    heads, kv_heads = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    d, e = int(config["head_dim"]), int(config["hidden_size"])
    x = _w(tensors, "embed_tokens.weight")[np.asarray(ids)] * math.sqrt(e)
    t = len(ids)
    positions = np.arange(t)
    distance = np.abs(positions[:, None] - positions[None, :])
    window = np.asarray(distance <= int(config["sliding_window"]) // 2)
    everything = np.ones((t, t), dtype=bool)
    scale = float(config["query_pre_attn_scalar"]) ** -0.5
    for i, kind in enumerate(config["layer_types"]):
        p = f"layers.{i}"
        sliding = kind == "sliding_attention"
        base = float(config["rope_local_base_freq"] if sliding else config["rope_theta"])
        h = _gemma_norm(x, tensors, f"{p}.input_layernorm.weight", eps)
        q = linear(tensors, f"{p}.self_attn.q_proj", h, False).reshape(t, heads, d)
        k = linear(tensors, f"{p}.self_attn.k_proj", h, False).reshape(t, kv_heads, d)
        v = linear(tensors, f"{p}.self_attn.v_proj", h, False).reshape(t, kv_heads, d)
        q = rotate(_gemma_norm(q, tensors, f"{p}.self_attn.q_norm.weight", eps), positions, base)
        k = rotate(_gemma_norm(k, tensors, f"{p}.self_attn.k_norm.weight", eps), positions, base)
        a = attention(q, k, v, window if sliding else everything, scale)
        a = linear(tensors, f"{p}.self_attn.o_proj", a, False)
        x = x + _gemma_norm(a, tensors, f"{p}.post_attention_layernorm.weight", eps)
        h = _gemma_norm(x, tensors, f"{p}.pre_feedforward_layernorm.weight", eps)
        gate = linear(tensors, f"{p}.mlp.gate_proj", h, False)
        up = linear(tensors, f"{p}.mlp.up_proj", h, False)
        y = linear(tensors, f"{p}.mlp.down_proj", gelu_tanh(gate) * up, False)
        x = x + _gemma_norm(y, tensors, f"{p}.post_feedforward_layernorm.weight", eps)
    vector = pool(_gemma_norm(x, tensors, "norm.weight", eps), pooling)
    for weight in dense:
        vector = np.asarray(weight, dtype=np.float64) @ vector
    return vector
