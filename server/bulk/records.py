"""What the readers hand out: chunks of records, bad rows, and where a chunk starts.

Records are numbered from 0 in input order. A record that cannot be embedded
(field missing, not a string, not JSON) is a bad row, reported with its line
(row, for Parquet) and still counted, so row numbers do not depend on what
was skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

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


@dataclass
class ChunkBuilder:
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
            tuple(self.rows),
            tuple(self.texts),
            tuple(self.ids) if self.with_ids else None,
            tuple(self.bad),
            end,
        )
        self.rows, self.texts, self.ids, self.bad, self.records = [], [], [], [], 0
        return chunk

    @property
    def empty(self) -> bool:
        return not self.records and not self.bad


def missing(name: str) -> str:
    return f'field "{name}" is missing'


def id_problem(value: object, name: str, id_type: pa.DataType | None) -> str | None:
    """Why `value` cannot be the id, or None when it can."""
    if value is None:
        return missing(name)
    if id_type is not None and pa.types.is_integer(id_type):
        fits, kind = isinstance(value, int) and not isinstance(value, bool), "an integer"
    else:
        fits, kind = isinstance(value, str), "a string"
    return None if fits else f'field "{name}" is not {kind}, as the first row\'s is'
