"""models.gguf_meta: header facts, Ollama's number format, broken files, the cache."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from emberd.models.errors import InvalidModelFile
from emberd.models.gguf_meta import GGUFInfo, file_type_name, format_parameter_count, read_gguf_info
from tests.support.gguf_files import DEFAULT_TENSORS, write_gguf

# 10*8 + 8*8 + 8 elements in DEFAULT_TENSORS
DEFAULT_PARAMS = 152


def test_reads_the_bert_keys(tmp_path: Path) -> None:
    path = write_gguf(
        tmp_path / "m.gguf",
        context_length=256,
        embedding_length=8,
        block_count=3,
        pooling_type=2,
        file_type=1,
        extra={
            "bert.attention.layer_norm_epsilon": 1e-12,
            "bert.attention.causal": False,
            "general.name": "tiny",
        },
    )
    info = read_gguf_info(path)
    assert info.architecture == "bert"
    assert (info.context_length, info.embedding_length, info.block_count) == (256, 8, 3)
    assert info.pooling_type == 2
    assert info.is_embedding
    assert info.parameter_count == DEFAULT_PARAMS
    assert info.parameter_size == "152"
    assert info.file_type == "F16"
    mi = info.model_info
    assert mi["general.architecture"] == "bert"
    assert mi["bert.embedding_length"] == 8
    assert mi["general.name"] == "tiny"
    assert mi["bert.attention.causal"] is False
    assert mi["bert.attention.layer_norm_epsilon"] == 1e-12  # shortest float32 text
    assert mi["general.parameter_count"] == DEFAULT_PARAMS
    assert "tokenizer.ggml.tokens" in mi
    assert mi["tokenizer.ggml.tokens"] is None  # arrays are left out, as Ollama does
    assert list(mi) == sorted(mi)


def test_missing_pooling_is_still_an_embedding_model(tmp_path: Path) -> None:
    info = read_gguf_info(write_gguf(tmp_path / "m.gguf", pooling_type=None, arch="llama"))
    assert info.architecture == "llama"
    assert info.pooling_type is None
    assert info.is_embedding  # pooled by mean, as Ollama does
    assert "llama.pooling_type" not in info.model_info


def test_missing_sizes_read_as_zero(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", context_length=None, embedding_length=None)
    info = read_gguf_info(path)
    assert (info.context_length, info.embedding_length, info.block_count) == (0, 0, 1)


@pytest.mark.parametrize(("dtype", "expected"), [(np.float16, "F16"), (np.float32, "F32")])
def test_file_type_falls_back_to_the_dominant_tensor_type(
    tmp_path: Path, dtype: type[np.floating], expected: str
) -> None:
    path = write_gguf(tmp_path / "m.gguf", file_type=None, dtype=dtype)
    assert read_gguf_info(path).file_type == expected


@pytest.mark.parametrize(
    ("number", "name"),
    [(0, "F32"), (1, "F16"), (7, "Q8_0"), (15, "Q4_K_M"), (32, "BF16"), (999, "unknown")],
)
def test_file_type_names(number: int, name: str) -> None:
    assert file_type_name(number) == name


def test_declared_file_type_wins(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", file_type=7, dtype=np.float32)
    assert read_gguf_info(path).file_type == "Q8_0"


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0"),
        (999, "999"),
        (1_234, "1K"),
        (1_000_000, "1M"),
        (22_565_376, "22.57M"),
        (136_727_040, "136.73M"),
        (137_000_000, "137M"),
        (1_000_000_000, "1B"),
        (7_241_732_096, "7.2B"),
        (8_030_261_248, "8.0B"),
    ],
)
def test_parameter_size_is_formatted_as_ollama_does(count: int, text: str) -> None:
    assert format_parameter_count(count) == text


def test_parameter_size_property(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", tensors={"token_embd.weight": (1000, 1500)})
    info = read_gguf_info(path)
    assert info.parameter_count == 1_500_000
    assert info.parameter_size == "1.50M"


def test_big_endian_file(tmp_path: Path) -> None:
    info = read_gguf_info(write_gguf(tmp_path / "m.gguf", big_endian=True, block_count=5))
    assert info.block_count == 5
    assert info.parameter_count == DEFAULT_PARAMS


# -- broken files


def _expect_invalid(path: Path, fragment: str) -> None:
    with pytest.raises(InvalidModelFile) as info:
        read_gguf_info(path)
    message = str(info.value)
    assert str(path) in message
    assert fragment in message


def test_missing_file(tmp_path: Path) -> None:
    _expect_invalid(tmp_path / "absent.gguf", "cannot read")


def test_empty_and_tiny_files(tmp_path: Path) -> None:
    (tmp_path / "empty.gguf").write_bytes(b"")
    _expect_invalid(tmp_path / "empty.gguf", "too short")
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    _expect_invalid(tmp_path / "tiny.gguf", "too short")


def test_not_a_gguf(tmp_path: Path) -> None:
    (tmp_path / "x.gguf").write_bytes(b"PK\x03\x04" + bytes(100))
    _expect_invalid(tmp_path / "x.gguf", "bad magic")


def test_unsupported_version(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf")
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack("<I", 1)
    path.write_bytes(bytes(data))
    _expect_invalid(path, "unsupported version 1")


def test_truncated_header(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf")
    data = path.read_bytes()
    for cut in (30, 100, 200):
        path.write_bytes(data[:cut])
        _expect_invalid(path, "truncated")


def test_truncated_tensor_data(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf")
    data = path.read_bytes()
    path.write_bytes(data[:-64])
    _expect_invalid(path, "tensor data is truncated")


def test_unknown_value_type(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", vocab=())
    data = bytearray(path.read_bytes())
    # The first key/value follows the 24-byte preamble: u64 length, key, u32 type.
    (key_len,) = struct.unpack_from("<Q", data, 24)
    type_at = 24 + 8 + key_len
    data[type_at : type_at + 4] = struct.pack("<I", 99)
    path.write_bytes(bytes(data))
    _expect_invalid(path, "unknown value type 99")


def test_no_architecture(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", vocab=())
    data = path.read_bytes().replace(b"general.architecture", b"general.architectur_")
    path.write_bytes(data)
    _expect_invalid(path, "no general.architecture")


# -- cache and speed


def test_cache_serves_an_unchanged_file(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", block_count=2)
    first = read_gguf_info(path)
    assert read_gguf_info(path) is first
    st = path.stat()
    # Same size, same mtime, different bytes: the cached answer stands.
    path.write_bytes(b"X" * st.st_size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert read_gguf_info(path) is first
    # A new mtime means a new read, which now fails.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    with pytest.raises(InvalidModelFile):
        read_gguf_info(path)


def test_rewritten_file_is_read_again(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", block_count=2)
    assert read_gguf_info(path).block_count == 2
    write_gguf(path, block_count=4, tensors={**DEFAULT_TENSORS, "extra.weight": (4,)})
    assert read_gguf_info(path).block_count == 4


def test_only_the_header_of_a_big_file_is_read(tmp_path: Path) -> None:
    vocab = [f"piece{i}" for i in range(30522)]
    path = write_gguf(
        tmp_path / "big.gguf",
        vocab=vocab,
        tensors={"token_embd.weight": (30522, 384), "blk.0.ffn_up.weight": (1536, 384)},
    )
    # Past its real data the file grows by 64 GB of hole: reading it would take
    # tens of seconds, so a prompt answer shows that only the header was read.
    os.truncate(path, path.stat().st_size + (64 << 30))
    info: GGUFInfo = read_gguf_info(path)
    assert info.parameter_count == 30522 * 384 + 1536 * 384
    assert info.parameter_size == "12.31M"
