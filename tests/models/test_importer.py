"""models.checkpoint and models.importer: checkpoints become models llama.cpp serves."""

from __future__ import annotations

import json
import string
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from emberd.models.bert_gguf import FileType, write_bert_gguf
from emberd.models.checkpoint import CheckpointError, read_checkpoint
from emberd.models.errors import InvalidModelName, ModelExists
from emberd.models.importer import import_checkpoint, parse_file_type
from emberd.models.store import EMBERD, ModelStores
from tests.support.bundled_model import minilm_checkpoint
from tests.support.hf_checkpoint import (
    CHECKPOINT_TOKENS,
    CheckpointSpec,
    checkpoint_tensors,
    expected_hparams,
    expected_vocab,
    write_checkpoint,
)
from tests.support.tiny_model import embed_with_llama, load_with_llama

TEXTS = ["why is the sky blue?", "Hello World, hello world!", "the dog has two cats"]
SENTENCES = [
    *TEXTS,
    "Why is the Sky skyBlue?",
    "unknownword café naïve",
    "the quick-brown fox's 42 tests...",
]
IDS = {token: i for i, token in enumerate(CHECKPOINT_TOKENS)}


@pytest.fixture
def loaded() -> Iterator[Callable[[Path], llama_cpp.Llama]]:
    models: list[llama_cpp.Llama] = []

    def load(path: Path) -> llama_cpp.Llama:
        models.append(load_with_llama(path))
        return models[-1]

    yield load
    for model in models:
        model.close()


def _reference_gguf(directory: Path, spec: CheckpointSpec) -> Path:
    """The checkpoint's weights written directly, with the settings the import must find."""
    path = directory / "reference.gguf"
    write_bert_gguf(
        path,
        "reference",
        expected_hparams(spec),
        expected_vocab(spec),
        checkpoint_tensors(spec),
        FileType.F32,
    )
    return path


def _stores(tmp_path: Path) -> ModelStores:
    return ModelStores(tmp_path / "emberd", None)


def _leftovers(stores: ModelStores) -> list[str]:
    """Every file and directory under the emberd store, relative to it."""
    root = stores.emberd_dir
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _kv(path: Path, key: str) -> object:
    field = gguf.GGUFReader(path).get_field(key)
    assert field is not None, key
    return field.contents()


def wordpiece(text: str, lowercase: bool) -> list[int]:
    """Hugging Face's BertTokenizer on the checkpoint vocabulary, for ASCII-ish text."""
    if lowercase:
        text = unicodedata.normalize("NFD", text.lower())
        text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    words: list[str] = []
    for chunk in text.split():
        current = ""
        for char in chunk:
            if char in string.punctuation or unicodedata.category(char).startswith("P"):
                words += [current, char] if current else [char]
                current = ""
            else:
                current += char
        if current:
            words.append(current)
    ids = [IDS["[CLS]"]]
    for word in words:
        pieces: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            while end > start and ("##" * (start > 0) + word[start:end]) not in IDS:
                end -= 1
            if end == start:
                pieces = [IDS["[UNK]"]]
                break
            pieces.append(IDS["##" * (start > 0) + word[start:end]])
            start = end
        ids += pieces
    return [*ids, IDS["[SEP]"]]


# -- imports that work


def test_import_stores_a_model_that_resolves_by_name(tmp_path: Path) -> None:
    stores = _stores(tmp_path)
    source = write_checkpoint(tmp_path / "ckpt")
    result = import_checkpoint(source, "tiny-import", stores)
    record = stores.resolve("tiny-import:latest")
    assert record == result.record
    assert record.source == EMBERD
    assert record.path == stores.blob_path(record.path.name)
    assert record.config is not None
    assert record.config.family == "bert"
    assert record.config.model_format == "gguf"
    assert record.config.quantization_level == "F16"
    assert record.config.parameter_size == record.info().parameter_size
    assert record.info().context_length == 128  # max_position_embeddings, not max_seq_length 64
    assert (result.checkpoint.pooling, result.checkpoint.normalize) == ("mean", True)
    assert result.checkpoint.max_seq_length == 64
    assert [r.name.display for r in stores.list()] == ["tiny-import:latest"]
    assert not [p for p in stores.emberd_dir.iterdir() if p.name.startswith(".")]


VARIANTS = {
    "mean-vocab-txt": CheckpointSpec(),
    "cls": CheckpointSpec(pooling="cls"),
    "lasttoken": CheckpointSpec(pooling="lasttoken"),
    "no-pooling-module": CheckpointSpec(pooling=None, normalize=False, max_seq_length=None),
    "tokenizer-json-cased": CheckpointSpec(
        tokenizer="tokenizer.json", lowercase=False, tokenizer_config=False
    ),
    "f16-weights": CheckpointSpec(dtype="F16", seed=3),
    "bf16-weights": CheckpointSpec(dtype="BF16", seed=4),
}


@pytest.mark.parametrize("spec", VARIANTS.values(), ids=VARIANTS.keys())
def test_import_embeds_as_the_same_weights_written_directly(
    tmp_path: Path, spec: CheckpointSpec
) -> None:
    stores = _stores(tmp_path)
    source = write_checkpoint(tmp_path / "ckpt", spec)
    record = import_checkpoint(source, "variant", stores, FileType.F32).record
    info = record.info()
    assert info.pooling_type == expected_hparams(spec).pooling
    assert _kv(record.path, "tokenizer.ggml.normalizer.lowercase") is spec.lowercase
    imported = embed_with_llama(record.path, TEXTS)
    reference = embed_with_llama(_reference_gguf(tmp_path, spec), TEXTS)
    assert imported.shape == (len(TEXTS), 32)
    np.testing.assert_array_less(0.9999, np.sum(imported * reference, axis=1))


def test_pooling_comes_from_the_checkpoint(tmp_path: Path) -> None:
    stores = _stores(tmp_path)
    vectors = {}
    for pooling in ("mean", "cls"):
        source = write_checkpoint(tmp_path / pooling, CheckpointSpec(pooling=pooling))
        record = import_checkpoint(source, pooling, stores, FileType.F32).record
        vectors[pooling] = embed_with_llama(record.path, TEXTS)
    assert np.all(np.sum(vectors["mean"] * vectors["cls"], axis=1) < 0.99)


@pytest.mark.parametrize("lowercase", [True, False], ids=["uncased", "cased"])
def test_tokenization_matches_the_checkpoint_wordpiece(
    tmp_path: Path, lowercase: bool, loaded: Callable[[Path], llama_cpp.Llama]
) -> None:
    source = write_checkpoint(tmp_path / "ckpt", CheckpointSpec(lowercase=lowercase))
    record = import_checkpoint(source, "tok", _stores(tmp_path)).record
    model = loaded(record.path)
    for sentence in SENTENCES:
        assert model.tokenize(sentence.encode(), add_bos=True) == wordpiece(sentence, lowercase)
    hello = model.tokenize(b"Hello", add_bos=True)[1]
    assert hello == IDS["Hello" if not lowercase else "hello"]


@pytest.mark.parametrize("file_type", list(FileType), ids=[t.name for t in FileType])
def test_every_file_type_loads_and_embeds_alike(tmp_path: Path, file_type: FileType) -> None:
    spec = CheckpointSpec()
    source = write_checkpoint(tmp_path / "ckpt", spec)
    record = import_checkpoint(source, f"t-{file_type.name}", _stores(tmp_path), file_type).record
    assert record.info().file_type == file_type.name
    assert record.config is not None and record.config.quantization_level == file_type.name
    reference = embed_with_llama(_reference_gguf(tmp_path, spec), TEXTS)
    cosines = np.sum(embed_with_llama(record.path, TEXTS) * reference, axis=1)
    np.testing.assert_array_less(0.999 if file_type is FileType.Q8_0 else 0.9999, cosines)


def test_embedding_rows_beyond_the_vocabulary_get_placeholder_tokens(tmp_path: Path) -> None:
    source = write_checkpoint(tmp_path / "ckpt")
    _shorten_vocab(source)  # drops "Sky" and "##Blue"; their embedding rows stay
    record = import_checkpoint(source, "padded", _stores(tmp_path)).record
    tokens = _kv(record.path, "tokenizer.ggml.tokens")
    assert isinstance(tokens, list) and len(tokens) == len(CHECKPOINT_TOKENS)
    assert tokens[-2:] == [
        f"[PAD{len(CHECKPOINT_TOKENS) - 2}]",
        f"[PAD{len(CHECKPOINT_TOKENS) - 1}]",
    ]
    assert embed_with_llama(record.path, TEXTS).shape == (len(TEXTS), 32)


def test_file_type_names() -> None:
    assert parse_file_type("f32") is FileType.F32
    assert parse_file_type("F16") is FileType.F16
    assert parse_file_type("q8_0") is FileType.Q8_0
    with pytest.raises(CheckpointError, match="unsupported type 'q4_0'; choose one of f32, f16"):
        parse_file_type("q4_0")


def test_reimport_replaces_the_model_and_its_blob(tmp_path: Path) -> None:
    stores = _stores(tmp_path)
    first = import_checkpoint(write_checkpoint(tmp_path / "a"), "same", stores).record
    second_source = write_checkpoint(tmp_path / "b", CheckpointSpec(seed=7))
    with pytest.raises(ModelExists, match="'same' is already in emberd's store; --force"):
        import_checkpoint(second_source, "same", stores)
    assert stores.resolve("same").path == first.path
    second = import_checkpoint(second_source, "same", stores, replace=True)
    assert second.replaced
    assert stores.resolve("same").path == second.record.path != first.path
    assert not first.path.exists()
    assert [r.name.display for r in stores.list()] == ["same:latest"]


def test_reimport_keeps_a_blob_another_model_uses(tmp_path: Path) -> None:
    stores = _stores(tmp_path)
    source = write_checkpoint(tmp_path / "a")
    shared = import_checkpoint(source, "one", stores).record
    import_checkpoint(source, "one:copy", stores)  # the same GGUF, so the same blob
    other = write_checkpoint(tmp_path / "b", CheckpointSpec(seed=7))
    import_checkpoint(other, "one", stores, replace=True)
    assert stores.resolve("one:copy").path == shared.path
    assert shared.path.is_file()


@pytest.mark.fidelity
def test_the_real_all_minilm_checkpoint_imports(tmp_path: Path) -> None:
    result = import_checkpoint(minilm_checkpoint(), "all-minilm", _stores(tmp_path))
    info = result.record.info()
    assert (info.embedding_length, info.context_length, info.pooling_type) == (384, 512, 1)
    assert result.checkpoint.max_seq_length == 256
    assert result.checkpoint.normalize
    model = load_with_llama(result.record.path, n_ctx=512)
    try:
        assert model.tokenize(b"Why is the sky blue?", add_bos=True) == [
            101, 2339, 2003, 1996, 3712, 2630, 1029, 102,
        ]  # fmt: skip
        vector = np.asarray(model.embed("Why is the sky blue?"), dtype=np.float64)
    finally:
        model.close()
    assert vector.shape == (384,)
    assert np.all(np.isfinite(vector)) and 1 < np.linalg.norm(vector) < 100


# -- imports that fail, leaving the store as it was


def _drop_tensor(source: Path) -> None:
    tensors = load_file(str(source / "model.safetensors"))
    del tensors["encoder.layer.1.output.dense.weight"]
    save_file(tensors, str(source / "model.safetensors"))


def _retype_tensor(source: Path) -> None:
    tensors = load_file(str(source / "model.safetensors"))
    tensors["encoder.layer.0.intermediate.dense.weight"] = np.zeros((64, 32), np.int32)
    save_file(tensors, str(source / "model.safetensors"))


def _add_tensor(source: Path) -> None:
    tensors = load_file(str(source / "model.safetensors"))
    tensors["cls.predictions.bias"] = np.zeros(4, np.float32)
    save_file(tensors, str(source / "model.safetensors"))


def _edit_json(relative: str, **changes: object) -> Callable[[Path], None]:
    def edit(source: Path) -> None:
        path = source / relative
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))

    return edit


def _add_module(source: Path) -> None:
    path = source / "modules.json"
    modules = json.loads(path.read_text())
    modules.append({"idx": 3, "path": "3_Dense", "type": "sentence_transformers.models.Dense"})
    path.write_text(json.dumps(modules))


def _bpe_tokenizer(source: Path) -> None:
    _edit_json("tokenizer.json", model={"type": "BPE", "vocab": {}, "merges": []})(source)


def _shorten_vocab(source: Path) -> None:
    path = source / "vocab.txt"
    path.write_text("\n".join(path.read_text().split("\n")[:-3]) + "\n")


def _unlink(relative: str) -> Callable[[Path], None]:
    return lambda source: (source / relative).unlink()


def _pytorch_only(source: Path) -> None:
    (source / "model.safetensors").rename(source / "pytorch_model.bin")


Damage = Callable[[Path], object]
FAILURES: dict[str, tuple[CheckpointSpec, Damage, str]] = {
    "no-config": (CheckpointSpec(), _unlink("config.json"), "no config.json"),
    "roberta": (
        CheckpointSpec(model_type="roberta"),
        lambda _: None,
        "unsupported model_type 'roberta'; emberd imports bert",
    ),
    "missing-tensor": (
        CheckpointSpec(),
        _drop_tensor,
        "missing tensors .*blk.1.ffn_down.weight",
    ),
    "unknown-tensor": (CheckpointSpec(), _add_tensor, "unsupported tensors: cls.predictions.bias"),
    "int-weights": (
        CheckpointSpec(),
        _retype_tensor,
        "'encoder.layer.0.intermediate.dense.weight' has dtype I32",
    ),
    "wrong-shape": (
        CheckpointSpec(),
        _edit_json("config.json", intermediate_size=128),
        "has shape .*expected",
    ),
    "max-pooling": (CheckpointSpec(pooling="max"), lambda _: None, "unsupported pooling 'max'"),
    "weighted-pooling": (
        CheckpointSpec(pooling="weightedmean"),
        lambda _: None,
        "unsupported pooling 'weightedmean'",
    ),
    "two-poolings": (
        CheckpointSpec(pooling="cls"),
        _edit_json("1_Pooling/config.json", pooling_mode_mean_tokens=True),
        r"exactly one pooling mode must be set \(found: mean, cls\)",
    ),
    "dense-module": (CheckpointSpec(), _add_module, "unsupported sentence-transformers module"),
    "no-weights": (CheckpointSpec(), _unlink("model.safetensors"), "no model.safetensors"),
    "pytorch-weights": (CheckpointSpec(), _pytorch_only, "only pytorch_model.bin found"),
    "vocab-beyond-vocab-size": (
        CheckpointSpec(),
        lambda s: (s / "vocab.txt").write_text((s / "vocab.txt").read_text() + "extra\n"),
        "vocab.txt: .* tokens, more than config.json's vocab_size",
    ),
    "no-vocab": (CheckpointSpec(), _unlink("vocab.txt"), "no tokenizer.json or vocab.txt"),
    "bpe-tokenizer": (
        CheckpointSpec(tokenizer="tokenizer.json"),
        _bpe_tokenizer,
        "unsupported tokenizer model 'BPE'",
    ),
    "unknown-cls": (
        CheckpointSpec(),
        _edit_json("tokenizer_config.json", cls_token="<s>"),
        "special tokens not in the vocabulary: cls '<s>'",
    ),
    "bad-json": (
        CheckpointSpec(),
        lambda s: (s / "modules.json").write_text("[{"),
        "modules.json: not valid JSON",
    ),
    "not-safetensors": (
        CheckpointSpec(),
        lambda s: (s / "model.safetensors").write_bytes(b"\x00" * 64),
        "not a readable safetensors file",
    ),
}


@pytest.mark.parametrize("case", FAILURES.values(), ids=FAILURES.keys())
def test_unconvertible_checkpoints_are_refused_clearly(
    tmp_path: Path, case: tuple[CheckpointSpec, Damage, str]
) -> None:
    spec, damage, message = case
    source = write_checkpoint(tmp_path / "ckpt", spec)
    damage(source)
    stores = _stores(tmp_path)
    with pytest.raises(CheckpointError, match=message):
        import_checkpoint(source, "broken", stores)
    assert stores.list() == []
    assert _leftovers(stores) == []


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a directory"):
        read_checkpoint(tmp_path / "nowhere")


def test_a_bad_name_is_refused_before_converting(tmp_path: Path) -> None:
    stores = _stores(tmp_path)
    with pytest.raises(InvalidModelName):
        import_checkpoint(write_checkpoint(tmp_path / "ckpt"), "../up", stores)
    assert _leftovers(stores) == []


class _Interrupted(Exception):
    pass


def _fail_midway(done: int, total: int) -> None:
    if done < total:
        raise _Interrupted


def test_a_conversion_failing_midway_leaves_no_model(tmp_path: Path) -> None:
    stores = _stores(tmp_path)
    with pytest.raises(_Interrupted):
        import_checkpoint(
            write_checkpoint(tmp_path / "ckpt"), "half", stores, progress=_fail_midway
        )
    assert stores.list() == []
    assert _leftovers(stores) == []


def test_a_failed_reimport_keeps_the_previous_model(tmp_path: Path) -> None:
    stores = _stores(tmp_path)
    before = import_checkpoint(write_checkpoint(tmp_path / "a"), "kept", stores).record
    files = _leftovers(stores)
    source = write_checkpoint(tmp_path / "b", CheckpointSpec(seed=9))
    with pytest.raises(_Interrupted):
        import_checkpoint(source, "kept", stores, progress=_fail_midway, replace=True)
    assert stores.resolve("kept") == before
    assert _leftovers(stores) == files
