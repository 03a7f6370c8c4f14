"""`emberd embed-file`: embed every record of a corpus file into a Parquet or .npy file.

The input is read in chunks of `--batch` records; each chunk is embedded as
one request (in this process through the server's engine, by a running
server, or by Ray actors), written as a chunk file and checkpointed. At the
end the chunks are copied into the output, which appears whole or not at
all. An interrupted run, given the same arguments again, continues after
its last checkpoint and ends with the file an uninterrupted run writes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pyarrow as pa

from emberd.server.bulk import DEFAULT_BATCH, ON_ERROR, writer
from emberd.server.bulk.embedders import ChunkEmbedder, Embedded, LocalEmbedder, ServerEmbedder
from emberd.server.bulk.interrupt import StopRequest
from emberd.server.bulk.progress import ProgressBar
from emberd.server.bulk.readers import BadRow, Chunk, ReadError, detect_format, open_reader
from emberd.server.bulk.resume import State, WorkDir
from emberd.server.config import Settings


class UsageError(Exception):
    """Arguments that do not go together."""


class BadRowError(Exception):
    """A bad row met with `--on-error fail`."""

    def __init__(self, bad: BadRow) -> None:
        super().__init__(bad.describe())
        self.bad = bad


@dataclass(frozen=True)
class EmbedFileRequest:
    """What to embed, with what, and where to."""

    input: Path
    out: Path
    model: str
    text_field: str = "text"
    id_field: str | None = None
    batch: int = DEFAULT_BATCH
    dimensions: int | None = None
    normalize: bool = True
    input_format: str | None = None
    output_format: str | None = None
    on_error: str = "fail"
    server: str | None = None
    ray: bool = False
    ray_address: str | None = None
    ray_actors: int | None = None


@dataclass(frozen=True)
class Summary:
    """What a finished run did."""

    rows: int  # rows in the output
    skipped: int
    resumed_from: int  # rows already done when this run started
    seconds: float  # this run's time


Mapper = Callable[[Iterator[Chunk]], Iterator[tuple[Chunk, Embedded]]]


def _one_by_one(embedder: ChunkEmbedder) -> Mapper:
    def run(chunks: Iterator[Chunk]) -> Iterator[tuple[Chunk, Embedded]]:
        for chunk in chunks:
            if chunk.texts:
                yield chunk, embedder.embed(chunk.texts)
            else:
                yield chunk, Embedded(np.zeros((0, 0), dtype=np.float32), ())

    return run


def check(request: EmbedFileRequest) -> None:
    """Refuse arguments that cannot work, before anything is loaded."""
    if request.batch < 1:
        raise UsageError("--batch must be at least 1")
    if request.dimensions is not None and request.dimensions < 1:
        raise UsageError("--dimensions must be at least 1")
    if request.on_error not in ON_ERROR:
        raise UsageError("--on-error is fail or skip")
    if request.server and request.ray:
        raise UsageError("--server and --ray cannot be used together")
    if request.server and not request.normalize:
        raise UsageError("--no-normalize cannot be used with --server: /api/embed normalises")
    if request.out.resolve() == request.input.resolve():
        raise UsageError("the output would overwrite the input")
    suffix = request.out.suffix.lower()
    if request.output_format is None and suffix not in writer.OUTPUT_SUFFIXES:
        # A .csv or .jsonl name would hold Parquet: refuse rather than mislabel.
        raise UsageError(
            f"--out {request.out.name}: embed-file writes Parquet (.parquet) or a .npy matrix; "
            "name the output so, or give --out-format"
        )


def _fingerprint(request: EmbedFileRequest, reader_format: str, identity: str) -> dict[str, object]:
    """What must be the same for a run to continue another's chunks."""
    st = request.input.stat()
    fields = asdict(request)
    fields.pop("ray_actors")  # more or fewer actors give the same vectors
    fields.update(
        input=str(request.input.resolve()),
        out=str(request.out.resolve()),
        input_size=st.st_size,
        input_mtime_ns=st.st_mtime_ns,
        input_format=reader_format,
        model_identity=identity,
    )
    return fields


class _Run:
    """One run of embed-file: reading, embedding, checkpointing, assembling."""

    def __init__(self, request: EmbedFileRequest, stderr: TextIO) -> None:
        self.request = request
        self.stderr = stderr
        self.input_format = detect_format(request.input, request.input_format)
        self.output_format = writer.output_format(request.out, request.output_format)
        self.reader = reader = open_reader(
            request.input, self.input_format, request.text_field, request.id_field
        )
        self.key = "id" if request.id_field else "row"
        self.key_type = reader.id_type if request.id_field and reader.id_type else pa.int64()

    def checked(self, chunks: Iterator[Chunk]) -> Iterator[Chunk]:
        """Chunks as read; a bad row stops the run (fail) or is reported (skip)."""
        for chunk in chunks:
            for bad in chunk.bad:
                if self.request.on_error == "fail":
                    raise BadRowError(bad)
                print(f"skipped {bad.describe()}", file=self.stderr)
            yield chunk

    def write(self, work: WorkDir, state: State, chunk: Chunk, result: Embedded) -> State:
        if chunk.rows:
            keys = chunk.ids if chunk.ids is not None else chunk.rows
            table = writer.chunk_table(self.key, self.key_type, keys, result.vectors, result.tokens)
            writer.write_atomically(table, work.chunk_path(state.chunks))
        state = State(
            chunks=state.chunks + 1,
            position=chunk.end,
            embedded=state.embedded + len(chunk.rows),
            skipped=state.skipped + len(chunk.bad),
        )
        work.commit(state)
        return state

    def empty_schema(self) -> pa.Schema:
        return pa.schema(
            [
                (self.key, self.key_type),
                (writer.EMBEDDING, pa.list_(pa.float32(), 0)),
                (writer.TOKENS, pa.int32()),
            ]
        )


def embed_file(
    request: EmbedFileRequest,
    settings: Settings,
    *,
    api_key: str | None = None,
    stderr: TextIO | None = None,
) -> Summary:
    """Run `request` to the end; see the module docstring.

    Raises UsageError, ReadError, BadRowError (nothing is left behind), model
    and client errors, or KeyboardInterrupt (the checkpoint is kept).
    """
    check(request)
    run = _Run(request, stderr or sys.stderr)
    request.out.parent.mkdir(parents=True, exist_ok=True)
    with StopRequest(request.out) as stop:
        return _embed_all(run, settings, api_key, stop)


def _embed_all(run: _Run, settings: Settings, api_key: str | None, stop: StopRequest) -> Summary:
    request, reader = run.request, run.reader
    mapper, identity, close = _embedding(request, settings, api_key)
    try:
        stop.check()  # a Ctrl-C while the model loaded
        work = WorkDir(request.out)
        state, resumed = work.start(_fingerprint(request, run.input_format, identity))
        if resumed:
            print(f"continuing after {state.embedded + state.skipped:,} rows", file=run.stderr)
        started, first = time.perf_counter(), state.embedded
        bar = ProgressBar(run.stderr, state.embedded, None if resumed else 0.0)
        try:
            for chunk, result in mapper(run.checked(reader.chunks(request.batch, state.position))):
                state = run.write(work, state, chunk, result)
                bar.update(state.embedded, reader.fraction())
                stop.check()
        except BadRowError:
            work.remove()
            raise
        except Exception:
            if state.chunks == 0:  # nothing to continue from
                work.remove()
            raise
        finally:
            bar.close()
        rows = writer.assemble(
            work.chunk_files(state), request.out, run.output_format, run.empty_schema()
        )
        work.remove()
        return Summary(rows, state.skipped, first, time.perf_counter() - started)
    finally:
        close()


def _embedding(
    request: EmbedFileRequest, settings: Settings, api_key: str | None
) -> tuple[Mapper, str, Callable[[], None]]:
    """What embeds the chunks: (mapper, identity for the fingerprint, close)."""
    if request.ray:
        from emberd.server.bulk.ray_embedder import RayPool

        kwargs = {
            "model": request.model,
            "models_dir": str(settings.models_dir),
            "ollama_models_dir": str(settings.ollama_models_dir),
            "context_length": settings.context_length,
            "dimensions": request.dimensions,
            "normalize": request.normalize,
        }
        pool = RayPool(request.ray_address, request.ray_actors, kwargs)
        return pool.map, pool.identity, pool.close
    embedder: ChunkEmbedder
    if request.server:
        embedder = ServerEmbedder(
            request.server, request.model, api_key=api_key, dimensions=request.dimensions
        )
    else:
        embedder = LocalEmbedder(
            request.model, settings, dimensions=request.dimensions, normalize=request.normalize
        )
    return _one_by_one(embedder), embedder.identity(), embedder.close


__all__ = [
    "BadRowError",
    "EmbedFileRequest",
    "ReadError",
    "Summary",
    "UsageError",
    "embed_file",
]
