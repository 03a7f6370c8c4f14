"""Streaming readers of corpus files: JSONL, CSV, Parquet and plain text.

A reader yields chunks of a fixed number of records from a position, never
holding more than one chunk (and pyarrow's read-ahead block) in memory.
Records are numbered from 0 in input order; a record that cannot be embedded
(field missing, not a string, not JSON) is a bad row, reported with its line
(row, for Parquet) and still counted, so row numbers do not depend on what
was skipped. Chunk boundaries depend only on the input and the chunk size,
which is what lets an interrupted run continue where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from server.bulk import FORMATS

_EXTENSIONS = {
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet",
    ".pq": "parquet", ".txt": "text", ".text": "text",
}

IdValue = int | str


class ReadError(Exception):
    """The input as a whole cannot be read (no such file, no such column, unknown format)."""


@dataclass(frozen=True)
class Position:
    """Where a chunk starts: records before it, and for line formats, lines and bytes."""

    record: int = 0
    line: int = 0
    offset: int = 0


@dataclass(frozen=True)
class BadRow:
    """A record that cannot be embedded."""

    row: int | None  # None for a CSV line too malformed to be a record
    where: str  # "line 7", "row 7"
    reason: str

    def describe(self) -> str:
        """`line 7: field "text" is missing`."""
        return f"{self.where}: {self.reason}"


@dataclass(frozen=True)
class Chunk:
    """The embeddable records of one stretch of input, and its bad rows."""

    rows: tuple[int, ...]
    texts: tuple[str, ...]
    ids: tuple[IdValue, ...] | None  # None without an id field
    bad: tuple[BadRow, ...]
    end: Position  # where the next chunk starts


class Reader(Protocol):
    """A corpus file read in chunks."""

    id_type: pa.DataType | None  # the id column's type; None without an id field

    def chunks(self, size: int, start: Position) -> Iterator[Chunk]:
        """Chunks of `size` records (the last may be shorter) from `start`."""
        ...

    def fraction(self) -> float | None:
        """How much of the input has been read (0..1), when known."""
        ...


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


@dataclass
class _Builder:
    """Collects records until a chunk is full."""

    size: int
    with_ids: bool
    rows: list[int] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    ids: list[IdValue] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)
    records: int = 0

    def add(self, row: int, text: str, ident: IdValue | None) -> None:
        self.rows.append(row)
        self.texts.append(text)
        if ident is not None:
            self.ids.append(ident)
        self.records += 1

    def add_bad(self, bad: BadRow, counted: bool = True) -> None:
        self.bad.append(bad)
        self.records += counted

    @property
    def full(self) -> bool:
        return self.records >= self.size

    def take(self, end: Position) -> Chunk:
        chunk = Chunk(
            tuple(self.rows), tuple(self.texts), tuple(self.ids) if self.with_ids else None,
            tuple(self.bad), end,
        )
        self.rows, self.texts, self.ids, self.bad, self.records = [], [], [], [], 0
        return chunk

    @property
    def empty(self) -> bool:
        return not self.records and not self.bad


def _missing(name: str) -> str:
    return f'field "{name}" is missing'


def _id_problem(value: object, name: str, id_type: pa.DataType | None) -> str | None:
    """Why `value` cannot be the id, or None when it can."""
    if value is None:
        return _missing(name)
    if id_type is not None and pa.types.is_integer(id_type):
        fits, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    else:
        fits, kind = isinstance(value, str), "a string"
    return None if fits else f'field "{name}" is not {kind}, as the first row\'s is'


class _LineReader:
    """Shared by the line formats: bytes read so far, for progress."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._size = path.stat().st_size
        self._read = 0

    def fraction(self) -> float | None:
        return self._read / self._size if self._size else 1.0

    def _lines(self, start: Position) -> Iterator[tuple[bytes, int, int]]:
        """(line, line number, offset after it) from `start`."""
        line, offset = start.line, start.offset
        with self.path.open("rb") as f:
            f.seek(offset)
            for raw in f:
                line += 1
                offset += len(raw)
                self._read = offset
                yield raw, line, offset


class JsonlReader(_LineReader):
    """One JSON object a line; blank lines are not records."""

    def __init__(self, path: Path, text_field: str, id_field: str | None) -> None:
        super().__init__(path)
        self.text_field = text_field
        self.id_field = id_field
        self.id_type = self._first_id_type() if id_field else None

    def _first_id_type(self) -> pa.DataType:
        """int64 when the first record with an integer or string id has an integer, else string."""
        for raw, _, _ in self._lines(Position()):
            try:
                value = orjson.loads(raw).get(self.id_field) if raw.strip() else None
            except (orjson.JSONDecodeError, AttributeError):
                continue
            if isinstance(value, int) and not isinstance(value, bool):
                return pa.int64()
            if isinstance(value, str):
                return pa.string()
        return pa.string()

    def chunks(self, size: int, start: Position) -> Iterator[Chunk]:
        builder = _Builder(size, self.id_field is not None)
        record = start.record
        end = start
        for raw, line, offset in self._lines(start):
            end = Position(record, line, offset)
            if not raw.strip():
                continue
            problem, text, ident = self._parse(raw)
            if problem is None:
                builder.add(record, text, ident)
            else:
                builder.add_bad(BadRow(record, f"line {line}", problem))
            record += 1
            end = Position(record, line, offset)
            if builder.full:
                yield builder.take(end)
        if not builder.empty:
            yield builder.take(end)

    def _parse(self, raw: bytes) -> tuple[str | None, str, IdValue | None]:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return "not valid JSON", "", None
        if not isinstance(obj, dict):
            return "not a JSON object", "", None
        text = obj.get(self.text_field)
        if text is None:
            return _missing(self.text_field), "", None
        if not isinstance(text, str):
            return f'field "{self.text_field}" is not a string', "", None
        if self.id_field is None:
            return None, text, None
        ident = obj.get(self.id_field)
        problem = _id_problem(ident, self.id_field, self.id_type)
        return problem, text, ident


class TextReader(_LineReader):
    """One document a line (UTF-8); blank lines are not records."""

    id_type = None

    def chunks(self, size: int, start: Position) -> Iterator[Chunk]:
        builder = _Builder(size, with_ids=False)
        record = start.record
        end = start
        for raw, line, offset in self._lines(start):
            end = Position(record, line, offset)
            if not raw.strip():
                continue
            try:
                builder.add(record, raw.decode("utf-8").rstrip("\r\n"), None)
            except UnicodeDecodeError:
                builder.add_bad(BadRow(record, f"line {line}", "not valid UTF-8"))
            record += 1
            end = Position(record, line, offset)
            if builder.full:
                yield builder.take(end)
        if not builder.empty:
            yield builder.take(end)


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
    builder = _Builder(size, id_field is not None)
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
