"""The line formats: JSONL (one object a line) and plain text (one document a line).

Both read a line at a time and remember the byte offset after each chunk, so
a run that continues seeks straight to where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pyarrow as pa

from emberd.server.bulk.records import (
    BadRow,
    Chunk,
    ChunkBuilder,
    IdValue,
    Position,
    id_problem,
    missing,
)


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

    def chunks(self, size: int, start: Position) -> Iterator[Chunk]:
        """Records from `start` in chunks of `size`; blank lines are not records."""
        builder = ChunkBuilder(size, self.with_ids)
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

    @property
    def with_ids(self) -> bool:
        """Whether records carry ids of their own."""
        return False

    def _parse(self, raw: bytes) -> tuple[str | None, str, IdValue | None]:
        """(problem or None, text, id) of one non-blank line."""
        raise NotImplementedError


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

    @property
    def with_ids(self) -> bool:
        """Whether an id field was named."""
        return self.id_field is not None

    def _parse(self, raw: bytes) -> tuple[str | None, str, IdValue | None]:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return "not valid JSON", "", None
        if not isinstance(obj, dict):
            return "not a JSON object", "", None
        text = obj.get(self.text_field)
        if text is None:
            return missing(self.text_field), "", None
        if not isinstance(text, str):
            return f'field "{self.text_field}" is not a string', "", None
        if self.id_field is None:
            return None, text, None
        ident = obj.get(self.id_field)
        problem = id_problem(ident, self.id_field, self.id_type)
        return problem, text, ident


class TextReader(_LineReader):
    """One document a line (UTF-8); blank lines are not records."""

    id_type = None

    def _parse(self, raw: bytes) -> tuple[str | None, str, IdValue | None]:
        try:
            return None, raw.decode("utf-8").rstrip("\r\n"), None
        except UnicodeDecodeError:
            return "not valid UTF-8", "", None
