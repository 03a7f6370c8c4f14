"""Where models come from: emberd's own store first, then Ollama's.

emberd's store (a directory the caller chooses) holds Ollama-style
manifests and blobs, plus GGUF files dropped in by hand: `NAME.gguf` is
`NAME:latest` and `NAME/TAG.gguf` is `NAME:TAG`. Ollama's store is only
read. Only the emberd store is ever written.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from emberd.models.errors import InvalidModelFile, ModelNotFound, ReadOnlyModel
from emberd.models.gguf_meta import GGUFInfo, read_gguf_info
from emberd.models.names import (
    DEFAULT_HOST,
    DEFAULT_NAMESPACE,
    DEFAULT_TAG,
    ModelName,
    is_valid_part,
)
from emberd.models.ollama_layout import (
    MODEL_MEDIA_TYPE,
    ConfigDetails,
    Layer,
    ManifestStore,
    file_digest,
    spelling_on_disk,
)

log = logging.getLogger(__name__)

# Where a model comes from (ModelRecord.source): a manifest in emberd's store,
# a GGUF file dropped there by hand, or Ollama's store (read-only).
EMBERD = "emberd"
FILE = "file"
OLLAMA = "ollama"
GGUF_SUFFIX = ".gguf"
# Top-level directories of the emberd store that are not dropped models.
_RESERVED_DIRS = frozenset({"manifests", "blobs"})
# Resolving lists directories (names match case-insensitively), which costs
# more than the rest of a short request: answers are reused this long.
# Writes through this object forget them at once; other processes' changes
# show within this time.
RESOLVE_CACHE_SECONDS = 1.0
# Hashes of dropped files run here, apart from the threads that serve requests;
# two at once keep a disk busy without thrashing it.
_HASHERS = ThreadPoolExecutor(2, thread_name_prefix="emberd-hash")


@dataclass(frozen=True)
class ModelRecord:
    """One model a store can serve."""

    name: ModelName  # spelled as on disk
    path: Path  # the GGUF file
    digest: str  # hex sha256: of the manifest, or of the file for a dropped GGUF
    size: int  # bytes of the GGUF, plus the other layers of a manifest model
    modified_at: datetime  # timezone-aware UTC
    params: Mapping[str, object] = field(compare=False, hash=False)  # manifest default options
    source: str  # EMBERD, FILE or OLLAMA
    # The manifest's config blob, where Ollama's listing takes its details from;
    # None for dropped GGUFs (use info() instead).
    config: ConfigDetails | None = None

    def info(self) -> GGUFInfo:
        """The GGUF's metadata (cached per file version)."""
        return read_gguf_info(self.path)


FileVersion = tuple[int, int, int]


def file_version(path: Path) -> FileVersion | None:
    """Size, modification time and inode of a file: it changed when these did. None if gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


@dataclass(frozen=True)
class Deleted:
    """What `ModelStores.delete` removed."""

    name: str
    file: Path | None = None  # the dropped GGUF file; None for a manifest model
    folder: Path | None = None  # the dropped file's folder, removed once empty

    def describe(self) -> str:
        """`deleted 'NAME'`, naming the user's own file and folder where those went."""
        if self.file is None:
            return f"deleted {self.name!r}"
        folder = f" and its folder {self.folder}" if self.folder is not None else ""
        return f"deleted {self.name!r}: the file {self.file}{folder}"


class ModelStores:
    """The stores, in the order they are searched."""

    def __init__(self, emberd_dir: Path, ollama_dir: Path | None) -> None:
        self._emberd = ManifestStore(emberd_dir)
        self._ollama = ManifestStore(ollama_dir) if ollama_dir is not None else None
        self._digest_lock = threading.Lock()
        self._file_digests: dict[tuple[str, int, int], str] = {}
        self._hashing: dict[tuple[str, int, int], Future[str]] = {}
        self._resolved: dict[str, tuple[float, ModelRecord, FileVersion | None]] = {}

    @property
    def emberd_dir(self) -> Path:
        """The root of emberd's own store."""
        return self._emberd.root

    # -- reading

    def resolve(self, name: str) -> ModelRecord:
        """The model `name` refers to; InvalidModelName or ModelNotFound(name) if none.

        A broken entry (corrupt manifest, missing blob, unreadable GGUF) is
        passed over for a later store; if nothing else matches, its
        InvalidModelFile is raised.
        """
        wanted = ModelName.parse(name)
        record = self._fresh(wanted)
        if record is not None:
            return record
        record = self._find(name, wanted)
        self._resolved[wanted.key] = (time.monotonic(), record, file_version(record.path))
        return record

    def cached(self, name: str) -> ModelRecord | None:
        """What `resolve(name)` answered within the last moment, if its file is unchanged.

        Costs one `stat`, so it may run where blocking is not allowed; None
        means `resolve` must do the real work (which may hash a file).
        """
        return self._fresh(ModelName.parse(name))

    def _fresh(self, wanted: ModelName) -> ModelRecord | None:
        cached = self._resolved.get(wanted.key)
        if cached is None:
            return None
        when, record, version = cached
        # A GGUF removed or rewritten by hand is noticed at once.
        if time.monotonic() - when < RESOLVE_CACHE_SECONDS and file_version(record.path) == version:
            return record
        return None

    def _find(self, name: str, wanted: ModelName) -> ModelRecord:
        problem: InvalidModelFile | None = None
        for finder in self._finders():
            try:
                record = finder(wanted)
            except InvalidModelFile as exc:
                log.warning("skipping broken model entry for %s: %s", name, exc)
                problem = problem or exc
                continue
            if record is not None:
                return record
        if problem is not None:
            raise problem
        raise ModelNotFound(name)

    def list(self) -> list[ModelRecord]:
        """Every model of every store, newest first; the first store wins a shared name."""
        chosen: dict[str, ModelRecord] = {}
        for record in self._all_records():
            chosen.setdefault(record.name.key, record)
        by_name = sorted(chosen.values(), key=lambda r: r.name.display)
        return sorted(by_name, key=lambda r: r.modified_at, reverse=True)

    # -- writing (emberd store only)

    def blob_path(self, digest: str) -> Path:
        """Where the emberd store keeps the blob `digest` ("sha256:<hex>")."""
        return self._emberd.blob_path(digest)

    def write_blob(self, chunks: Iterable[bytes], expected_digest: str | None = None) -> str:
        """Store bytes as a blob atomically; return "sha256:<hex>" (see ManifestStore)."""
        return self._emberd.write_blob(chunks, expected_digest)

    def write_blob_from_file(self, src: Path) -> str:
        """Copy `src` into the blobs atomically; return its "sha256:<hex>" digest."""
        return self._emberd.write_blob_from_file(src)

    def adopt_blob(self, path: Path, digest: str) -> None:
        """Move the verified file `path` into the blobs by a rename (see ManifestStore)."""
        self._emberd.adopt_blob(path, digest)

    def write_manifest(self, name: ModelName, layers: builtins.list[Layer], config: Layer) -> None:
        """Write (or replace) the manifest of `name` in the emberd store."""
        try:
            self._emberd.write_manifest(name, layers, config)
        finally:
            self._resolved.clear()

    def delete(self, name: str) -> Deleted:
        """Delete `name` from the emberd store and say what went.

        A manifest model loses its manifest and the blobs no other manifest
        uses; a dropped GGUF file is removed, and its folder once empty.
        ReadOnlyModel if only Ollama's store has it, ModelNotFound if no
        store does.
        """
        try:
            return self._delete(name, ModelName.parse(name))
        finally:
            self._resolved.clear()

    def delete_file(self, name: str) -> Deleted | None:
        """Remove the GGUF file dropped in as `name` (never a manifest model); None if none."""
        try:
            return self._delete_file(name, ModelName.parse(name))
        finally:
            self._resolved.clear()

    def _delete(self, name: str, wanted: ModelName) -> Deleted:
        if self._emberd.delete(wanted):
            return Deleted(name)
        deleted = self._delete_file(name, wanted)
        if deleted is not None:
            return deleted
        if self._ollama is not None and self._ollama.find(wanted) is not None:
            raise ReadOnlyModel(name)
        raise ModelNotFound(name)

    def _delete_file(self, name: str, wanted: ModelName) -> Deleted | None:
        path = self._dropped_path(wanted)
        if path is None:
            return None
        path.unlink()
        folder = None
        if path.parent != self._emberd.root:
            with contextlib.suppress(OSError):  # other tags remain
                path.parent.rmdir()
                folder = path.parent
        return Deleted(name, file=path, folder=folder)

    # -- the sources

    def _finders(self) -> Iterator[Callable[[ModelName], ModelRecord | None]]:
        yield lambda n: self._manifest_record(self._emberd, n, EMBERD)
        yield self._dropped_record
        if self._ollama is not None:
            ollama = self._ollama
            yield lambda n: self._manifest_record(ollama, n, OLLAMA)

    def _all_records(self) -> Iterator[ModelRecord]:
        yield from self._manifest_records(self._emberd, EMBERD)
        for name, path in self._dropped_files():
            yield from _skip_broken(self._file_record, name, path)
        if self._ollama is not None:
            yield from self._manifest_records(self._ollama, OLLAMA)

    def _manifest_records(self, store: ManifestStore, source: str) -> Iterator[ModelRecord]:
        for name, path in store.manifests():
            yield from _skip_broken(self._from_manifest, store, name, path, source)

    def _manifest_record(
        self, store: ManifestStore, name: ModelName, source: str
    ) -> ModelRecord | None:
        path = store.find(name)
        if path is None:
            return None
        on_disk = path.relative_to(store.manifests_dir).parts
        return self._from_manifest(store, ModelName(*on_disk), path, source)

    def _from_manifest(
        self, store: ManifestStore, name: ModelName, path: Path, source: str
    ) -> ModelRecord:
        manifest = store.read(name, path)
        layer = manifest.layer(MODEL_MEDIA_TYPE)
        if layer is None:
            raise InvalidModelFile("manifest has no model layer", path=path)
        gguf = store.blob_path(layer.digest)
        if not gguf.is_file():
            raise InvalidModelFile(f"model blob {layer.digest} is missing", path=path)
        read_gguf_info(gguf)  # a record is only handed out for a readable GGUF
        return ModelRecord(
            name=name,
            path=gguf,
            digest=manifest.digest,
            size=manifest.size,
            modified_at=manifest.modified_at,
            params=store.read_params(manifest),
            source=source,
            config=store.read_config(manifest),
        )

    # -- dropped GGUF files

    def _dropped_record(self, name: ModelName) -> ModelRecord | None:
        path = self._dropped_path(name)
        if path is None:
            return None
        return self._file_record(_dropped_name(self._emberd.root, path), path)

    def _dropped_path(self, name: ModelName) -> Path | None:
        """The dropped GGUF file of `name`, if one exists: NAME.gguf, then NAME/TAG.gguf."""
        if name.host.lower() != DEFAULT_HOST or name.namespace.lower() != DEFAULT_NAMESPACE:
            return None
        if name.model.lower() in _RESERVED_DIRS:
            return None
        root = self._emberd.root
        candidates: list[tuple[Path, str]] = []
        if name.tag.lower() == DEFAULT_TAG:
            candidates.append((root, name.model + GGUF_SUFFIX))
        directory = _match_ci(root, name.model, want_dir=True)
        if directory is not None:
            candidates.append((directory, name.tag + GGUF_SUFFIX))
        for parent, file_name in candidates:
            found = _match_ci(parent, file_name, want_dir=False)
            if found is not None:
                return self._emberd_inside(found)
        return None

    def _dropped_files(self) -> Iterator[tuple[ModelName, Path]]:
        """Every dropped GGUF: top-level files first, as resolve prefers them."""
        root = self._emberd.root
        entries = _sorted_entries(root)
        for entry in entries:
            if entry.is_file() and _gguf_stem(entry.name):
                yield _dropped_name(root, entry), entry
        for entry in entries:
            if entry.is_dir() and is_valid_part(entry.name):
                if entry.name.lower() in _RESERVED_DIRS:
                    continue
                for inner in _sorted_entries(entry):
                    if inner.is_file() and _gguf_stem(inner.name):
                        yield _dropped_name(root, inner), inner

    def _file_record(self, name: ModelName, path: Path) -> ModelRecord:
        try:
            st = path.stat()
        except OSError as exc:
            raise InvalidModelFile(f"cannot read: {exc.strerror}", path=path) from exc
        read_gguf_info(path)
        return ModelRecord(
            name=name,
            path=path,
            digest=self._file_digest(path, st.st_size, st.st_mtime_ns),
            size=st.st_size,
            modified_at=datetime.fromtimestamp(st.st_mtime, timezone.utc),
            params={},
            source=FILE,
        )

    def _file_digest(self, path: Path, size: int, mtime_ns: int) -> str:
        """sha256 of a dropped file, computed once per (path, size, mtime).

        One hash per file is in flight at a time, in the store's own hashing
        threads: every caller that asks meanwhile waits for that one, so a
        multi-GB file dropped in is read once, not once per request.
        """
        key = (str(path), size, mtime_ns)
        with self._digest_lock:
            cached = self._file_digests.get(key)
            if cached is not None:
                return cached
            hashing = self._hashing.get(key)
            started = hashing is None
            if hashing is None:
                hashing = _HASHERS.submit(file_digest, path)
                self._hashing[key] = hashing
        if started:  # outside the lock: a hash already done calls back at once
            hashing.add_done_callback(functools.partial(self._hashed, key))
        try:
            return hashing.result().removeprefix("sha256:")
        except OSError as exc:
            raise InvalidModelFile(f"cannot read: {exc.strerror}", path=path) from exc

    def _hashed(self, key: tuple[str, int, int], hashing: Future[str]) -> None:
        with self._digest_lock:
            self._hashing.pop(key, None)
            if not hashing.cancelled() and hashing.exception() is None:
                self._file_digests[key] = hashing.result().removeprefix("sha256:")

    def _emberd_inside(self, path: Path) -> Path:
        """`path` if it lies under the emberd store (lexically); else InvalidModelFile."""
        root = str(self._emberd.root).rstrip(os.sep) + os.sep
        normal = os.path.normpath(os.path.abspath(path))
        if not normal.startswith(root):
            raise InvalidModelFile("outside the model store", path=path)
        return Path(normal)


def _skip_broken(make: Callable[..., ModelRecord], *args: object) -> Iterator[ModelRecord]:
    """Yield the record `make(*args)` builds, or log and yield nothing when it is broken.

    Any error counts as broken, not only the expected InvalidModelFile: one
    bad entry must never fail a listing for everyone.
    """
    try:
        yield make(*args)
    except InvalidModelFile as exc:
        log.warning("skipping broken model entry: %s", exc)
    except Exception as exc:
        log.warning("skipping unreadable model entry: %r", exc)


def _gguf_stem(file_name: str) -> str | None:
    """The valid name part before a ".gguf" suffix (any case), else None."""
    if not file_name.lower().endswith(GGUF_SUFFIX):
        return None
    stem = file_name[: -len(GGUF_SUFFIX)]
    return stem if is_valid_part(stem) else None


def _dropped_name(root: Path, path: Path) -> ModelName:
    """The name a dropped file at `path` carries, spelled as on disk."""
    stem = _gguf_stem(path.name) or path.name
    if path.parent == root:
        return ModelName(DEFAULT_HOST, DEFAULT_NAMESPACE, stem, DEFAULT_TAG)
    return ModelName(DEFAULT_HOST, DEFAULT_NAMESPACE, path.parent.name, stem)


def _sorted_entries(directory: Path) -> list[Path]:
    try:
        return [directory / n for n in sorted(os.listdir(directory))]
    except OSError:
        return []


def _match_ci(directory: Path, entry: str, *, want_dir: bool) -> Path | None:
    """The file or directory `entry` of `directory`, exact spelling first, else any case."""
    name = spelling_on_disk(directory, entry)
    if name is None:
        return None
    path = directory / name
    return path if (path.is_dir() if want_dir else path.is_file()) else None
