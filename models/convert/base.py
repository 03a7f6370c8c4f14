"""The converter interface: one implementation per architecture family.

`models.convert.read_conversion` reads the checkpoint's module pipeline and
`config.json`, asks each `Converter` in turn whether the checkpoint is of its
family, and lets the first that accepts read and check the rest (its
hyper-parameters, tensors and tokenizer). The result is a `Conversion`, which
writes the GGUF llama.cpp expects for that architecture. Adding an
architecture is one new module with one `Converter`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emberd.models.gguf_out import FileType, Progress
from emberd.models.hf_source import Modules


@dataclass(frozen=True)
class SourceModel:
    """A checkpoint directory's shared parts, read before choosing a family."""

    source: Path  # the checkpoint directory
    model_dir: Path  # where the Transformer module lives (config.json, weights, tokenizer)
    config: Mapping[str, Any]  # config.json
    modules: Modules

    @property
    def config_path(self) -> Path:
        """The config.json read, for messages."""
        return self.model_dir / "config.json"

    @property
    def model_type(self) -> str | None:
        """config.json's model_type."""
        value = self.config.get("model_type")
        return value if isinstance(value, str) else None

    @property
    def architectures(self) -> tuple[str, ...]:
        """config.json's architectures (class names)."""
        value = self.config.get("architectures")
        return tuple(str(a) for a in value) if isinstance(value, list) else ()


@dataclass(frozen=True)
class Summary:
    """What an import says about the checkpoint it converted."""

    family: str  # the Ollama model family written to the config, e.g. "bert"
    architecture: str  # the GGUF architecture, e.g. "nomic-bert"
    pooling: str  # "mean", "cls" or "lasttoken"
    normalize: bool  # a Normalize module follows pooling (emberd normalises anyway)
    max_seq_length: int | None  # sentence-transformers' truncation length, if set


class Conversion(ABC):
    """A checkpoint read and checked by its family, ready to be written as GGUF."""

    summary: Summary

    @property
    def pooling(self) -> str:
        """The checkpoint's pooling."""
        return self.summary.pooling

    @property
    def normalize(self) -> bool:
        """Whether the checkpoint normalises its vectors."""
        return self.summary.normalize

    @property
    def max_seq_length(self) -> int | None:
        """sentence-transformers' truncation length."""
        return self.summary.max_seq_length

    @abstractmethod
    def write(self, path: Path, name: str, file_type: FileType, progress: Progress | None) -> None:
        """Write the GGUF at `path`; ValueError or CheckpointError for bad tensors."""


class Converter(ABC):
    """One architecture family: recognises its checkpoints and reads them."""

    name: str  # as error messages list the families, e.g. "xlm-roberta"

    @abstractmethod
    def accepts(self, model: SourceModel) -> bool:
        """True when `model` (config.json's model_type / architectures) is of this family."""

    @abstractmethod
    def read(self, model: SourceModel) -> Conversion:
        """Read and check the rest of the checkpoint; CheckpointError when unsupported."""
