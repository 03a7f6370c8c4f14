"""nomic-bert encoders (nomic-embed-text v1, v1.5), as llama.cpp's `nomic-bert` architecture.

A post-norm BERT without a position table: rotary embeddings on queries and
keys (non-interleaved halves, base `rotary_emb_base`), one fused QKV matrix,
and a SwiGLU feed-forward (`fc11` up, `fc12` gate, `fc2` down) without
biases, which llama.cpp's graph does not apply. The vocabulary is WordPiece,
written as for BERT. Mixture-of-experts variants are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

from emberd.models.bert_gguf import WordPieceVocab, add_bert_hparams, add_wordpiece_vocab
from emberd.models.checkpoint import read_wordpiece_vocab, refuse_dense
from emberd.models.convert.base import Conversion, Converter, SourceModel, Summary
from emberd.models.convert.tensors import layer_rename, plan_tensors
from emberd.models.errors import CheckpointError
from emberd.models.gguf_out import FileType, Progress, add_file_type, write_gguf
from emberd.models.hf_source import (
    config_float,
    config_int,
    open_weights,
    read_max_seq_length,
    weight_files,
)

ARCHITECTURE = "nomic-bert"
_RENAME = layer_rename(
    {
        "embeddings.word_embeddings": "token_embd",
        "embeddings.token_type_embeddings": "token_types",
        "emb_ln": "token_embd_norm",
    },
    {
        "attn.Wqkv": "attn_qkv",
        "attn.out_proj": "attn_output",
        "norm1": "attn_output_norm",
        "mlp.fc11": "ffn_up",
        "mlp.fc12": "ffn_gate",
        "mlp.fc2": "ffn_down",
        "norm2": "layer_output_norm",
    },
    "encoder.layers",
)


@dataclass(frozen=True)
class NomicHParams:
    """Hyper-parameters of a nomic-bert encoder (config.json names in comments)."""

    context_length: int  # max_trained_positions (or n_positions)
    embedding_length: int  # n_embd
    block_count: int  # n_layer
    feed_forward_length: int  # n_inner
    head_count: int  # n_head
    layer_norm_epsilon: float  # layer_norm_epsilon
    rope_freq_base: float  # rotary_emb_base
    type_count: int  # type_vocab_size
    attention_bias: bool  # qkv_proj_bias
    pooling: int


def _rename(hf_name: str) -> str | None:
    return _RENAME(hf_name.removeprefix("bert."))


def _is_weight(name: str) -> bool:
    try:
        return _rename(name) is not None
    except ValueError:
        return False


def _expected(h: NomicHParams, vocab_size: int) -> dict[str, tuple[int, ...]]:
    e, f = h.embedding_length, h.feed_forward_length
    shapes: dict[str, tuple[int, ...]] = {
        "token_embd.weight": (vocab_size, e),
        "token_types.weight": (h.type_count, e),
        "token_embd_norm.weight": (e,),
        "token_embd_norm.bias": (e,),
    }
    for i in range(h.block_count):
        b = f"blk.{i}"
        shapes.update(
            {
                f"{b}.attn_qkv.weight": (3 * e, e),
                f"{b}.attn_qkv.bias": (3 * e,),
                f"{b}.attn_output.weight": (e, e),
                f"{b}.attn_output.bias": (e,),
                f"{b}.attn_output_norm.weight": (e,),
                f"{b}.attn_output_norm.bias": (e,),
                f"{b}.ffn_up.weight": (f, e),
                f"{b}.ffn_gate.weight": (f, e),
                f"{b}.ffn_down.weight": (e, f),
                f"{b}.layer_output_norm.weight": (e,),
                f"{b}.layer_output_norm.bias": (e,),
            }
        )
    return shapes


class NomicBertConversion(Conversion):
    """A nomic-bert checkpoint, checked and ready to write."""

    def __init__(
        self,
        summary: Summary,
        hparams: NomicHParams,
        vocab: WordPieceVocab,
        files: tuple[Path, ...],
    ) -> None:
        self.summary = summary
        self.hparams = hparams
        self.vocab = vocab
        self.files = files

    def write(self, path: Path, name: str, file_type: FileType, progress: Progress | None) -> None:
        """Write the nomic-bert GGUF."""
        h = self.hparams
        optional = frozenset(
            f"blk.{i}.{part}.bias"
            for i in range(h.block_count)
            for part in ("attn_qkv", "attn_output")
        )
        with open_weights(self.files, _is_weight) as tensors:
            planned = plan_tensors(
                tensors,
                _rename,
                _expected(h, len(self.vocab.tokens)),
                file_type,
                optional=optional,
                # llama.cpp adds a raw token type row to F32 activations: F32 only.
                keep_f32=frozenset({"token_types.weight"}),
            )

            def metadata(writer: gguf.GGUFWriter) -> None:
                add_file_type(writer, name, file_type)
                add_bert_hparams(writer, ARCHITECTURE, h)
                writer.add_float32(f"{ARCHITECTURE}.rope.freq_base", h.rope_freq_base)
                add_wordpiece_vocab(writer, self.vocab, h.type_count)

            write_gguf(path, ARCHITECTURE, metadata, planned, progress)


class NomicBertConverter(Converter):
    """`model_type: nomic_bert`."""

    name = "nomic_bert"

    def accepts(self, model: SourceModel) -> bool:
        """nomic-bert by config.json's model_type."""
        return model.model_type == "nomic_bert"

    def read(self, model: SourceModel) -> Conversion:
        """Hyper-parameters and WordPiece vocabulary of the checkpoint."""
        refuse_dense(model.source, model.modules)
        hparams = _hparams(model.config_path, model.config, model.modules.pooling_type)
        vocab_size = config_int(model.config, "vocab_size", model.config_path)
        vocab, _ = read_wordpiece_vocab(model.source, model.model_dir, vocab_size)
        summary = Summary(
            family="nomic-bert",
            architecture=ARCHITECTURE,
            pooling=model.modules.pooling,
            normalize=model.modules.normalize,
            max_seq_length=read_max_seq_length(model.source, model.model_dir),
        )
        return NomicBertConversion(summary, hparams, vocab, weight_files(model.model_dir))


# What llama.cpp's nomic-bert graph computes; anything else would embed differently.
_REQUIRED: Mapping[str, object] = {
    "activation_function": "swiglu",
    "causal": False,
    "prenorm": False,
    "rotary_emb_fraction": 1.0,
    "rotary_emb_interleaved": False,
    "rotary_emb_scale_base": None,
    "mlp_fc1_bias": False,
    "mlp_fc2_bias": False,
}


def _hparams(where: Path, config: Mapping[str, Any], pooling: int) -> NomicHParams:
    if config.get("moe_every_n_layers"):
        raise CheckpointError(f"{where}: mixture-of-experts nomic-bert models are not supported")
    for key, wanted in _REQUIRED.items():
        if key in config and config[key] != wanted:
            raise CheckpointError(
                f"{where}: unsupported {key} {config[key]!r} "
                f"(llama.cpp's nomic-bert needs {wanted!r})"
            )
    positions = config_int(config, "n_positions", where)
    trained = config.get("max_trained_positions")
    context = min(positions, trained) if isinstance(trained, int) and trained > 0 else positions
    e, heads = config_int(config, "n_embd", where), config_int(config, "n_head", where)
    if e % heads:
        raise CheckpointError(f"{where}: n_embd {e} is not a multiple of n_head {heads}")
    inner = config.get("n_inner")
    return NomicHParams(
        context_length=context,
        embedding_length=e,
        block_count=config_int(config, "n_layer", where),
        feed_forward_length=inner if isinstance(inner, int) else 4 * e,
        head_count=heads,
        layer_norm_epsilon=config_float(config, "layer_norm_epsilon", where, 1e-12),
        rope_freq_base=config_float(config, "rotary_emb_base", where, 10000.0),
        type_count=config.get("type_vocab_size", 2) or 2,
        attention_bias=bool(config.get("qkv_proj_bias", False)),
        pooling=pooling,
    )
