"""emberd on Ray: a callable class for `ray.data.Dataset.map_batches`, and `--ray`.

`Embedder` is an ordinary class: Ray creates one per actor, which loads the
model once through emberd's engine and backend (a name in the stores, or a
GGUF path) and then embeds each batch it is given::

    ds = ray.data.read_parquet("corpus.parquet")
    ds = ds.map_batches(
        Embedder, fn_constructor_kwargs={"model": "all-minilm"},
        concurrency=4, batch_size=1024, num_cpus=2,
    )

Each output batch is the input batch with two more columns: `embedding`
(float32 vectors, the server's for the same texts) and `tokens`.

`embed_file --ray` runs the same class in a pool of actors and feeds it the
chunks it reads, so its inputs, outputs, bad-row handling and resuming are
those of a run on one machine. Ray is imported only here, and only when used.
"""

from __future__ import annotations

import collections
import importlib.util
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from emberd.server.bulk.embedders import Embedded, LocalEmbedder
from emberd.server.bulk.readers import Chunk
from emberd.server.config import Settings

EXTRA_HINT = "--ray needs Ray: pip install 'emberd[ray]'"


class RayFailure(Exception):
    """Ray is not installed, or its actors could not load the model."""


class Embedder:
    """Embeds the `text_field` column of each batch with one model loaded per actor."""

    def __init__(
        self,
        model: str,
        *,
        text_field: str = "text",
        models_dir: str | None = None,
        ollama_models_dir: str | None = None,
        num_thread: int | None = None,
        context_length: int | None = None,
        dimensions: int | None = None,
        normalize: bool = True,
    ) -> None:
        settings = Settings.from_env(
            models_dir=models_dir,
            ollama_models_dir=ollama_models_dir,
            num_thread=num_thread,
            context_length=context_length,
        )
        self._field = text_field
        self._embedder = LocalEmbedder(model, settings, dimensions=dimensions, normalize=normalize)

    def identity(self) -> str:
        """The model's name and digest."""
        return self._embedder.identity()

    def embed_texts(self, texts: Sequence[str]) -> Embedded:
        """Vectors and token counts of `texts` (what `--ray` calls)."""
        return self._embedder.embed(texts)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """The batch with `embedding` and `tokens` columns added."""
        texts = [str(text) for text in batch[self._field]]
        result = self._embedder.embed(texts)
        out = dict(batch)
        out["embedding"] = result.vectors
        out["tokens"] = np.asarray(result.tokens or (), dtype=np.int32)
        return out


def ray_available() -> bool:
    """Whether Ray can be imported."""
    return importlib.util.find_spec("ray") is not None


class RayPool:
    """Actors running `Embedder`, fed chunks in order with a bounded number in flight."""

    def __init__(
        self,
        address: str | None,
        actors: int | None,
        kwargs: Mapping[str, Any],
        cpus_per_actor: int = 2,
    ) -> None:
        if not ray_available():
            raise RayFailure(EXTRA_HINT)
        import ray

        self._ray = ray
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=address or None, log_to_driver=False, **_local_options(address))
        self._actors: list[Any] = []
        try:
            self._start(actors, kwargs, cpus_per_actor)
        except ray.exceptions.RayError as exc:
            self.close()
            raise RayFailure(f"a Ray actor could not load the model: {_reason(exc)}") from None

    def _start(self, actors: int | None, kwargs: Mapping[str, Any], cpus_per_actor: int) -> None:
        from ray.util import ActorPool

        ray = self._ray
        cpus = int(ray.cluster_resources().get("CPU", 1))
        if actors:  # the CPUs shared out, so that every actor can start
            count, per_actor = actors, max(1, cpus // actors)
        else:
            per_actor = max(1, min(cpus_per_actor, cpus))
            count = max(1, cpus // per_actor)
        remote: Any = ray.remote(num_cpus=per_actor)(Embedder)
        options = {**kwargs, "num_thread": per_actor}
        first = remote.remote(**options)
        self._actors = [first]
        # The first actor imports a bundled model if needed, before the others look for it.
        self.identity: str = ray.get(first.identity.remote())
        self._actors = [first, *(remote.remote(**options) for _ in range(count - 1))]
        self._pool = ActorPool(self._actors)
        self._in_flight = 2 * count

    def map(self, chunks: Iterator[Chunk]) -> Iterator[tuple[Chunk, Embedded]]:
        """(chunk, its vectors) in input order; chunks with no text skip the actors."""
        pending: collections.deque[tuple[Chunk, bool]] = collections.deque()
        for chunk in chunks:
            if chunk.texts:
                self._pool.submit(
                    lambda actor, texts: actor.embed_texts.remote(texts), list(chunk.texts)
                )
            pending.append((chunk, bool(chunk.texts)))
            while len(pending) > self._in_flight:
                yield self._next(pending)
        while pending:
            yield self._next(pending)

    def _next(self, pending: collections.deque[tuple[Chunk, bool]]) -> tuple[Chunk, Embedded]:
        chunk, submitted = pending.popleft()
        if not submitted:
            return chunk, Embedded(np.zeros((0, 0), dtype=np.float32), ())
        try:
            result: Embedded = self._pool.get_next()
        except self._ray.exceptions.RayError as exc:
            raise RayFailure(f"a Ray actor failed: {_reason(exc)}") from None
        return chunk, result

    def close(self) -> None:
        """Stop the actors (and the local Ray instance this pool started)."""
        for actor in self._actors:
            self._ray.kill(actor)
        if self._started:
            self._ray.shutdown()


def _local_options(address: str | None) -> dict[str, Any]:
    """A local instance starts without its dashboard.

    Its workers run this Python, so they import the same installed `emberd`
    as the driver; no search path is needed (and the driver's working folder,
    which Ray puts first on a worker's path, cannot shadow `emberd`).
    """
    return {} if address else {"include_dashboard": False}


def _reason(exc: BaseException) -> str:
    """The last line of the error a Ray actor raised (Ray sends its whole traceback)."""
    text = str(getattr(exc, "cause", None) or exc).strip()
    last = re.sub(r"\x1b\[[0-9;]*m", "", text.splitlines()[-1] if text else "")
    return re.sub(r"^[\w.]+: ", "", last)
