"""The columnar formats, read by pyarrow: CSV and Parquet.

Record batches are turned into chunks of the requested size; a run that
continues skips the records before its start (whole row groups, for Parquet).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from emberd.server.bulk.records import BadRow, Chunk, ChunkBuilder, Position, ReadError


def _arrow_chunks(
    batches: Iterator[pa.RecordBatch],
    size: int,
    start: Position,
    text_field: str,
    id_field: str | None,
    where: str,
    pending_bad: list[BadRow] | None = None,
) -> Iterator[Chunk]:
    """Chunks from record batches whose first row is record `start.record`."""
    builder = ChunkBuilder(size, id_field is not None)
    record = start.record
    for batch in batches:
        texts = batch.column(text_field).to_pylist()
        ids = batch.column(id_field).to_pylist() if id_field else [None] * len(texts)
        for text, ident in zip(texts, ids, strict=True):
            if pending_bad:  # malformed lines found while this batch was parsed
                for bad in pending_bad:
                    builder.add_bad(bad, counted=False)
                pending_bad.clear()
            null = text_field if text is None else id_field if id_field and ident is None else None
            if null is not None:
                builder.add_bad(BadRow(record, f"{where} {record}", f'field "{null}" is null'))
            else:
                builder.add(record, text, ident)
            record += 1
            if builder.full:
                yield builder.take(Position(record))
    for bad in pending_bad or ():
        builder.add_bad(bad, counted=False)
    if not builder.empty:
        yield builder.take(Position(record))


def _skip_rows(batches: Iterator[pa.RecordBatch], count: int) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        if count >= batch.num_rows:
            count -= batch.num_rows
            continue
        yield batch.slice(count) if count else batch
        count = 0


class CsvReader:
    """CSV with a header row, read by pyarrow; every column read as text.

    A line with the wrong number of fields is a bad row with its line number,
    and is not a record. pyarrow reads ahead a bounded number of 1 MB blocks.
    """

    def __init__(self, path: Path, text_field: str, id_field: str | None) -> None:
        self.path = path
        self.text_field = text_field
        self.id_field = id_field
        self.id_type = pa.string() if id_field else None
        self._lines: int | None = None
        self._done = 0
        try:
            header = pacsv.open_csv(
                str(path),
                read_options=pacsv.ReadOptions(block_size=1 << 16),
                parse_options=pacsv.ParseOptions(invalid_row_handler=lambda row: "skip"),
            )
            names = header.schema.names
            header.close()
        except pa.ArrowInvalid as exc:
            raise ReadError(f"{path.name} is not a readable CSV file: {exc}") from None
        for name in (text_field, id_field):
            if name and name not in names:
                raise ReadError(f'{path.name} has no column "{name}" (columns: {", ".join(names)})')

    def fraction(self) -> float | None:
        # Records over lines: exact unless fields hold line breaks.
        return min(1.0, self._done / self._lines) if self._lines else None

    def chunks(self, size: int, start: Position) -> Iterator[Chunk]:
        self._lines = max(1, _count_lines(self.path) - 1)
        columns = [c for c in (self.text_field, self.id_field) if c]
        malformed: list[BadRow] = []

        def invalid(row: pacsv.InvalidRow) -> str:
            where = f"line {row.number}" if row.number is not None else "a line"
            reason = f"{row.actual_columns} fields where the header has {row.expected_columns}"
            malformed.append(BadRow(None, where, reason))
            return "skip"

        stream = pacsv.open_csv(
            str(self.path),
            # One thread: pyarrow knows a malformed line's number only then.
            read_options=pacsv.ReadOptions(block_size=1 << 20, use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=invalid),
            convert_options=pacsv.ConvertOptions(
                include_columns=columns,
                column_types=dict.fromkeys(columns, pa.string()),
                strings_can_be_null=False,
            ),
        )
        try:
            batches = _skip_rows(iter(stream), start.record)
            if start.record:
                first = next(batches, None)
                malformed.clear()  # lines before the start were reported by the earlier run
                if first is None:
                    return
                batches = _chain(first, batches)
            for chunk in _arrow_chunks(
                batches, size, start, self.text_field, self.id_field, "row", malformed
            ):
                self._done = chunk.end.record
                yield chunk
        finally:
            stream.close()


def _count_lines(path: Path) -> int:
    count = 0
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            count += block.count(b"\n")
    return count


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


class ParquetReader:
    """A Parquet file read a row group at a time."""

    def __init__(self, path: Path, text_field: str, id_field: str | None) -> None:
        self.path = path
        self.text_field = text_field
        self.id_field = id_field
        try:
            self._file = pq.ParquetFile(path)
        except (pa.ArrowException, OSError) as exc:
            raise ReadError(f"{path.name} is not a readable Parquet file: {exc}") from None
        schema = self._file.schema_arrow
        self.total = self._file.metadata.num_rows
        self._done = 0
        for name, check, kind in (
            (text_field, _is_text, "a string"),
            (id_field, _is_id, "an integer or string"),
        ):
            if not name:
                continue
            if name not in schema.names:
                raise ReadError(f'{path.name} has no column "{name}"')
            if not check(schema.field(name).type):
                raise ReadError(f'column "{name}" of {path.name} is not {kind} column')
        self.id_type = schema.field(id_field).type if id_field else None

    def fraction(self) -> float | None:
        return self._done / self.total if self.total else 1.0

    def chunks(self, size: int, start: Position) -> Iterator[Chunk]:
        metadata = self._file.metadata
        first, seen = 0, 0  # the row group `start` is in, and the rows before it
        while first < metadata.num_row_groups:
            rows = metadata.row_group(first).num_rows
            if seen + rows > start.record:
                break
            seen += rows
            first += 1
        groups = list(range(first, metadata.num_row_groups))
        if not groups:
            return
        skip = start.record - seen
        columns = [c for c in (self.text_field, self.id_field) if c]
        batches = _skip_rows(
            self._file.iter_batches(batch_size=max(size, 1024), row_groups=groups, columns=columns),
            skip,
        )
        for chunk in _arrow_chunks(batches, size, start, self.text_field, self.id_field, "row"):
            self._done = chunk.end.record
            yield chunk


def _is_text(kind: pa.DataType) -> bool:
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _is_id(kind: pa.DataType) -> bool:
    return bool(_is_text(kind) or pa.types.is_integer(kind))
