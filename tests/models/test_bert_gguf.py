"""models.bert_gguf: files written by it load in the real llama.cpp as embedding models."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest

from emberd.models.bert_gguf import (
    FileType,
    WordPieceVocab,
    gguf_tensor_name,
    gguf_token_texts,
    write_bert_gguf,
)
from tests.support.tiny_model import (
    TINY_TOKENS,
    TINY_VOCAB,
    embed_with_llama,
    load_with_llama,
    tiny_hparams,
    tiny_tensors,
    tiny_token_id,
    write_ollama_layout,
    write_tiny_bert,
)

SKY = "why is the sky blue?"
TEXTS = [SKY, "why is the grass green", "hello world"]
GGML = gguf.GGMLQuantizationType


def _tensors_kw() -> dict[str, int]:
    return {"context_length": 128, "embedding_length": 32, "block_count": 2, "ff": 64, "seed": 0}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="module")
def f32_path(tiny_dir: Path) -> Path:
    return write_tiny_bert(tiny_dir / "tiny-f32.gguf")


@pytest.fixture(scope="module")
def f32_vectors(f32_path: Path) -> np.ndarray:
    return embed_with_llama(f32_path, TEXTS)


@pytest.fixture
def model(f32_path: Path) -> Iterator[llama_cpp.Llama]:
    loaded = load_with_llama(f32_path)
    yield loaded
    loaded.close()


def test_tokenizes_known_words_between_cls_and_sep(model: llama_cpp.Llama) -> None:
    pieces = ["[CLS]", "why", "is", "the", "sky", "blue", "?", "[SEP]"]
    assert model.tokenize(SKY.encode()) == [tiny_token_id(p) for p in pieces]


@pytest.mark.parametrize(
    ("text", "pieces"),
    [
        ("blueing", ["blue", "##ing"]),
        ("skies", ["s", "##k", "##i", "##es"]),
        ("WHY", ["why"]),
        ("café", ["c", "##a", "##f", "##e"]),
        ("☃", ["[UNK]"]),
    ],
)
def test_wordpiece_rules(model: llama_cpp.Llama, text: str, pieces: list[str]) -> None:
    ids = model.tokenize(text.encode())
    assert [TINY_TOKENS[i] for i in ids] == ["[CLS]", *pieces, "[SEP]"]


def test_metadata_read_back_by_llama_cpp(model: llama_cpp.Llama) -> None:
    meta = model.metadata
    assert meta["general.architecture"] == "bert"
    assert meta["general.name"] == "tiny-bert"
    assert meta["general.file_type"] == "0"
    assert meta["bert.pooling_type"] == "1"
    assert meta["bert.context_length"] == "128"
    assert model.n_embd() == 32
    assert model.n_vocab() == len(TINY_TOKENS)


def test_cased_vocab_keeps_case(tmp_path: Path) -> None:
    cased = dataclasses.replace(TINY_VOCAB, lowercase=False)
    path = tmp_path / "cased.gguf"
    write_bert_gguf(path, "cased", tiny_hparams(), cased, tiny_tensors(**_tensors_kw()))
    loaded = load_with_llama(path)
    try:
        ids = loaded.tokenize(b"WHY why")
    finally:
        loaded.close()
    assert [TINY_TOKENS[i] for i in ids] == ["[CLS]", "[UNK]", "why", "[SEP]"]


def test_embeddings_have_width_are_finite_and_differ(f32_vectors: np.ndarray) -> None:
    assert f32_vectors.shape == (len(TEXTS), 32)
    assert np.isfinite(f32_vectors).all()
    similarity = f32_vectors @ f32_vectors.T
    assert similarity[0, 1] < 0.99
    assert similarity[0, 2] < 0.99


def test_cls_pooling_differs_from_mean(tiny_dir: Path, f32_vectors: np.ndarray) -> None:
    cls_vectors = embed_with_llama(write_tiny_bert(tiny_dir / "tiny-cls.gguf", pooling=2), TEXTS)
    cosines = np.sum(cls_vectors * f32_vectors, axis=1)
    assert (cosines < 0.99).all()


@pytest.mark.parametrize(
    ("file_type", "matrix_type"), [(FileType.F16, GGML.F16), (FileType.Q8_0, GGML.Q8_0)]
)
def test_smaller_file_types_load_close_to_f32(
    tiny_dir: Path,
    f32_vectors: np.ndarray,
    f32_path: Path,
    file_type: FileType,
    matrix_type: gguf.GGMLQuantizationType,
) -> None:
    path = write_tiny_bert(tiny_dir / f"tiny-{file_type.name}.gguf", file_type=file_type)
    assert path.stat().st_size < f32_path.stat().st_size
    types = {t.name: t.tensor_type for t in gguf.GGUFReader(path).tensors}
    assert types["blk.0.ffn_up.weight"] == matrix_type
    assert types["token_embd.weight"] == matrix_type
    assert types["blk.0.attn_output_norm.weight"] == GGML.F32
    assert types["blk.0.attn_q.bias"] == GGML.F32
    assert types["token_types.weight"] == GGML.F32
    vectors = embed_with_llama(path, TEXTS)
    assert (np.sum(vectors * f32_vectors, axis=1) > 0.99).all()


def test_q8_0_keeps_rows_it_cannot_block_in_f16(tmp_path: Path) -> None:
    # 48 is not a multiple of Q8_0's 32-value block; 64 is.
    path = write_tiny_bert(tmp_path / "e48.gguf", embedding_length=48, file_type=FileType.Q8_0)
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == GGML.F16
    assert types["blk.0.ffn_down.weight"] == GGML.Q8_0
    assert int(reader.fields["general.file_type"].parts[-1][0]) == FileType.Q8_0.value
    assert embed_with_llama(path, [SKY]).shape == (1, 48)


def test_prefixed_names_load_and_extras_are_dropped(tmp_path: Path) -> None:
    tensors = {f"bert.{k}": v for k, v in tiny_tensors(**_tensors_kw()).items()}
    tensors["bert.pooler.dense.weight"] = np.zeros((32, 32), np.float32)
    tensors["bert.embeddings.position_ids"] = np.arange(128, dtype=np.float32)[None, :]
    path = tmp_path / "prefixed.gguf"
    write_bert_gguf(path, "prefixed", tiny_hparams(), TINY_VOCAB, tensors, FileType.F32)
    names = {t.name for t in gguf.GGUFReader(path).tensors}
    assert len(names) == 5 + 2 * 16
    assert not any("pool" in n or "position_ids" in n for n in names)
    assert embed_with_llama(path, [SKY]).shape == (1, 32)


def test_missing_tensor_is_a_clear_error(tmp_path: Path) -> None:
    tensors = tiny_tensors(**_tensors_kw())
    del tensors["encoder.layer.1.output.dense.bias"]
    path = tmp_path / "broken.gguf"
    with pytest.raises(ValueError, match=r"missing tensors .*blk\.1\.ffn_down\.bias"):
        write_bert_gguf(path, "broken", tiny_hparams(), TINY_VOCAB, tensors)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("cls.predictions.bias", np.zeros(4, np.float32), "unsupported tensors: cls.predictions"),
        ("encoder.layer.2.output.dense.bias", np.zeros(32, np.float32), "beyond block_count"),
        ("embeddings.LayerNorm.weight", np.ones(31, np.float32), r"shape \(31,\)"),
        ("embeddings.LayerNorm.bias", np.zeros(32, np.int32), "not float"),
        ("embeddings.LayerNorm.gamma", np.ones(32, np.float32), "same tensor"),
    ],
)
def test_bad_tensors_are_refused_before_writing(
    tmp_path: Path, name: str, value: np.ndarray, message: str
) -> None:
    tensors = tiny_tensors(**_tensors_kw())
    tensors[name] = value
    with pytest.raises(ValueError, match=message):
        write_bert_gguf(tmp_path / "bad.gguf", "bad", tiny_hparams(), TINY_VOCAB, tensors)
    assert list(tmp_path.iterdir()) == []


def test_writer_replaces_atomically_and_reports_progress(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"old")
    calls: list[tuple[int, int]] = []
    write_bert_gguf(
        path,
        "tiny",
        tiny_hparams(),
        TINY_VOCAB,
        tiny_tensors(**_tensors_kw()),
        FileType.F16,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf"]
    assert path.read_bytes()[:4] == b"GGUF"
    assert len(calls) == 5 + 2 * 16
    assert [done for done, _ in calls] == sorted({done for done, _ in calls})
    assert calls[-1][0] == calls[-1][1]


def test_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    def fail(done: int, total: int) -> None:
        raise RuntimeError("stop")

    path = tmp_path / "model.gguf"
    tensors = tiny_tensors(**_tensors_kw())
    with pytest.raises(RuntimeError, match="stop"):
        write_bert_gguf(path, "tiny", tiny_hparams(), TINY_VOCAB, tensors, progress=fail)
    assert list(tmp_path.iterdir()) == []


def test_tensor_name_mapping() -> None:
    assert gguf_tensor_name("embeddings.word_embeddings.weight") == "token_embd.weight"
    assert gguf_tensor_name("bert.embeddings.LayerNorm.beta") == "token_embd_norm.bias"
    assert gguf_tensor_name("encoder.layer.11.attention.output.LayerNorm.gamma") == (
        "blk.11.attn_output_norm.weight"
    )
    assert gguf_tensor_name("encoder.layer.0.intermediate.dense.bias") == "blk.0.ffn_up.bias"
    assert gguf_tensor_name("pooler.dense.weight") is None
    with pytest.raises(ValueError, match=r"encoder\.layer\.0\.crossattention"):
        gguf_tensor_name("encoder.layer.0.crossattention.self.query.weight")


def test_token_texts_follow_llama_cpp_wordpiece() -> None:
    vocab = WordPieceVocab(
        tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "sky", "##lo", "##", "[unused0]"],
        pad_id=0,
        unk_id=1,
        cls_id=2,
        sep_id=3,
        mask_id=4,
        extra_control_ids=frozenset({8}),
    )
    texts = gguf_token_texts(vocab)
    assert texts == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "▁sky", "lo", "▁##", "[unused0]"]


def test_vocab_and_hparams_are_checked() -> None:
    with pytest.raises(ValueError, match="out of range"):
        dataclasses.replace(TINY_VOCAB, mask_id=len(TINY_TOKENS))
    with pytest.raises(ValueError, match="multiple of head_count"):
        tiny_hparams(heads=3)
    with pytest.raises(ValueError, match="pooling"):
        tiny_hparams(pooling=4)


def test_ollama_layout(tmp_path: Path, f32_path: Path) -> None:
    root = write_ollama_layout(tmp_path, f32_path, "tiny", "v1", params={"num_ctx": 64})
    manifest_path = root / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "v1"
    manifest = json.loads(manifest_path.read_text())
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    entries = [manifest["config"], *manifest["layers"]]
    for entry in entries:
        blob = root / "blobs" / entry["digest"].replace(":", "-")
        data = blob.read_bytes()
        assert entry["digest"] == "sha256:" + hashlib.sha256(data).hexdigest()
        assert entry["size"] == len(data)
    media = {layer["mediaType"]: layer for layer in manifest["layers"]}
    params_digest = media["application/vnd.ollama.image.params"]["digest"]
    assert (root / "blobs" / f"sha256-{params_digest[7:]}").read_text() == '{"num_ctx": 64}'
    model_digest = media["application/vnd.ollama.image.model"]["digest"]
    assert (root / "blobs" / f"sha256-{model_digest[7:]}").read_bytes() == f32_path.read_bytes()
