"""Slow and refused bodies: a body must arrive in time (408), and a refusal never reads one.

Each case talks on a raw socket, so the test decides when every byte is sent
and can see the connection close.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from emberd.server.config import Settings
from tests.support.harness import DEADLINE_S, LiveServer, Stores, running_server, settings_for

BODY_TIMEOUT_S = 1.0
TRICKLE_S = 0.2  # a byte this often: the body never finishes within the timeout


def test_the_body_timeout_defaults_to_a_minute_and_has_a_variable() -> None:
    assert Settings.from_env({"HOME": "/h"}).body_timeout == 60.0
    assert Settings.from_env({"HOME": "/h", "EMBERD_BODY_TIMEOUT": "5s"}).body_timeout == 5.0
    assert Settings.from_env({"HOME": "/h"}, body_timeout="2m").body_timeout == 120.0


@pytest.fixture(scope="module")
def impatient(stores: Stores) -> Iterator[LiveServer]:
    with running_server(settings_for(stores, body_timeout=BODY_TIMEOUT_S)) as live:
        yield live


@pytest.fixture(scope="module")
def keyed(stores: Stores) -> Iterator[LiveServer]:
    with running_server(settings_for(stores, api_keys=("k",))) as live:
        yield live


class Trickle:
    """A POST whose body is sent one byte at a time until the server closes the connection."""

    def __init__(self, url: str, path: str, headers: str = "") -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)))
        self.sock.settimeout(DEADLINE_S)
        self.sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: 100000\r\n{headers}\r\n".encode()
        )
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, daemon=True)
        self._thread.start()

    def _drip(self) -> None:
        while not self._stop.wait(TRICKLE_S):
            try:
                self.sock.sendall(b" ")
            except OSError:
                return
            self.sent += 1

    def answer_and_close(self) -> tuple[bytes, float]:
        """Everything the server sends until it closes, and how long that took."""
        started = time.monotonic()
        data = b""
        try:
            while chunk := self.sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass  # closed while the trickle still sent: a reset, after the answer
        except TimeoutError:
            pytest.fail(f"the connection stayed open; received {data!r}")
        finally:
            self._stop.set()
            self._thread.join()
            self.sock.close()
        return data, time.monotonic() - started


@pytest.mark.parametrize("path", ["/api/embed", "/v1/embeddings"])
def test_a_trickled_body_gets_408_and_a_closed_connection(impatient: LiveServer, path: str) -> None:
    data, took = Trickle(impatient.url, path).answer_and_close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), data
    assert b"connection: close" in head.lower()
    assert b"request body not received within 1 seconds (set by EMBERD_BODY_TIMEOUT)" in body
    assert took < BODY_TIMEOUT_S + 3


def test_a_body_that_arrives_in_time_is_served(impatient: LiveServer) -> None:
    response = impatient.client.post("/api/embed", json={"model": "tiny", "input": "sky"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ("", b"401"),
        ("Authorization: Bearer wrong\r\n", b"401"),
        ("Origin: https://evil.example\r\n", b"403"),
    ],
)
def test_a_refusal_closes_without_reading_the_body(
    keyed: LiveServer, headers: str, status: bytes
) -> None:
    trickle = Trickle(keyed.url, "/api/embed", headers)
    data, took = trickle.answer_and_close()
    assert data.startswith(b"HTTP/1.1 " + status + b" "), data
    assert took < 2.0  # at once: this server's body timeout is a minute
    assert trickle.sent < 100_000
