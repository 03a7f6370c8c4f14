"""Import a sentence-transformers checkpoint, or a GGUF file, as a model of emberd's store.

The checkpoint is read and checked by its architecture family's converter
(`models.convert`), which writes it as one GGUF; the file is moved into the
store's blobs by a rename, and the manifest is written last: an import that
fails or is interrupted leaves no model behind. The GGUF is written in a
work folder of the store; the folder of an import that was killed is swept
by the next import, pull or server start (`models.leftovers`). This module owns that
conversion and the store writing, and the file type names the CLI accepts
(the CLI's progress bar is `models.terminal.text_progress`). A GGUF file is
checked as every model file is (`read_gguf_info` refuses headers llama.cpp
would abort on) and copied into the blobs as it is.

A name emberd's store already holds is replaced only when the caller says
so (`replace`); the result says whether it was.

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
from emberd.models.errors import CheckpointError, ModelError, ModelExists
from emberd.models.gguf_checks import check_loadable
from emberd.models.gguf_meta import read_gguf_info
from emberd.models.gguf_out import FileType, Progress
from emberd.models.leftovers import IMPORT_PREFIX, sweep, writing
from emberd.models.names import ModelName
from emberd.models.ollama_layout import CONFIG_MEDIA_TYPE, MODEL_MEDIA_TYPE, Layer, file_digest
from emberd.models.store import OLLAMA, ModelRecord, ModelStores

FILE_TYPES: Mapping[str, FileType] = {
    "f32": FileType.F32,
    "f16": FileType.F16,
    "q8_0": FileType.Q8_0,
}


@dataclass(frozen=True)
class ImportedModel:
    """The result of an import: the stored model and the checkpoint it came from."""

    record: ModelRecord
    checkpoint: Conversion | None  # None for a GGUF file imported as it is
    replaced: bool = False  # the name was emberd's already, and now means this model


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
    *,
    replace: bool = False,
) -> ImportedModel:
    """Convert the checkpoint at `source` to GGUF and store it as model `name`.

    A model of the same name in emberd's store is replaced only with
    `replace` (ModelExists otherwise, before any work); its GGUF blob is
    removed when no other model uses it. `progress(done, total)` is called
    in bytes of GGUF tensor data written. Raises InvalidModelName for a bad
    name and CheckpointError for a checkpoint that cannot be converted; in
    both cases, and on any other failure, the store is left as it was.
    """
    model_name = ModelName.parse(name)
    existing = _existing(stores, name, replace)
    conversion = read_conversion(source)
    stores.emberd_dir.mkdir(parents=True, exist_ok=True)
    sweep(stores.emberd_dir)  # the work folders of imports that were killed
    with writing(stores.emberd_dir):
        # Same filesystem as the blobs, so the finished file is moved in by a rename.
        with tempfile.TemporaryDirectory(prefix=IMPORT_PREFIX, dir=stores.emberd_dir) as tmp:
            gguf_path = Path(tmp) / "model.gguf"
            try:
                conversion.write(gguf_path, model_name.model, file_type, progress)
            except ValueError as exc:
                raise CheckpointError(f"{source}: {exc}") from exc
            info = read_gguf_info(gguf_path)
            model_layer = _adopt_blob(stores, gguf_path)
        record = _store(stores, model_name, model_layer, conversion.summary.family,
                        info.file_type, info.parameter_size, existing)  # fmt: skip
    return ImportedModel(record=record, checkpoint=conversion, replaced=existing is not None)


def import_gguf(
    source: Path, name: str, stores: ModelStores, *, replace: bool = False
) -> ImportedModel:
    """Copy the GGUF file at `source` into emberd's store as model `name`.

    The file is checked as any model file is before it is copied (its
    header, and values llama.cpp would abort on: InvalidModelFile), and the
    copy is hashed as it is written; the server tries its first load as it
    does any new file's. Replacing follows import_checkpoint.
    """
    model_name = ModelName.parse(name)
    existing = _existing(stores, name, replace)
    if not source.is_file():
        raise CheckpointError(f"{source}: not a file")
    info = read_gguf_info(source)
    check_loadable(info)  # what every load checks first; the first load's trial follows
    stores.emberd_dir.mkdir(parents=True, exist_ok=True)
    with writing(stores.emberd_dir):
        digest = stores.write_blob_from_file(source)
        model_layer = Layer(MODEL_MEDIA_TYPE, digest, source.stat().st_size)
        record = _store(stores, model_name, model_layer, info.architecture, info.file_type,
                        info.parameter_size, existing)  # fmt: skip
    return ImportedModel(record=record, checkpoint=None, replaced=existing is not None)


# -- writing into the store


def _existing(stores: ModelStores, name: str, replace: bool) -> ModelRecord | None:
    """The model `name` in emberd's store now, if any; ModelExists unless `replace`."""
    try:
        record = stores.resolve(name)
    except ModelError:
        return None
    if record.source == OLLAMA:
        return None  # Ollama's is never replaced, only shadowed by emberd's
    if not replace:
        raise ModelExists(name)
    return record


def _store(
    stores: ModelStores,
    name: ModelName,
    model_layer: Layer,
    family: str,
    file_type: str,
    parameter_size: str,
    existing: ModelRecord | None,
) -> ModelRecord:
    """Write the config blob and the manifest of `name`; drop what it replaced."""
    previous = _manifest_blob(stores, existing)
    config = {
        "model_format": "gguf",
        "model_family": family,
        "model_families": [family],
        "model_type": parameter_size,
        "file_type": file_type,
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    config_layer = Layer(CONFIG_MEDIA_TYPE, stores.write_blob([config_bytes]), len(config_bytes))
    stores.write_manifest(name, [model_layer], config_layer)
    if existing is not None and previous is None:
        # A GGUF file dropped under this name: the manifest hides it now, but
        # `rm` of the new model would bring it back.
        stores.delete_file(name.display)
    record = stores.resolve(name.display)
    if previous is not None and previous != record.path:
        _remove_if_unused(stores, previous)
    return record


def _adopt_blob(stores: ModelStores, path: Path) -> Layer:
    """Move the finished GGUF at `path` into the blobs as the model layer."""
    digest = file_digest(path)
    size = path.stat().st_size
    stores.adopt_blob(path, digest)
    return Layer(MODEL_MEDIA_TYPE, digest, size)


def _manifest_blob(stores: ModelStores, record: ModelRecord | None) -> Path | None:
    """The GGUF blob of `record` if it is an emberd manifest model."""
    if record is None:
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
