"""Pulling models from an Ollama registry into emberd's store.

The protocol is the Docker registry v2 subset Ollama speaks. A name
`host/namespace/model:tag` is fetched as

    GET {base}/v2/{namespace}/{model}/manifests/{tag}
        Accept: application/vnd.docker.distribution.manifest.v2+json
    GET {base}/v2/{namespace}/{model}/blobs/sha256:<hex>     (may redirect)

where `base` is the configured registry URL for the default host
(registry.ollama.ai) and `https://host` for any other (`http://` when the
caller allows insecure registries).

Each blob is downloaded into `blobs/sha256-<hex>-partial`, resumed with an
HTTP `Range` request after an interruption, checked against its sha256 and
only then renamed to its real name; blobs already present are skipped. A
lock on the partial file keeps two pulls of one blob (threads or processes)
from writing it at once. The manifest is written last, atomically, so a
failed pull never leaves a model that half exists.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.client import HTTPException, HTTPResponse
from pathlib import Path
from typing import BinaryIO, TextIO, TypeVar

from models.errors import InvalidModelFile, ModelError
from models.gguf_meta import read_gguf_info
from models.names import DEFAULT_HOST, ModelName
from models.ollama_layout import MANIFEST_MEDIA_TYPE, MODEL_MEDIA_TYPE, Layer, normalize_digest
from models.store import ModelRecord, ModelStores

try:
    import fcntl
except ImportError:  # Windows: pulls of one blob are not serialised there
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = "-partial"
_CHUNK = 1 << 20
_MAX_MANIFEST_BYTES = 1 << 20
_PROGRESS_INTERVAL_S = 0.1
_RETRY_DELAY_S = 0.25
_USER_AGENT = "emberd"

_T = TypeVar("_T")


class RegistryError(ModelError):
    """A pull that failed: the registry was unreachable, refused, or sent bad data."""


class ManifestNotFound(RegistryError):
    """The registry has no manifest for the name (its answer was 404)."""

    def __init__(self) -> None:
        super().__init__("pull model manifest: file does not exist")


class DigestMismatch(RegistryError):
    """A downloaded blob whose bytes do not hash to its digest; the data was deleted."""

    def __init__(self, want: str, got: str) -> None:
        super().__init__(f"digest mismatch, file must be downloaded again: want {want}, got {got}")
        self.want = want
        self.got = got


class PullCancelled(RegistryError):
    """The caller stopped the pull; partial downloads are kept for a later resume."""

    def __init__(self) -> None:
        super().__init__("pull cancelled")


class _Interrupted(RegistryError):
    """A transfer that ended early; worth another attempt from where it stopped."""


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


@dataclass(frozen=True)
class RemoteManifest:
    """A manifest as the registry sent it."""

    config: Layer
    layers: tuple[Layer, ...]

    @property
    def blobs(self) -> tuple[Layer, ...]:
        """Every blob to fetch, in Ollama's order: the layers, then the config."""
        return (*self.layers, self.config)


def registry_base_url(name: ModelName, registry_url: str, *, insecure: bool = False) -> str:
    """The base URL that serves `name`: `registry_url` for the default host, else the host."""
    if name.host.lower() == DEFAULT_HOST:
        return registry_url.rstrip("/")
    return f"{'http' if insecure else 'https'}://{name.host}"


def manifest_url(name: ModelName, base: str) -> str:
    """The URL of the manifest of `name` under the registry `base`."""
    return f"{base}/v2/{name.namespace}/{name.model}/manifests/{name.tag}"


def blob_url(name: ModelName, base: str, digest: str) -> str:
    """The URL of a blob of `name`'s repository under the registry `base`."""
    return f"{base}/v2/{name.namespace}/{name.model}/blobs/{digest}"


def partial_path(stores: ModelStores, digest: str) -> Path:
    """Where an unfinished download of the blob `digest` is kept."""
    final = stores.blob_path(digest)
    return final.with_name(final.name + PARTIAL_SUFFIX)


def parse_manifest(data: bytes) -> RemoteManifest:
    """Read a registry manifest; RegistryError when it is not one emberd can use."""
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise RegistryError(f"pull model manifest: invalid JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("layers"), list):
        raise RegistryError("pull model manifest: no list of layers")
    if not isinstance(obj.get("config"), dict):
        raise RegistryError("pull model manifest: no config")
    layers = tuple(_parse_layer(item) for item in obj["layers"])
    if not any(layer.media_type == MODEL_MEDIA_TYPE for layer in layers):
        raise RegistryError("pull model manifest: the model has no GGUF layer")
    return RemoteManifest(config=_parse_layer(obj["config"]), layers=layers)


def _parse_layer(obj: object) -> Layer:
    if not isinstance(obj, dict):
        raise RegistryError("pull model manifest: a layer is not an object")
    media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str):
        raise RegistryError("pull model manifest: a layer lacks mediaType or digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError(f"pull model manifest: layer {digest} has no valid size")
    try:
        digest = normalize_digest(digest)  # also keeps the digest from naming a path
    except InvalidModelFile:
        raise RegistryError(f"pull model manifest: invalid digest {digest!r}") from None
    return Layer(media_type=media_type, digest=digest, size=size)


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
    cancel: threading.Event | None = None,
    timeout: float = 60.0,
) -> ModelRecord:
    """Pull `name` from its registry into emberd's store and return the stored model.

    `progress` hears each step as Ollama reports it. A transfer that breaks
    off is resumed up to `retries` times; setting `cancel` stops the pull
    between chunks (PullCancelled). Raises InvalidModelName, ManifestNotFound,
    DigestMismatch, RegistryError, InvalidModelFile (not a readable GGUF) or
    OSError (disk).
    """
    wanted = ModelName.parse(name)
    puller = _Puller(
        name=wanted,
        stores=stores,
        base=registry_base_url(wanted, registry_url, insecure=insecure),
        progress=progress,
        retries=retries,
        cancel=cancel or threading.Event(),
        timeout=timeout,
    )
    return puller.run()


class _Puller:
    """One pull: the manifest, each blob, then the manifest written into the store."""

    def __init__(
        self,
        *,
        name: ModelName,
        stores: ModelStores,
        base: str,
        progress: Callable[[PullProgress], None],
        retries: int,
        cancel: threading.Event,
        timeout: float,
    ) -> None:
        self.name = name
        self.stores = stores
        self.base = base
        self.progress = progress
        self.retries = max(0, retries)
        self.cancel = cancel
        self.timeout = timeout
        self.opener = urllib.request.build_opener()

    def run(self) -> ModelRecord:
        """Fetch the manifest and every blob, then write the manifest; the stored model."""
        self.progress(PullProgress("pulling manifest"))
        manifest = self._retrying(self._fetch_manifest)
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

    # -- the manifest

    def _fetch_manifest(self) -> RemoteManifest:
        url = manifest_url(self.name, self.base)
        try:
            with self._open(url, {"Accept": MANIFEST_MEDIA_TYPE}) as response:
                data = response.read(_MAX_MANIFEST_BYTES + 1)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                raise ManifestNotFound() from None
            raise RegistryError(f"pull model manifest: registry answered {exc.code}") from None
        except (OSError, HTTPException) as exc:
            raise _Interrupted(f"pull model manifest: {_reason(exc)}") from None
        if len(data) > _MAX_MANIFEST_BYTES:
            raise RegistryError("pull model manifest: larger than 1 MiB")
        return parse_manifest(data)

    # -- blobs

    def _pull_blob(self, layer: Layer) -> None:
        status = f"pulling {layer.digest.removeprefix('sha256:')[:12]}"

        def report(completed: int) -> None:
            self.progress(PullProgress(status, layer.digest, layer.size, completed))

        final = self.stores.blob_path(layer.digest)
        if _present(final, layer.size):
            report(layer.size)
            return
        partial = partial_path(self.stores, layer.digest)
        with _locked(partial) as fh:
            if _present(final, layer.size):  # another pull finished it while this one waited
                partial.unlink(missing_ok=True)
                report(layer.size)
                return
            self._retrying(lambda: self._download(layer, fh, report))
            _verify(layer, fh, partial)
            self.stores.adopt_blob(partial, layer.digest)

    def _download(self, layer: Layer, fh: BinaryIO, report: Callable[[int], None]) -> None:
        """Bring the partial file `fh` up to the layer's size, resuming what it holds."""
        url = blob_url(self.name, self.base, layer.digest)
        for last_try in (False, True):
            offset = _size(fh)
            if offset > layer.size:
                offset = _truncate(fh)
            report(offset)
            if offset == layer.size:
                return
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                response = self._open(url, headers)
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code == 416 and offset and not last_try:
                    _truncate(fh)  # the registry's blob is shorter than what is kept
                    continue
                raise RegistryError(
                    f"download of {layer.digest} failed: registry answered {exc.code}"
                ) from None
            except (OSError, HTTPException) as exc:
                raise _Interrupted(f"download of {layer.digest} failed: {_reason(exc)}") from None
            with response:
                if offset and not _resumes(response, offset):
                    if response.status != 200:
                        _truncate(fh)  # a range the file cannot continue from
                        continue
                    offset = _truncate(fh)  # a server that ignores Range sends it all
                self._copy(response, fh, offset, layer.size, report)
                return
        raise RegistryError(f"download of {layer.digest} failed: the registry cannot resume it")

    def _copy(
        self,
        response: HTTPResponse,
        fh: BinaryIO,
        completed: int,
        size: int,
        report: Callable[[int], None],
    ) -> None:
        last_report = time.monotonic()
        while completed <= size:  # one chunk past the size is enough to fail the digest
            if self.cancel.is_set():
                raise PullCancelled()
            try:  # what has arrived, so a stalled link can be left between chunks
                chunk = response.read1(_CHUNK)
            except (OSError, HTTPException) as exc:
                raise _Interrupted(f"download interrupted: {_reason(exc)}") from None
            if not chunk:
                break
            fh.write(chunk)
            completed += len(chunk)
            now = time.monotonic()
            if now - last_report >= _PROGRESS_INTERVAL_S:
                fh.flush()
                report(completed)
                last_report = now
        fh.flush()
        report(min(completed, size))
        if completed < size:
            raise _Interrupted(f"download interrupted after {completed} of {size} bytes")

    # -- HTTP

    def _open(self, url: str, headers: dict[str, str]) -> HTTPResponse:
        """GET `url`, following redirects; HTTPError for a 4xx/5xx answer."""
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, **headers})
        response: HTTPResponse = self.opener.open(request, timeout=self.timeout)
        return response

    def _retrying(self, attempt: Callable[[], _T]) -> _T:
        """Run `attempt`, again after an interruption, at most `retries` more times."""
        for tries in range(self.retries + 1):
            if self.cancel.is_set():
                raise PullCancelled()
            try:
                return attempt()
            except _Interrupted as exc:
                if tries == self.retries:
                    raise RegistryError(str(exc)) from None
                log.warning("%s; trying again", exc)
                if self.cancel.wait(_RETRY_DELAY_S * (tries + 1)):
                    raise PullCancelled() from None
        raise AssertionError("unreachable")


def _present(path: Path, size: int) -> bool:
    """True when a finished blob of the right size is stored at `path`."""
    try:
        return path.is_file() and path.stat().st_size == size
    except OSError:
        return False


def _resumes(response: HTTPResponse, offset: int) -> bool:
    """True when `response` continues a file at `offset` (206 with a matching range)."""
    if response.status != 206:
        return False
    content_range = response.headers.get("Content-Range", "")
    unit, _, spec = content_range.partition(" ")
    start = spec.partition("-")[0]
    return unit == "bytes" and start.isdigit() and int(start) == offset


def _verify(layer: Layer, fh: BinaryIO, partial: Path) -> None:
    """Check the downloaded bytes against the layer's digest; delete them when they differ."""
    fh.flush()
    os.fsync(fh.fileno())
    hasher = hashlib.sha256()
    fh.seek(0)
    while chunk := fh.read(_CHUNK):
        hasher.update(chunk)
    got = f"sha256:{hasher.hexdigest()}"
    if got != layer.digest:
        partial.unlink(missing_ok=True)
        raise DigestMismatch(layer.digest, got)


def _size(fh: BinaryIO) -> int:
    return os.fstat(fh.fileno()).st_size


def _truncate(fh: BinaryIO) -> int:
    """Empty the partial file (appends then start again at 0); returns 0."""
    fh.seek(0)
    fh.truncate()
    return 0


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[BinaryIO]:
    """Open (creating) `path` for appending, holding an exclusive lock on it.

    A waiter whose file was renamed or deleted by the holder meanwhile opens
    the path again, so it never writes into a finished blob.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fh: BinaryIO = open(path, "a+b")  # noqa: SIM115 - closed below or by the caller's block
        try:
            if fcntl is not None:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            if _same_file(fh, path):
                break
        except BaseException:
            fh.close()
            raise
        fh.close()
    with fh:
        yield fh


def _same_file(fh: BinaryIO, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fh.fileno()), os.stat(path))
    except OSError:
        return False


def _reason(exc: BaseException) -> str:
    """The readable cause of a transport error."""
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


# -- the command line


def _human_bytes(size: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}" if size < 10 * scale else f"{size // scale} {unit}"
    return f"{size} B"


class ProgressPrinter:
    """Prints pull progress for a terminal: one line per step and per layer.

    On a terminal a layer's line is rewritten as bytes arrive; elsewhere it is
    printed once, when the layer is complete.
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._live = out.isatty()
        self._open_line = False

    def __call__(self, event: PullProgress) -> None:
        """Show one progress report."""
        if not event.digest:
            self._end_line()
            print(event.status, file=self._out, flush=True)
            return
        percent = 100 * event.completed // event.total if event.total else 100
        line = f"{event.status}: {percent:3d}% of {_human_bytes(event.total)}"
        if self._live:
            print(f"\r{line}", end="", file=self._out, flush=True)
            self._open_line = True
        if event.completed >= event.total:
            if not self._live:
                print(line, file=self._out, flush=True)
            self._end_line()

    def _end_line(self) -> None:
        if self._open_line:
            print(file=self._out, flush=True)
            self._open_line = False


def pull_cli(
    name: str,
    stores: ModelStores,
    registry_url: str,
    *,
    insecure: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """`emberd pull NAME`: pull with progress on `out`; 0 on success, 1 with `Error: ...`."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        pull_model(name, stores, registry_url, ProgressPrinter(out), insecure=insecure)
    except (ModelError, OSError) as exc:
        print(f"Error: {exc}", file=err, flush=True)
        return 1
    return 0
