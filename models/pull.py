"""Pulling a model from an Ollama registry into emberd's store.

`pull_model` is the procedure: the manifest and the blobs come through
`models.registry.RegistryClient`; `PullProgress` reports each step as a line
of Ollama's /api/pull stream (`emberd pull` prints them through
`models.terminal`).

Each blob is downloaded into `blobs/sha256-<hex>-partial`, resumed after an
interruption, checked against its sha256 and only then renamed to its real
name; blobs already present are skipped. A lock (a file of its own under
`locks/`, through filelock: flock on Unix, LockFileEx on Windows) keeps two
pulls of one blob (threads or processes) from writing it at once. The
partial file is closed before it is renamed or deleted, which Windows
requires. The manifest is written last, atomically, so a failed pull never
leaves a model that half exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock

from emberd.models.cancel import CancelSwitch
from emberd.models.gguf_meta import read_gguf_info
from emberd.models.names import ModelName
from emberd.models.ollama_layout import MODEL_MEDIA_TYPE, Layer
from emberd.models.registry import RegistryClient, RegistryError, registry_base_url
from emberd.models.store import ModelRecord, ModelStores

PARTIAL_SUFFIX = "-partial"
_CHUNK = 1 << 20


class DigestMismatch(RegistryError):
    """A downloaded blob whose bytes do not hash to its digest; the data was deleted."""

    def __init__(self, want: str, got: str) -> None:
        super().__init__(f"digest mismatch, file must be downloaded again: want {want}, got {got}")
        self.want = want
        self.got = got


@dataclass(frozen=True)
class PullProgress:
    """One progress report, shaped like a line of Ollama's /api/pull stream."""

    status: str
    digest: str = ""  # "sha256:<hex>" while a layer is pulled
    total: int = 0  # the layer's size in bytes
    completed: int = 0  # bytes of the layer on disk so far

    def to_json(self) -> dict[str, object]:
        """The JSON object of a stream line; empty fields are left out, as Ollama does."""
        body: dict[str, object] = {"status": self.status}
        if self.digest:
            body["digest"] = self.digest
        if self.total:
            body["total"] = self.total
        if self.completed:
            body["completed"] = self.completed
        return body


def partial_path(stores: ModelStores, digest: str) -> Path:
    """Where an unfinished download of the blob `digest` is kept."""
    final = stores.blob_path(digest)
    return final.with_name(final.name + PARTIAL_SUFFIX)


def lock_path(stores: ModelStores, digest: str) -> Path:
    """The lock file that one pull of the blob `digest` holds while it downloads."""
    return stores.emberd_dir / "locks" / (stores.blob_path(digest).name + ".lock")


def _ignore(progress: PullProgress) -> None:
    pass


def pull_model(
    name: str,
    stores: ModelStores,
    registry_url: str,
    progress: Callable[[PullProgress], None] = _ignore,
    *,
    insecure: bool = False,
    retries: int = 3,
    cancel: CancelSwitch | None = None,
    timeout: float = 60.0,
) -> ModelRecord:
    """Pull `name` from its registry into emberd's store and return the stored model.

    `progress` hears each step as Ollama reports it. A transfer that breaks
    off is resumed up to `retries` times; setting `cancel` stops the pull,
    a stalled download included (PullCancelled). Raises InvalidModelName,
    ManifestNotFound, DigestMismatch, RegistryError, InvalidModelFile (not a
    readable GGUF) or OSError (disk).
    """
    wanted = ModelName.parse(name)
    client = RegistryClient(
        wanted,
        registry_base_url(wanted, registry_url, insecure=insecure),
        retries=retries,
        cancel=cancel or CancelSwitch(),
        timeout=timeout,
    )
    return _Puller(name=wanted, stores=stores, client=client, progress=progress).run()


class _Puller:
    """One pull: the manifest, each blob, then the manifest written into the store."""

    def __init__(
        self,
        *,
        name: ModelName,
        stores: ModelStores,
        client: RegistryClient,
        progress: Callable[[PullProgress], None],
    ) -> None:
        self.name = name
        self.stores = stores
        self.client = client
        self.progress = progress

    def run(self) -> ModelRecord:
        """Fetch the manifest and every blob, then write the manifest; the stored model."""
        self.progress(PullProgress("pulling manifest"))
        manifest = self.client.fetch_manifest()
        for layer in manifest.blobs:
            self._pull_blob(layer)
        self.progress(PullProgress("verifying sha256 digest"))
        model = next(x for x in manifest.layers if x.media_type == MODEL_MEDIA_TYPE)
        read_gguf_info(self.stores.blob_path(model.digest))  # no manifest for an unusable file
        self.progress(PullProgress("writing manifest"))
        self.stores.write_manifest(self.name, list(manifest.layers), manifest.config)
        record = self.stores.resolve(self.name.key)
        self.progress(PullProgress("success"))
        return record

    def _pull_blob(self, layer: Layer) -> None:
        status = f"pulling {layer.digest.removeprefix('sha256:')[:12]}"

        def report(completed: int) -> None:
            self.progress(PullProgress(status, layer.digest, layer.size, completed))

        final = self.stores.blob_path(layer.digest)
        if _present(final, layer.size):
            report(layer.size)
            return
        partial = partial_path(self.stores, layer.digest)
        with _locked(lock_path(self.stores, layer.digest)):
            if _present(final, layer.size):  # another pull finished it while this one waited
                partial.unlink(missing_ok=True)
                report(layer.size)
                return
            partial.parent.mkdir(parents=True, exist_ok=True)
            with open(partial, "a+b") as fh:
                self.client.download_blob(layer, fh, report)
                got = _sha256(fh)
            # Closed first: Windows renames and deletes no open file.
            if got != layer.digest:
                partial.unlink(missing_ok=True)
                raise DigestMismatch(layer.digest, got)
            self.stores.adopt_blob(partial, layer.digest)


def _present(path: Path, size: int) -> bool:
    """True when a finished blob of the right size is stored at `path`."""
    try:
        return path.is_file() and path.stat().st_size == size
    except OSError:
        return False


def _sha256(fh: BinaryIO) -> str:
    """The digest of the downloaded bytes, once they are on disk."""
    fh.flush()
    os.fsync(fh.fileno())
    hasher = hashlib.sha256()
    fh.seek(0)
    while chunk := fh.read(_CHUNK):
        hasher.update(chunk)
    return f"sha256:{hasher.hexdigest()}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the exclusive lock `path` (created if needed) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path):
        yield
