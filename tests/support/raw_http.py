"""A request sent by hand on a socket, for tests that leave mid-request."""

from __future__ import annotations

import socket


def raw_post(url: str, path: str, body: bytes, declared: int | None = None) -> socket.socket:
    """Open a connection to `url` and send a POST (headers, then `body`); the caller closes it.

    `declared` is the Content-Length to announce, when it should differ from the body's.
    """
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    length = len(body) if declared is None else declared
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n\r\n".encode()
        + body
    )
    return sock
