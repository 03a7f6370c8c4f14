"""Token-id input to the OpenAI dialect is off unless switched on.

LangChain's `OpenAIEmbeddings` (by default) sends OpenAI's cl100k token ids,
which mean nothing to a local model: embedding them answers 200 with vectors
that silently corrupt an index. Off, they get a 400 that says what to do.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from emberd.server.cli.main import build_parser, build_settings
from emberd.server.config import ConfigError, Settings
from emberd.server.http.routes.openai import TOKEN_INPUT_OFF
from tests.support.harness import TINY, RecordingBackend, ServerFactory
from tests.support.tiny_model import tiny_token_id

IDS = [tiny_token_id(word) for word in ("why", "is", "the", "sky", "blue")]
# What LangChain's OpenAIEmbeddings sends for two chunks: cl100k ids, as lists.
CL100K = [[19170, 374, 279, 13180, 6437], [791, 16763, 374, 6307]]


def assert_token_input_off(message: str) -> None:
    assert message == TOKEN_INPUT_OFF
    for needle in (
        "token-id input is off",
        "--allow-token-input",
        "EMBERD_ALLOW_TOKEN_INPUT",
        "OpenAIEmbeddings",
        "check_embedding_ctx_length=False",
    ):
        assert needle in message


@pytest.mark.parametrize("value", [IDS, [IDS], CL100K])
@pytest.mark.parametrize("path", ["/v1/embeddings", "/api/embeddings"])
def test_token_ids_are_refused_by_default(serve: ServerFactory, value: Any, path: str) -> None:
    backend = RecordingBackend()
    live = serve(backend=backend)
    response = live.client.post(path, json={"model": TINY, "input": value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert_token_input_off(error["message"])
    assert backend.load_calls == 0  # refused before any work


def test_openai_client_sees_the_message(serve: ServerFactory) -> None:
    live = serve()
    with (
        openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0) as client,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        client.embeddings.create(model="text-embedding-3-small", input=CL100K)
    assert "check_embedding_ctx_length=False" in str(caught.value)


def test_texts_still_work_with_token_input_off(serve: ServerFactory) -> None:
    live = serve()
    data = live.post_ok("/v1/embeddings", {"model": TINY, "input": ["why is the sky blue"]})
    assert len(data["data"]) == 1


@pytest.mark.parametrize(
    "env", [{"EMBERD_ALLOW_TOKEN_INPUT": "1"}, {"EMBERD_ALLOW_TOKEN_INPUT": "true"}]
)
def test_the_variable_switches_token_input_on(serve: ServerFactory, env: dict[str, str]) -> None:
    live = serve(env=env)
    data = live.post_ok("/v1/embeddings", {"model": TINY, "input": IDS})
    assert data["usage"]["prompt_tokens"] == len(IDS)


def test_the_flag_switches_token_input_on(serve: ServerFactory) -> None:
    live = serve(env={"EMBERD_ALLOW_TOKEN_INPUT": "0"}, allow_token_input=True)
    data = live.post_ok("/api/embeddings", {"model": TINY, "input": [IDS, IDS]})
    assert len(data["data"]) == 2


@pytest.mark.parametrize(
    ("text", "value"), [("1", True), ("yes", True), ("ON", True), ("0", False), ("false", False)]
)
def test_the_variable_reads_booleans(text: str, value: bool) -> None:
    settings = Settings.from_env({"HOME": "/h", "EMBERD_ALLOW_TOKEN_INPUT": text})
    assert settings.allow_token_input is value
    assert Settings.from_env({"HOME": "/h"}).allow_token_input is False


def test_a_bad_boolean_names_the_variable() -> None:
    with pytest.raises(ConfigError, match="EMBERD_ALLOW_TOKEN_INPUT"):
        Settings.from_env({"HOME": "/h", "EMBERD_ALLOW_TOKEN_INPUT": "maybe"})


def test_the_serve_flag() -> None:
    on = build_settings(build_parser().parse_args(["serve", "--allow-token-input"]), {"HOME": "/h"})
    assert on.allow_token_input is True
    unset = build_parser().parse_args(["serve"])
    assert build_settings(unset, {"HOME": "/h"}).allow_token_input is False
    assert build_settings(unset, {"HOME": "/h", "EMBERD_ALLOW_TOKEN_INPUT": "1"}).allow_token_input
