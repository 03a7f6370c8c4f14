"""Convert Hugging Face checkpoints of several architecture families to GGUF.

`read_conversion(source)` reads the parts every checkpoint shares (module
pipeline, `config.json`), picks the family's `Converter` and returns its
`Conversion`. Families, in the order they are tried, are listed in
`CONVERTERS`; anything else is refused with a CheckpointError naming it.
"""

from __future__ import annotations

from pathlib import Path

from emberd.models.convert.base import Conversion, Converter, SourceModel, Summary
from emberd.models.convert.bert import BertConverter
from emberd.models.convert.gemma3 import Gemma3Converter
from emberd.models.convert.nomic_bert import NomicBertConverter
from emberd.models.convert.qwen3 import Qwen3Converter
from emberd.models.convert.xlm_roberta import XLMRobertaConverter
from emberd.models.errors import CheckpointError
from emberd.models.hf_source import read_json_file, read_modules

__all__ = ["CONVERTERS", "Conversion", "Converter", "SourceModel", "Summary", "read_conversion"]

CONVERTERS: tuple[Converter, ...] = (
    BertConverter(),
    XLMRobertaConverter(),
    NomicBertConverter(),
    Qwen3Converter(),
    Gemma3Converter(),
)


def read_source(source: Path) -> SourceModel:
    """The module pipeline and config.json of the checkpoint directory `source`."""
    source = Path(source)
    if not source.is_dir():
        raise CheckpointError(f"{source}: not a directory")
    modules = read_modules(source)
    model_dir = source / modules.transformer_path
    config = read_json_file(model_dir / "config.json", required=True)
    return SourceModel(source=source, model_dir=model_dir, config=config, modules=modules)


def read_conversion(source: Path) -> Conversion:
    """The checkpoint at `source`, read by its family; CheckpointError when none converts it."""
    model = read_source(source)
    for converter in CONVERTERS:
        if converter.accepts(model):
            return converter.read(model)
    names = ", ".join(c.name for c in CONVERTERS)
    kind = model.model_type or ", ".join(model.architectures) or "none"
    raise CheckpointError(
        f"{model.config_path}: unsupported model_type {kind!r}; emberd imports {names}"
    )
