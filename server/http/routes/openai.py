"""The OpenAI embeddings dialect: a thin adapter over the same embedding core."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emberd.backends.base import FloatMatrix
from emberd.models.store import ModelRecord
from emberd.server.core.engine import EmbedJob, Engine
from emberd.server.http.activity import measure
from emberd.server.http.api_types import (
    OpenAIEmbedding,
    OpenAIEmbeddingRequest,
    OpenAIEmbeddingResponse,
    OpenAIModel,
    OpenAIModelList,
    OpenAIUsage,
)
from emberd.server.http.error_responses import BadRequest
from emberd.server.http.pools import pools_of
from emberd.server.http.render import json_response
from emberd.server.http.request_body import json_object, parse_body

ENCODINGS = ("float", "base64")

# Token ids are off by default: LangChain's OpenAIEmbeddings sends OpenAI's
# cl100k ids, which mean nothing to a local model's vocabulary.
TOKEN_INPUT_OFF = (
    "token-id input is off: send the texts themselves, or start the server with "
    "--allow-token-input (EMBERD_ALLOW_TOKEN_INPUT=1) to embed the model's own token ids. "
    "LangChain OpenAIEmbeddings users: set check_embedding_ctx_length=False"
)


def split_input(value: object) -> tuple[list[str], list[list[int]] | None]:
    """OpenAI's `input`: a string, strings, token ids, or lists of token ids."""
    if isinstance(value, str):
        return [value], None
    if not isinstance(value, list) or not value:
        raise BadRequest("invalid input")
    if all(isinstance(item, str) for item in value):
        return value, None
    if all(_is_int(item) for item in value):
        return [], [value]
    if all(isinstance(item, list) and item and all(_is_int(t) for t in item) for item in value):
        return [], value
    raise BadRequest("invalid input")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def encoding_of(value: str | None) -> str:
    """The requested encoding, case-insensitively; anything else is a 400."""
    chosen = (value or "float").lower()
    if chosen not in ENCODINGS:
        raise BadRequest(
            f"Invalid value for 'encoding_format' = {value}. Supported values: ['float', 'base64']."
        )
    return chosen


def encode_base64(vector: FloatMatrix) -> str:
    """Little-endian float32 bytes in standard base64."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def _data(vectors: FloatMatrix, encoding: str) -> Sequence[dict[str, Any]]:
    encode = encode_base64 if encoding == "base64" else _as_is
    return [
        OpenAIEmbedding.render(object="embedding", embedding=encode(row), index=i)
        for i, row in enumerate(vectors)
    ]


def _as_is(row: FloatMatrix) -> FloatMatrix:
    return row


async def embeddings_response(request: Request, data: dict[str, Any]) -> Response:
    """Answer an OpenAI-shaped embeddings body (from /v1/embeddings or /api/embeddings)."""
    body = parse_body(OpenAIEmbeddingRequest, data)
    if body.input is None:
        raise BadRequest("invalid input")
    encoding = encoding_of(body.encoding_format)
    texts, token_lists = split_input(body.input)
    if token_lists is not None and not request.app.state.settings.allow_token_input:
        raise BadRequest(TOKEN_INPUT_OFF)
    engine: Engine = request.app.state.engine
    count = len(token_lists) if token_lists is not None else len(texts)
    with measure(request, body.model, count) as used:
        result = await engine.embed(
            EmbedJob(
                model=body.model, texts=texts, token_lists=token_lists, dimensions=body.dimensions
            )
        )
        used(result.prompt_tokens)
    usage = OpenAIUsage.render(
        prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens
    )
    return json_response(
        OpenAIEmbeddingResponse.render(
            object="list", data=_data(result.vectors, encoding), model=body.model, usage=usage
        )
    )


async def embeddings(request: Request) -> Response:
    """POST /v1/embeddings."""
    request.state.dialect = "openai"
    return await embeddings_response(request, json_object(await request.body()))


def _model_object(record: ModelRecord) -> dict[str, Any]:
    return OpenAIModel.render(
        id=record.name.display,
        object="model",
        created=int(record.modified_at.timestamp()),
        owned_by=record.name.namespace,
    )


async def list_models(request: Request) -> Response:
    """GET /v1/models: the same models as /api/tags, in OpenAI's list shape."""
    engine: Engine = request.app.state.engine
    records = await pools_of(request).listing.run(engine.stores.list)
    return json_response(
        OpenAIModelList.render(object="list", data=[_model_object(r) for r in records])
    )


async def get_model(request: Request) -> Response:
    """GET /v1/models/{model}."""
    request.state.dialect = "openai"
    engine: Engine = request.app.state.engine
    return json_response(_model_object(await engine.find(request.path_params["model"])))


routes = [
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", get_model, methods=["GET"]),
]
