"""A hostile registry on loopback for the soak's pulls.

- `soak-stalled`: its manifest sends one byte, then nothing (until its client
  leaves, or a minute passes);
- `soak-oversized`: its manifest announces a model blob of 2^50 bytes;
- `soak-long`: its model blob sends more bytes than its manifest announces.
"""

from __future__ import annotations

import hashlib
import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_STALL_S = 60.0
_LONG_BLOB = b"\0" * 5000
_LONG_DIGEST = f"sha256:{hashlib.sha256(_LONG_BLOB).hexdigest()}"


def _layer(media_type: str, digest: str, size: int) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": size}


def _manifest(model_digest: str, size: int) -> bytes:
    config = _layer("application/vnd.docker.container.image.v1+json", "sha256:" + "c" * 64, 2)
    model = _layer("application/vnd.ollama.image.model", model_digest, size)
    body = {"schemaVersion": 2, "mediaType": _MANIFEST, "config": config, "layers": [model]}
    return json.dumps(body).encode()


MANIFESTS = {
    "soak-stalled": _manifest("sha256:" + "a" * 64, 1000),
    "soak-oversized": _manifest("sha256:" + "b" * 64, 2**50),
    "soak-long": _manifest(_LONG_DIGEST, 1000),
}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        parts = self.path.split("/")  # /v2/library/<model>/manifests/<tag>
        if len(parts) == 6 and parts[4] == "manifests" and parts[3] in MANIFESTS:
            self._send(MANIFESTS[parts[3]], stall=parts[3] == "soak-stalled")
        elif self.path.endswith(_LONG_DIGEST):
            self._send(_LONG_BLOB, stall=False)
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def _send(self, data: bytes, *, stall: bool) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not stall:
            self.wfile.write(data)
            return
        try:
            self.wfile.write(data[:1])
            self.wfile.flush()
        except OSError:  # the client left first
            self.close_connection = True
            return
        deadline = time.monotonic() + _STALL_S
        while time.monotonic() < deadline and not client_gone(self.connection):
            time.sleep(0.1)
        self.close_connection = True


def client_gone(connection: socket.socket) -> bool:
    """Whether the client of `connection` has closed its end (without reading what is left)."""
    readable, _, _ = select.select([connection], [], [], 0)
    if not readable:
        return False
    try:
        return connection.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


@contextmanager
def hostile_registry() -> Iterator[str]:
    """Serve the hostile registry on 127.0.0.1 until the block ends; yields its URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
