"""Gemma3 text embedding models (EmbeddingGemma), as llama.cpp's `gemma-embedding`.

A bidirectional Gemma3: token embeddings scaled by sqrt(hidden size),
RMSNorms that multiply by (1 + weight) (written with the 1 added, as
llama.cpp multiplies by the weight), per-head query/key norms, sliding-window
layers (a symmetric window of `sliding_window` / 2 each side) with their own
rotary base, GELU (tanh) gated feed-forward with norms before and after.
After mean pooling, the two sentence-transformers Dense modules project to
`3 * 4 * hidden` and back; llama.cpp 0.3.36 applies them as `dense_2` and
`dense_3` (no bias, no activation). Other Dense layouts are refused: llama.cpp
would abort on them. The vocabulary is SentencePiece BPE.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt

from emberd.models.convert.base import Conversion, Converter, SourceModel, Summary
from emberd.models.convert.decoder import DecoderHParams
from emberd.models.convert.spm_bpe import read_spm_bpe_vocab
from emberd.models.convert.tensors import layer_rename, plan_tensors
from emberd.models.convert.vocab import GGUFVocab, add_vocab, read_tokenizer_files
from emberd.models.errors import CheckpointError
from emberd.models.gguf_out import (
    FileType,
    Progress,
    TensorOut,
    add_file_type,
    storage_type,
    write_gguf,
)
from emberd.models.hf_source import (
    DenseModule,
    config_float,
    config_int,
    open_weights,
    read_dense,
    read_max_seq_length,
    weight_files,
)

ARCHITECTURE = "gemma-embedding"
_IDENTITY = frozenset({"torch.nn.modules.linear.Identity", "torch.nn.Identity"})
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
        "post_attention_layernorm": "post_attention_norm",
        "pre_feedforward_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "post_feedforward_layernorm": "post_ffw_norm",
    },
    "layers",
)


def _rename(hf_name: str) -> str | None:
    return _RENAME(hf_name.removeprefix("model."))


def _is_weight(name: str) -> bool:
    try:
        return _rename(name) is not None
    except ValueError:
        return False


def _plus_one(array: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    return array + np.float32(1.0)


@dataclass(frozen=True)
class GemmaHParams(DecoderHParams):
    """Hyper-parameters of a Gemma3 text model: the decoder's, and its sliding window."""

    rope_freq_base_swa: float  # rope_local_base_freq (sliding layers)
    sliding_window: int  # sliding_window
    sliding_layers: tuple[bool, ...]  # layer_types == "sliding_attention"

    def expected(self, vocab_size: int) -> dict[str, tuple[int, ...]]:
        """Every tensor of the transformer: the decoder's, with norms after attention and FFN."""
        shapes = self.layer_shapes(vocab_size)
        for i in range(self.block_count):
            shapes[f"blk.{i}.post_attention_norm.weight"] = (self.embedding_length,)
            shapes[f"blk.{i}.post_ffw_norm.weight"] = (self.embedding_length,)
        return shapes


class GemmaConversion(Conversion):
    """An EmbeddingGemma checkpoint, checked and ready to write."""

    def __init__(
        self,
        summary: Summary,
        hparams: GemmaHParams,
        vocab: GGUFVocab,
        files: tuple[Path, ...],
        dense: Sequence[DenseModule],
    ) -> None:
        self.summary = summary
        self.hparams = hparams
        self.vocab = vocab
        self.files = files
        self.dense = tuple(dense)

    def write(self, path: Path, name: str, file_type: FileType, progress: Progress | None) -> None:
        """Write the gemma-embedding GGUF, Dense projections included."""
        h = self.hparams
        expected = h.expected(len(self.vocab.tokens))
        norms = {n: _plus_one for n in expected if n.endswith("norm.weight")}
        with contextlib.ExitStack() as stack:
            tensors = stack.enter_context(open_weights(self.files, _is_weight))
            planned = plan_tensors(tensors, _rename, expected, file_type, transform=norms)
            for label, module in zip(("dense_2", "dense_3"), self.dense, strict=False):
                weights = stack.enter_context(open_weights((module.path / "model.safetensors",)))
                planned.append(_dense_tensor(label, module, weights, file_type))

            def metadata(writer: gguf.GGUFWriter) -> None:
                add_file_type(writer, name, file_type)
                self._add_hparams(writer)
                add_vocab(writer, self.vocab)

            write_gguf(path, ARCHITECTURE, metadata, planned, progress)

    def _add_hparams(self, writer: gguf.GGUFWriter) -> None:
        h, arch = self.hparams, ARCHITECTURE
        h.add_metadata(writer, arch)
        writer.add_float32(f"{arch}.rope.freq_base_swa", h.rope_freq_base_swa)
        writer.add_uint32(f"{arch}.attention.sliding_window", h.sliding_window)
        writer.add_array(f"{arch}.attention.sliding_window_pattern", list(h.sliding_layers))
        for label, module in zip(("dense_2", "dense_3"), self.dense, strict=False):
            writer.add_uint32(f"{arch}.{label}_feat_in", module.in_features)
            writer.add_uint32(f"{arch}.{label}_feat_out", module.out_features)


def _dense_tensor(
    label: str,
    module: DenseModule,
    tensors: Mapping[str, npt.NDArray[np.floating]],
    file_type: FileType,
) -> TensorOut:
    """A Dense module's weight (out, in) as `label`; CheckpointError when misshapen."""
    names = set(tensors)
    if names != {"linear.weight"}:
        raise CheckpointError(
            f"{module.path}: expected only linear.weight, found {', '.join(sorted(names))}"
        )
    shape = (module.out_features, module.in_features)
    actual = tuple(int(d) for d in tensors["linear.weight"].shape)
    if actual != shape:
        raise CheckpointError(f"{module.path}: linear.weight is {actual}, expected {shape}")
    return TensorOut(
        f"{label}.weight", shape, storage_type(shape, file_type), lambda: tensors["linear.weight"]
    )


class Gemma3Converter(Converter):
    """`model_type: gemma3_text` with bidirectional attention (EmbeddingGemma)."""

    name = "gemma3_text"

    def accepts(self, model: SourceModel) -> bool:
        """Gemma3 text models by config.json's model_type."""
        return model.model_type == "gemma3_text"

    def read(self, model: SourceModel) -> Conversion:
        """Hyper-parameters, Dense modules and SentencePiece vocabulary of the checkpoint."""
        where = model.config_path
        hparams = _hparams(where, model.config, model.modules.pooling_type)
        dense = tuple(read_dense(path) for path in model.modules.dense)
        _check_dense(model.source, dense, hparams.embedding_length)
        vocab = read_spm_bpe_vocab(
            read_tokenizer_files(model.model_dir), config_int(model.config, "vocab_size", where)
        )
        summary = Summary(
            family="gemma3",
            architecture=ARCHITECTURE,
            pooling=model.modules.pooling,
            normalize=model.modules.normalize,
            max_seq_length=read_max_seq_length(model.source, model.model_dir),
        )
        return GemmaConversion(summary, hparams, vocab, weight_files(model.model_dir), dense)


def _check_dense(source: Path, dense: tuple[DenseModule, ...], e: int) -> None:
    """Dense modules llama.cpp applies: none, or two, n_embd -> k -> n_embd, bias-free, linear."""
    if not dense:
        return
    shape = " -> ".join([str(dense[0].in_features), *(str(d.out_features) for d in dense)])
    if (
        len(dense) != 2
        or dense[0].in_features != e
        or dense[1].out_features != e
        or (dense[0].out_features != dense[1].in_features)
    ):
        raise CheckpointError(
            f"{source}: unsupported Dense modules ({shape}); llama.cpp applies two, {e} -> k -> {e}"
        )
    for module in dense:
        if module.bias:
            raise CheckpointError(f"{module.path}: a Dense bias is not applied by llama.cpp")
        if module.activation not in _IDENTITY:
            raise CheckpointError(
                f"{module.path}: unsupported Dense activation {module.activation!r} "
                "(llama.cpp applies none)"
            )


def _hparams(where: Path, config: Mapping[str, Any], pooling: int) -> GemmaHParams:
    if config.get("use_bidirectional_attention") is not True:
        raise CheckpointError(
            f"{where}: only Gemma3 embedding models (use_bidirectional_attention: true) "
            "can be imported"
        )
    for key in ("attn_logit_softcapping", "final_logit_softcapping", "rope_scaling"):
        if config.get(key):
            raise CheckpointError(f"{where}: unsupported {key} {config[key]!r}")
    if config.get("hidden_activation", "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        raise CheckpointError(f"{where}: unsupported hidden_activation")
    layers = config_int(config, "num_hidden_layers", where)
    head_dim = config_int(config, "head_dim", where)
    scalar = config.get("query_pre_attn_scalar", head_dim)
    if scalar != head_dim:
        raise CheckpointError(
            f"{where}: query_pre_attn_scalar {scalar} differs from head_dim {head_dim}; "
            "llama.cpp scales queries by 1/sqrt(head_dim)"
        )
    types = config.get("layer_types")
    if not (isinstance(types, list) and len(types) == layers):
        raise CheckpointError(f"{where}: layer_types must name each of the {layers} layers")
    heads = config_int(config, "num_attention_heads", where)
    if config_int(config, "sliding_window", where) <= 0:
        raise CheckpointError(f"{where}: sliding_window must be positive")
    return GemmaHParams(
        context_length=config_int(config, "max_position_embeddings", where),
        embedding_length=config_int(config, "hidden_size", where),
        block_count=layers,
        feed_forward_length=config_int(config, "intermediate_size", where),
        head_count=heads,
        head_count_kv=int(config.get("num_key_value_heads", heads)),
        head_dim=head_dim,
        rms_epsilon=config_float(config, "rms_norm_eps", where, 1e-6),
        rope_freq_base=config_float(config, "rope_theta", where, 1_000_000.0),
        rope_freq_base_swa=config_float(config, "rope_local_base_freq", where, 10_000.0),
        sliding_window=config_int(config, "sliding_window", where),
        sliding_layers=tuple(t == "sliding_attention" for t in types),
        pooling=pooling,
    )
