"""How uvicorn is set up: header size and header time bounds, keep-alive, grace."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime

import httpx
import pytest

from emberd.server.cli.main import build_parser, build_settings
from emberd.server.config import ConfigError, Settings
from emberd.server.http.serving import (
    KEEP_ALIVE_S,
    MAX_CONCURRENCY,
    BoundedHttpProtocol,
    GracefulServer,
    Listener,
    uvicorn_config,
)
from tests.support.harness import LiveServer, ServerFactory, wait_until


def connect(live: LiveServer) -> socket.socket:
    host, port = live.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.settimeout(10)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_the_serve_command_sets_every_limit() -> None:
    settings = Settings.from_env({"HOME": "/h", "EMBERD_SHUTDOWN_GRACE": "3s"})
    config = uvicorn_config(object(), Listener.from_settings(settings))
    assert config.http is BoundedHttpProtocol
    assert config.timeout_keep_alive == KEEP_ALIVE_S
    assert config.limit_concurrency == MAX_CONCURRENCY
    assert config.timeout_graceful_shutdown == 3.0
    assert Settings.from_env({"HOME": "/h"}).shutdown_grace == 10.0


def send_until_closed(sock: socket.socket, first: bytes, chunk: bytes, times: int) -> bytes:
    """Send `first`, `chunk` `times` times and the end of the headers; the server's answer.

    A server that closes with unread data resets the connection, which can
    swallow its answer: then the answer is empty, and the close is what counts.
    """
    try:
        sock.sendall(first)
        for _ in range(times):
            sock.sendall(chunk)
        sock.sendall(b"\r\n\r\n")  # the end of the headers
    except ConnectionError:
        pass
    try:
        return read_all(sock)  # a server that keeps the connection times this out
    except ConnectionError:
        return b""


@pytest.mark.parametrize(
    "line", [b"X-Filler: " + b"a" * 1000 + b"\r\n", b"b" * 1024], ids=["many", "one-huge"]
)
def test_headers_over_the_bound_are_refused(server: LiveServer, line: bytes) -> None:
    first = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + (b"" if line.endswith(b"\n") else b"C: ")
    times = BoundedHttpProtocol.max_header_bytes // len(line) * 4
    with connect(server) as sock:
        answer = send_until_closed(sock, first, line, times)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:100]  # never a 200
    assert server.client.get("/").text == "Ollama is running"


def test_normal_headers_are_served(server: LiveServer) -> None:
    cookies = "; ".join(f"c{i}={'v' * 100}" for i in range(100))  # 10 KiB of cookies
    assert server.client.get("/api/version", headers={"Cookie": cookies}).status_code == 200


@contextlib.contextmanager
def header_bounded(
    serve: ServerFactory, monkeypatch: pytest.MonkeyPatch, seconds: float
) -> Iterator[socket.socket]:
    """A connection to a server that gives a request's headers `seconds` to arrive."""
    monkeypatch.setattr(BoundedHttpProtocol, "header_timeout_s", seconds)
    with connect(serve()) as sock:
        yield sock


def seconds_until_closed(sock: socket.socket) -> float:
    """Seconds until the server closes `sock` without an answer."""
    started = time.monotonic()
    assert read_all(sock) == b""
    return time.monotonic() - started


@pytest.mark.parametrize("partial", [b"", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"])
def test_a_connection_that_never_finishes_its_headers_is_closed(
    serve: ServerFactory, monkeypatch: pytest.MonkeyPatch, partial: bytes
) -> None:
    with header_bounded(serve, monkeypatch, 0.5) as sock:
        sock.sendall(partial)
        assert seconds_until_closed(sock) < 5


def test_a_later_request_that_never_finishes_its_headers_is_closed_in_its_own_time(
    serve: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with header_bounded(serve, monkeypatch, 0.5) as sock:
        sock.sendall(b"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        time.sleep(0.3)  # the connection's first deadline is near; this request's is not
        sock.sendall(b"GET /api/version HTTP/1.1\r\n")
        # Half a second from its own start, not from the first request's.
        assert 0.4 < seconds_until_closed(sock) < 5


def test_a_slow_but_steady_client_is_served(
    serve: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    with header_bounded(serve, monkeypatch, 1.0) as sock:
        for _ in range(2):  # two requests on one keep-alive connection
            time.sleep(0.6)  # idle between requests does not count against the headers
            sock.sendall(b"GET /api/version HTTP/1.1\r\n")
            time.sleep(0.3)
            sock.sendall(b"Host: 127.0.0.1\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize(("flag", "seconds"), [("2s", 2.0), ("30", 30.0), ("0", 0.0), ("1m", 60.0)])
def test_the_shutdown_grace_flag(flag: str, seconds: float) -> None:
    args = build_parser().parse_args(["serve", "--shutdown-grace", flag])
    settings = build_settings(args, {"HOME": "/h", "EMBERD_SHUTDOWN_GRACE": "5"})
    assert settings.shutdown_grace == seconds


@pytest.mark.parametrize("value", ["-1", "soon", "-5s"])
def test_a_bad_shutdown_grace_names_its_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="EMBERD_SHUTDOWN_GRACE"):
        Settings.from_env({"HOME": "/h", "EMBERD_SHUTDOWN_GRACE": value})


# -- an idle server sleeps -----------------------------------------------------------


def test_an_idle_server_does_not_tick_and_wakes_for_a_request(serve: ServerFactory) -> None:
    """uvicorn's loop ticks ten times a second; this one sleeps while no connection is open."""
    server = serve()
    uvicorn_server = server.server
    assert isinstance(uvicorn_server, GracefulServer)
    server.client.close()  # no keep-alive connection left open
    ticks: list[float] = []
    original = uvicorn_server.on_tick

    async def counting(counter: int) -> bool:
        ticks.append(time.monotonic())
        return await original(counter)

    uvicorn_server.on_tick = counting  # type: ignore[method-assign]
    time.sleep(0.3)  # the last connection's ticks end
    ticks.clear()
    time.sleep(1.0)
    assert ticks == []  # not ten a second
    with httpx.Client(base_url=server.url) as client:
        before = time.time()
        response = client.get("/api/version")
    assert response.status_code == 200
    wait_until(lambda: bool(ticks))  # the connection woke the loop
    # The Date header is fresh, not the one from before the idle spell.
    date = parsedate_to_datetime(response.headers["date"]).timestamp()
    assert date >= int(before) - 1
