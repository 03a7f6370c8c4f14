"""A client that goes away: its queued work is dropped, and it is not a server error.

Abandoned requests must not keep the batch queue busy (the decode in flight
may finish, the rest of the request's sequences are never decoded), and a
client that closes mid-body is neither a traceback in the log nor a 500 in
the metrics.
"""

from __future__ import annotations

import json
import logging

import pytest

from tests.support.harness import TINY, LiveServer, RecordingBackend, ServerFactory, wait_until
from tests.support.raw_http import raw_post

BIG = 400  # inputs in the abandoned request


def request_counts(live: LiveServer, path: str) -> dict[str, float]:
    """status -> count of the requests to `path` that the metrics have seen."""
    counts = {}
    for line in live.client.get("/metrics").text.splitlines():
        if line.startswith("emberd_requests_total{") and f'route="{path}"' in line:
            status = line.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = float(line.rsplit(" ", 1)[1])
    return counts


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not errors, [r.getMessage() for r in errors]


@pytest.mark.parametrize("path", ["/api/embed", "/v1/embeddings"])
def test_an_abandoned_request_leaves_the_queue(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    backend = RecordingBackend(hold_decodes=True)
    live = serve(backend=backend)
    texts = [f"why is the sky blue {i}" for i in range(BIG)]
    sock = raw_post(live.url, path, json.dumps({"model": TINY, "input": texts}).encode())
    assert backend.decoding.wait(10), "the request never reached the model"
    sock.close()  # the client gives up while its first decode runs
    wait_until(lambda: live.pending == 0)  # the request is gone from the runtime at once
    backend.release()  # the decode in flight finishes
    assert live.vectors(TINY, "the grass is green").shape[0] == 1  # the next client is served
    stats = backend.models[0].stats
    assert stats.sequences < BIG / 2, stats  # the rest of the abandoned request was dropped
    wait_until(lambda: request_counts(live, path).get("499") == 1)
    assert "500" not in request_counts(live, path)
    no_errors_logged(caplog)


def test_many_clients_that_leave_do_not_hold_the_queue(serve: ServerFactory) -> None:
    backend = RecordingBackend(hold_decodes=True)
    live = serve(backend=backend)
    texts = ["why is the sky blue"] * 100
    body = json.dumps({"model": TINY, "input": texts}).encode()
    socks = [raw_post(live.url, "/api/embed", body) for _ in range(20)]
    assert backend.decoding.wait(10)
    wait_until(lambda: live.pending == 20)
    for sock in socks:
        sock.close()
    wait_until(lambda: live.pending == 0)
    backend.release()
    assert live.vectors(TINY, ["hello world"]).shape[0] == 1
    assert backend.models[0].stats.sequences < 20 * 100 / 4


def test_a_client_that_closes_mid_body_is_not_a_server_error(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    before = request_counts(server, "/api/embed")
    sock = raw_post(server.url, "/api/embed", b'{"model": "tiny", "inp', declared=10_000)
    sock.close()
    wait_until(
        lambda: request_counts(server, "/api/embed").get("499", 0) == before.get("499", 0) + 1
    )
    assert request_counts(server, "/api/embed").get("500") == before.get("500")
    no_errors_logged(caplog)
    assert server.vectors(TINY, "still serving").shape[0] == 1


def test_an_answered_request_is_counted_as_answered(server: LiveServer) -> None:
    before = request_counts(server, "/api/embed").get("200", 0)
    server.vectors(TINY, "why is the sky blue")
    assert request_counts(server, "/api/embed")["200"] == before + 1
