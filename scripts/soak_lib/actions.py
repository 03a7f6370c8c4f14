"""What the soak's clients do: each action sends one kind of request and says what came back.

Normal embeds, clients that leave mid-request or mid-body, malformed and
refused requests, keep_alive churn, requests to a broken model file, bodies
sent one byte at a time (the server's body timeout answers 408), and pulls
from a hostile registry: a manifest that stalls (the client leaves), a blob
too large for the disk, a blob longer than its manifest says.
Every action returns the HTTP status, or a negative code for what a client
saw instead of an answer (`GONE` when it left on purpose).
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

GONE = -1  # the client left on purpose, no answer expected
REFUSED = -2  # the connection was refused or reset: the server may be down
TIMEOUT = -3  # no answer in time

_TEXT = (
    "why is the sky blue the grass green sun red sea water tree leaf fire night day "
    "hello world good bad big small hot cold new old one two three"
)
WORDS = tuple(_TEXT.split(" "))


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


@dataclass(frozen=True)
class Target:
    """The server under test, and the model names it serves."""

    host: str
    port: int
    model: str  # a good model
    churn_model: str  # a good model loaded and unloaded over and over
    broken_model: str  # a truncated GGUF

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


Action = Callable[[httpx.Client, Target, random.Random], int]


def _post(client: httpx.Client, path: str, body: object, **kwargs: object) -> int:
    try:
        return client.post(path, json=body, **kwargs).status_code  # type: ignore[arg-type]
    except httpx.TimeoutException:
        return TIMEOUT
    except httpx.TransportError:
        return REFUSED


def embed(client: httpx.Client, target: Target, rng: random.Random) -> int:
    texts = [sentence(rng, rng.randint(1, 60)) for _ in range(rng.randint(1, 32))]
    if rng.random() < 0.5:
        return _post(client, "/api/embed", {"model": target.model, "input": texts})
    return _post(client, "/v1/embeddings", {"model": target.model, "input": texts})


def churn_keep_alive(client: httpx.Client, target: Target, rng: random.Random) -> int:
    keep_alive = rng.choice([0, "100ms", "1s", -1, "5m"])
    body = {"model": target.churn_model, "input": [sentence(rng, 8)], "keep_alive": keep_alive}
    return _post(client, "/api/embed", body)


def broken_model(client: httpx.Client, target: Target, rng: random.Random) -> int:
    return _post(client, "/api/embed", {"model": target.broken_model, "input": "sky"})


_BAD_BODIES: list[tuple[str, object]] = [
    ("/api/embed", {"model": "no-such-model", "input": "x"}),
    ("/api/embed", {"model": 5, "input": "x"}),
    ("/api/embed", {"input": "x"}),
    ("/api/embed", {"model": "M", "input": [1, 2, 3]}),
    ("/api/embed", {"model": "M", "input": ["a"] * 2049}),
    ("/api/embed", {"model": "M", "input": "x", "keep_alive": "5"}),
    ("/api/embed", {"model": "M", "input": "x", "options": {"num_ctx": "big"}}),
    ("/v1/embeddings", {"model": "M", "input": [[19170, 374, 279]]}),
    ("/v1/embeddings", {"model": "M", "input": "x", "encoding_format": "int8"}),
    ("/api/show", {"model": "../../etc/passwd"}),
]


def bad_request(client: httpx.Client, target: Target, rng: random.Random) -> int:
    choice = rng.randrange(len(_BAD_BODIES) + 3)
    try:
        if choice == len(_BAD_BODIES):
            return client.post("/api/embed", content=b'{"model": "x", "inp').status_code
        if choice == len(_BAD_BODIES) + 1:  # a browser page from elsewhere
            body = json.dumps({"model": target.model, "input": "x"})
            headers = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
            return client.post("/api/embed", content=body, headers=headers).status_code
        if choice == len(_BAD_BODIES) + 2:  # declares a body far over the limit
            return _raw(
                target,
                b"POST /api/embed HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Length: 100000000000\r\n\r\n",
                leave_after=None,
            )
    except httpx.TimeoutException:
        return TIMEOUT
    except httpx.TransportError:
        return REFUSED
    path, body = _BAD_BODIES[choice]
    if isinstance(body, dict) and body.get("model") == "M":
        body = {**body, "model": target.model}
    return _post(client, path, body)


def leave_mid_request(client: httpx.Client, target: Target, rng: random.Random) -> int:
    """A big request whose client gives up after 50 ms."""
    texts = [sentence(rng, 100) for _ in range(500)]
    body = json.dumps({"model": target.model, "input": texts}).encode()
    head = (
        f"POST /api/embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return _raw(target, head + body, leave_after=0.05)


def leave_mid_body(client: httpx.Client, target: Target, rng: random.Random) -> int:
    head = (
        b"POST /api/embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    return _raw(target, head + b'{"model": "' + target.model.encode() + b'", "input": "', 0.01)


def _raw(target: Target, data: bytes, leave_after: float | None) -> int:
    """Send `data` on a fresh connection; leave after `leave_after` s, or read the status."""
    try:
        with socket.create_connection((target.host, target.port), timeout=30) as sock:
            sock.sendall(data)
            if leave_after is not None:
                sock.settimeout(leave_after)
                with contextlib.suppress(TimeoutError):
                    sock.recv(1)
                return GONE
            line = sock.recv(64).split(b" ", 2)
            return int(line[1]) if len(line) > 1 and line[1].isdigit() else REFUSED
    except TimeoutError:
        return TIMEOUT
    except OSError:
        return REFUSED


# The server runs with this body timeout (`--body-timeout`), so a slow body ends soon.
BODY_TIMEOUT_S = 2.0
_TRICKLE_S = 0.25


def slow_body(client: httpx.Client, target: Target, rng: random.Random) -> int:
    """A body sent one byte at a time, never finished: the server must answer 408 and close."""
    head = (
        b"POST /api/embed HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n"
    )
    give_up = time.monotonic() + BODY_TIMEOUT_S + 10
    try:
        with socket.create_connection((target.host, target.port), timeout=30) as sock:
            sock.sendall(head)
            sock.settimeout(_TRICKLE_S)
            while time.monotonic() < give_up:
                try:
                    answer = sock.recv(64)
                except TimeoutError:
                    sock.sendall(b" ")
                    continue
                line = answer.split(b" ", 2)
                return int(line[1]) if len(line) > 1 and line[1].isdigit() else REFUSED
            return TIMEOUT
    except OSError:
        return REFUSED


def stalled_pull(client: httpx.Client, target: Target, rng: random.Random) -> int:
    """A pull whose registry stalls its manifest; the client leaves after a moment."""
    body = b'{"model": "soak-stalled"}'
    head = (
        f"POST /api/pull HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return _raw(target, head + body, leave_after=rng.uniform(0.05, 1.0))


def hostile_pull(client: httpx.Client, target: Target, rng: random.Random) -> int:
    """A pull refused for its blob: too large for the disk, or longer than announced."""
    model = rng.choice(["soak-oversized", "soak-long"])
    return _post(client, "/api/pull", {"model": model, "stream": False})


def listing(client: httpx.Client, target: Target, rng: random.Random) -> int:
    path = rng.choice(["/api/tags", "/api/ps", "/v1/models", "/", "/metrics"])
    try:
        return client.get(path).status_code
    except httpx.TimeoutException:
        return TIMEOUT
    except httpx.TransportError:
        return REFUSED


# name -> (action, weight, statuses that are the right answer)
ACTIONS: dict[str, tuple[Action, int, frozenset[int]]] = {
    "embed": (embed, 40, frozenset({200, 503})),
    "keep_alive churn": (churn_keep_alive, 10, frozenset({200, 503})),
    "listing": (listing, 10, frozenset({200})),
    "bad request": (bad_request, 20, frozenset({400, 403, 404, 413})),
    "broken model": (broken_model, 5, frozenset({400, 404, 422, 500})),
    "leave mid-request": (leave_mid_request, 5, frozenset({GONE})),
    "leave mid-body": (leave_mid_body, 10, frozenset({GONE})),
    "slow body": (slow_body, 3, frozenset({408})),
    "stalled pull": (stalled_pull, 3, frozenset({GONE})),
    "hostile pull": (hostile_pull, 3, frozenset({500})),
}
