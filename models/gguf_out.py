"""Write a GGUF file from planned tensors and metadata, atomically, with progress.

Every converter ends here: it describes each tensor (GGUF name, numpy shape,
storage type, how to read its float32 data) and a function that adds its
metadata; `write_gguf` writes the header, then the data one tensor at a time
(so memory holds one tensor), and renames the finished file into place.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt
from gguf.quants import quantize

Progress = Callable[[int, int], None]
FloatArray = npt.NDArray[np.floating]


class FileType(Enum):
    """Storage type of the matrices; values are llama.cpp's LLAMA_FTYPE numbers."""

    F32 = 0
    F16 = 1
    Q8_0 = 7


@dataclass(frozen=True)
class TensorOut:
    """One tensor to write: its GGUF name, numpy shape, storage type and data."""

    name: str
    shape: tuple[int, ...]
    qtype: gguf.GGMLQuantizationType
    read: Callable[[], FloatArray]


def storage_type(
    shape: tuple[int, ...], file_type: FileType, *, keep_f32: bool = False, keep_f16: bool = False
) -> gguf.GGMLQuantizationType:
    """How a tensor of `shape` is stored in a file of `file_type`.

    1-D tensors (norms, biases) stay F32, as llama.cpp adds them to F32
    activations; `keep_f32` forces F32, `keep_f16` forbids quantizing (as
    llama.cpp's own quantizer does for position tables). Q8_0 needs rows that
    are a multiple of its block; other rows fall back to F16.
    """
    qt = gguf.GGMLQuantizationType
    if len(shape) == 1 or keep_f32 or file_type is FileType.F32:
        return qt.F32
    if file_type is FileType.F16 or keep_f16:
        return qt.F16
    block = gguf.GGML_QUANT_SIZES[qt.Q8_0][0]
    return qt.F16 if shape[-1] % block else qt.Q8_0


def stored_nbytes(tensor: TensorOut) -> int:
    """Bytes the tensor's data takes in the file."""
    block, size = gguf.GGML_QUANT_SIZES[tensor.qtype]
    return int(np.prod(tensor.shape)) // block * size


def _encode(array: FloatArray, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    data = np.ascontiguousarray(array, dtype=np.float32)
    if qtype == gguf.GGMLQuantizationType.F32:
        return data
    if qtype == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16)
    return quantize(data, qtype)


def add_file_type(writer: gguf.GGUFWriter, name: str, file_type: FileType) -> None:
    """The general keys every converted file carries."""
    writer.add_string("general.name", name)
    writer.add_uint32("general.file_type", file_type.value)
    if file_type is FileType.Q8_0:
        writer.add_uint32("general.quantization_version", gguf.GGML_QUANT_VERSION)


def write_gguf(
    path: Path,
    architecture: str,
    add_metadata: Callable[[gguf.GGUFWriter], None],
    tensors: Sequence[TensorOut],
    progress: Progress | None = None,
) -> None:
    """Write a GGUF at `path` (replacing any file there) from metadata and tensors.

    The file is written next to `path` and renamed into place, so a failure
    or interruption leaves nothing behind. `progress(done, total)` is called
    after each tensor, in bytes of tensor data written. A tensor whose data
    does not have its planned shape raises ValueError.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    writer = gguf.GGUFWriter(tmp, architecture)
    try:
        add_metadata(writer)
        for item in tensors:
            # Quantized data is declared by its logical shape; llama.cpp derives the bytes.
            writer.add_tensor_info(
                item.name, item.shape, np.dtype(np.float32), stored_nbytes(item), item.qtype
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = sum(stored_nbytes(item) for item in tensors)
        done = 0
        for item in tensors:
            data = item.read()
            if tuple(data.shape) != item.shape:
                raise ValueError(f"tensor {item.name} has shape {data.shape}, not {item.shape}")
            writer.write_tensor_data(_encode(data, item.qtype))
            done += stored_nbytes(item)
            if progress is not None:
                progress(done, total)
        assert writer.fout is not None
        writer.flush()
        for out in writer.fout:
            os.fsync(out.fileno())
        writer.close()
        os.replace(tmp, path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise


def gguf_names(tensors: Iterable[str], rename: Callable[[str], str | None]) -> dict[str, str]:
    """Checkpoint name by GGUF name, for every tensor `rename` keeps.

    Raises ValueError for names `rename` refuses, or two names for one tensor.
    """
    by_gguf: dict[str, str] = {}
    unsupported: list[str] = []
    for hf_name in tensors:
        try:
            target = rename(hf_name)
        except ValueError:
            unsupported.append(hf_name)
            continue
        if target is None:
            continue
        if target in by_gguf:
            raise ValueError(f"tensors {by_gguf[target]!r} and {hf_name!r} are the same tensor")
        by_gguf[target] = hf_name
    if unsupported:
        raise ValueError(f"unsupported tensors: {', '.join(sorted(unsupported))}")
    return by_gguf
