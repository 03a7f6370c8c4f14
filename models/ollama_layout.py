"""Ollama's on-disk layout of manifests and blobs, read and written.

    <root>/manifests/<host>/<namespace>/<model>/<tag>   JSON manifest
    <root>/blobs/sha256-<hex>                           content-addressed blobs

A manifest (schemaVersion 2) has a `config` layer and a list of `layers`,
each with `mediaType`, `digest` ("sha256:<hex>") and `size`. Directory and
file names are matched case-insensitively, as names are. Writes go to a
temporary file in the target directory, are flushed to disk and then
renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import orjson

from emberd.models.errors import InvalidModelFile
from emberd.models.names import ModelName, is_valid_host, is_valid_part

log = logging.getLogger(__name__)

MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
PARAMS_MEDIA_TYPE = "application/vnd.ollama.image.params"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"

_DIGEST = re.compile(r"sha256[:-]([0-9a-f]{64})")
_MAX_MANIFEST_BYTES = 1 << 20
_MAX_PARAMS_BYTES = 1 << 20
_COPY_CHUNK = 4 << 20
TEMP_PREFIX = ".tmp-"  # never a valid name part, so never listed


@dataclass(frozen=True)
class Layer:
    """One entry of a manifest: a blob and what it holds."""

    media_type: str
    digest: str  # "sha256:<hex>"
    size: int

    def to_json(self) -> dict[str, object]:
        """The layer as it is written in a manifest."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}

    @classmethod
    def from_json(cls, obj: object, where: Path) -> Layer:
        """Read a layer of the manifest at `where`; raise InvalidModelFile if malformed."""
        if not isinstance(obj, dict):
            raise InvalidModelFile("a layer is not an object", path=where)
        media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
        if not isinstance(media_type, str) or not isinstance(digest, str):
            raise InvalidModelFile("a layer lacks mediaType or digest", path=where)
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidModelFile(f"layer {digest} has no valid size", path=where)
        return cls(media_type=media_type, digest=digest, size=size)


@dataclass(frozen=True)
class Manifest:
    """A manifest read from disk."""

    name: ModelName  # spelled as on disk
    path: Path
    digest: str  # hex sha256 of the manifest file's bytes
    config: Layer | None
    layers: tuple[Layer, ...]
    modified_at: datetime

    def layer(self, media_type: str) -> Layer | None:
        """The first layer of this media type, if any."""
        return next((x for x in self.layers if x.media_type == media_type), None)

    @property
    def size(self) -> int:
        """The bytes of every layer and the config, as Ollama counts a model's size."""
        config = self.config.size if self.config else 0
        return config + sum(x.size for x in self.layers)

    def digests(self) -> set[str]:
        """Every blob digest this manifest refers to, as "sha256:<hex>"."""
        blobs = [*self.layers, *([self.config] if self.config else [])]
        return {normalize_digest(x.digest) for x in blobs}


@dataclass(frozen=True)
class ConfigDetails:
    """What a manifest's config blob says about the model, as Ollama's listing shows it.

    Models pulled from Ollama's registry carry these (e.g. parameter size
    "23M" where the GGUF's own count would print "22.57M"); a field the blob
    lacks is None.
    """

    model_format: str | None
    family: str | None
    families: tuple[str, ...] | None
    parameter_size: str | None
    quantization_level: str | None


def normalize_digest(digest: str) -> str:
    """Return "sha256:<hex>" for "sha256:<hex>" or "sha256-<hex>"; else InvalidModelFile."""
    match = _DIGEST.fullmatch(digest)
    if match is None:
        raise InvalidModelFile(f"invalid blob digest {digest!r}")
    return f"sha256:{match.group(1)}"


class ManifestStore:
    """Manifests and blobs under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.abspath(root))
        self.manifests_dir = self.root / "manifests"
        self.blobs_dir = self.root / "blobs"
        # Held while manifests change, so a delete's blob sweep sees a settled set.
        self._write_lock = threading.Lock()

    # -- reading

    def blob_path(self, digest: str) -> Path:
        """Where the blob of `digest` lives (whether or not it exists)."""
        hex_digest = normalize_digest(digest).removeprefix("sha256:")
        return self._inside(self.blobs_dir / f"sha256-{hex_digest}")

    def find(self, name: ModelName) -> Path | None:
        """The manifest file of `name`, matching each part case-insensitively."""
        name.check()
        path = self.manifests_dir
        for part in _parts(name):
            found = _match_entry(path, part)
            if found is None:
                return None
            path = found
        return self._inside(path) if path.is_file() else None

    def manifests(self) -> Iterator[tuple[ModelName, Path]]:
        """Every manifest file whose path spells a valid name."""
        for host in _subdirs(self.manifests_dir, is_valid_host):
            for namespace in _subdirs(host, is_valid_part):
                for model in _subdirs(namespace, is_valid_part):
                    for tag in _entries(model, is_valid_part):
                        if tag.is_file():
                            yield ModelName(host.name, namespace.name, model.name, tag.name), tag

    def read(self, name: ModelName, path: Path) -> Manifest:
        """Parse the manifest at `path`; raise InvalidModelFile when it is not one."""
        try:
            data = _read_limited(path, _MAX_MANIFEST_BYTES)
            mtime = path.stat().st_mtime
        except OSError as exc:
            raise InvalidModelFile(f"cannot read manifest: {exc.strerror}", path=path) from exc
        try:
            # orjson bounds the nesting: a hostile file is a ValueError, not a RecursionError.
            obj = orjson.loads(data)
        except ValueError as exc:
            raise InvalidModelFile(f"manifest is not valid JSON: {exc}", path=path) from exc
        if not isinstance(obj, dict) or not isinstance(obj.get("layers"), list):
            raise InvalidModelFile("manifest has no list of layers", path=path)
        config = obj.get("config")
        return Manifest(
            name=name,
            path=path,
            digest=hashlib.sha256(data).hexdigest(),
            config=Layer.from_json(config, path) if config else None,
            layers=tuple(Layer.from_json(x, path) for x in obj["layers"]),
            modified_at=datetime.fromtimestamp(mtime, timezone.utc),
        )

    def read_params(self, manifest: Manifest) -> dict[str, object]:
        """The default options of the manifest's params layer; {} when it has none."""
        layer = manifest.layer(PARAMS_MEDIA_TYPE)
        if layer is None:
            return {}
        path = self.blob_path(layer.digest)
        try:
            params = orjson.loads(_read_limited(path, _MAX_PARAMS_BYTES))
        except OSError as exc:
            raise InvalidModelFile(f"cannot read params: {exc.strerror}", path=path) from exc
        except ValueError as exc:
            raise InvalidModelFile(f"params are not valid JSON: {exc}", path=path) from exc
        if not isinstance(params, dict):
            raise InvalidModelFile("params are not a JSON object", path=path)
        return params

    def read_config(self, manifest: Manifest) -> ConfigDetails | None:
        """The details in the manifest's config blob; None when absent or unreadable."""
        if manifest.config is None:
            return None
        try:
            path = self.blob_path(manifest.config.digest)
            obj = orjson.loads(_read_limited(path, _MAX_PARAMS_BYTES))
        except (OSError, ValueError, InvalidModelFile) as exc:
            log.warning("%s: config blob unreadable: %s", manifest.path, exc)
            return None
        if not isinstance(obj, dict):
            return None
        families = obj.get("model_families")
        return ConfigDetails(
            model_format=_str_or_none(obj.get("model_format")),
            family=_str_or_none(obj.get("model_family")),
            families=tuple(families)
            if isinstance(families, list) and all(isinstance(x, str) for x in families)
            else None,
            parameter_size=_str_or_none(obj.get("model_type")),
            quantization_level=_str_or_none(obj.get("file_type")),
        )

    # -- writing

    def write_blob(self, chunks: Iterable[bytes], expected_digest: str | None = None) -> str:
        """Store the bytes of `chunks` as a blob; return its "sha256:<hex>" digest.

        With `expected_digest`, bytes that hash otherwise are discarded and
        InvalidModelFile is raised.
        """
        expected = normalize_digest(expected_digest) if expected_digest else None
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=self.blobs_dir)
        tmp = Path(tmp_name)
        try:
            hasher = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    hasher.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            digest = f"sha256:{hasher.hexdigest()}"
            if expected is not None and digest != expected:
                raise InvalidModelFile(f"blob digest mismatch: expected {expected}, got {digest}")
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.blob_path(digest))
            fsync_dir(self.blobs_dir)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return digest

    def adopt_blob(self, path: Path, digest: str) -> None:
        """Move the finished file `path`, whose sha256 is `digest`, into the blobs.

        A rename on the same filesystem (no copy of a large GGUF); the caller
        has verified `digest`.
        """
        target = self.blob_path(digest)
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o644)
        try:
            os.replace(path, target)
        except OSError:  # another filesystem: copy
            self.write_blob_from_file(path, digest)
            path.unlink(missing_ok=True)
            return
        fsync_dir(self.blobs_dir)

    def write_blob_from_file(self, src: Path, expected_digest: str | None = None) -> str:
        """Copy the file `src` into the blobs; return its "sha256:<hex>" digest."""
        with open(src, "rb") as f:
            return self.write_blob(iter(lambda: f.read(_COPY_CHUNK), b""), expected_digest)

    def write_manifest(self, name: ModelName, layers: list[Layer], config: Layer) -> None:
        """Write the manifest of `name`, replacing any; every blob must already exist."""
        name.check()
        for layer in (config, *layers):
            if not self.blob_path(layer.digest).is_file():
                raise InvalidModelFile(f"cannot write manifest of {name}: no blob {layer.digest}")
        body = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config.to_json(),
            "layers": [x.to_json() for x in layers],
        }
        data = json.dumps(body, separators=(",", ":")).encode()
        with self._write_lock:
            path = self._manifest_path_for_write(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, data)

    def delete(self, name: ModelName) -> bool:
        """Remove the manifest of `name` and blobs nothing else uses; False if absent."""
        with self._write_lock:
            path = self.find(name)
            if path is None:
                return False
            try:
                doomed = self.read(name, path).digests()
            except InvalidModelFile as exc:
                log.warning("deleting unreadable manifest; its blobs are kept: %s", exc)
                doomed = set()
            path.unlink()
            self._prune_dirs(path.parent)
            if doomed:
                for digest in doomed - self.referenced_digests():
                    self.blob_path(digest).unlink(missing_ok=True)
            return True

    # -- helpers

    def is_blob_name(self, name: str) -> bool:
        """Whether `name` is a finished blob's file name (`sha256-<hex>`)."""
        return _DIGEST.fullmatch(name) is not None

    def digest_of(self, name: str) -> str:
        """The "sha256:<hex>" digest a blob file name stands for."""
        return normalize_digest(name)

    def referenced_digests(self) -> set[str]:
        """Digests used by the manifests; every blob's digest if one is unreadable."""
        used: set[str] = set()
        for other_name, other_path in self.manifests():
            try:
                used |= self.read(other_name, other_path).digests()
            except InvalidModelFile as exc:
                # It may refer to anything: keep every blob rather than guess.
                log.warning("keeping blobs, a manifest is unreadable: %s", exc)
                return {normalize_digest(p.name) for p in self._blob_files()}
        return used

    def _blob_files(self) -> list[Path]:
        return [p for p in _entries(self.blobs_dir, _DIGEST.fullmatch) if p.is_file()]

    def _manifest_path_for_write(self, name: ModelName) -> Path:
        """The manifest path of `name`, reusing directories that differ only in case."""
        path = self.manifests_dir
        for part in _parts(name):
            path = _match_entry(path, part) or path / part
        return self._inside(path)

    def _prune_dirs(self, directory: Path) -> None:
        """Remove empty directories from `directory` up to (not including) manifests/."""
        while directory != self.manifests_dir and self.manifests_dir in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    def _inside(self, path: Path) -> Path:
        """Return `path` when it lies under this store's root; else raise.

        The test is lexical (no symlinks followed), so links a user placed in
        the store on purpose keep working while no name can climb out of it.
        """
        normal = os.path.normpath(os.path.abspath(path))
        if not normal.startswith(str(self.root).rstrip(os.sep) + os.sep):
            raise InvalidModelFile("outside the model store", path=path)
        return Path(normal)


def _parts(name: ModelName) -> tuple[str, str, str, str]:
    return (name.host, name.namespace, name.model, name.tag)


def _entries(directory: Path, valid: Callable[[str], object] | None) -> list[Path]:
    """Entries of `directory` whose names pass `valid`, sorted; [] if unreadable."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    return [directory / n for n in names if valid is None or valid(n)]


def _subdirs(directory: Path, valid: Callable[[str], object]) -> list[Path]:
    return [p for p in _entries(directory, valid) if p.is_dir()]


def _match_entry(directory: Path, part: str) -> Path | None:
    """The entry of `directory` named `part`, the exact spelling first, else any case."""
    name = spelling_on_disk(directory, part)
    return None if name is None else directory / name


def spelling_on_disk(directory: Path, name: str) -> str | None:
    """`name` if `directory` has an entry spelled so, else the first entry equal in any case.

    Listing rather than testing the path keeps the on-disk spelling also on
    file systems that ignore case.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return None
    if name in names:
        return name
    wanted = name.lower()
    return min((n for n in names if n.lower() == wanted), default=None)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _read_limited(path: Path, limit: int) -> bytes:
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InvalidModelFile(f"larger than {limit} bytes", path=path)
    return data


def _atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a flushed temporary file and a rename."""
    fd, tmp_name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def file_digest(path: Path) -> str:
    """The "sha256:<hex>" digest of a file's bytes."""
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_COPY_CHUNK):
            hasher.update(chunk)
    return f"sha256:{hasher.hexdigest()}"


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable where the platform allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
