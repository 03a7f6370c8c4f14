"""Tiny random checkpoints of every architecture family `emberd import` converts.

Each writer lays out a directory as Hugging Face and sentence-transformers
save it (config.json, model.safetensors, tokenizer.json and its configs,
modules.json, 1_Pooling/, Dense modules) and returns a `Family` with the
float32 tensors written, so a test can run the same weights through
`tests.support.reference_forward`. Every tensor is random, norms and biases
included, so a tensor mapped to the wrong place changes the vectors. The
tokenizers cover accents, CJK, emoji, byte fallback and long words.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from tests.support.hf_tokenizers import (
    byte_bpe_tokenizer,
    spm_bpe_tokenizer,
    unigram_tokenizer,
    wordpiece_tokenizer,
)

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
    tensors = _bert_tensors(Random(seed), vocab_size, positions, 1, (e, f, layers))
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


def _bert_tensors(
    r: Random, vocab_size: int, positions: int, types: int, sizes: tuple[int, int, int]
) -> dict[str, np.ndarray]:
    """A BertModel's (or XLMRobertaModel's) tensors by Hugging Face name."""
    e, f, layers = sizes
    tensors = {
        "embeddings.word_embeddings.weight": r.embedding(vocab_size, e),
        "embeddings.position_embeddings.weight": r.embedding(positions, e),
        "embeddings.token_type_embeddings.weight": r.embedding(types, e),
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
    return tensors


# -- BERT and nomic-bert: WordPiece


def _write_wordpiece(directory: Path, tokenizer: dict[str, Any]) -> None:
    write_json(directory / "tokenizer.json", tokenizer)
    special = {f"{r}_token": f"[{r.upper()}]" for r in ("unk", "sep", "pad", "cls", "mask")}
    write_json(directory / "special_tokens_map.json", special)
    write_json(directory / "tokenizer_config.json", {"do_lower_case": True, **special})


def write_bert(directory: Path, seed: int = 4, pooling: str = "mean") -> Family:
    """A tiny BertModel with a lower-casing WordPiece tokenizer.json (bge-small's layout)."""
    tokenizer = wordpiece_tokenizer()
    vocab_size = len(tokenizer["model"]["vocab"])
    e, f, layers, heads = 64, 128, 2, 4
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_act": "gelu",
        "hidden_size": e,
        "intermediate_size": f,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 128,
        "num_attention_heads": heads,
        "num_hidden_layers": layers,
        "position_embedding_type": "absolute",
        "type_vocab_size": 2,
        "vocab_size": vocab_size,
    }
    tensors = _bert_tensors(Random(seed), vocab_size, 128, 2, (e, f, layers))
    directory.mkdir(parents=True, exist_ok=True)
    write_json(directory / "config.json", config)
    write_weights(directory, tensors)
    _write_wordpiece(directory, tokenizer)
    write_modules(directory, pooling, e)
    return Family(directory, config, tensors, pooling)


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
