"""XLM-RoBERTa vocabularies as SentencePiece makes them: model files and normalisation maps.

A unigram model trained by the `sentencepiece` package carries NFKC as a
precompiled character map; the import copies it into the GGUF and llama.cpp
must then split text exactly as sentencepiece and the `tokenizers` library do,
full-width letters, ligatures and decomposed accents included. The same
vocabulary may come as `sentencepiece.bpe.model` alone.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sentencepiece
from tokenizers import Tokenizer

from emberd.backends.base import LoadOptions
from emberd.backends.llama_cpp import LlamaCppBackend, LlamaCppModel
from emberd.models.importer import import_checkpoint
from emberd.models.store import ModelStores
from tests.support.hf_families import TOKENIZER_TEXTS, write_xlm_roberta
from tests.support.hf_tokenizers import unigram_tokenizer, write_sentencepiece_model

OPTIONS = LoadOptions(128, 128, 0, 0, True, False, 2)
CORPUS = (
    "why is the sky blue",
    "hello world, hello again",
    "café naïve über façade",
    "ｆｕｌｌ ｗｉｄｔｈ letters",
    "the quick brown fox jumps over the lazy dog",
    "fine ﬁne ① ② ③ ™",
)
NORMALISED_TEXTS = (
    "ｆｕｌｌ ｗｉｄｔｈ",
    "cafe\u0301 nai\u0308ve",
    "ﬁne ①②",
    "why   is the sky blue",
    "the lazy dog™",
)


def _trained_model() -> bytes:
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 10),
        model_writer=model,
        vocab_size=80,
        model_type="unigram",
        normalization_rule_name="nmt_nfkc",
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return model.getvalue()


def _charsmap(model: bytes) -> bytes:
    """NormalizerSpec.precompiled_charsmap (field 3, then 2) of a serialized ModelProto."""

    def fields(data: bytes) -> Iterator[tuple[int, bytes]]:
        i = 0
        while i < len(data):
            key, i = _varint(data, i)
            if key & 7 == 2:
                length, i = _varint(data, i)
                yield key >> 3, data[i : i + length]
                i += length
            elif key & 7 == 0:
                _, i = _varint(data, i)
            else:
                i += 4 if key & 7 == 5 else 8

    spec = [v for n, v in fields(model) if n == 3][-1]
    return [v for n, v in fields(spec) if n == 2][-1]


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while data[i] & 0x80:
        value |= (data[i] & 0x7F) << shift
        i, shift = i + 1, shift + 7
    return value | data[i] << shift, i + 1


@pytest.fixture
def load() -> Iterator[Callable[[Path], LlamaCppModel]]:
    opened: list[LlamaCppModel] = []

    def loader(path: Path) -> LlamaCppModel:
        opened.append(LlamaCppBackend().load(path, OPTIONS))
        return opened[-1]

    yield loader
    for model in opened:
        model.close()


def _ids(model: LlamaCppModel, text: str) -> list[int]:
    return [*model.facts.prefix, *model.tokenize(text), *model.facts.suffix]


def test_precompiled_normalisation_tokenizes_as_sentencepiece(
    tmp_path: Path, load: Callable[[Path], LlamaCppModel]
) -> None:
    trained = _trained_model()
    processor = sentencepiece.SentencePieceProcessor(model_proto=trained)
    pieces = [
        (processor.id_to_piece(i), processor.get_score(i))
        for i in range(3, processor.get_piece_size())
    ]
    tokenizer = unigram_tokenizer(0, pieces, _charsmap(trained))
    family = write_xlm_roberta(tmp_path / "checkpoint", tokenizer=tokenizer)
    record = import_checkpoint(family.directory, "spm", ModelStores(tmp_path / "emberd", None))
    model = load(record.record.path)
    reference = Tokenizer.from_file(str(family.directory / "tokenizer.json"))
    for text in NORMALISED_TEXTS:
        # fairseq's ids: SentencePiece's shifted by one, <s> first and </s> last.
        expected = [0, *(i + 1 for i in processor.encode(text)), 2]
        assert _ids(model, text) == expected == reference.encode(text).ids, text


def test_vocabulary_from_sentencepiece_bpe_model(
    tmp_path: Path, load: Callable[[Path], LlamaCppModel]
) -> None:
    family = write_xlm_roberta(tmp_path / "checkpoint")
    reference = Tokenizer.from_file(str(family.directory / "tokenizer.json"))
    write_sentencepiece_model(family.directory / "sentencepiece.bpe.model", unigram_tokenizer(0))
    (family.directory / "tokenizer.json").unlink()
    record = import_checkpoint(family.directory, "spm", ModelStores(tmp_path / "emberd", None))
    model = load(record.record.path)
    for text in TOKENIZER_TEXTS:
        assert _ids(model, text) == reference.encode(text).ids, text
