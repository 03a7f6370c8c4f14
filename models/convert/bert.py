"""BERT encoders with a WordPiece vocabulary, as llama.cpp's `bert` architecture."""

from __future__ import annotations

from pathlib import Path

from emberd.models.bert_gguf import write_bert_gguf
from emberd.models.checkpoint import Checkpoint, open_weights, read_checkpoint
from emberd.models.convert.base import Conversion, Converter, SourceModel, Summary
from emberd.models.errors import CheckpointError
from emberd.models.gguf_out import FileType, Progress


class BertConversion(Conversion):
    """A BERT checkpoint, checked; written by `models.bert_gguf`."""

    def __init__(self, checkpoint: Checkpoint) -> None:
        self.checkpoint = checkpoint
        self.summary = Summary(
            family="bert",
            architecture="bert",
            pooling=checkpoint.pooling,
            normalize=checkpoint.normalize,
            max_seq_length=checkpoint.max_seq_length,
        )

    def write(self, path: Path, name: str, file_type: FileType, progress: Progress | None) -> None:
        """Write the BERT GGUF."""
        checkpoint = self.checkpoint
        with open_weights(checkpoint.weight_files) as tensors:
            try:
                write_bert_gguf(
                    path, name, checkpoint.hparams, checkpoint.vocab, tensors, file_type, progress
                )
            except ValueError as exc:
                raise CheckpointError(f"{checkpoint.source}: {exc}") from exc


class BertConverter(Converter):
    """`model_type: bert`."""

    name = "bert"

    def accepts(self, model: SourceModel) -> bool:
        """BERT by config.json's model_type."""
        return model.model_type == "bert"

    def read(self, model: SourceModel) -> Conversion:
        """The checkpoint as `models.checkpoint` reads a BERT encoder."""
        return BertConversion(read_checkpoint(model.source))
