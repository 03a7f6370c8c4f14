"""models.convert: every family imports, and llama.cpp serves it as the model computes.

For each architecture family a tiny random checkpoint (tests.support.hf_families) is
imported into emberd's store and loaded by emberd's llama.cpp backend. Its
token ids must equal those of the `tokenizers` library reading the same
tokenizer.json, and its pooled vectors must point where an independent numpy
forward pass of the same weights (tests.support.reference_forward) points, both
through the backend and through a real server given several texts at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from emberd.backends.base import LoadOptions
from emberd.backends.llama_cpp import LlamaCppBackend, LlamaCppModel
from emberd.models.gguf_out import FileType
from emberd.models.importer import import_checkpoint
from emberd.models.store import ModelStores
from tests.support import reference_forward as ref
from tests.support.harness import Stores, running_server, settings_for
from tests.support.hf_families import (
    EMBED_TEXTS,
    TOKENIZER_TEXTS,
    Family,
    write_bert,
    write_gemma3,
    write_nomic_bert,
    write_qwen3,
    write_xlm_roberta,
)

OPTIONS = LoadOptions(
    num_ctx=128, num_batch=128, num_gpu=0, main_gpu=0, use_mmap=True, use_mlock=False, num_thread=2
)
MIN_COSINE = {FileType.F32: 0.99999, FileType.F16: 0.9999, FileType.Q8_0: 0.995}


@dataclass(frozen=True)
class Case:
    """A family under test: how to write its checkpoint and compute its reference vector."""

    write: Callable[[Path], Family]
    reference: Callable[[Family, list[int]], np.ndarray]
    architecture: str


CASES = {
    "bert": Case(
        write_bert,
        lambda fam, ids: ref.bert_embedding(fam.tensors, fam.config, ids, fam.pooling),
        "bert",
    ),
    "xlm-roberta": Case(
        write_xlm_roberta,
        lambda fam, ids: ref.xlm_roberta_embedding(fam.tensors, fam.config, ids, fam.pooling),
        "bert",
    ),
    "nomic-bert": Case(
        write_nomic_bert,
        lambda fam, ids: ref.nomic_bert_embedding(fam.tensors, fam.config, ids, fam.pooling),
        "nomic-bert",
    ),
    "qwen3": Case(
        write_qwen3,
        lambda fam, ids: ref.qwen3_embedding(fam.tensors, fam.config, ids, fam.pooling),
        "qwen3",
    ),
    "gemma3": Case(
        write_gemma3,
        lambda fam, ids: ref.gemma3_embedding(fam.tensors, fam.config, ids, fam.pooling, fam.dense),
        "gemma-embedding",
    ),
}


@pytest.fixture
def load() -> Iterator[Callable[[Path], LlamaCppModel]]:
    models: list[LlamaCppModel] = []

    def loader(path: Path) -> LlamaCppModel:
        models.append(LlamaCppBackend().load(path, OPTIONS))
        return models[-1]

    yield loader
    for model in models:
        model.close()


def _import(tmp_path: Path, case: Case, file_type: FileType) -> tuple[Family, Path]:
    family = case.write(tmp_path / "checkpoint")
    stores = ModelStores(tmp_path / "emberd", None)
    record = import_checkpoint(family.directory, "family", stores, file_type).record
    info = record.info()
    assert info.architecture == case.architecture
    assert info.pooling_type == {"mean": 1, "cls": 2, "lasttoken": 3}[family.pooling]
    return family, record.path


def _llama_ids(model: LlamaCppModel, text: str) -> list[int]:
    return [*model.facts.prefix, *model.tokenize(text), *model.facts.suffix]


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.float64) / np.linalg.norm(v)


@pytest.mark.parametrize("name", CASES.keys())
def test_token_ids_match_the_reference_tokenizer(
    tmp_path: Path, name: str, load: Callable[[Path], LlamaCppModel]
) -> None:
    family, path = _import(tmp_path, CASES[name], FileType.F16)
    model = load(path)
    reference = Tokenizer.from_file(str(family.directory / "tokenizer.json"))
    for text in TOKENIZER_TEXTS:
        assert _llama_ids(model, text) == reference.encode(text).ids, text


@pytest.mark.parametrize("file_type", list(FileType), ids=[t.name for t in FileType])
@pytest.mark.parametrize("name", CASES.keys())
def test_vectors_match_a_numpy_forward_pass(
    tmp_path: Path, name: str, file_type: FileType, load: Callable[[Path], LlamaCppModel]
) -> None:
    case = CASES[name]
    family, path = _import(tmp_path, case, file_type)
    model = load(path)
    cosines = []
    for text in EMBED_TEXTS:
        ids = _llama_ids(model, text)
        served = model.embed([ids])[0]
        expected = case.reference(family, ids)
        assert served.shape == expected.shape
        cosines.append(float(_unit(served) @ _unit(expected)))
    print(f"{name} {file_type.name} min cosine {min(cosines):.7f}")
    assert min(cosines) >= MIN_COSINE[file_type], cosines


@pytest.mark.parametrize("name", CASES.keys())
def test_served_over_http_several_texts_per_request(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    family = case.write(tmp_path / "checkpoint")
    stores = Stores(emberd=tmp_path / "emberd", ollama=tmp_path / "ollama", outside=tmp_path)
    import_checkpoint(family.directory, "family", ModelStores(stores.emberd, None), FileType.F32)
    reference = Tokenizer.from_file(str(family.directory / "tokenizer.json"))
    with running_server(settings_for(stores)) as server:
        served = server.vectors("family", list(EMBED_TEXTS))
    for text, vector in zip(EMBED_TEXTS, served, strict=True):
        expected = _unit(case.reference(family, reference.encode(text).ids))
        assert float(vector @ expected) >= MIN_COSINE[FileType.F32], text
