"""`GET /openapi.json`: every route, its request and its answer, from `api_types.py`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emberd.server import __version__
from emberd.server.http.api_types import (
    CohereRerankRequest,
    CohereRerankResponse,
    DeleteRequest,
    EmbedRequest,
    EmbedResponse,
    ErrorBody,
    LegacyEmbeddingRequest,
    LegacyEmbeddingResponse,
    OllamaRerankRequest,
    OllamaRerankResponse,
    OpenAIEmbeddingRequest,
    OpenAIEmbeddingResponse,
    OpenAIErrorBody,
    OpenAIModel,
    OpenAIModelList,
    PsResponse,
    PullRequest,
    PullStatus,
    RerankRequest,
    RerankResponse,
    ShowRequest,
    ShowResponse,
    TagsResponse,
    VersionResponse,
)
from emberd.server.http.render import json_response
from emberd.server.http.ui_types import (
    AvailableModels,
    LiveFigures,
    LoadAnswer,
    PlaygroundEmbeddings,
)

Models = tuple[type[BaseModel], ...]


@dataclass(frozen=True)
class Operation:
    """One documented route; several bodies or answers mean any one of them."""

    method: str
    path: str
    summary: str
    bodies: Models = ()
    answers: Models = ()
    answer_type: str = "application/json"  # "" for an answer without a body


_EMBEDDINGS_SUMMARY = "Legacy `prompt` dialect, or the OpenAI dialect when the body has `input`."

OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "/", "Health check; answers `Ollama is running`.", answer_type="text/plain"),
    Operation("head", "/", "Health check without a body.", answer_type=""),
    Operation("get", "/api/version", "Server version.", answers=(VersionResponse,)),
    Operation("head", "/api/version", "Server version, headers only.", answer_type=""),
    Operation(
        "post",
        "/api/embed",
        "Embed one or many inputs (normalised).",
        (EmbedRequest,),
        (EmbedResponse,),
    ),
    Operation(
        "post",
        "/api/embeddings",
        _EMBEDDINGS_SUMMARY,
        (LegacyEmbeddingRequest, OpenAIEmbeddingRequest),
        (LegacyEmbeddingResponse, OpenAIEmbeddingResponse),
    ),
    Operation("get", "/api/tags", "Models in the stores, newest first.", answers=(TagsResponse,)),
    Operation("head", "/api/tags", "Models in the stores, headers only.", answer_type=""),
    Operation(
        "post",
        "/api/show",
        "Details, GGUF key/values and capabilities of a model.",
        (ShowRequest,),
        (ShowResponse,),
    ),
    Operation("get", "/api/ps", "Loaded models, latest expiry first.", answers=(PsResponse,)),
    Operation(
        "post",
        "/api/pull",
        "Pull a model from a registry (streams progress lines).",
        (PullRequest,),
        (PullStatus,),
        answer_type="application/x-ndjson",
    ),
    Operation(
        "delete",
        "/api/delete",
        "Delete a model from emberd's store.",
        (DeleteRequest,),
        answer_type="",
    ),
    Operation(
        "post",
        "/v1/embeddings",
        "OpenAI embeddings.",
        (OpenAIEmbeddingRequest,),
        (OpenAIEmbeddingResponse,),
    ),
    Operation(
        "post",
        "/api/rerank",
        "Order documents by relevance to a query (reranker models).",
        (OllamaRerankRequest,),
        (OllamaRerankResponse,),
    ),
    *(
        Operation(
            "post",
            path,
            "Order documents by relevance (Jina/Cohere shape).",
            (RerankRequest,),
            (RerankResponse,),
        )
        for path in ("/v1/rerank", "/v1/reranking", "/rerank")
    ),
    Operation(
        "post",
        "/v2/rerank",
        "Order documents by relevance (Cohere's v2 shape).",
        (CohereRerankRequest,),
        (CohereRerankResponse,),
    ),
    Operation("get", "/v1/models", "OpenAI model list.", answers=(OpenAIModelList,)),
    Operation("get", "/v1/models/{model}", "One model, OpenAI shape.", answers=(OpenAIModel,)),
    Operation("get", "/metrics", "Prometheus metrics.", answer_type="text/plain"),
    Operation("get", "/openapi.json", "This document."),
)

# The page and its data (left out with `--no-ui`); the files need no API key.
UI_OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "/ui", "Redirects to the page at `/ui/`.", answer_type=""),
    Operation("get", "/ui/", "The page: models, activity, a playground.", answer_type="text/html"),
    Operation("get", "/ui/{path}", "One of the page's files.", answer_type="*/*"),
    Operation("get", "/docs", "This reference, rendered.", answer_type="text/html"),
    Operation(
        "get",
        "/ui/data/models",
        "The page's model list: `/api/tags` with sources and capabilities.",
        answers=(AvailableModels,),
    ),
    Operation(
        "get",
        "/ui/data/live",
        "The page's live figures: `/api/ps` with devices, and activity per model.",
        answers=(LiveFigures,),
    ),
    Operation(
        "post",
        "/ui/data/embed",
        "The playground: `/api/embed` with each input's token count.",
        (EmbedRequest,),
        (PlaygroundEmbeddings,),
    ),
    Operation(
        "post",
        "/ui/data/load",
        "Load any model, reranker included; `keep_alive` 0 unloads it.",
        (EmbedRequest,),
        (LoadAnswer,),
    ),
)
_OPEN_PATHS = ("/", "/ui", "/ui/", "/ui/{path}", "/docs")


def _ref(model: type[BaseModel], components: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _schema(models: Models, components: dict[str, Any]) -> dict[str, Any]:
    refs = [_ref(model, components) for model in models]
    return refs[0] if len(refs) == 1 else {"oneOf": refs}


def _operation(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": "OK"}
    if op.answer_type:
        media = {"schema": _schema(op.answers, components)} if op.answers else {}
        answer["content"] = {op.answer_type: media}
    error_model = OpenAIErrorBody if op.path.startswith("/v1/") else ErrorBody
    error = {
        "description": "Error",
        "content": {"application/json": {"schema": _ref(error_model, components)}},
    }
    spec: dict[str, Any] = {"summary": op.summary, "responses": {"200": answer, "4XX": error}}
    if op.bodies:
        spec["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _schema(op.bodies, components)}},
        }
    names = re.findall(r"{(\w+)}", op.path)
    if names:
        spec["parameters"] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in names
        ]
    if op.path in _OPEN_PATHS:
        spec["security"] = []  # the health check and the page's files never need a key
    return spec


def build_openapi(ui: bool = True) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the server (with the page's routes when `ui`)."""
    components: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for op in (*OPERATIONS, *(UI_OPERATIONS if ui else ())):
        paths.setdefault(op.path, {})[op.method] = _operation(op, components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "emberd",
            "version": __version__,
            "description": "Ollama- and OpenAI-compatible embedding server. "
            "API keys are needed only when the server is given some.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


async def openapi_endpoint(request: Request) -> Response:
    """GET /openapi.json."""
    return json_response(build_openapi(request.app.state.settings.ui))


routes = [Route("/openapi.json", openapi_endpoint, methods=["GET"])]
