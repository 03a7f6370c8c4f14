"""What Qwen3 and Gemma3 share: a decoder with grouped-query attention and q/k norms.

Their hyper-parameters, the tensors every layer has, and the GGUF keys that
describe them; each family adds its own on top (Qwen3's attention biases,
Gemma3's extra norms and sliding window).
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf


@dataclass(frozen=True)
class DecoderHParams:
    """Hyper-parameters of a grouped-query decoder (config.json names in comments)."""

    context_length: int  # max_position_embeddings
    embedding_length: int  # hidden_size
    block_count: int  # num_hidden_layers
    feed_forward_length: int  # intermediate_size
    head_count: int  # num_attention_heads
    head_count_kv: int  # num_key_value_heads
    head_dim: int  # head_dim
    rms_epsilon: float  # rms_norm_eps
    rope_freq_base: float  # rope_theta (full-attention layers)
    pooling: int

    def layer_shapes(self, vocab_size: int) -> dict[str, tuple[int, ...]]:
        """The tensors both families have, by GGUF name, in Hugging Face's numpy shapes."""
        e, f, d = self.embedding_length, self.feed_forward_length, self.head_dim
        q, kv = self.head_count * d, self.head_count_kv * d
        shapes: dict[str, tuple[int, ...]] = {
            "token_embd.weight": (vocab_size, e),
            "output_norm.weight": (e,),
        }
        for i in range(self.block_count):
            b = f"blk.{i}"
            shapes.update(
                {
                    f"{b}.attn_norm.weight": (e,),
                    f"{b}.attn_q.weight": (q, e),
                    f"{b}.attn_k.weight": (kv, e),
                    f"{b}.attn_v.weight": (kv, e),
                    f"{b}.attn_output.weight": (e, q),
                    f"{b}.attn_q_norm.weight": (d,),
                    f"{b}.attn_k_norm.weight": (d,),
                    f"{b}.ffn_norm.weight": (e,),
                    f"{b}.ffn_gate.weight": (f, e),
                    f"{b}.ffn_up.weight": (f, e),
                    f"{b}.ffn_down.weight": (e, f),
                }
            )
        return shapes

    def add_metadata(self, writer: gguf.GGUFWriter, arch: str) -> None:
        """The `<arch>.*` keys of the shared hyper-parameters."""
        writer.add_uint32(f"{arch}.context_length", self.context_length)
        writer.add_uint32(f"{arch}.embedding_length", self.embedding_length)
        writer.add_uint32(f"{arch}.block_count", self.block_count)
        writer.add_uint32(f"{arch}.feed_forward_length", self.feed_forward_length)
        writer.add_uint32(f"{arch}.attention.head_count", self.head_count)
        writer.add_uint32(f"{arch}.attention.head_count_kv", self.head_count_kv)
        writer.add_uint32(f"{arch}.attention.key_length", self.head_dim)
        writer.add_uint32(f"{arch}.attention.value_length", self.head_dim)
        writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", self.rms_epsilon)
        writer.add_float32(f"{arch}.rope.freq_base", self.rope_freq_base)
        writer.add_uint32(f"{arch}.pooling_type", self.pooling)
