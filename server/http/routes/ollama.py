"""Ollama's routes: thin handlers that parse, make one call, and render."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from emberd.models.capabilities import (
    UnsupportedReranker,
    capabilities,
    embedding_pooling,
    rerank_head,
)
from emberd.models.errors import ModelError
from emberd.models.gguf_meta import GGUFInfo, read_gguf_lists
from emberd.models.store import ModelRecord, ModelStores
from emberd.server import __version__
from emberd.server.core.engine import EmbedJob, EmbedResult, Engine
from emberd.server.core.errors import go_quote
from emberd.server.core.runtime import LoadedView
from emberd.server.http.activity import measure
from emberd.server.http.api_types import (
    EmbeddingFacts,
    EmbedRequest,
    EmbedResponse,
    LegacyEmbeddingRequest,
    LegacyEmbeddingResponse,
    ListedModel,
    ModelDetails,
    PsResponse,
    RerankFacts,
    RunningModel,
    ShowRequest,
    ShowResponse,
    TagsResponse,
    VersionResponse,
)
from emberd.server.http.pools import pools_of
from emberd.server.http.render import json_response
from emberd.server.http.request_body import json_object, parse_body
from emberd.server.http.routes.openai import embeddings_response


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


async def root(request: Request) -> Response:
    """Health check: the exact text clients grep for."""
    return PlainTextResponse("Ollama is running")


async def version(request: Request) -> Response:
    """The server's version."""
    return json_response(VersionResponse.render(version=__version__))


async def embed_body(request: Request) -> tuple[EmbedRequest, EmbedResult]:
    """An /api/embed body, parsed and embedded (counted in the activity figures)."""
    body = parse_body(EmbedRequest, json_object(await request.body()))
    job = EmbedJob(
        model=body.model,
        texts=body.texts(),
        truncate=True if body.truncate is None else body.truncate,
        dimensions=body.dimensions,
        keep_alive=body.keep_alive_seconds(),
        options=body.options or {},
    )
    with measure(request, body.model, len(job.texts)) as used:
        result = await _engine(request).embed(job)
        used(result.prompt_tokens)
    return body, result


async def embed(request: Request) -> Response:
    """POST /api/embed: normalised vectors for one or many inputs."""
    body, result = await embed_body(request)
    if not len(result.vectors):  # a load (or unload) only: Ollama answers with no counts
        return json_response(EmbedResponse.render(model=body.model, embeddings=[]))
    return json_response(
        EmbedResponse.render(
            model=body.model,
            embeddings=result.vectors,
            total_duration=_ns(result.total_seconds),
            load_duration=_ns(result.model_wait_seconds),
            prompt_eval_count=result.prompt_tokens,
        )
    )


async def embeddings(request: Request) -> Response:
    """POST /api/embeddings: the legacy `prompt` dialect, or OpenAI's when given `input`."""
    data = json_object(await request.body())
    if "input" in data and "prompt" not in data:
        request.state.dialect = "openai"
        return await embeddings_response(request, data)
    body = parse_body(LegacyEmbeddingRequest, data)
    job = EmbedJob(
        model=body.model,
        texts=[body.prompt] if body.prompt else [],
        normalize=False,
        keep_alive=body.keep_alive_seconds(),
        options=body.options or {},
    )
    with measure(request, body.model, len(job.texts)) as used:
        result = await _engine(request).embed(job)
        used(result.prompt_tokens)
    vector = result.vectors[0] if len(result.vectors) else []
    return json_response(LegacyEmbeddingResponse.render(embedding=vector))


def _details(record: ModelRecord) -> dict[str, Any]:
    """Ollama's `details`: the manifest's config blob where it says, else the GGUF."""
    info = record.info()
    config = record.config
    family = (config and config.family) or info.architecture
    return ModelDetails.render(
        parent_model="",
        format=(config and config.model_format) or "gguf",
        family=family,
        families=list((config and config.families) or [family]),
        parameter_size=(config and config.parameter_size) or info.parameter_size,
        quantization_level=(config and config.quantization_level) or info.file_type,
        store=record.source,
    )


def listed_model(record: ModelRecord) -> dict[str, Any]:
    """One entry of /api/tags; raises for a model whose file cannot be read."""
    return ListedModel.render(
        name=record.name.display,
        model=record.name.display,
        modified_at=record.modified_at,
        size=record.size,
        digest=record.digest,
        details=_details(record),
    )


def _tag_entries(stores: ModelStores) -> list[dict[str, Any]]:
    models = []
    for record in stores.list():
        try:
            models.append(listed_model(record))
        except Exception:  # a corrupt file is listed by nobody, not a failed listing
            continue
    return models


async def tags(request: Request) -> Response:
    """GET /api/tags: every model in the stores, newest first.

    Listing reads headers and hashes new dropped files: a thread's work, so
    health checks and embeddings never wait behind it.
    """
    models = await pools_of(request).listing.run(_tag_entries, _engine(request).stores)
    return json_response(TagsResponse.render(models=models))


def _go_value(value: object) -> str:
    """A params value as Ollama's show prints it (Go's %#v): strings quoted, bools lower-case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return go_quote(value)
    return str(value)


def _parameters(params: dict[str, Any]) -> str:
    lines = []
    for key, value in params.items():
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{key:<30} {_go_value(item)}")
    return "\n".join(lines)


async def show(request: Request) -> Response:
    """POST /api/show: details, GGUF key/values and capabilities of one model."""
    body = parse_body(ShowRequest, json_object(await request.body()))
    record = await _engine(request).find(body.target())
    info = record.info()
    # Verbose, list values come in full, as Ollama gives them (vocabularies: a thread's work).
    model_info = (
        await asyncio.to_thread(read_gguf_lists, record.path)
        if body.verbose
        else dict(info.model_info)
    )
    return json_response(
        ShowResponse.render(
            license="",
            modelfile="",
            parameters=_parameters(dict(record.params)),
            template="",
            details=_details(record),
            model_info=model_info,
            capabilities=[c.value for c in capabilities(info)],
            modified_at=record.modified_at,
            **_rerank_facts(info),
            **_embedding_facts(info),
        )
    )


def _embedding_facts(info: GGUFInfo) -> dict[str, Any]:
    """For an embedding model, the pooling its vectors come from."""
    if not info.is_embedding:
        return {}
    return {"embedding": EmbeddingFacts.render(pooling=embedding_pooling(info))}


def _rerank_facts(info: GGUFInfo) -> dict[str, Any]:
    """For a reranker, which score `relevance_score` is, or why it is not served."""
    if not info.is_reranker:
        return {}
    try:
        return {"rerank": RerankFacts.render(score=rerank_head(info).describe())}
    except UnsupportedReranker as exc:
        return {"rerank": RerankFacts.render(unsupported=str(exc))}


def ps_entry(view: LoadedView) -> dict[str, Any]:
    """One entry of /api/ps; raises ModelError when the model's file is gone."""
    record = view.record
    return RunningModel.render(
        name=record.name.display,
        model=record.name.display,
        size=view.size,
        digest=record.digest,
        details=_details(record),
        expires_at=view.expires_at,
        size_vram=view.size_vram,
        context_length=view.options.num_ctx,
    )


async def ps(request: Request) -> Response:
    """GET /api/ps: loaded models, latest expiry first.

    A model still in use whose file was removed meanwhile is left out: its
    details can no longer be read, and it goes once its requests finish.
    """
    entries = []
    for view in _engine(request).runtime.loaded():
        with contextlib.suppress(ModelError):
            entries.append(ps_entry(view))
    return json_response(PsResponse.render(models=entries))


routes = [
    Route("/", root, methods=["GET", "HEAD"]),
    Route("/api/version", version, methods=["GET", "HEAD"]),
    Route("/api/embed", embed, methods=["POST"]),
    Route("/api/embeddings", embeddings, methods=["POST"]),
    Route("/api/tags", tags, methods=["GET", "HEAD"]),
    Route("/api/show", show, methods=["POST"]),
    Route("/api/ps", ps, methods=["GET"]),
]
