"""Streaming readers of corpus files: JSONL, CSV, Parquet and plain text.

A reader yields chunks of a fixed number of records from a position, never
holding more than one chunk (and pyarrow's bounded read-ahead) in memory.
Chunk boundaries depend only on the input and the chunk size, which is what
lets an interrupted run continue where it stopped.
"""

from __future__ import annotations

from pathlib import Path

from emberd.server.bulk import FORMATS
from emberd.server.bulk.arrow_readers import CsvReader, ParquetReader
from emberd.server.bulk.line_readers import JsonlReader, TextReader
from emberd.server.bulk.records import BadRow, Chunk, IdValue, Position, Reader, ReadError

_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".txt": "text",
    ".text": "text",
}


def detect_format(path: Path, given: str | None) -> str:
    """The format named, else the one the file's extension implies."""
    if given:
        if given not in FORMATS:
            raise ReadError(f"unknown format {given!r}; choose among {', '.join(FORMATS)}")
        return given
    found = _EXTENSIONS.get(path.suffix.lower())
    if found is None:
        raise ReadError(f"cannot tell the format of {path.name}; give --format {'|'.join(FORMATS)}")
    return found


def open_reader(path: Path, fmt: str, text_field: str, id_field: str | None) -> Reader:
    """A reader of `path` in format `fmt`; ReadError when it cannot be read at all."""
    if not path.is_file():
        raise ReadError(f"no such file: {path}")
    if fmt == "jsonl":
        return JsonlReader(path, text_field, id_field)
    if fmt == "text":
        if id_field:
            raise ReadError("plain text has no fields: --id-field needs JSONL, CSV or Parquet")
        return TextReader(path)
    if fmt == "csv":
        return CsvReader(path, text_field, id_field)
    return ParquetReader(path, text_field, id_field)


__all__ = [
    "BadRow",
    "Chunk",
    "IdValue",
    "Position",
    "ReadError",
    "Reader",
    "detect_format",
    "open_reader",
]
