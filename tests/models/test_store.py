"""models.store and models.ollama_layout: finding, listing, writing and deleting models."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from datetime import timezone
from pathlib import Path

import pytest

from emberd.models import store as store_module
from emberd.models.errors import InvalidModelFile, InvalidModelName, ModelNotFound, ReadOnlyModel
from emberd.models.names import ModelName
from emberd.models.ollama_layout import (
    CONFIG_MEDIA_TYPE,
    MODEL_MEDIA_TYPE,
    PARAMS_MEDIA_TYPE,
    ConfigDetails,
    Layer,
    ManifestStore,
)
from emberd.models.store import EMBERD, FILE, OLLAMA, ModelStores
from tests.support.gguf_files import write_gguf


@pytest.fixture
def emberd_dir(tmp_path: Path) -> Path:
    path = tmp_path / "emberd"
    path.mkdir()
    return path


@pytest.fixture
def ollama_dir(tmp_path: Path) -> Path:
    path = tmp_path / "ollama"
    path.mkdir()
    return path


@pytest.fixture
def stores(emberd_dir: Path, ollama_dir: Path) -> ModelStores:
    return ModelStores(emberd_dir, ollama_dir)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _blob(root: Path, data: bytes) -> tuple[str, int]:
    """Write `data` as a blob the way Ollama names it; return (digest, size)."""
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / f"sha256-{_sha(data)}").write_bytes(data)
    return f"sha256:{_sha(data)}", len(data)


def ollama_model(
    root: Path,
    parts: tuple[str, str, str, str],
    gguf: Path,
    params: dict[str, object] | None = None,
    mtime: float | None = None,
    config: Mapping[str, object] | None = None,
) -> Path:
    """Lay out a model as Ollama does (written by hand, not by the code under test)."""
    config_json = json.dumps(config or {"model_format": "gguf"}).encode()
    config_digest, config_size = _blob(root, config_json)
    model_digest, model_size = _blob(root, gguf.read_bytes())
    layers = [{"mediaType": MODEL_MEDIA_TYPE, "digest": model_digest, "size": model_size}]
    if params is not None:
        digest, size = _blob(root, json.dumps(params).encode())
        layers.append({"mediaType": PARAMS_MEDIA_TYPE, "digest": digest, "size": size})
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config_size},
        "layers": layers,
    }
    path = root.joinpath("manifests", *parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def _lib(model: str, tag: str = "latest") -> tuple[str, str, str, str]:
    return ("registry.ollama.ai", "library", model, tag)


def _touch(path: Path, mtime: float) -> None:
    os.utime(path, (mtime, mtime))


def _all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# -- dropped GGUF files


def test_dropped_file_is_name_latest(stores: ModelStores, emberd_dir: Path) -> None:
    path = write_gguf(emberd_dir / "tiny.gguf", block_count=2)
    for asked in ("tiny", "tiny:latest", "library/tiny", "registry.ollama.ai/library/tiny"):
        record = stores.resolve(asked)
        assert record.path == path
        assert record.name.display == "tiny:latest"
    record = stores.resolve("tiny")
    assert record.source == FILE
    assert record.digest == _sha(path.read_bytes())
    assert record.size == path.stat().st_size
    assert record.params == {}
    assert record.modified_at.tzinfo == timezone.utc
    assert record.modified_at.timestamp() == pytest.approx(path.stat().st_mtime)
    assert record.info().block_count == 2


def test_dropped_file_in_a_folder_is_name_tag(stores: ModelStores, emberd_dir: Path) -> None:
    path = write_gguf(emberd_dir / "tiny" / "q8.gguf")
    record = stores.resolve("tiny:q8")
    assert record.path == path
    assert record.name.display == "tiny:q8"
    with pytest.raises(ModelNotFound):
        stores.resolve("tiny")
    latest = write_gguf(emberd_dir / "tiny" / "latest.gguf")
    assert stores.resolve("tiny").path == latest


def test_top_level_file_wins_over_folder_latest(stores: ModelStores, emberd_dir: Path) -> None:
    top = write_gguf(emberd_dir / "tiny.gguf")
    write_gguf(emberd_dir / "tiny" / "latest.gguf", block_count=9)
    assert stores.resolve("tiny").path == top
    assert [r.path for r in stores.list()] == [top]


def test_dropped_files_match_any_case(stores: ModelStores, emberd_dir: Path) -> None:
    path = write_gguf(emberd_dir / "Tiny-Model.GGUF")
    record = stores.resolve("tiny-model:LATEST")
    assert record.path == path
    assert record.name.display == "Tiny-Model:latest"
    inner = write_gguf(emberd_dir / "Other" / "V1.gguf")
    assert stores.resolve("other:v1").path == inner


def test_dropped_files_only_answer_default_namespace(stores: ModelStores, emberd_dir: Path) -> None:
    write_gguf(emberd_dir / "tiny.gguf")
    with pytest.raises(ModelNotFound):
        stores.resolve("jina/tiny")
    with pytest.raises(ModelNotFound):
        stores.resolve("example.com/library/tiny")


def test_store_folders_are_not_dropped_models(stores: ModelStores, emberd_dir: Path) -> None:
    write_gguf(emberd_dir / "blobs" / "latest.gguf")
    write_gguf(emberd_dir / "manifests" / "latest.gguf")
    assert stores.list() == []
    with pytest.raises(ModelNotFound):
        stores.resolve("blobs")


def test_other_files_are_ignored(stores: ModelStores, emberd_dir: Path) -> None:
    (emberd_dir / "notes.txt").write_text("hello")
    (emberd_dir / ".hidden.gguf").write_text("x")
    write_gguf(emberd_dir / "ok.gguf")
    assert [r.name.display for r in stores.list()] == ["ok:latest"]


def test_dropped_digest_is_cached_per_file_version(stores: ModelStores, emberd_dir: Path) -> None:
    path = write_gguf(emberd_dir / "tiny.gguf")
    first = stores.resolve("tiny").digest
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # inside tensor data: still a valid GGUF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert stores.resolve("tiny").digest == first
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert stores.resolve("tiny").digest == _sha(bytes(data)) != first


# -- Ollama's layout


def test_ollama_manifest_with_params(stores: ModelStores, ollama_dir: Path, tmp_path: Path) -> None:
    gguf = write_gguf(tmp_path / "src.gguf", context_length=128)
    manifest = ollama_model(
        ollama_dir, _lib("all-minilm"), gguf, params={"num_ctx": 256, "stop": ["x"]}
    )
    record = stores.resolve("all-minilm")
    assert record.source == OLLAMA
    assert record.name.display == "all-minilm:latest"
    assert record.path == ollama_dir / "blobs" / f"sha256-{_sha(gguf.read_bytes())}"
    assert record.params == {"num_ctx": 256, "stop": ["x"]}
    assert record.digest == _sha(manifest.read_bytes())
    layers = json.loads(manifest.read_text())
    expected_size = layers["config"]["size"] + sum(x["size"] for x in layers["layers"])
    assert record.size == expected_size
    assert record.size > gguf.stat().st_size
    assert record.modified_at.timestamp() == pytest.approx(manifest.stat().st_mtime)
    assert record.info().context_length == 128


def test_config_blob_details(stores: ModelStores, ollama_dir: Path, tmp_path: Path) -> None:
    config = {
        "model_format": "gguf",
        "model_family": "bert",
        "model_families": ["bert"],
        "model_type": "23M",
        "file_type": "F16",
        "architecture": "amd64",
    }
    ollama_model(ollama_dir, _lib("all-minilm"), write_gguf(tmp_path / "s.gguf"), config=config)
    assert stores.resolve("all-minilm").config == ConfigDetails(
        model_format="gguf",
        family="bert",
        families=("bert",),
        parameter_size="23M",
        quantization_level="F16",
    )
    ollama_model(ollama_dir, _lib("bare"), write_gguf(tmp_path / "b.gguf"))
    bare = stores.resolve("bare").config
    assert bare is not None
    assert (bare.model_format, bare.family, bare.parameter_size) == ("gguf", None, None)


def test_unreadable_config_blob_is_no_details(
    stores: ModelStores, ollama_dir: Path, tmp_path: Path
) -> None:
    config = {"model_type": "1M"}
    ollama_model(ollama_dir, _lib("c"), write_gguf(tmp_path / "s.gguf"), config=config)
    data = json.dumps(config).encode()
    (ollama_dir / "blobs" / f"sha256-{_sha(data)}").unlink()
    record = stores.resolve("c")
    assert record.config is None
    assert record.info().architecture == "bert"


def test_dropped_files_have_no_config(stores: ModelStores, emberd_dir: Path) -> None:
    write_gguf(emberd_dir / "tiny.gguf")
    assert stores.resolve("tiny").config is None


def test_ollama_manifest_without_params(
    stores: ModelStores, ollama_dir: Path, tmp_path: Path
) -> None:
    gguf = write_gguf(tmp_path / "src.gguf")
    ollama_model(ollama_dir, ("hf.co", "org", "repo", "Q8_0"), gguf)
    record = stores.resolve("hf.co/org/repo:q8_0")
    assert record.params == {}
    assert record.name.display == "hf.co/org/repo:Q8_0"


def test_manifest_names_match_any_case(
    stores: ModelStores, ollama_dir: Path, tmp_path: Path
) -> None:
    gguf = write_gguf(tmp_path / "src.gguf")
    ollama_model(ollama_dir, ("registry.ollama.ai", "Library", "All-MiniLM", "L6-V2"), gguf)
    record = stores.resolve("ALL-minilm:l6-v2")
    assert record.name == ModelName("registry.ollama.ai", "Library", "All-MiniLM", "L6-V2")
    assert record.name.display == "All-MiniLM:L6-V2"


def test_no_ollama_store(emberd_dir: Path, tmp_path: Path) -> None:
    for ollama in (None, tmp_path / "does-not-exist"):
        stores = ModelStores(emberd_dir, ollama)
        assert stores.list() == []
        with pytest.raises(ModelNotFound) as info:
            stores.resolve("Nope:V1")
        assert info.value.name == "Nope:V1"


def test_emberd_dir_property(emberd_dir: Path, tmp_path: Path) -> None:
    assert ModelStores(emberd_dir, None).emberd_dir == emberd_dir


# -- precedence and listing


def test_emberd_wins_a_shared_name(
    stores: ModelStores, emberd_dir: Path, ollama_dir: Path, tmp_path: Path
) -> None:
    ollama_model(ollama_dir, _lib("tiny"), write_gguf(tmp_path / "o.gguf", block_count=7))
    mine = write_gguf(emberd_dir / "TINY.gguf", block_count=3)
    _touch(mine, 1_000)  # older than Ollama's, still preferred
    record = stores.resolve("tiny")
    assert (record.source, record.path) == (FILE, mine)
    listed = stores.list()
    assert [(r.name.key, r.source) for r in listed] == [
        ("registry.ollama.ai/library/tiny:latest", FILE)
    ]


def test_emberd_manifest_wins_over_dropped_file(
    stores: ModelStores, emberd_dir: Path, tmp_path: Path
) -> None:
    write_gguf(emberd_dir / "tiny.gguf")
    ollama_model(emberd_dir, _lib("tiny"), write_gguf(tmp_path / "m.gguf", block_count=4))
    record = stores.resolve("tiny")
    assert record.path.parent == emberd_dir / "blobs"
    assert record.source == EMBERD
    assert len(stores.list()) == 1


def test_list_is_newest_first(
    stores: ModelStores, emberd_dir: Path, ollama_dir: Path, tmp_path: Path
) -> None:
    _touch(write_gguf(emberd_dir / "old.gguf"), 1_000_000)
    _touch(write_gguf(emberd_dir / "new" / "v2.gguf"), 3_000_000)
    gguf = write_gguf(tmp_path / "x.gguf")
    ollama_model(ollama_dir, _lib("middle"), gguf, mtime=2_000_000)
    ollama_model(ollama_dir, ("example.com", "team", "newest", "1"), gguf, mtime=4_000_000)
    listed = stores.list()
    assert [r.name.display for r in listed] == [
        "example.com/team/newest:1",
        "new:v2",
        "middle:latest",
        "old:latest",
    ]
    assert [r.source for r in listed] == [OLLAMA, FILE, OLLAMA, FILE]


# -- broken entries


def test_manifest_with_missing_blob_is_skipped(
    stores: ModelStores,
    emberd_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gguf = write_gguf(tmp_path / "src.gguf")
    ollama_model(emberd_dir, _lib("gone"), gguf)
    (emberd_dir / "blobs" / f"sha256-{_sha(gguf.read_bytes())}").unlink()
    write_gguf(emberd_dir / "fine.gguf")
    with caplog.at_level(logging.WARNING, logger="emberd.models.store"):
        assert [r.name.display for r in stores.list()] == ["fine:latest"]
    assert "is missing" in caplog.text
    with pytest.raises(InvalidModelFile, match="is missing"):
        stores.resolve("gone")


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[]",
        '{"schemaVersion": 2}',
        '{"layers": [{"mediaType": "x"}]}',
        '{"layers": [{"mediaType": "application/vnd.ollama.image.params",'
        ' "digest": "sha256:00", "size": 1}]}',
        '{"layers": [{"mediaType": "application/vnd.ollama.image.model",'
        ' "digest": "sha256:../../../etc/passwd", "size": 1}]}',
    ],
)
def test_corrupt_manifest_is_skipped(stores: ModelStores, emberd_dir: Path, body: str) -> None:
    path = emberd_dir.joinpath("manifests", *_lib("bad"))
    path.parent.mkdir(parents=True)
    path.write_text(body)
    write_gguf(emberd_dir / "fine.gguf")
    assert [r.name.display for r in stores.list()] == ["fine:latest"]
    with pytest.raises(InvalidModelFile):
        stores.resolve("bad")


def test_corrupt_params_blob_is_an_invalid_file(
    stores: ModelStores, ollama_dir: Path, tmp_path: Path
) -> None:
    ollama_model(ollama_dir, _lib("p"), write_gguf(tmp_path / "s.gguf"), params={"a": 1})
    for blob in (ollama_dir / "blobs").iterdir():
        if blob.read_bytes() == b'{"a": 1}':
            blob.write_bytes(b"[1, 2]")
    with pytest.raises(InvalidModelFile, match="not a JSON object"):
        stores.resolve("p")


def test_corrupt_dropped_file_is_skipped(stores: ModelStores, emberd_dir: Path) -> None:
    (emberd_dir / "junk.gguf").write_bytes(b"GGUF" + bytes(10))
    write_gguf(emberd_dir / "fine.gguf")
    assert [r.name.display for r in stores.list()] == ["fine:latest"]
    with pytest.raises(InvalidModelFile, match=r"junk\.gguf"):
        stores.resolve("junk")


def test_broken_emberd_entry_falls_back_to_ollama(
    stores: ModelStores, emberd_dir: Path, ollama_dir: Path, tmp_path: Path
) -> None:
    (emberd_dir / "tiny.gguf").write_bytes(b"garbage!" * 10)
    ollama_model(ollama_dir, _lib("tiny"), write_gguf(tmp_path / "s.gguf"))
    assert stores.resolve("tiny").source == OLLAMA
    assert [r.source for r in stores.list()] == [OLLAMA]


# -- names that try to leave the store


@pytest.mark.parametrize(
    "name", ["../x", "/etc/passwd", "a/../../b", "a\\b", "..", "", "x/../../../tmp/evil"]
)
def test_escape_attempts_are_invalid_names(stores: ModelStores, tmp_path: Path, name: str) -> None:
    write_gguf(tmp_path / "x.gguf")  # a GGUF just outside the emberd store
    write_gguf(tmp_path / "evil.gguf")
    with pytest.raises(InvalidModelName):
        stores.resolve(name)
    with pytest.raises(InvalidModelName):
        stores.delete(name)
    assert (tmp_path / "x.gguf").exists()


def test_blob_paths_stay_in_the_store(stores: ModelStores, emberd_dir: Path) -> None:
    good = "sha256:" + "ab" * 32
    assert stores.blob_path(good) == emberd_dir / "blobs" / ("sha256-" + "ab" * 32)
    assert stores.blob_path("sha256-" + "ab" * 32) == stores.blob_path(good)
    for bad in ("sha256:../../etc/passwd", "sha256:" + "AB" * 32, "md5:00", "", "sha256:"):
        with pytest.raises(InvalidModelFile):
            stores.blob_path(bad)


def test_symlinked_dropped_file_outside_the_store_works(
    stores: ModelStores, emberd_dir: Path, tmp_path: Path
) -> None:
    target = write_gguf(tmp_path / "elsewhere" / "model.gguf")
    (emberd_dir / "linked.gguf").symlink_to(target)
    assert stores.resolve("linked").info().architecture == "bert"


# -- writing and deleting


def _import(stores: ModelStores, name: str, gguf: Path, params: dict[str, object]) -> None:
    """Import the way importer and pull will: blobs first, then the manifest."""
    model = Layer(MODEL_MEDIA_TYPE, stores.write_blob_from_file(gguf), gguf.stat().st_size)
    data = json.dumps(params).encode()
    params_layer = Layer(PARAMS_MEDIA_TYPE, stores.write_blob([data]), len(data))
    config_data = b'{"model_format":"gguf"}'
    config = Layer(CONFIG_MEDIA_TYPE, stores.write_blob([config_data]), len(config_data))
    stores.write_manifest(ModelName.parse(name), [model, params_layer], config)


def test_write_then_resolve(stores: ModelStores, emberd_dir: Path, tmp_path: Path) -> None:
    gguf = write_gguf(tmp_path / "src.gguf", block_count=6)
    _import(stores, "mine:v1", gguf, {"num_ctx": 64})
    record = stores.resolve("MINE:V1")
    assert record.source == EMBERD
    assert record.params == {"num_ctx": 64}
    assert record.path.read_bytes() == gguf.read_bytes()
    assert record.info().block_count == 6
    manifest = emberd_dir / "manifests" / "registry.ollama.ai" / "library" / "mine" / "v1"
    body = json.loads(manifest.read_text())
    assert body["schemaVersion"] == 2
    assert [x["mediaType"] for x in body["layers"]] == [MODEL_MEDIA_TYPE, PARAMS_MEDIA_TYPE]
    assert record.digest == _sha(manifest.read_bytes())
    # The layout written is Ollama's: an Ollama-style reader finds the same model.
    assert ModelStores(tmp_path / "empty", emberd_dir).resolve("mine:v1").path == record.path


def test_writes_leave_no_temporary_files(
    stores: ModelStores, emberd_dir: Path, tmp_path: Path
) -> None:
    gguf = write_gguf(tmp_path / "src.gguf")
    _import(stores, "a", gguf, {"x": 1})
    _import(stores, "a", gguf, {"x": 2})  # replacing a manifest
    files = _all_files(emberd_dir)
    assert files == sorted(
        ["manifests/registry.ollama.ai/library/a/latest"]
        + [f"blobs/{p.name}" for p in (emberd_dir / "blobs").iterdir()]
    )
    assert all(p.name.startswith("sha256-") for p in (emberd_dir / "blobs").iterdir())
    assert len(list((emberd_dir / "blobs").iterdir())) == 4  # model, config, two params


def test_failed_blob_write_leaves_nothing(stores: ModelStores, emberd_dir: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"first part"
        raise OSError("connection lost")

    with pytest.raises(OSError, match="connection lost"):
        stores.write_blob(chunks())
    with pytest.raises(InvalidModelFile, match="mismatch"):
        stores.write_blob([b"data"], expected_digest="sha256:" + "0" * 64)
    assert list((emberd_dir / "blobs").iterdir()) == []
    digest = stores.write_blob([b"da", b"ta"], expected_digest=f"sha256:{_sha(b'data')}")
    assert stores.blob_path(digest).read_bytes() == b"data"


def test_manifest_needs_its_blobs(stores: ModelStores, emberd_dir: Path) -> None:
    missing = Layer(MODEL_MEDIA_TYPE, "sha256:" + "1" * 64, 10)
    config = Layer(CONFIG_MEDIA_TYPE, stores.write_blob([b"{}"]), 2)
    with pytest.raises(InvalidModelFile, match="no blob"):
        stores.write_manifest(ModelName.parse("x"), [missing], config)
    assert not (emberd_dir / "manifests").exists()


def test_rewrite_reuses_folders_that_differ_in_case(
    stores: ModelStores, emberd_dir: Path, tmp_path: Path
) -> None:
    gguf = write_gguf(tmp_path / "src.gguf")
    _import(stores, "Mixed:V1", gguf, {})
    _import(stores, "mixed:v1", gguf, {"changed": True})
    _import(stores, "MIXED:v2", gguf, {})
    model_dirs = list((emberd_dir / "manifests" / "registry.ollama.ai" / "library").iterdir())
    assert [p.name for p in model_dirs] == ["Mixed"]
    assert sorted(p.name for p in model_dirs[0].iterdir()) == ["V1", "v2"]
    assert stores.resolve("mixed:v1").params == {"changed": True}


def test_delete_keeps_shared_blobs(stores: ModelStores, emberd_dir: Path, tmp_path: Path) -> None:
    gguf = write_gguf(tmp_path / "src.gguf")
    _import(stores, "one", gguf, {"n": 1})
    _import(stores, "two:x", gguf, {"n": 2})
    shared = stores.resolve("one").path
    blobs_before = set((emberd_dir / "blobs").iterdir())
    assert len(blobs_before) == 4

    stores.delete("ONE")
    with pytest.raises(ModelNotFound):
        stores.resolve("one")
    assert shared.exists()
    assert stores.resolve("two:x").path == shared
    assert len(set((emberd_dir / "blobs").iterdir())) == 3  # one's params blob went
    assert not (emberd_dir / "manifests" / "registry.ollama.ai" / "library" / "one").exists()

    stores.delete("two:x")
    assert list((emberd_dir / "blobs").iterdir()) == []
    assert list((emberd_dir / "manifests").iterdir()) == []
    with pytest.raises(ModelNotFound) as info:
        stores.delete("two:x")
    assert info.value.name == "two:x"


def test_delete_keeps_blobs_when_another_manifest_is_unreadable(
    stores: ModelStores, emberd_dir: Path, tmp_path: Path
) -> None:
    gguf = write_gguf(tmp_path / "src.gguf")
    _import(stores, "one", gguf, {})
    broken = emberd_dir.joinpath("manifests", *_lib("broken"))
    broken.parent.mkdir(parents=True)
    broken.write_text("{")
    stores.delete("one")
    assert len(list((emberd_dir / "blobs").iterdir())) == 3


def test_delete_dropped_files(stores: ModelStores, emberd_dir: Path) -> None:
    top = write_gguf(emberd_dir / "tiny.gguf")
    inner = write_gguf(emberd_dir / "tiny" / "v2.gguf")
    stores.delete("tiny:v2")
    assert not inner.exists()
    assert not (emberd_dir / "tiny").exists()
    stores.delete("Tiny")
    assert not top.exists()
    assert stores.list() == []


def test_delete_never_touches_ollama_store(
    stores: ModelStores, ollama_dir: Path, tmp_path: Path
) -> None:
    ollama_model(ollama_dir, _lib("theirs"), write_gguf(tmp_path / "s.gguf"))
    before = _all_files(ollama_dir)
    with pytest.raises(ReadOnlyModel, match="Ollama's store, which emberd never changes; `ollama"):
        stores.delete("theirs")
    assert _all_files(ollama_dir) == before
    assert stores.resolve("theirs").source == OLLAMA


def test_manifest_store_lists_only_valid_names(emberd_dir: Path, tmp_path: Path) -> None:
    gguf = write_gguf(tmp_path / "s.gguf")
    ollama_model(emberd_dir, _lib("ok"), gguf)
    odd = emberd_dir / "manifests" / "registry.ollama.ai" / "library" / "ok" / ".tmp-123"
    odd.write_text("{}")
    store = ManifestStore(emberd_dir)
    assert [name.display for name, _ in store.manifests()] == ["ok:latest"]


# -- the resolve cache


def test_resolve_answers_are_reused_briefly_then_looked_up_again(
    stores: ModelStores,
    emberd_dir: Path,
    ollama_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "RESOLVE_CACHE_SECONDS", 0.5)
    gguf = write_gguf(tmp_path / "src.gguf")
    ollama_model(ollama_dir, _lib("shared"), gguf)
    assert stores.resolve("shared").source == OLLAMA
    # Another process drops a model of the same name into emberd's store.
    write_gguf(emberd_dir / "shared.gguf")
    assert stores.resolve("shared").source == OLLAMA  # the cached answer, for now
    time.sleep(0.55)
    assert stores.resolve("shared").source == FILE


def test_a_write_through_the_stores_is_seen_at_once(
    stores: ModelStores, emberd_dir: Path, tmp_path: Path
) -> None:
    dropped = write_gguf(emberd_dir / "gone.gguf")
    assert stores.resolve("gone").source == FILE
    assert stores.delete("gone").describe() == f"deleted 'gone': the file {dropped}"
    with pytest.raises(ModelNotFound):
        stores.resolve("gone")
