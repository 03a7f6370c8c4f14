"""XLM-RoBERTa encoders (bge-m3, multilingual-e5, ...), as llama.cpp's `bert` architecture.

The encoder is BERT's with two differences llama.cpp's converter settles:
weights may be prefixed `roberta.`, and positions are counted from the
padding id plus one, so the first `pad_token_id + 1` rows of the position
table are never used and are left out (514 rows become a context of 512).
The vocabulary is SentencePiece unigram, run by llama.cpp's `t5` tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

from emberd.models.bert_gguf import BertHParams, add_bert_hparams, bert_tensors, gguf_tensor_name
from emberd.models.checkpoint import bert_hparams, refuse_dense
from emberd.models.convert.base import Conversion, Converter, SourceModel, Summary
from emberd.models.convert.unigram import read_unigram_vocab
from emberd.models.convert.vocab import GGUFVocab, add_vocab, read_tokenizer_files
from emberd.models.gguf_out import FileType, Progress, TensorOut, add_file_type, write_gguf
from emberd.models.hf_source import config_int, open_weights, read_max_seq_length, weight_files

ARCHITECTURE = "bert"


def xlm_roberta_tensor_name(hf_name: str) -> str | None:
    """The GGUF name of an XLM-RoBERTa tensor (BERT's names, maybe prefixed `roberta.`)."""
    return gguf_tensor_name(hf_name.removeprefix("roberta."))


def _is_weight(name: str) -> bool:
    try:
        return xlm_roberta_tensor_name(name) is not None
    except ValueError:
        return False


class XLMRobertaConversion(Conversion):
    """An XLM-RoBERTa checkpoint, checked and ready to write."""

    def __init__(
        self,
        summary: Summary,
        hparams: BertHParams,
        vocab: GGUFVocab,
        files: tuple[Path, ...],
        position_offset: int,
    ) -> None:
        self.summary = summary
        self.hparams = hparams
        self.vocab = vocab
        self.files = files
        self.position_offset = position_offset

    def write(self, path: Path, name: str, file_type: FileType, progress: Progress | None) -> None:
        """Write the GGUF: BERT's layout, the position table cut, the unigram vocabulary."""
        with open_weights(self.files, _is_weight) as tensors:
            planned, type_count = self._tensors(tensors, file_type)

            def metadata(writer: gguf.GGUFWriter) -> None:
                add_file_type(writer, name, file_type)
                add_bert_hparams(writer, ARCHITECTURE, self.hparams)
                add_vocab(writer, self.vocab)

            if type_count != self.vocab.token_type_count:
                raise ValueError(
                    f"token type embeddings have {type_count} rows, "
                    f"config.json's type_vocab_size is {self.vocab.token_type_count}"
                )
            write_gguf(path, ARCHITECTURE, metadata, planned, progress)

    def _tensors(
        self, tensors: Mapping[str, npt.NDArray[np.floating]], file_type: FileType
    ) -> tuple[list[TensorOut], int]:
        return bert_tensors(
            self.hparams,
            len(self.vocab.tokens),
            tensors,
            file_type,
            rename=xlm_roberta_tensor_name,
            position_offset=self.position_offset,
        )


class XLMRobertaConverter(Converter):
    """`model_type: xlm-roberta`."""

    name = "xlm-roberta"

    def accepts(self, model: SourceModel) -> bool:
        """XLM-RoBERTa by config.json's model_type."""
        return model.model_type == "xlm-roberta"

    def read(self, model: SourceModel) -> Conversion:
        """Hyper-parameters, position offset and unigram vocabulary of the checkpoint."""
        refuse_dense(model.source, model.modules)
        where = model.config_path
        pad = model.config.get("pad_token_id", 1)
        offset = pad + 1 if isinstance(pad, int) and pad >= 0 else 0
        context = config_int(model.config, "max_position_embeddings", where) - offset
        hparams = bert_hparams(where, model.config, model.modules.pooling_type, context)
        type_count = model.config.get("type_vocab_size", 1)
        vocab = read_unigram_vocab(
            read_tokenizer_files(model.model_dir),
            config_int(model.config, "vocab_size", where),
            type_count if isinstance(type_count, int) else 1,
        )
        summary = Summary(
            family="bert",
            architecture=ARCHITECTURE,
            pooling=model.modules.pooling,
            normalize=model.modules.normalize,
            max_seq_length=read_max_seq_length(model.source, model.model_dir),
        )
        return XLMRobertaConversion(summary, hparams, vocab, weight_files(model.model_dir), offset)
