"""What pulls and imports leave in the store: refused before it is written, or swept after.

A blob that cannot fit is refused before a byte is fetched; one longer than
its manifest says is stopped; a failed pull leaves only what a later pull
resumes; and what a killed pull or import left is swept (models.leftovers)
when no writer is at work.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from emberd.models.errors import InvalidModelFile, ModelNotFound
from emberd.models.importer import import_checkpoint
from emberd.models.leftovers import sweep, writing
from emberd.models.pull import NotEnoughSpace, partial_path, pull_model
from emberd.models.registry import BlobTooLong, RegistryError
from emberd.models.store import ModelStores
from emberd.server.config import Settings
from emberd.server.http.app import create_app
from tests.support.hf_checkpoint import write_checkpoint
from tests.support.registry_server import (
    Published,
    RegistryServer,
    digest_of,
    registry_server,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: nothing is swept there
    fcntl = None  # type: ignore[assignment]

needs_locks = pytest.mark.skipif(fcntl is None, reason="sweeping needs file locks")


@pytest.fixture
def stores(tmp_path: Path) -> ModelStores:
    return ModelStores(tmp_path / "emberd", None)


def announce(registry: RegistryServer, published: Published, size: int) -> None:
    """Make the manifest announce `size` bytes for the model layer."""
    manifest = json.loads(json.dumps(published.manifest))
    manifest["layers"][0]["size"] = size
    registry.state.manifests["library/tiny:latest"] = json.dumps(manifest).encode()


def blob_files(stores: ModelStores) -> list[str]:
    blobs = stores.emberd_dir / "blobs"
    return sorted(os.listdir(blobs)) if blobs.is_dir() else []


# -- refused before it is written ------------------------------------------------------


def test_a_blob_that_cannot_fit_is_refused_before_downloading(
    registry: RegistryServer, published: Published, stores: ModelStores
) -> None:
    announce(registry, published, 2**50)
    with pytest.raises(NotEnoughSpace) as refused:
        pull_model("tiny", stores, registry.url)
    message = str(refused.value)
    assert message.startswith("not enough disk space to pull tiny:latest: it needs 1125 TB and ")
    assert "is free" in message
    assert registry.state.blob_requests(published.model) == []
    assert blob_files(stores) == []


def test_the_space_a_pull_needs_counts_what_is_left_to_fetch(
    registry: RegistryServer, published: Published, stores: ModelStores
) -> None:
    free = shutil.disk_usage(stores.emberd_dir.parent).free
    announce(registry, published, free)  # all of the free space: less than the margin left
    with pytest.raises(NotEnoughSpace) as refused:
        pull_model("tiny", stores, registry.url)
    assert refused.value.need >= free


def test_a_blob_longer_than_its_manifest_says_is_stopped(
    registry: RegistryServer, published: Published, stores: ModelStores, gguf: bytes
) -> None:
    announce(registry, published, len(gguf) - 100)
    with pytest.raises(BlobTooLong, match=f"more than the {len(gguf) - 100} bytes"):
        pull_model("tiny", stores, registry.url)
    assert blob_files(stores) == []  # nothing kept: the partial held nothing usable
    with pytest.raises(ModelNotFound):
        stores.resolve("tiny")


# -- a failed pull leaves only what a later pull resumes --------------------------------


@needs_locks
def test_a_redirect_that_fails_leaves_no_empty_partial(
    registry: RegistryServer, published: Published, stores: ModelStores
) -> None:
    with registry_server() as gone:
        dead_url = gone.url  # a port nobody listens on once the block ends
    registry.state.redirect_to = dead_url
    with pytest.raises(RegistryError):
        pull_model("tiny", stores, registry.url, retries=0)
    assert blob_files(stores) == []


@needs_locks
def test_a_model_layer_that_is_not_a_gguf_leaves_no_blobs(
    registry: RegistryServer, stores: ModelStores
) -> None:
    registry.state.publish("library/tiny", "latest", b"not a gguf at all", {"num_ctx": 64})
    with pytest.raises(InvalidModelFile):
        pull_model("tiny", stores, registry.url)
    assert blob_files(stores) == []
    assert stores.list() == []


@needs_locks
def test_a_failed_pull_keeps_its_download_for_the_next(
    registry: RegistryServer, published: Published, stores: ModelStores, gguf: bytes
) -> None:
    registry.state.drop_after[published.model] = len(gguf) // 2
    with pytest.raises(RegistryError, match="interrupted"):
        pull_model("tiny", stores, registry.url, retries=0)
    assert partial_path(stores, published.model).stat().st_size == len(gguf) // 2
    assert pull_model("tiny", stores, registry.url).path.read_bytes() == gguf
    assert blob_files(stores) == sorted(
        stores.blob_path(d).name for d in (published.model, published.params, published.config)
    )


# -- the sweep -------------------------------------------------------------------------


def litter(root: Path, keep: ModelStores, registry: RegistryServer) -> dict[str, Path]:
    """A store with a model and every kind of leftover; the paths by kind."""
    pull_model("tiny", keep, registry.url)
    blobs = root / "blobs"
    orphan = b"a blob no manifest uses"
    paths = {
        "orphan": blobs / digest_of(orphan).replace(":", "-"),
        "empty": blobs / f"sha256-{'1' * 64}-partial",
        "resumable": blobs / f"sha256-{'2' * 64}-partial",
        "finished": blobs / (keep.resolve("tiny").path.name + "-partial"),
        "half-written": blobs / ".tmp-abc123",
        "lock": blobs / f"sha256-{'3' * 64}-partial.lock",
        "import": root / ".tmp-import-xyz",
    }
    paths["orphan"].write_bytes(orphan)
    paths["empty"].write_bytes(b"")
    paths["resumable"].write_bytes(b"some of a blob")
    paths["finished"].write_bytes(b"a copy of a blob that is complete")
    paths["half-written"].write_bytes(b"half")
    paths["lock"].write_bytes(b"")
    paths["import"].mkdir()
    (paths["import"] / "model.gguf").write_bytes(b"x" * 1000)
    return paths


@needs_locks
def test_the_sweep_removes_leftovers_and_keeps_what_a_pull_resumes(
    registry: RegistryServer, published: Published, stores: ModelStores, gguf: bytes
) -> None:
    paths = litter(stores.emberd_dir, stores, registry)
    swept = sweep(stores.emberd_dir)
    assert swept is not None
    assert (swept.folders, swept.partials, swept.blobs) == (1, 2, 2)
    remaining = {kind for kind, path in paths.items() if path.exists()}
    assert remaining == {"resumable"}
    assert stores.resolve("tiny").path.read_bytes() == gguf  # the model's blobs stay


@needs_locks
def test_the_sweep_never_runs_under_a_writer(
    registry: RegistryServer, published: Published, stores: ModelStores
) -> None:
    paths = litter(stores.emberd_dir, stores, registry)
    with writing(stores.emberd_dir):
        assert sweep(stores.emberd_dir) is None
    assert all(path.exists() for path in paths.values())


@needs_locks
def test_the_server_sweeps_the_store_when_it_starts(
    tmp_path: Path, registry: RegistryServer, published: Published, stores: ModelStores
) -> None:
    paths = litter(stores.emberd_dir, stores, registry)
    env = {
        "HOME": str(tmp_path),
        "EMBERD_MODELS": str(stores.emberd_dir),
        "OLLAMA_MODELS": str(tmp_path / "ollama"),
    }
    app = create_app(Settings.from_env(env))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/api/tags").json()["models"][0]["name"] == "tiny:latest"
    assert {kind for kind, path in paths.items() if path.exists()} == {"resumable"}


# -- imports ---------------------------------------------------------------------------


_KILLED_IMPORT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from emberd.models.importer import import_checkpoint
    from emberd.models.store import ModelStores

    def progress(done: int, total: int) -> None:
        if done:  # part of the GGUF is on disk: die as a kill -9 would
            os.kill(os.getpid(), signal.SIGKILL)

    import_checkpoint(Path(sys.argv[1]), "killed", ModelStores(Path(sys.argv[2]), None),
                      progress=progress)
    """
)


@needs_locks
def test_an_import_killed_mid_write_leaves_nothing_after_the_next_one(tmp_path: Path) -> None:
    checkpoint = write_checkpoint(tmp_path / "checkpoint")
    root = tmp_path / "emberd"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_IMPORT, str(checkpoint), str(root)], check=False
    )
    assert killed.returncode == -signal.SIGKILL
    work = [p for p in root.iterdir() if p.name.startswith(".tmp-import-")]
    assert len(work) == 1 and any(work[0].iterdir())  # what the kill left

    stores = ModelStores(root, None)
    import_checkpoint(checkpoint, "survivor", stores)
    assert [p.name for p in root.iterdir() if p.name.startswith(".tmp-")] == []
    assert [r.name.display for r in stores.list()] == ["survivor:latest"]


@needs_locks
def test_an_import_at_work_is_never_swept(tmp_path: Path) -> None:
    checkpoint = write_checkpoint(tmp_path / "checkpoint")
    stores = ModelStores(tmp_path / "emberd", None)
    sweeps: list[object] = []

    def progress(done: int, total: int) -> None:
        if not sweeps:  # another process (here, a thread) sweeps while the GGUF is written
            thread = threading.Thread(target=lambda: sweeps.append(sweep(stores.emberd_dir)))
            thread.start()
            thread.join()

    import_checkpoint(checkpoint, "busy", stores, progress=progress)
    assert sweeps == [None]
    assert stores.resolve("busy").info().architecture == "bert"
