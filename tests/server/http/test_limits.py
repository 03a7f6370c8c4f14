"""Bounds on one request: body size (413), number of inputs and tokens (400).

Each bound has a flag and a variable; the messages name the variable, in the
dialect of the route.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from emberd.server.assembly import request_limits
from emberd.server.cli.main import build_parser, build_settings
from emberd.server.config import ConfigError, Settings
from emberd.server.core.limits import RequestLimits
from tests.support.harness import TINY, LiveServer, RecordingBackend, ServerFactory

SKY = "why is the sky blue"  # 7 tokens with [CLS] and [SEP]
HOME = {"HOME": "/h"}


def error_message(response: httpx.Response, status: int, path: str) -> str:
    assert response.status_code == status, response.text
    if path.startswith("/v1/"):
        error = response.json()["error"]
        assert error["type"] == "invalid_request_error"
        message: str = error["message"]
        return message
    body: dict[str, str] = response.json()
    return body["error"]


# -- defaults and settings -----------------------------------------------------------------


def test_defaults() -> None:
    settings = Settings.from_env(HOME)
    assert settings.max_body_size == 32 * 2**20
    assert settings.max_inputs == 2048
    assert settings.max_request_tokens == 300_000
    assert request_limits(settings) == RequestLimits(32 * 2**20, 2048, 300_000)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1048576", 2**20),
        ("1MiB", 2**20),
        ("64MB", 64 * 10**6),
        ("512k", 512_000),
        ("2 GiB", 2 * 2**30),
        ("100b", 100),
    ],
)
def test_body_size_variable(text: str, size: int) -> None:
    assert Settings.from_env({**HOME, "EMBERD_MAX_BODY_SIZE": text}).max_body_size == size


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EMBERD_MAX_BODY_SIZE", "lots"),
        ("EMBERD_MAX_BODY_SIZE", "0"),
        ("EMBERD_MAX_INPUTS", "0"),
        ("EMBERD_MAX_REQUEST_TOKENS", "x"),
    ],
)
def test_bad_values_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({**HOME, variable: value})


def test_flags_override_variables() -> None:
    args = build_parser().parse_args(
        ["serve", "--max-body-size", "2MiB", "--max-inputs", "16", "--max-request-tokens", "999"]
    )
    env = {**HOME, "EMBERD_MAX_BODY_SIZE": "1", "EMBERD_MAX_INPUTS": "1"}
    settings = build_settings(args, env)
    assert (settings.max_body_size, settings.max_inputs, settings.max_request_tokens) == (
        2 * 2**20,
        16,
        999,
    )


# -- body size -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_body(stores: Any) -> Iterator[LiveServer]:
    from tests.support.harness import running_server, settings_for

    with running_server(settings_for(stores, max_body_size=1000)) as live:
        yield live


@pytest.mark.parametrize("path", ["/api/embed", "/v1/embeddings", "/api/show", "/api/pull"])
def test_a_declared_body_over_the_limit_is_413(small_body: LiveServer, path: str) -> None:
    body = json.dumps({"model": TINY, "input": "x" * 2000})
    message = error_message(small_body.client.post(path, content=body), 413, path)
    assert message == (
        "request body too large: the limit is 1000 bytes (set by EMBERD_MAX_BODY_SIZE)"
    )


@pytest.mark.parametrize("path", ["/api/embed", "/v1/embeddings"])
def test_a_chunked_body_over_the_limit_is_413(small_body: LiveServer, path: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "tiny", "input": "'
        for _ in range(50):
            yield b"x" * 100
        yield b'"}'

    response = small_body.client.post(path, content=chunks())
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "request body too large" in error_message(response, 413, path)


def test_a_body_at_the_limit_is_served(small_body: LiveServer) -> None:
    body = json.dumps({"model": TINY, "input": SKY})
    body = body[:-1] + " " * (1000 - len(body)) + "}"
    assert len(body) == 1000
    assert small_body.client.post("/api/embed", content=body).status_code == 200
    assert small_body.vectors(TINY, SKY).shape[0] == 1  # and the server goes on serving


# -- inputs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/embed", "/v1/embeddings", "/api/embeddings"])
def test_too_many_inputs_is_400(serve: ServerFactory, path: str) -> None:
    backend = RecordingBackend()
    live = serve(backend=backend, max_inputs=4)
    response = live.client.post(path, json={"model": TINY, "input": [SKY] * 5})
    dialect = "/v1/" if path == "/api/embeddings" else path  # `input` there is OpenAI's
    message = error_message(response, 400, dialect)
    assert message == (
        "too many inputs: 5, the limit is 4 per request (set by EMBERD_MAX_INPUTS); "
        "split them over several requests"
    )
    assert backend.load_calls == 0  # refused before any work
    assert live.client.post(path, json={"model": TINY, "input": [SKY] * 4}).status_code == 200


def test_the_default_input_limit_is_openais(server: LiveServer) -> None:
    response = server.embed({"model": TINY, "input": ["a"] * 2049})
    assert "too many inputs: 2049, the limit is 2048" in response.json()["error"]
    assert server.embed({"model": TINY, "input": ["a"] * 2048}).status_code == 200


# -- tokens ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/embed", "/v1/embeddings"])
def test_too_many_tokens_is_400(serve: ServerFactory, path: str) -> None:
    backend = RecordingBackend()
    live = serve(backend=backend, max_request_tokens=20)
    response = live.client.post(path, json={"model": TINY, "input": [SKY] * 3})  # 21 tokens
    message = error_message(response, 400, path)
    assert message == (
        "too many tokens: 21, the limit is 20 per request (set by EMBERD_MAX_REQUEST_TOKENS); "
        "split the inputs over several requests"
    )
    assert backend.models[0].stats.sequences == 0  # nothing was decoded
    assert live.client.post(path, json={"model": TINY, "input": [SKY] * 2}).status_code == 200


def test_tokens_are_counted_after_truncation(serve: ServerFactory) -> None:
    live = serve(max_request_tokens=20)
    long = "sky " * 500  # cut to num_ctx 8: 8 tokens with the specials
    body = {"model": TINY, "input": [long, long], "options": {"num_ctx": 8}}
    assert live.embed(body).status_code == 200
