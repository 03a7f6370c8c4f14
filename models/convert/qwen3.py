"""Qwen3 decoders used as embedding models (Qwen3-Embedding), as llama.cpp's `qwen3`.

A causal pre-norm transformer: RMSNorm, grouped-query attention with a
per-head RMSNorm on queries and keys, rotary embeddings (NeoX halves, base
`rope_theta`), SwiGLU, a final RMSNorm. Embedding models pool the last
token, which must be the EOS their tokenizer's post-processor appends;
`tokenizer.ggml.add_eos_token` makes llama.cpp append it too. The language
model head, if any, is left out. The vocabulary is byte-level BPE.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gguf

from emberd.models.checkpoint import refuse_dense
from emberd.models.convert.base import Conversion, Converter, SourceModel, Summary
from emberd.models.convert.byte_bpe import read_byte_bpe_vocab
from emberd.models.convert.decoder import DecoderHParams
from emberd.models.convert.tensors import layer_rename, plan_tensors
from emberd.models.convert.vocab import GGUFVocab, add_vocab, read_tokenizer_files
from emberd.models.errors import CheckpointError
from emberd.models.gguf_out import FileType, Progress, add_file_type, write_gguf
from emberd.models.hf_source import (
    config_float,
    config_int,
    open_weights,
    read_max_seq_length,
    weight_files,
)

ARCHITECTURE = "qwen3"
_RENAME = layer_rename(
    {"embed_tokens": "token_embd", "norm": "output_norm"},
    {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "self_attn.q_norm": "attn_q_norm",
        "self_attn.k_norm": "attn_k_norm",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    },
    "layers",
)


def _rename(hf_name: str) -> str | None:
    if hf_name == "lm_head.weight":
        return None  # an embedding model reads hidden states, not logits
    return _RENAME(hf_name.removeprefix("model."))


def _is_weight(name: str) -> bool:
    try:
        return _rename(name) is not None
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class Qwen3HParams(DecoderHParams):
    """Hyper-parameters of a Qwen3 model."""

    def expected(self, vocab_size: int) -> dict[str, tuple[int, ...]]:
        """Every tensor, by GGUF name: the decoder's, with optional q/k/v biases."""
        shapes = self.layer_shapes(vocab_size)
        kv = self.head_count_kv * self.head_dim
        for i in range(self.block_count):
            shapes[f"blk.{i}.attn_q.bias"] = (self.head_count * self.head_dim,)
            shapes[f"blk.{i}.attn_k.bias"] = (kv,)
            shapes[f"blk.{i}.attn_v.bias"] = (kv,)
        return shapes


class Qwen3Conversion(Conversion):
    """A Qwen3 checkpoint, checked and ready to write."""

    def __init__(
        self, summary: Summary, hparams: Qwen3HParams, vocab: GGUFVocab, files: tuple[Path, ...]
    ) -> None:
        self.summary = summary
        self.hparams = hparams
        self.vocab = vocab
        self.files = files

    def write(self, path: Path, name: str, file_type: FileType, progress: Progress | None) -> None:
        """Write the qwen3 GGUF."""
        h = self.hparams
        biases = frozenset(
            f"blk.{i}.attn_{p}.bias" for i in range(h.block_count) for p in ("q", "k", "v")
        )
        with open_weights(self.files, _is_weight) as tensors:
            planned = plan_tensors(
                tensors, _rename, h.expected(len(self.vocab.tokens)), file_type, optional=biases
            )

            def metadata(writer: gguf.GGUFWriter) -> None:
                add_file_type(writer, name, file_type)
                h.add_metadata(writer, ARCHITECTURE)
                add_vocab(writer, self.vocab)

            write_gguf(path, ARCHITECTURE, metadata, planned, progress)


class Qwen3Converter(Converter):
    """`model_type: qwen3`."""

    name = "qwen3"

    def accepts(self, model: SourceModel) -> bool:
        """Qwen3 by config.json's model_type."""
        return model.model_type == "qwen3"

    def read(self, model: SourceModel) -> Conversion:
        """Hyper-parameters and byte-level BPE vocabulary of the checkpoint."""
        refuse_dense(model.source, model.modules)
        where = model.config_path
        hparams = _hparams(where, model.config, model.modules.pooling_type)
        if not model.modules.declared_pooling:
            hparams = _with_pooling(hparams, 3)  # Qwen3-Embedding pools the last token
        vocab = read_byte_bpe_vocab(
            read_tokenizer_files(model.model_dir), config_int(model.config, "vocab_size", where)
        )
        if hparams.pooling == 3 and not vocab.add_eos:
            raise CheckpointError(
                f"{model.model_dir / 'tokenizer.json'}: last-token pooling needs a "
                "post_processor that appends the EOS token"
            )
        summary = Summary(
            family="qwen3",
            architecture=ARCHITECTURE,
            pooling={1: "mean", 2: "cls", 3: "lasttoken"}[hparams.pooling],
            normalize=model.modules.normalize,
            max_seq_length=read_max_seq_length(model.source, model.model_dir),
        )
        return Qwen3Conversion(summary, hparams, vocab, weight_files(model.model_dir))


def _with_pooling(h: Qwen3HParams, pooling: int) -> Qwen3HParams:
    return dataclasses.replace(h, pooling=pooling)


def _hparams(where: Path, config: Mapping[str, Any], pooling: int) -> Qwen3HParams:
    if config.get("rope_scaling"):
        raise CheckpointError(f"{where}: unsupported rope_scaling {config['rope_scaling']!r}")
    if config.get("use_sliding_window"):
        raise CheckpointError(f"{where}: sliding-window attention is not supported")
    if config.get("hidden_act", "silu") != "silu":
        raise CheckpointError(f"{where}: unsupported hidden_act {config['hidden_act']!r}")
    e, heads = (
        config_int(config, "hidden_size", where),
        config_int(config, "num_attention_heads", where),
    )
    kv = config.get("num_key_value_heads", heads)
    head_dim = config.get("head_dim") or e // heads
    if not isinstance(kv, int) or kv <= 0 or heads % kv:
        raise CheckpointError(f"{where}: num_key_value_heads must divide num_attention_heads")
    return Qwen3HParams(
        context_length=config_int(config, "max_position_embeddings", where),
        embedding_length=e,
        block_count=config_int(config, "num_hidden_layers", where),
        feed_forward_length=config_int(config, "intermediate_size", where),
        head_count=heads,
        head_count_kv=kv,
        head_dim=int(head_dim),
        rms_epsilon=config_float(config, "rms_norm_eps", where, 1e-6),
        rope_freq_base=config_float(config, "rope_theta", where, 1_000_000.0),
        pooling=pooling,
    )
