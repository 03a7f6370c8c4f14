"""What interrupted pulls and imports leave in emberd's store, and sweeping it away.

Every process that writes blobs (a pull, an import) holds the store's
writers lock (a lock on the store's folder itself), shared, for as long as
it works. The sweep takes that lock
exclusively and without waiting: when it gets it, nothing is being written,
so it removes

- an import's work folder (`.tmp-import-*`) and a blob being written
  (`blobs/.tmp-*`), whose process was killed;
- a partial download that holds nothing, or whose blob is complete;
- the lock files of blob downloads (`-partial.lock`);
- a blob that no manifest refers to.

It keeps a partial download that holds bytes: the next pull of its model
resumes it. Sweeps run when the server starts, before a pull or an import,
and after one fails. The writers lock is `flock` on a folder, which Windows
lacks: there nothing is swept (Windows deletes a blob's lock file itself).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from emberd.models.ollama_layout import TEMP_PREFIX, ManifestStore

try:
    import fcntl
except ImportError:  # Windows: no sweeping
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = "-partial"
# A pull's lock on one blob's download (`sha256-<hex>-partial.lock`).
LOCK_SUFFIX = ".lock"
IMPORT_PREFIX = TEMP_PREFIX + "import-"


@dataclass(frozen=True)
class Swept:
    """What one sweep removed."""

    folders: int = 0  # import work folders
    partials: int = 0  # partial downloads
    blobs: int = 0  # blobs no manifest uses, and blobs half written
    bytes: int = 0

    @property
    def anything(self) -> bool:
        """Whether the sweep removed something."""
        return bool(self.folders or self.partials or self.blobs)


@contextlib.contextmanager
def writing(root: Path) -> Iterator[None]:
    """Hold the writers lock of the store at `root`, shared, while the block writes."""
    with _writers_lock(root, exclusive=False) as held:
        assert held
        yield


def sweep(root: Path) -> Swept | None:
    """Remove the leftovers of the store at `root`; None when a writer is at work now."""
    if not root.is_dir():
        return Swept()
    with _writers_lock(root, exclusive=True) as held:
        if not held:
            return None
        swept = _sweep(ManifestStore(root))
    if swept.anything:
        log.info(
            "removed leftovers from the model store: %d import folders, %d partial "
            "downloads, %d unused blobs (%d bytes)",
            swept.folders, swept.partials, swept.blobs, swept.bytes,
        )  # fmt: skip
    return swept


@contextlib.contextmanager
def _writers_lock(root: Path, *, exclusive: bool) -> Iterator[bool]:
    """The writers lock: shared (waits), or exclusive (does not wait); whether it is held."""
    if fcntl is None:
        yield not exclusive
        return
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root, os.O_RDONLY)
    try:
        mode = fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # lets the lock go


def _sweep(store: ManifestStore) -> Swept:
    folders = partials = blobs = size = 0
    for entry in _entries(store.root):
        if entry.name.startswith(IMPORT_PREFIX) and entry.is_dir():
            size += _tree_size(entry)
            shutil.rmtree(entry, ignore_errors=True)
            folders += 1
    used: set[str] | None = None
    for entry in _entries(store.blobs_dir):
        name = entry.name
        if name.startswith(TEMP_PREFIX):
            size += _remove(entry)
            blobs += 1
        elif name.endswith(PARTIAL_SUFFIX + LOCK_SUFFIX):
            _remove(entry)  # no pull runs now, so no one holds or waits on it
        elif name.endswith(PARTIAL_SUFFIX):
            blob = entry.with_name(name.removesuffix(PARTIAL_SUFFIX))
            if _size(entry) == 0 or blob.is_file():
                size += _remove(entry)
                partials += 1
        elif store.is_blob_name(name):
            if used is None:
                used = store.referenced_digests()
            if store.digest_of(name) not in used:
                size += _remove(entry)
                blobs += 1
    return Swept(folders=folders, partials=partials, blobs=blobs, bytes=size)


def _entries(directory: Path) -> list[Path]:
    try:
        return [directory / name for name in sorted(os.listdir(directory))]
    except OSError:
        return []


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _remove(path: Path) -> int:
    """Delete the file `path`; the bytes it held."""
    size = _size(path)
    try:
        path.unlink()
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc.strerror)
        return 0
    return size


def _tree_size(directory: Path) -> int:
    return sum(_size(path) for path in directory.rglob("*") if path.is_file())
