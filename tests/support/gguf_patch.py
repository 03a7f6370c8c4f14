"""Copies of a GGUF with header values changed in place, for tests of broken files.

Scalar values are overwritten where they lie in the file, so the copy differs
from a good model in exactly the keys named and nothing else.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gguf import GGUFReader, GGUFValueType, GGUFWriter


def patched_copy(source: Path, target: Path, values: dict[str, float | int | bool]) -> Path:
    """Copy `source` to `target` with each key's scalar value replaced; return `target`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    reader = GGUFReader(target, "r+")
    for key, value in values.items():
        field = reader.fields[key]
        part = field.parts[field.data[0]]
        assert part.size == 1, f"{key} is not a scalar"
        part[0] = value
    reader.data.flush()  # a memory map of the copy: the writes land in the file
    return target


def rewritten_copy(source: Path, target: Path, values: dict[str, object]) -> Path:
    """Write `source` anew at `target` with each key set to its value (strings and arrays
    too, which cannot change in place), every other key and tensor as they were."""
    reader = GGUFReader(source)
    arch = str(reader.fields["general.architecture"].contents())
    writer = GGUFWriter(target, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = values.get(key, field.contents())
        kind = field.types[0]
        if key in values and isinstance(value, str):
            writer.add_string(key, value)
        elif kind == GGUFValueType.ARRAY:
            writer.add_array(key, list(value))  # type: ignore[call-overload]
        else:
            writer.add_key_value(key, value, kind)
    for tensor in reader.tensors:
        writer.add_tensor(
            tensor.name, tensor.data, raw_shape=tensor.data.shape, raw_dtype=tensor.tensor_type
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target
