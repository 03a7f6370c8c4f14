"""Import a sentence-transformers checkpoint as a model of emberd's store.

The checkpoint is read and checked by its architecture family's converter
(`models.convert`), which writes it as one GGUF; the file is moved into the
store's blobs by a rename, and the manifest is written last: an import that
fails or is interrupted leaves no model behind. The GGUF is written in a
work folder of the store; the folder of an import that was killed is swept
by the next import, pull or server start (`models.leftovers`). This module owns that
conversion and the store writing, and the file type names the CLI accepts
(the CLI's progress bar is `models.terminal.text_progress`).

The GGUF's context length is what the model was trained for (for BERT, the
rows of its position table: 512 in Ollama's `all-minilm`), even where
sentence-transformers truncates earlier (`max_seq_length`, 256 there).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from emberd.models.convert import Conversion, read_conversion
from emberd.models.errors import CheckpointError, ModelError
from emberd.models.gguf_meta import read_gguf_info
from emberd.models.gguf_out import FileType, Progress
from emberd.models.leftovers import IMPORT_PREFIX, sweep, writing
from emberd.models.names import ModelName
from emberd.models.ollama_layout import CONFIG_MEDIA_TYPE, MODEL_MEDIA_TYPE, Layer, file_digest
from emberd.models.store import ModelRecord, ModelStores

FILE_TYPES: Mapping[str, FileType] = {
    "f32": FileType.F32,
    "f16": FileType.F16,
    "q8_0": FileType.Q8_0,
}


@dataclass(frozen=True)
class ImportedModel:
    """The result of an import: the stored model and the checkpoint it came from."""

    record: ModelRecord
    checkpoint: Conversion


def parse_file_type(text: str) -> FileType:
    """`f32`, `f16` or `q8_0` (any case) as a FileType; CheckpointError otherwise."""
    try:
        return FILE_TYPES[text.lower()]
    except KeyError:
        choices = ", ".join(FILE_TYPES)
        raise CheckpointError(f"unsupported type {text!r}; choose one of {choices}") from None


def import_checkpoint(
    source: Path,
    name: str,
    stores: ModelStores,
    file_type: FileType = FileType.F16,
    progress: Progress | None = None,
) -> ImportedModel:
    """Convert the checkpoint at `source` to GGUF and store it as model `name`.

    Replaces a model of the same name in emberd's store (its GGUF blob is
    removed when no other model uses it). `progress(done, total)` is called
    in bytes of GGUF tensor data written. Raises InvalidModelName for a bad
    name and CheckpointError for a checkpoint that cannot be converted; in
    both cases, and on any other failure, the store is left as it was.
    """
    ModelName.parse(name)  # a bad name is refused before any work
    conversion = read_conversion(source)
    stores.emberd_dir.mkdir(parents=True, exist_ok=True)
    sweep(stores.emberd_dir)  # the work folders of imports that were killed
    with writing(stores.emberd_dir):
        record = _store(conversion, source, name, stores, file_type, progress)
    return ImportedModel(record=record, checkpoint=conversion)


# -- writing into the store


def _store(
    conversion: Conversion,
    source: Path,
    name: str,
    stores: ModelStores,
    file_type: FileType,
    progress: Progress | None,
) -> ModelRecord:
    """Write the GGUF, move it into the blobs, write the manifest; the stored model."""
    model_name = ModelName.parse(name)
    previous = _manifest_blob(stores, name)
    # Same filesystem as the blobs, so the finished file is moved in by a rename.
    with tempfile.TemporaryDirectory(prefix=IMPORT_PREFIX, dir=stores.emberd_dir) as tmp:
        gguf_path = Path(tmp) / "model.gguf"
        try:
            conversion.write(gguf_path, model_name.model, file_type, progress)
        except ValueError as exc:
            raise CheckpointError(f"{source}: {exc}") from exc
        info = read_gguf_info(gguf_path)
        model_layer = _adopt_blob(stores, gguf_path)
    config = {
        "model_format": "gguf",
        "model_family": conversion.summary.family,
        "model_families": [conversion.summary.family],
        "model_type": info.parameter_size,
        "file_type": info.file_type,
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    config_layer = Layer(CONFIG_MEDIA_TYPE, stores.write_blob([config_bytes]), len(config_bytes))
    stores.write_manifest(model_name, [model_layer], config_layer)
    record = stores.resolve(name)
    if previous is not None and previous != record.path:
        _remove_if_unused(stores, previous)
    return record


def _adopt_blob(stores: ModelStores, path: Path) -> Layer:
    """Move the finished GGUF at `path` into the blobs as the model layer."""
    digest = file_digest(path)
    size = path.stat().st_size
    stores.adopt_blob(path, digest)
    return Layer(MODEL_MEDIA_TYPE, digest, size)


def _manifest_blob(stores: ModelStores, name: str) -> Path | None:
    """The GGUF blob of the emberd manifest model `name`, if there is one now."""
    try:
        record = stores.resolve(name)
    except ModelError:
        return None
    if not record.path.name.startswith("sha256-"):
        return None  # a GGUF file dropped into the store, not a blob
    try:
        blob = stores.blob_path(record.path.name)
    except ModelError:
        return None
    return blob if blob == record.path else None


def _remove_if_unused(stores: ModelStores, blob: Path) -> None:
    """Delete a replaced model blob that no listed model uses any more."""
    if any(record.path == blob for record in stores.list()):
        return
    blob.unlink(missing_ok=True)
