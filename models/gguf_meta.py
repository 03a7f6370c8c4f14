"""What a GGUF file says about itself, read from its header alone.

The header (key/values and tensor descriptions) is parsed straight from a
memory map, so tensor data is never read; arrays such as the vocabulary are
skipped over rather than decoded. Results are cached per (path, size,
mtime), so asking twice about an unchanged file costs one `stat`.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property, lru_cache
from pathlib import Path
from typing import TypeGuard

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

from emberd.models.errors import InvalidModelFile

GGUF_MAGIC = b"GGUF"
# `<arch>.pooling_type` of a reranker (llama.cpp's LLAMA_POOLING_TYPE_RANK).
RANK_POOLING = 4
_LABELS_KEY = ".classifier.output_labels"
_DEFAULT_ALIGNMENT = 32
# Real models nest no arrays at all; a deep nest is an attack on the parser.
_MAX_ARRAY_DEPTH = 4
# GGUF value type ids, as the format defines them.
_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL = range(8)
_STRING, _ARRAY, _UINT64, _INT64, _FLOAT64 = range(8, 13)
_SCALAR_FORMATS = {
    _UINT8: "B", _INT8: "b", _UINT16: "H", _INT16: "h", _UINT32: "I", _INT32: "i",
    _FLOAT32: "f", _BOOL: "?", _UINT64: "Q", _INT64: "q", _FLOAT64: "d",
}  # fmt: skip


@dataclass(frozen=True)
class GGUFInfo:
    """The facts about a GGUF model that listing, showing and loading need."""

    architecture: str
    embedding_length: int
    context_length: int
    block_count: int
    pooling_type: int | None
    parameter_count: int
    file_type: str
    # Every key/value as JSON-able values; non-empty arrays are None.
    model_info: Mapping[str, object] = field(compare=False, hash=False)
    # Keys whose float value is NaN or infinite (None in model_info).
    non_finite: frozenset[str] = frozenset()
    tensor_names: frozenset[str] = field(default=frozenset(), compare=False, hash=False)
    # `<arch>.classifier.output_labels`, decoded: what each classifier output means.
    classifier_labels: tuple[str, ...] | None = None
    # Bytes of the repeating blocks' tensors (`blk.N.*`), all blocks together:
    # what offloading layers to a GPU moves there.
    layer_bytes: int = 0

    @property
    def parameter_size(self) -> str:
        """The parameter count the way Ollama prints it: "22.57M", "7.2B"."""
        return format_parameter_count(self.parameter_count)

    @property
    def is_embedding(self) -> bool:
        """True for every model that is not a reranker.

        A GGUF that declares no pooling (a llama-style decoder) is still
        embedded: its token vectors are pooled by mean, as Ollama does.
        """
        return not self.is_reranker

    @cached_property
    def is_reranker(self) -> bool:
        """True for a cross-encoder: rank pooling, or a classifier head.

        Real conversions often carry no pooling key; their classifier tensors
        (`cls.output.*`) or output labels give them away. Asked on every
        request, so worked out once per file.
        """
        return (
            self.pooling_type == RANK_POOLING
            or self.classifier_labels is not None
            or any(name.startswith("cls.output.") for name in self.tensor_names)
        )


def format_parameter_count(count: int) -> str:
    """Format a count as Ollama does: whole units bare, else 1 (B) or 2 (M) decimals."""
    for unit, suffix, decimals in ((10**9, "B", 1), (10**6, "M", 2)):
        if count >= unit:
            value = count / unit
            if value == math.floor(value):
                return f"{value:.0f}{suffix}"
            return f"{value:.{decimals}f}{suffix}"
    if count >= 1000:
        return f"{count / 1000:.0f}K"
    return str(count)


def read_gguf_info(path: Path) -> GGUFInfo:
    """Read the header of the GGUF at `path`; raise InvalidModelFile if it is not one."""
    try:
        st = path.stat()
    except OSError as exc:
        raise InvalidModelFile(f"cannot read: {_reason(exc)}", path=path) from exc
    return _read_cached(str(path), st.st_size, st.st_mtime_ns)


def read_gguf_lists(path: Path) -> dict[str, object]:
    """The GGUF's key/values as `read_gguf_info` has them, with every array's values.

    What `/api/show` gives with `"verbose": true`, as Ollama does
    (`tokenizer.ggml.tokens`, `classifier.output_labels`, ...). Not cached:
    vocabularies are large and verbose requests rare.
    """
    info = read_gguf_info(path)
    return {**info.model_info, **_read(str(path), keep_arrays=True)[1]}


@lru_cache(maxsize=128)
def _read_cached(path: str, size: int, mtime_ns: int) -> GGUFInfo:
    # size and mtime_ns are only part of the cache key.
    return _read(path)[0]


def _read(path: str, *, keep_arrays: bool = False) -> tuple[GGUFInfo, dict[str, object]]:
    """The header of the file at `path`, and its arrays' values with `keep_arrays`.

    InvalidModelFile if it is not a GGUF file.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 24:
                raise InvalidModelFile(f"too short to be a GGUF file ({size} bytes)", path=path)
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                header = _Header(buf, path, keep_arrays=keep_arrays)
                return header.info(), header.arrays
    except (OSError, ValueError) as exc:  # ValueError: mmap of a file emptied meanwhile
        raise InvalidModelFile(f"cannot read: {_reason(exc)}", path=path) from exc


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or str(exc)


class _Truncated(Exception):
    """A read ran past the end of the file."""


class _Header:
    """A one-pass parser of a GGUF header held in a buffer."""

    def __init__(self, buf: mmap.mmap, path: str, *, keep_arrays: bool = False) -> None:
        self.buf = buf
        self.keep_arrays = keep_arrays
        self.arrays: dict[str, object] = {}  # with keep_arrays: each array key's values
        self.path = path
        self.pos = 0
        self.order = "<"
        self.kv: dict[str, object] = {}
        self.non_finite: set[str] = set()
        self.parameter_count = 0
        self.tensor_types: Counter[int] = Counter()
        self.tensor_names: set[str] = set()
        self.layer_bytes = 0
        self.labels: tuple[str, ...] | None = None

    def fail(self, why: str) -> InvalidModelFile:
        return InvalidModelFile(f"not a valid GGUF file: {why}", path=self.path)

    def info(self) -> GGUFInfo:
        try:
            self._parse()
        except _Truncated:
            raise self.fail("file is truncated") from None
        except UnicodeDecodeError:
            raise self.fail("a key is not UTF-8") from None
        return self._build()

    # -- reading primitives

    def _unpack(self, fmt: str) -> tuple[object, ...]:
        s = _struct(self.order + fmt)
        end = self.pos + s.size
        if end > len(self.buf):
            raise _Truncated
        values = s.unpack_from(self.buf, self.pos)
        self.pos = end
        return values

    def _u32(self) -> int:
        return int.from_bytes(self._take(4), "little" if self.order == "<" else "big")

    def _u64(self) -> int:
        return int.from_bytes(self._take(8), "little" if self.order == "<" else "big")

    def _take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise _Truncated
        data = self.buf[self.pos : end]
        self.pos = end
        return data

    def _skip(self, n: int) -> None:
        if self.pos + n > len(self.buf):
            raise _Truncated
        self.pos += n

    def _string(self) -> str:
        return self._take(self._u64()).decode("utf-8")

    # -- structure

    def _parse(self) -> None:
        if self._take(4) != GGUF_MAGIC:
            raise self.fail("bad magic")
        raw = self._take(4)
        version = int.from_bytes(raw, "little")
        if version & 0xFFFF == 0 and int.from_bytes(raw, "big") in (2, 3):
            self.order, version = ">", int.from_bytes(raw, "big")
        if version not in (2, 3):
            raise self.fail(f"unsupported version {version}")
        n_tensors, n_kv = self._u64(), self._u64()
        for _ in range(n_kv):
            key = self._string()
            vtype = self._u32()
            if key.endswith(_LABELS_KEY) and vtype == _ARRAY:
                self.labels = self._string_array()
                self.kv[key] = [] if not self.labels else None
                if self.keep_arrays:
                    self.arrays[key] = list(self.labels)
                continue
            if vtype == _ARRAY and self.keep_arrays:
                self.arrays[key] = self._array()
                self.kv[key] = None
                continue
            value = self._value(vtype)
            if value is None and vtype in (_FLOAT32, _FLOAT64):
                self.non_finite.add(key)
            self.kv[key] = value
        tensors = [self._tensor() for _ in range(n_tensors)]
        self._check_data(tensors)

    def _value(self, vtype: int) -> object:
        if vtype == _STRING:
            return self._take(self._u64()).decode("utf-8", errors="replace")
        if vtype == _ARRAY:
            return self._skip_array()
        fmt = _SCALAR_FORMATS.get(vtype)
        if fmt is None:
            raise self.fail(f"unknown value type {vtype}")
        (value,) = self._unpack(fmt)
        if vtype == _FLOAT32 and isinstance(value, float):
            # The shortest text that gives back the same float32: 1e-12, not 9.99e-13.
            value = float(str(np.float32(value)))
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    def _skip_array(self, depth: int = 1) -> list[object] | None:
        """Step over an array; Ollama shows non-empty arrays as null, empty ones as []."""
        if depth > _MAX_ARRAY_DEPTH:
            raise self.fail(f"arrays nested more than {_MAX_ARRAY_DEPTH} deep")
        vtype, count = self._u32(), self._u64()
        if count == 0:
            return []
        if vtype == _STRING:
            self._skip_strings(count)
        elif vtype == _ARRAY:
            for _ in range(count):
                self._skip_array(depth + 1)
        elif vtype in _SCALAR_FORMATS:
            self._skip(count * struct.calcsize(self.order + _SCALAR_FORMATS[vtype]))
        else:
            raise self.fail(f"unknown array element type {vtype}")
        return None

    def _skip_strings(self, count: int) -> None:
        # A vocabulary is tens of thousands of strings: one tight loop, since
        # this runs before every load (in the runner, on the file it opened).
        buf, pos, end = self.buf, self.pos, len(self.buf)
        unpack = _struct(self.order + "Q").unpack_from
        for _ in range(count):
            if pos + 8 > end:
                raise _Truncated
            pos += 8 + unpack(buf, pos)[0]
            if pos > end:
                raise _Truncated
        self.pos = pos

    def _array(self, depth: int = 1) -> list[object]:
        """An array's values: strings decoded, numbers as numbers (NaN and Inf as None)."""
        if depth > _MAX_ARRAY_DEPTH:
            raise self.fail(f"arrays nested more than {_MAX_ARRAY_DEPTH} deep")
        vtype, count = self._u32(), self._u64()
        if vtype == _STRING:
            return [self._take(self._u64()).decode("utf-8", errors="replace") for _ in range(count)]
        if vtype == _ARRAY:
            return [self._array(depth + 1) for _ in range(count)]
        fmt = _SCALAR_FORMATS.get(vtype)
        if fmt is None:
            raise self.fail(f"unknown array element type {vtype}")
        item = _struct(self.order + fmt)
        if count * item.size > len(self.buf) - self.pos:
            raise _Truncated
        values = [item.unpack_from(self.buf, self.pos + i * item.size)[0] for i in range(count)]
        self.pos += count * item.size
        if vtype in (_FLOAT32, _FLOAT64):
            return [float(v) if math.isfinite(v) else None for v in values]
        return values

    def _string_array(self) -> tuple[str, ...]:
        """An array that must hold strings (classifier labels), decoded."""
        vtype, count = self._u32(), self._u64()
        if vtype != _STRING:
            raise self.fail(f"array of type {vtype} where strings were expected")
        return tuple(self._string() for _ in range(count))

    def _tensor(self) -> tuple[int, int, int]:
        """Read one tensor description; return (type, offset, byte size or -1)."""
        name = self._string()
        self.tensor_names.add(name)
        n_dims = self._u32()
        if n_dims > 8:
            raise self.fail(f"tensor with {n_dims} dimensions")
        elements = math.prod(self._u64() for _ in range(n_dims))
        ttype, offset = self._u32(), self._u64()
        self.parameter_count += elements
        self.tensor_types[ttype] += elements
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
        except (ValueError, KeyError):
            return ttype, offset, -1  # a type newer than this gguf package
        nbytes = elements // block * type_size
        if name.startswith("blk."):
            self.layer_bytes += nbytes
        return ttype, offset, nbytes

    def _check_data(self, tensors: list[tuple[int, int, int]]) -> None:
        alignment = self.kv.get("general.alignment", _DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0:
            raise self.fail(f"bad general.alignment {alignment!r}")
        data_start = -(-self.pos // alignment) * alignment
        data_size = len(self.buf) - data_start
        for _, offset, nbytes in tensors:
            if offset + max(nbytes, 0) > data_size:
                raise self.fail("tensor data is truncated")

    # -- result

    def _build(self) -> GGUFInfo:
        arch = self.kv.get("general.architecture")
        if not isinstance(arch, str) or not arch:
            raise self.fail("no general.architecture")
        pooling = self.kv.get(f"{arch}.pooling_type")
        # Ollama adds the parameter count to what the file says.
        kv = {**self.kv, "general.parameter_count": self.parameter_count}
        model_info = dict(sorted(kv.items()))
        return GGUFInfo(
            architecture=arch,
            embedding_length=self._int(f"{arch}.embedding_length"),
            context_length=self._int(f"{arch}.context_length"),
            block_count=self._int(f"{arch}.block_count"),
            pooling_type=pooling if _is_int(pooling) else None,
            parameter_count=self.parameter_count,
            file_type=self._file_type(),
            model_info=model_info,
            non_finite=frozenset(self.non_finite),
            tensor_names=frozenset(self.tensor_names),
            classifier_labels=self.labels,
            layer_bytes=self.layer_bytes,
        )

    def _int(self, key: str) -> int:
        value = self.kv.get(key)
        return value if _is_int(value) else 0

    def _file_type(self) -> str:
        declared = self.kv.get("general.file_type")
        if _is_int(declared):
            return file_type_name(declared)
        if not self.tensor_types:
            return "unknown"
        dominant = self.tensor_types.most_common(1)[0][0]
        try:
            return GGMLQuantizationType(dominant).name
        except ValueError:
            return "unknown"


def file_type_name(file_type: int) -> str:
    """The name of a `general.file_type` number: 1 -> "F16", 7 -> "Q8_0"."""
    try:
        name = LlamaFileType(file_type).name
    except ValueError:
        return "unknown"
    for prefix in ("MOSTLY_", "ALL_"):
        name = name.removeprefix(prefix)
    return "unknown" if name == "GUESSED" else name


@cache
def _struct(fmt: str) -> struct.Struct:
    return struct.Struct(fmt)


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)
