"""Pulling a model from an Ollama registry into emberd's store.

`pull_model` is the procedure: the manifest and the blobs come through
`models.registry.RegistryClient`; `PullProgress` reports each step as a line
of Ollama's /api/pull stream (`emberd pull` prints them through
`models.terminal`).

Before anything is downloaded, the blobs must fit in the free disk space
less a margin. Each blob is downloaded into `blobs/sha256-<hex>-partial`,
resumed after an interruption, and checked against its sha256; blobs
already present are skipped. Only when every blob is in and the model's is
a readable GGUF are they renamed to their real names and the manifest
written (atomically), so a failed pull leaves no model that half exists and
no blob that no manifest uses: only partial downloads that the next pull
resumes, and none of those for a model that can never be used. A lock
file beside the partial (`-partial.lock`, through filelock, so on Windows
too) keeps two pulls of one blob (threads or processes) from writing it at
once; a pull that waits for it can be cancelled. The partial itself is
closed before it is renamed or deleted, which Windows requires. What a
killed pull leaves is swept by `models.leftovers` (before each pull, and
after one fails).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock, Timeout

from emberd.models.cancel import CancelSwitch
from emberd.models.errors import InvalidModelFile
from emberd.models.gguf_meta import read_gguf_info
from emberd.models.leftovers import LOCK_SUFFIX, PARTIAL_SUFFIX, sweep, writing
from emberd.models.names import ModelName
from emberd.models.ollama_layout import MODEL_MEDIA_TYPE, Layer
from emberd.models.registry import (
    PullCancelled,
    RegistryClient,
    RegistryError,
    registry_base_url,
)
from emberd.models.store import ModelRecord, ModelStores
from emberd.models.terminal import human_bytes

_CHUNK = 1 << 20
# Free space a pull leaves on the disk: 1 GiB, or 5% of a smaller disk.
_SPARE_BYTES = 1 << 30
_SPARE_SHARE = 20
# How often a pull waiting for another's lock on a blob looks at its cancel switch.
_LOCK_POLL_S = 0.05


class NotEnoughSpace(RegistryError):
    """The blobs of a pull do not fit in the disk's free space (less a margin)."""

    def __init__(self, name: ModelName, need: int, free: int, spare: int) -> None:
        super().__init__(
            f"not enough disk space to pull {name.display}: it needs {human_bytes(need)} "
            f"and {human_bytes(max(0, free - spare))} is free "
            f"({human_bytes(spare)} of the disk's {human_bytes(free)} free is kept spare)"
        )
        self.need = need


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
    off is resumed up to `retries` times; setting `cancel` stops the pull at
    any stage: the manifest, the wait for another pull of the same blob, a
    stalled download (PullCancelled). Raises InvalidModelName,
    ManifestNotFound, NotEnoughSpace, DigestMismatch, RegistryError,
    InvalidModelFile (not a readable GGUF) or OSError (disk).
    """
    wanted = ModelName.parse(name)
    switch = cancel or CancelSwitch()
    client = RegistryClient(
        wanted,
        registry_base_url(wanted, registry_url, insecure=insecure),
        retries=retries,
        cancel=switch,
        timeout=timeout,
    )
    root = stores.emberd_dir
    sweep(root)  # what earlier pulls and imports left
    puller = _Puller(name=wanted, stores=stores, client=client, progress=progress, cancel=switch)
    try:
        with writing(root):
            return puller.run()
    except BaseException:
        sweep(root)
        raise


class _Puller:
    """One pull: the manifest, each blob, then the blobs and the manifest put in the store."""

    def __init__(
        self,
        *,
        name: ModelName,
        stores: ModelStores,
        client: RegistryClient,
        progress: Callable[[PullProgress], None],
        cancel: CancelSwitch,
    ) -> None:
        self.name = name
        self.stores = stores
        self.client = client
        self.progress = progress
        self.cancel = cancel

    def run(self) -> ModelRecord:
        """Fetch the manifest and every blob, then store them and the manifest; the model."""
        self.progress(PullProgress("pulling manifest"))
        manifest = self.client.fetch_manifest()
        self._check_space(manifest.blobs)
        for layer in manifest.blobs:
            self._pull_blob(layer)
        self.progress(PullProgress("verifying sha256 digest"))
        model = next(x for x in manifest.layers if x.media_type == MODEL_MEDIA_TYPE)
        try:  # no manifest for an unusable file
            read_gguf_info(self._downloaded(model))
        except InvalidModelFile:
            self._discard(manifest.blobs)  # no later pull could use them
            raise
        for layer in manifest.blobs:
            self._adopt(layer)
        self.progress(PullProgress("writing manifest"))
        self.stores.write_manifest(self.name, list(manifest.layers), manifest.config)
        record = self.stores.resolve(self.name.key)
        self.progress(PullProgress("success"))
        return record

    def _check_space(self, layers: Sequence[Layer]) -> None:
        """NotEnoughSpace unless what is left to download fits, keeping a margin free."""
        blobs = self.stores.blob_path(layers[0].digest).parent
        blobs.mkdir(parents=True, exist_ok=True)
        need = 0
        for layer in {x.digest: x for x in layers}.values():
            if not _present(self.stores.blob_path(layer.digest), layer.size):
                need += max(0, layer.size - _file_size(partial_path(self.stores, layer.digest)))
        usage = shutil.disk_usage(blobs)
        spare = min(_SPARE_BYTES, usage.total // _SPARE_SHARE)
        if need > usage.free - spare:
            raise NotEnoughSpace(self.name, need, usage.free, spare)

    def _pull_blob(self, layer: Layer) -> None:
        status = f"pulling {layer.digest.removeprefix('sha256:')[:12]}"

        def report(completed: int) -> None:
            self.progress(PullProgress(status, layer.digest, layer.size, completed))

        final = self.stores.blob_path(layer.digest)
        if _present(final, layer.size):
            report(layer.size)
            return
        partial = partial_path(self.stores, layer.digest)
        with _blob_lock(partial, self.cancel):
            if _present(final, layer.size):  # another pull finished it while this one waited
                partial.unlink(missing_ok=True)
                report(layer.size)
                return
            with open(partial, "a+b") as fh:
                # A partial a failed pull completed and checked is not fetched again.
                self.client.download_blob(layer, fh, report)
                got = _digest_of(fh)
            if got != layer.digest:
                partial.unlink(missing_ok=True)
                raise DigestMismatch(layer.digest, got)

    def _downloaded(self, layer: Layer) -> Path:
        """Where the blob of `layer` is now: in the blobs, or still as its partial file."""
        final = self.stores.blob_path(layer.digest)
        return final if _present(final, layer.size) else partial_path(self.stores, layer.digest)

    def _adopt(self, layer: Layer) -> None:
        """Rename the checked partial file of `layer` to its blob (unless a pull did already)."""
        final = self.stores.blob_path(layer.digest)
        if _present(final, layer.size):
            return
        partial = partial_path(self.stores, layer.digest)
        # Checked under this lock; since then, other pulls of it only read it.
        with _blob_lock(partial, self.cancel):
            if _present(final, layer.size):
                partial.unlink(missing_ok=True)
            elif _file_size(partial) != layer.size:
                partial.unlink(missing_ok=True)
                raise RegistryError(f"the download of {layer.digest} was changed by another pull")
            else:
                self.stores.adopt_blob(partial, layer.digest)

    def _discard(self, layers: Sequence[Layer]) -> None:
        """Delete the partial files of `layers` that no other pull holds."""
        for layer in layers:
            partial = partial_path(self.stores, layer.digest)
            with _try_blob_lock(partial) as held:
                if held:
                    partial.unlink(missing_ok=True)


def _present(path: Path, size: int) -> bool:
    """True when a finished blob of the right size is stored at `path`."""
    try:
        return path.is_file() and path.stat().st_size == size
    except OSError:
        return False


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _digest_of(fh: BinaryIO) -> str:
    """The sha256 of everything in `fh`, written to disk first."""
    fh.flush()
    os.fsync(fh.fileno())
    hasher = hashlib.sha256()
    fh.seek(0)
    while chunk := fh.read(_CHUNK):
        hasher.update(chunk)
    return f"sha256:{hasher.hexdigest()}"


def blob_lock_path(partial: Path) -> Path:
    """The lock file that guards the partial download `partial`."""
    return partial.with_name(partial.name + LOCK_SUFFIX)


@contextlib.contextmanager
def _blob_lock(partial: Path, cancel: CancelSwitch) -> Iterator[None]:
    """Hold the lock of the blob downloading into `partial`; PullCancelled if `cancel` ends a wait.

    The lock is a file of its own, never the partial, so the partial can be
    renamed or deleted while the lock is held. The lock file goes once the
    blob is in: a pull that then locks an unlinked file, beside one that
    makes a new one, finds the blob there and writes nothing. Until then it
    stays (the store's sweep removes it when no pull runs).
    """
    partial.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(blob_lock_path(partial), thread_local=False)
    while True:
        try:
            lock.acquire(timeout=_LOCK_POLL_S, poll_interval=_LOCK_POLL_S / 5)
            break
        except Timeout:
            if cancel.is_set():
                raise PullCancelled() from None
    try:
        yield
    finally:
        if _final_of(partial).is_file():
            # Windows refuses to delete an open file; filelock deletes it there on release.
            with contextlib.suppress(OSError):
                blob_lock_path(partial).unlink(missing_ok=True)
        lock.release()


def _final_of(partial: Path) -> Path:
    return partial.with_name(partial.name.removesuffix(PARTIAL_SUFFIX))


@contextlib.contextmanager
def _try_blob_lock(partial: Path) -> Iterator[bool]:
    """Hold the lock of `partial`'s blob if no pull holds it; whether it is held."""
    lock = FileLock(blob_lock_path(partial), thread_local=False)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
