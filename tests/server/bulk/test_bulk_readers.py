"""The corpus readers: streaming, continuing from a chunk's end, and the progress bar."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from emberd.server.bulk.progress import ProgressBar
from emberd.server.bulk.readers import Position, Reader, ReadError, detect_format, open_reader
from tests.support.bulk_files import corpus, write_corpus

SUFFIXES = [".jsonl", ".csv", ".parquet", ".txt"]


def _reader(path: Path, with_ids: bool) -> Reader:
    return open_reader(path, detect_format(path, None), "text", "id" if with_ids else None)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_a_reader_streams_and_continues_from_a_chunk_end(suffix: str, tmp_path: Path) -> None:
    count = 40_000 if suffix == ".csv" else 3000  # CSV is parsed in blocks of 1 MB
    texts = corpus(count, seed=1)
    with_ids = suffix != ".txt"
    path = write_corpus(tmp_path / f"in{suffix}", texts, list(range(count)) if with_ids else None)
    reader = _reader(path, with_ids)
    chunks = reader.chunks(10, Position())
    first, second = next(chunks), next(chunks)
    fraction = reader.fraction()
    assert fraction is not None and fraction < 1.0  # not the whole file read
    assert first.texts == tuple(texts[:10]) and first.rows == tuple(range(10))
    again = next(_reader(path, with_ids).chunks(10, first.end))
    assert again == second
    rest = list(_reader(path, with_ids).chunks(1000, second.end))
    assert [len(c.texts) for c in rest] == [1000] * (count // 1000 - 1) + [980]
    assert rest[-1].texts[-1] == texts[-1]
    assert rest[-1].rows[-1] == count - 1
    if with_ids:
        assert rest[-1].ids is not None and rest[-1].ids[-1] in (count - 1, str(count - 1))


def test_unknown_formats_and_fields(tmp_path: Path) -> None:
    with pytest.raises(ReadError, match="--format"):
        detect_format(tmp_path / "in.xml", None)
    text = write_corpus(tmp_path / "in.txt", ["why"])
    with pytest.raises(ReadError, match="--id-field needs"):
        open_reader(text, "text", "text", "id")
    table = write_corpus(tmp_path / "in.parquet", ["why"], [1])
    with pytest.raises(ReadError, match='column "id" of in\\.parquet is not a string'):
        open_reader(table, "parquet", "id", None)


def test_the_progress_bar_draws_only_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    shown = Terminal()
    bar = ProgressBar(shown, 0, 0.0)
    bar.update(500, 0.25, force=True)
    bar.close()
    assert "500 rows" in shown.getvalue() and "rows/s" in shown.getvalue()
    assert "ETA" in shown.getvalue() and "25%" in shown.getvalue()
    piped = io.StringIO()
    quiet = ProgressBar(piped, 0, 0.0)
    quiet.update(500, 0.25, force=True)
    quiet.close()
    assert piped.getvalue() == ""
