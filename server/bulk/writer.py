"""Output of bulk embedding: chunk files while running, one Parquet or .npy file at the end.

Each chunk of input becomes one small Parquet file (written to a temporary
name, then renamed, so a chunk file is whole or absent). When every chunk is
done they are copied, one at a time, into the output: a Parquet file with one
row group per chunk, or a .npy matrix. Memory stays bounded by one chunk.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from emberd.backends.base import FloatMatrix
from emberd.server.bulk import OUTPUT_FORMATS
from emberd.server.bulk.readers import IdValue

EMBEDDING = "embedding"
TOKENS = "tokens"


# Output names whose extension says what is written (embed-file refuses others
# unless the format is given).
OUTPUT_SUFFIXES = (".parquet", ".pq", ".npy")


def output_format(path: Path, given: str | None) -> str:
    """`npy` for a .npy path (or when asked), else Parquet."""
    if given:
        if given not in OUTPUT_FORMATS:
            raise ValueError(f"unknown output format {given!r}; choose parquet or npy")
        return given
    return "npy" if path.suffix.lower() == ".npy" else "parquet"


def vector_array(vectors: FloatMatrix) -> pa.FixedSizeListArray:
    """Rows of `vectors` as a fixed-size list<float32> array."""
    flat = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, type=pa.float32()), vectors.shape[1])


def chunk_table(
    key: str,
    key_type: pa.DataType,
    keys: Sequence[IdValue],
    vectors: FloatMatrix,
    tokens: Sequence[int] | None,
) -> pa.Table:
    """One chunk's rows: the id (or row number), the vector and its token count."""
    token_array = pa.array(tokens if tokens is not None else [None] * len(keys), type=pa.int32())
    return pa.table(
        {key: pa.array(keys, type=key_type), EMBEDDING: vector_array(vectors), TOKENS: token_array}
    )


def write_atomically(table: pa.Table, path: Path) -> None:
    """Write `table` as Parquet at `path`, appearing whole or not at all."""
    temporary = path.with_name(path.name + ".tmp")
    pq.write_table(table, temporary)
    os.replace(temporary, path)


def assemble(chunks: Sequence[Path], out: Path, fmt: str, empty_schema: pa.Schema) -> int:
    """Copy the chunk files, in order, into `out` (atomically); returns the rows written."""
    temporary = out.with_name(out.name + ".tmp")
    if fmt == "npy":
        rows = _assemble_npy(chunks, temporary)
    else:
        rows = _assemble_parquet(chunks, temporary, empty_schema)
    os.replace(temporary, out)
    return rows


def _assemble_parquet(chunks: Sequence[Path], target: Path, empty_schema: pa.Schema) -> int:
    schema = pq.read_schema(chunks[0]) if chunks else empty_schema
    rows = 0
    with pq.ParquetWriter(target, schema) as writer:
        for path in chunks:
            table = pq.read_table(path)
            writer.write_table(table, row_group_size=max(1, table.num_rows))
            rows += table.num_rows
    return rows


def _assemble_npy(chunks: Sequence[Path], target: Path) -> int:
    rows = sum(pq.ParquetFile(path).metadata.num_rows for path in chunks)
    dim = pq.read_schema(chunks[0]).field(EMBEDDING).type.list_size if chunks else 0
    with target.open("wb") as f:
        header = {
            "descr": np.lib.format.dtype_to_descr(np.dtype("<f4")),
            "fortran_order": False,
            "shape": (rows, dim),
        }
        np.lib.format.write_array_header_1_0(f, header)
        for path in chunks:
            column = pq.read_table(path, columns=[EMBEDDING]).column(EMBEDDING).combine_chunks()
            f.write(column.flatten().to_numpy().astype("<f4", copy=False).tobytes())
    return rows
