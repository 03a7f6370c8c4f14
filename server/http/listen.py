"""Taking the listening port before the server says it listens.

`emberd serve` binds its socket first and hands it to uvicorn, so "listening
on ..." is only ever logged once it is true. Ollama listens on the same
default port, and running beside it is the common case: when the port is
taken, `PortInUse` says by whom it looks to be (a `GET /` that answers
"Ollama is running" from a server that is not uvicorn is Ollama; from
uvicorn, another emberd) and which port to choose instead.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import socket

from emberd.server.address import join_host_port

__all__ = ["PortInUse", "bind_listener", "holder_of", "port_in_use_message"]

OLLAMA_GREETING = "Ollama is running"
# How long the look at whoever holds the port may take.
PROBE_TIMEOUT_S = 2.0
# Ports after the taken one tried when suggesting another.
SUGGESTION_RANGE = 20


class PortInUse(OSError):
    """The address to listen on is taken; the message says by whom and what to do."""


def bind_listener(host: str, port: int) -> socket.socket:
    """A socket bound to `host:port` and listening; PortInUse when the address is taken.

    Other failures (no such address, a privileged port) raise OSError as is.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: a restart need not wait out TIME_WAIT connections.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(port_in_use_message(host, port)) from None
        raise
    return sock


def holder_of(host: str, port: int) -> str | None:
    """`"Ollama"` or `"another emberd"` by how `GET /` answers on the port; None if unknown."""
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    connection = http.client.HTTPConnection(target, port, timeout=PROBE_TIMEOUT_S)
    try:
        connection.request("GET", "/")
        response = connection.getresponse()
        body = response.read(256).decode("utf-8", "replace")
        server = (response.getheader("server") or "").lower()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()
    if response.status != 200 or OLLAMA_GREETING not in body:
        return None
    return "another emberd" if server.startswith("uvicorn") else "Ollama"


def _free_port_after(host: str, port: int) -> int:
    """The first port after `port` that can be bound now (`port + 1` if none in range)."""
    for candidate in range(port + 1, min(port + 1 + SUGGESTION_RANGE, 65536)):
        with contextlib.suppress(OSError), socket.socket(_family(host), socket.SOCK_STREAM) as s:
            s.bind((host, candidate))
            return candidate
    return port + 1


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def port_in_use_message(host: str, port: int) -> str:
    """One line: the address is taken, by what it looks like, and how to choose another."""
    holder = holder_of(host, port)
    who = f" by {holder} (GET / answers {OLLAMA_GREETING!r})" if holder else ""
    other = _free_port_after(host, port)
    return (
        f"{join_host_port(host, port)} is already in use{who}; choose another port with "
        f"OLLAMA_HOST={join_host_port(host, other)} or --port {other}"
    )
