"""Rerank routes: the Jina/Cohere v1 dialect, Cohere's v2 and Ollama's, thin over one core.

Cohere's current SDK (`ClientV2.rerank`) and litellm's `cohere/` route post
to `/v2/rerank`: Cohere's v2 request, its answer (`id`, `results`, `meta`)
and its error shape (`{"message": ...}`).
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from emberd.server.core.engine import Engine
from emberd.server.core.errors import InvalidRequest
from emberd.server.core.rerank import RerankJob, RerankResult
from emberd.server.http.activity import measure
from emberd.server.http.api_types import (
    CohereApiVersion,
    CohereBilledUnits,
    CohereMeta,
    CohereRerankRequest,
    CohereRerankResponse,
    CohereTokens,
    OllamaRerankRequest,
    OllamaRerankResponse,
    OpenAIUsage,
    RerankDocument,
    RerankRequest,
    RerankResponse,
)
from emberd.server.http.api_types import RerankResult as RerankResultBody
from emberd.server.http.render import json_response
from emberd.server.http.request_body import json_object, parse_body


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _results(
    result: RerankResult, texts: list[str], return_documents: bool
) -> list[dict[str, Any]]:
    results = []
    for item in result.ranked:
        entry = RerankResultBody.render(index=item.index, relevance_score=item.score)
        if return_documents:
            entry["document"] = RerankDocument.render(text=texts[item.index])
        results.append(entry)
    return results


async def rerank_openai(request: Request) -> Response:
    """POST /v1/rerank, /rerank, /v1/reranking: documents ordered by relevance."""
    request.state.dialect = "openai"
    body = parse_body(RerankRequest, json_object(await request.body()))
    texts = body.document_texts()
    job = RerankJob(model=body.model, query=body.query_text(), documents=texts, top_n=body.top_n)
    with measure(request, body.model, len(texts)) as used:
        result = await _engine(request).rerank(job)
        used(result.prompt_tokens)
    usage = OpenAIUsage.render(
        prompt_tokens=result.prompt_tokens, total_tokens=result.prompt_tokens
    )
    return json_response(
        RerankResponse.render(
            model=body.model,
            object="list",
            results=_results(result, texts, body.return_documents),
            usage=usage,
        )
    )


async def rerank_cohere(request: Request) -> Response:
    """POST /v2/rerank: Cohere's v2 request and answer."""
    request.state.dialect = "cohere"
    body = parse_body(CohereRerankRequest, json_object(await request.body()))
    texts = body.document_texts()
    most = body.max_tokens_per_doc
    if most is not None and most < 1:
        raise InvalidRequest("max_tokens_per_doc must be a positive integer")
    job = RerankJob(
        model=body.model,
        query=body.query_text(),
        documents=texts,
        top_n=body.top_n,
        max_document_tokens=most,
    )
    result = await _engine(request).rerank(job)
    meta = CohereMeta.render(
        api_version=CohereApiVersion.render(version="2"),
        billed_units=CohereBilledUnits.render(search_units=1),
        tokens=CohereTokens.render(input_tokens=result.prompt_tokens, output_tokens=0),
    )
    return json_response(
        CohereRerankResponse.render(
            id=str(uuid.uuid4()),
            results=_results(result, texts, body.return_documents),
            meta=meta,
        )
    )


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


async def rerank_ollama(request: Request) -> Response:
    """POST /api/rerank: the same, with Ollama's keep_alive, options, truncate and durations."""
    body = parse_body(OllamaRerankRequest, json_object(await request.body()))
    texts = body.document_texts()
    job = RerankJob(
        model=body.model,
        query=body.query_text(),
        documents=texts,
        top_n=body.top_n,
        truncate=True if body.truncate is None else body.truncate,
        keep_alive=body.keep_alive_seconds(),
        options=body.options or {},
    )
    with measure(request, body.model, len(texts)) as used:
        result = await _engine(request).rerank(job)
        used(result.prompt_tokens)
    return json_response(
        OllamaRerankResponse.render(
            model=body.model,
            results=_results(result, texts, body.return_documents),
            total_duration=_ns(result.total_seconds),
            load_duration=_ns(result.model_wait_seconds),
            prompt_eval_count=result.prompt_tokens,
        )
    )


routes = [
    Route("/api/rerank", rerank_ollama, methods=["POST"]),
    Route("/v1/rerank", rerank_openai, methods=["POST"]),
    Route("/v1/reranking", rerank_openai, methods=["POST"]),
    Route("/rerank", rerank_openai, methods=["POST"]),
    Route("/v2/rerank", rerank_cohere, methods=["POST"]),
]
