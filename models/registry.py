"""The client side of the Ollama registry protocol: URLs, manifests and blob downloads.

The protocol is the Docker registry v2 subset Ollama speaks. A name
`host/namespace/model:tag` is fetched as

    GET {base}/v2/{namespace}/{model}/manifests/{tag}
        Accept: application/vnd.docker.distribution.manifest.v2+json
    GET {base}/v2/{namespace}/{model}/blobs/sha256:<hex>     (may redirect)

where `base` is the configured registry URL for the default host
(registry.ollama.ai) and `https://host` for any other (`http://` when the
caller allows insecure registries).

`RegistryClient` fetches and checks a manifest, and downloads a blob into a
file the caller holds: a transfer that breaks off is retried, resuming with
an HTTP `Range` request from what the file already has; a cancel switch stops
it between chunks, or inside a read a stalled link holds. Where the files go,
and what a pull reports, is `models.pull`'s.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPException, HTTPResponse, HTTPSConnection
from typing import BinaryIO, TypeVar

import orjson

from emberd.models.cancel import CancelSwitch, shut_down
from emberd.models.errors import InvalidModelFile, ModelError
from emberd.models.names import DEFAULT_HOST, ModelName
from emberd.models.ollama_layout import (
    MANIFEST_MEDIA_TYPE,
    MODEL_MEDIA_TYPE,
    Layer,
    normalize_digest,
)

log = logging.getLogger(__name__)

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


class PullCancelled(RegistryError):
    """The caller stopped the pull; partial downloads are kept for a later resume."""

    def __init__(self) -> None:
        super().__init__("pull cancelled")


class RegistryUnreachable(RegistryError):
    """No connection to the registry at all (its name does not resolve, nothing listens).

    Not worth another attempt: the message names the registry tried and the
    setting that chooses another, once.
    """

    def __init__(self, base: str, reason: str) -> None:
        super().__init__(
            f"cannot reach the registry {base} ({reason}): pulling needs it; "
            "EMBERD_REGISTRY (or --registry) chooses another"
        )


# Connection failures that another attempt seconds later would meet again.
_UNREACHABLE_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL}
)


def is_unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the registry cannot be reached at all, rather than a broken transfer."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror):
        return True
    return isinstance(reason, OSError) and reason.errno in _UNREACHABLE_ERRNOS


class BlobTooLong(RegistryError):
    """The registry sent more bytes for a blob than its manifest announced; none are kept."""

    def __init__(self, layer: Layer) -> None:
        super().__init__(
            f"download of {layer.digest} failed: the registry sent more than "
            f"the {layer.size} bytes its manifest announced"
        )


class _Interrupted(RegistryError):
    """A transfer that ended early; worth another attempt from where it stopped."""


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


def parse_manifest(data: bytes) -> RemoteManifest:
    """Read a registry manifest; RegistryError when it is not one emberd can use."""
    try:
        obj = orjson.loads(data)  # bounded nesting, unlike json's
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


class RegistryClient:
    """One repository of one registry: its manifest and its blobs, over HTTP.

    Interrupted transfers are tried again up to `retries` times; setting
    `cancel` stops the client between chunks or in a stalled read (PullCancelled).
    """

    def __init__(
        self,
        name: ModelName,
        base: str,
        *,
        retries: int,
        cancel: CancelSwitch,
        timeout: float,
    ) -> None:
        self.name = name
        self.base = base
        self.retries = max(0, retries)
        self.cancel = cancel
        self.timeout = timeout
        self.opener = _cancellable_opener(cancel)

    def fetch_manifest(self) -> RemoteManifest:
        """The manifest of the client's name; ManifestNotFound when the registry has none."""
        return self._retrying(self._fetch_manifest)

    def download_blob(self, layer: Layer, fh: BinaryIO, report: Callable[[int], None]) -> None:
        """Bring the file `fh` up to `layer`'s size, resuming what it holds.

        `report(bytes_in_file)` hears the progress. The bytes are not checked
        against the digest here.
        """
        self._retrying(lambda: self._download(layer, fh, report))

    # -- the manifest

    def _fetch_manifest(self) -> RemoteManifest:
        url = manifest_url(self.name, self.base)
        try:
            with self._open(url, {"Accept": MANIFEST_MEDIA_TYPE}) as response:
                data = self._read_manifest(response)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 404:
                raise ManifestNotFound() from None
            raise RegistryError(f"pull model manifest: registry answered {exc.code}") from None
        except (OSError, HTTPException) as exc:
            if self.cancel.is_set():
                raise PullCancelled() from None
            if is_unreachable(exc):
                raise RegistryUnreachable(self.base, _reason(exc)) from None
            raise _Interrupted(f"pull model manifest: {_reason(exc)}") from None
        return parse_manifest(data)

    def _read_manifest(self, response: HTTPResponse) -> bytes:
        """The manifest's bytes, which must all arrive within the client's timeout.

        The socket timeout bounds each read only: a registry that drips a
        byte every few seconds would hold the pull for ever.
        """
        deadline = time.monotonic() + self.timeout
        data = b""
        while chunk := response.read1(_MAX_MANIFEST_BYTES + 1 - len(data)):
            data += chunk
            if self.cancel.is_set():
                raise PullCancelled()
            if len(data) > _MAX_MANIFEST_BYTES:
                raise RegistryError("pull model manifest: larger than 1 MiB")
            if time.monotonic() > deadline:
                raise _Interrupted(
                    f"pull model manifest: not received within {self.timeout:g} seconds"
                )
        if self.cancel.is_set():  # a cut read ends like a short one
            raise PullCancelled()
        return data

    # -- blobs

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
                _check_length(response, offset, layer)
                self._copy(response, fh, offset, layer, report)
                return
        raise RegistryError(f"download of {layer.digest} failed: the registry cannot resume it")

    def _copy(
        self,
        response: HTTPResponse,
        fh: BinaryIO,
        completed: int,
        layer: Layer,
        report: Callable[[int], None],
    ) -> None:
        size = layer.size
        last_report = time.monotonic()
        while True:
            if self.cancel.is_set():
                raise PullCancelled()
            try:  # what has arrived, so a stalled link can be left between chunks
                # Never more than one byte past the announced size is read.
                chunk = response.read1(min(_CHUNK, size - completed + 1))
            except (OSError, HTTPException) as exc:
                raise self._ended_early(f"download interrupted: {_reason(exc)}") from None
            if not chunk:
                break
            if completed + len(chunk) > size:
                _truncate(fh)
                raise BlobTooLong(layer)
            fh.write(chunk)
            completed += len(chunk)
            now = time.monotonic()
            if now - last_report >= _PROGRESS_INTERVAL_S:
                fh.flush()
                report(completed)
                last_report = now
        fh.flush()
        report(completed)
        if completed < size:
            raise self._ended_early(f"download interrupted after {completed} of {size} bytes")

    def _ended_early(self, message: str) -> Exception:
        """The error for a transfer that stopped short: the switch's cut, or the link's."""
        return PullCancelled() if self.cancel.is_set() else _Interrupted(message)

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


def _check_length(response: HTTPResponse, offset: int, layer: Layer) -> None:
    """BlobTooLong, before a byte is read, when the answer says it is longer than the blob."""
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and offset + int(length) > layer.size:
        raise BlobTooLong(layer)


def _cancellable_opener(cancel: CancelSwitch) -> urllib.request.OpenerDirector:
    """An opener whose every connection is shut down when `cancel` is set.

    Its sockets are cut from the moment they connect, so a registry that
    never sends its headers holds a cancelled pull no longer than one that
    stalls a body.
    """

    def watched(base: type[HTTPConnection]) -> type[HTTPConnection]:
        class Watched(base):  # type: ignore[valid-type,misc]
            def connect(self) -> None:
                super().connect()
                cancel.add(shut_down(self.sock.fileno))

        return Watched

    http_connection, https_connection = watched(HTTPConnection), watched(HTTPSConnection)

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req: urllib.request.Request) -> HTTPResponse:
            return self.do_open(http_connection, req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req: urllib.request.Request) -> HTTPResponse:
            return self.do_open(
                https_connection,
                req,
                context=self._context,  # type: ignore[attr-defined]
            )

    return urllib.request.build_opener(Http, Https)


def _resumes(response: HTTPResponse, offset: int) -> bool:
    """True when `response` continues a file at `offset` (206 with a matching range)."""
    if response.status != 206:
        return False
    content_range = response.headers.get("Content-Range", "")
    unit, _, spec = content_range.partition(" ")
    start = spec.partition("-")[0]
    return unit == "bytes" and start.isdigit() and int(start) == offset


def _size(fh: BinaryIO) -> int:
    return os.fstat(fh.fileno()).st_size


def _truncate(fh: BinaryIO) -> int:
    """Empty the partial file (appends then start again at 0); returns 0."""
    fh.seek(0)
    fh.truncate()
    return 0


def _reason(exc: BaseException) -> str:
    """The readable cause of a transport error."""
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__
