"""Small GGUF files for tests, written with the `gguf` package.

These carry the metadata of a BERT-style embedding model and a few tiny
tensors; they are for tests of listing, naming and metadata, not loadable
by llama.cpp (tests/tiny_model.py writes one that is).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from gguf import GGUFEndian, GGUFWriter

DEFAULT_TENSORS: Mapping[str, tuple[int, ...]] = {
    "token_embd.weight": (10, 8),
    "blk.0.attn_q.weight": (8, 8),
    "blk.0.attn_q.bias": (8,),
}


def write_gguf(
    path: Path,
    *,
    arch: str = "bert",
    context_length: int | None = 512,
    embedding_length: int | None = 8,
    block_count: int | None = 1,
    pooling_type: int | None = 1,
    file_type: int | None = 1,
    tensors: Mapping[str, tuple[int, ...]] = DEFAULT_TENSORS,
    dtype: type[np.floating] = np.float32,
    vocab: Sequence[str] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello"),
    extra: Mapping[str, object] | None = None,
    big_endian: bool = False,
) -> Path:
    """Write a GGUF with the given metadata and zero-filled tensors; return `path`.

    A metadata argument of None leaves its key out. `extra` adds more keys;
    str, bool, int (as uint32), float (as float32) and list values are accepted.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    order = GGUFEndian.BIG if big_endian else GGUFEndian.LITTLE
    writer = GGUFWriter(path, arch, endianess=order)
    ints = {
        f"{arch}.context_length": context_length,
        f"{arch}.embedding_length": embedding_length,
        f"{arch}.block_count": block_count,
        f"{arch}.pooling_type": pooling_type,
        "general.file_type": file_type,
    }
    for key, value in ints.items():
        if value is not None:
            writer.add_uint32(key, value)
    writer.add_string("tokenizer.ggml.model", "bert")
    if vocab:
        writer.add_array("tokenizer.ggml.tokens", list(vocab))
    for key, extra_value in (extra or {}).items():
        _add(writer, key, extra_value)
    for name, shape in tensors.items():
        writer.add_tensor(name, np.zeros(shape, dtype=dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _add(writer: GGUFWriter, key: str, value: object) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, list):
        writer.add_array(key, value)
    else:
        raise TypeError(f"cannot write {type(value).__name__} for {key}")
