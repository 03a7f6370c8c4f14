"""What embeds a chunk: the model in this process, or a running server over HTTP.

`LocalEmbedder` drives the server's own engine, runtime, batching queue and
llama.cpp backend on a private event loop, so a file gets exactly the
vectors the server would give the same texts. `ServerEmbedder` posts to
`/api/embed` of a running emberd (or Ollama).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import orjson

from emberd.backends.base import Backend, FloatMatrix
from emberd.models.names import ModelName
from emberd.models.store import EMBERD, ModelRecord, ModelStores
from emberd.server.address import client_url
from emberd.server.assembly import build_engine, runtime_limits
from emberd.server.config import Settings
from emberd.server.core.engine import EmbedJob
from emberd.server.http.client import ClientError, EmberdClient

_T = TypeVar("_T")
FOREVER = -1.0  # keep_alive: the model stays loaded for the whole run


@dataclass(frozen=True)
class Embedded:
    """Vectors of one chunk's texts, with each text's token count when known."""

    vectors: FloatMatrix
    tokens: tuple[int, ...] | None


class ChunkEmbedder(Protocol):
    """Embeds the texts of one chunk at a time."""

    def identity(self) -> str:
        """What decides the vectors (model digest, server URL): part of the run's fingerprint."""
        ...

    def embed(self, texts: Sequence[str]) -> Embedded:
        """Vectors for `texts`, in order."""
        ...

    def close(self) -> None:
        """Release the model or connection."""
        ...


def is_gguf_path(model: str) -> bool:
    """Whether `model` names a GGUF file rather than a model in the stores."""
    return model.lower().endswith(".gguf") and Path(model).is_file()


class _OneFile(ModelStores):
    """Stores that answer every name with one GGUF file lying anywhere."""

    def __init__(self, path: Path) -> None:
        super().__init__(path.parent, None)
        st = path.stat()
        self._record = ModelRecord(
            name=ModelName("registry.ollama.ai", "library", "file", "latest"),
            path=path.resolve(),
            digest=f"file-{st.st_size}-{st.st_mtime_ns}",
            size=st.st_size,
            modified_at=datetime.fromtimestamp(st.st_mtime, timezone.utc),
            params={},
            source=EMBERD,
        )

    def resolve(self, name: str) -> ModelRecord:
        return self._record

    def cached(self, name: str) -> ModelRecord | None:
        return self._record


class LocalEmbedder:
    """A model loaded in this process and run through the server's engine.

    `model` is a name in the stores of `settings` (the bundled all-minilm is
    imported on first use, as the server does) or a path to a GGUF file. The
    model is loaded here, once; a bad name raises ModelError.
    """

    def __init__(
        self,
        model: str,
        settings: Settings,
        *,
        dimensions: int | None = None,
        normalize: bool = True,
        backend: Backend | None = None,
    ) -> None:
        stores = _OneFile(Path(model)) if is_gguf_path(model) else None
        self._loop = asyncio.new_event_loop()
        limits = replace(runtime_limits(settings), max_loaded=1, default_keep_alive=FOREVER)
        self._engine = build_engine(settings, backend=backend, stores=stores, limits=limits)
        self._runtime = self._engine.runtime
        self._model = model
        self._dimensions = dimensions
        self._normalize = normalize
        try:
            self._run(self._engine.start())
            self.record = self._run(self._engine.find(model))
            self._run(self._engine.embed(self._job(())))  # loads the model
        except BaseException:
            self.close()
            raise

    def _job(self, texts: Sequence[str]) -> EmbedJob:
        return EmbedJob(
            model=self._model,
            texts=texts,
            dimensions=self._dimensions,
            normalize=self._normalize,
            keep_alive=FOREVER,
        )

    def _run(self, work: Coroutine[Any, Any, _T]) -> _T:
        return self._loop.run_until_complete(work)

    def identity(self) -> str:
        return f"{self.record.name.display}@{self.record.digest}"

    def embed(self, texts: Sequence[str]) -> Embedded:
        result = self._run(self._engine.embed(self._job(texts)))
        return Embedded(result.vectors, result.token_counts)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._run(self._runtime.close())
            self._run(self._loop.shutdown_default_executor())
        finally:
            self._loop.close()


class ServerEmbedder:
    """Posts each chunk to `/api/embed` of a running server (emberd or Ollama).

    Ollama's API reports one token count per request, not per text, so the
    token counts are unknown here.
    """

    def __init__(
        self, url: str, model: str, *, api_key: str | None = None, dimensions: int | None = None
    ) -> None:
        # Written as OLLAMA_HOST is: `127.0.0.1:11434` needs no scheme.
        self._url = client_url(url)
        self._client = EmberdClient(self._url, api_key=api_key)
        self._model = model
        self._dimensions = dimensions

    def identity(self) -> str:
        return f"{self._model}@{self._url}"

    def embed(self, texts: Sequence[str]) -> Embedded:
        extra: dict[str, object] = {"truncate": True}
        if self._dimensions is not None:
            extra["dimensions"] = self._dimensions
        body = orjson.loads(self._client.embed(self._model, texts, **extra))
        vectors = np.asarray(body.get("embeddings") or [], dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise ClientError(f"the server answered {len(vectors)} vectors for {len(texts)} texts")
        return Embedded(vectors, None)

    def close(self) -> None:
        pass
