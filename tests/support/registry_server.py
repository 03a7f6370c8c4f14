"""A small Ollama-style registry on loopback for the pull tests.

It serves manifests and blobs from dictionaries over real HTTP
(`ThreadingHTTPServer` on 127.0.0.1, an ephemeral port) and has switches for
the failures a pull must survive: a corrupted blob, a connection cut after
some bytes (once), a server that ignores `Range`, blobs served through a
redirect. Every request is recorded, with how many body bytes it was sent.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import uvicorn
from starlette.applications import Starlette

from emberd.server.config import Settings
from emberd.server.http.app import create_app
from scripts.soak_lib.registry import client_gone

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
PARAMS_MEDIA_TYPE = "application/vnd.ollama.image.params"

_MANIFEST_PATH = re.compile(r"/v2/([^/]+)/([^/]+)/manifests/([^/]+)")
_BLOB_PATH = re.compile(r"/v2/([^/]+)/([^/]+)/blobs/(sha256:[0-9a-f]{64})")
_FILE_PATH = re.compile(r"/files/(sha256:[0-9a-f]{64})")
_RANGE = re.compile(r"bytes=(\d+)-")
STALL_LIMIT_S = 30.0  # a stalled blob goes on by itself after this, so no test hangs


def digest_of(data: bytes) -> str:
    """The "sha256:<hex>" digest of `data`."""
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@dataclass(frozen=True)
class Request:
    """One request the registry answered."""

    path: str
    range: str | None  # the Range header, if sent
    accept: str | None  # the Accept header, if sent
    status: int
    sent: int  # body bytes written


@dataclass(frozen=True)
class Published:
    """A model the registry serves: its blobs' digests and the manifest."""

    model: str  # digest of the GGUF blob
    params: str  # "" when the model has no params layer
    config: str
    manifest: dict[str, Any]


@dataclass
class RegistryState:
    """What the registry serves and how it misbehaves; tests change it freely."""

    manifests: dict[str, bytes] = field(default_factory=dict)  # "ns/model:tag" -> JSON
    blobs: dict[str, bytes] = field(default_factory=dict)  # digest -> bytes
    corrupt: set[str] = field(default_factory=set)  # digests served with a byte flipped
    drop_after: dict[str, int] = field(default_factory=dict)  # digest -> bytes, then cut (once)
    ignore_range: bool = False
    redirect_blobs: bool = False  # blobs answer 307 to /files/<digest>
    # digest -> (bytes, event): send that many bytes, then wait for the event (once)
    stall: dict[str, tuple[int, threading.Event]] = field(default_factory=dict)
    # Set: manifests send their first byte, then wait for the event
    stall_manifests: threading.Event | None = None
    stalled: int = 0  # manifests that began to stall
    # Set: blobs answer 307 to this base URL's /files/<digest> (one that fails, say)
    redirect_to: str | None = None
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(
        self,
        repo: str,
        tag: str,
        gguf: bytes,
        params: Mapping[str, Any] | None = None,
    ) -> Published:
        """Serve `gguf` (and a params layer) as `repo:tag`, e.g. ("library/tiny", "latest")."""
        layers = [self._blob(MODEL_MEDIA_TYPE, gguf)]
        if params is not None:
            layers.append(self._blob(PARAMS_MEDIA_TYPE, json.dumps(params).encode()))
        config_bytes = json.dumps(
            {"model_format": "gguf", "model_family": "bert", "rootfs": {"type": "layers"}}
        ).encode()
        config = self._blob(CONFIG_MEDIA_TYPE, config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config,
            "layers": layers,
        }
        self.manifests[f"{repo}:{tag}"] = json.dumps(manifest).encode()
        return Published(
            model=layers[0]["digest"],
            params=layers[1]["digest"] if params is not None else "",
            config=config["digest"],
            manifest=manifest,
        )

    def _blob(self, media_type: str, data: bytes) -> dict[str, Any]:
        digest = digest_of(data)
        self.blobs[digest] = data
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def blob_requests(self, digest: str) -> list[Request]:
        """The requests that fetched the blob `digest` (redirects not counted)."""
        with self.lock:
            return [r for r in self.requests if r.path.endswith(digest) and r.status in (200, 206)]

    def abandoned(self) -> int:
        """How many stalled answers their clients left."""
        with self.lock:
            return sum(1 for r in self.requests if r.status == 499)

    def clear_requests(self) -> None:
        """Forget the requests recorded so far."""
        with self.lock:
            self.requests.clear()


class _Handler(BaseHTTPRequestHandler):
    state: RegistryState  # set on the subclass made per server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet tests

    def do_GET(self) -> None:
        if match := _MANIFEST_PATH.fullmatch(self.path):
            namespace, model, tag = match.groups()
            data = self.state.manifests.get(f"{namespace}/{model}:{tag}")
            if data is None:
                self._answer(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
            elif self.state.stall_manifests is not None:
                self._stalled(data, self.state.stall_manifests)
            else:
                self._answer(200, data, MANIFEST_MEDIA_TYPE)
        elif match := _BLOB_PATH.fullmatch(self.path):
            digest = match.group(3)
            if (self.state.redirect_blobs or self.state.redirect_to) and digest in self.state.blobs:
                self.send_response(307)
                self.send_header("Location", f"{self.state.redirect_to or ''}/files/{digest}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                self._record(307, 0)
            else:
                self._blob(digest)
        elif match := _FILE_PATH.fullmatch(self.path):
            self._blob(match.group(1))
        else:
            self._answer(404, b"not found")

    def _blob(self, digest: str) -> None:
        state = self.state
        data = state.blobs.get(digest)
        if data is None:
            self._answer(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
            return
        if digest in state.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start = 0
        wanted = _RANGE.fullmatch(self.headers.get("Range") or "")
        if wanted and not state.ignore_range:
            start = int(wanted.group(1))
            if start >= len(data):
                self._answer(416, b"")
                return
        with state.lock:
            cut = state.drop_after.pop(digest, None)
            pause = state.stall.pop(digest, None)
        status = 206 if start else 200
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(data) - start))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        body = data[start:] if cut is None else data[start : start + cut]
        if pause is not None:
            self.wfile.write(body[: pause[0]])
            self.wfile.flush()
            pause[1].wait(STALL_LIMIT_S)
            body, sent_first = body[pause[0] :], pause[0]
        else:
            sent_first = 0
        self.wfile.write(body)
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True  # the client sees the body end early
        self._record(status, sent_first + len(body))

    def _stalled(self, data: bytes, release: threading.Event) -> None:
        """Send the first byte of `data`, wait for `release`, then the rest.

        A client that goes away meanwhile is recorded at once, with status 499.
        """
        self.send_response(200)
        self.send_header("Content-Type", MANIFEST_MEDIA_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:1])
        self.wfile.flush()
        with self.state.lock:
            self.state.stalled += 1
        deadline = time.monotonic() + STALL_LIMIT_S
        while not release.wait(0.02) and time.monotonic() < deadline:
            if client_gone(self.connection):
                self.close_connection = True
                self._record(499, 1)
                return
        self.wfile.write(data[1:])
        self._record(200, len(data))

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self._record(status, len(body))  # before the client can read it and ask again
        self.wfile.write(body)

    def _record(self, status: int, sent: int) -> None:
        request = Request(
            path=self.path,
            range=self.headers.get("Range"),
            accept=self.headers.get("Accept"),
            status=status,
            sent=sent,
        )
        with self.state.lock:
            self.state.requests.append(request)


@dataclass(frozen=True)
class RegistryServer:
    """A running registry: its base URL and its state."""

    url: str
    state: RegistryState


def manage_app(settings: Settings) -> Starlette:
    """The server's app for `settings` (it carries the pull and delete routes)."""
    return create_app(settings)


@contextmanager
def serving(app: Starlette) -> Iterator[tuple[str, uvicorn.Server]]:
    """Serve `app` with uvicorn on 127.0.0.1 until the block ends; yields (URL, server)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-emberd", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "the server did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def registry_server() -> Iterator[RegistryServer]:
    """Serve a fresh, empty registry on 127.0.0.1 until the block ends."""
    state = RegistryState()
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        yield RegistryServer(url=f"http://127.0.0.1:{httpd.server_address[1]}", state=state)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
