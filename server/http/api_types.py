"""Every request and response body of the HTTP API, as pydantic models.

One home for every shape: the routes validate requests with these models
and render answers through them, `/openapi.json` is generated from them, and
the command-line client parses answers with them. Field comments say what
Ollama's and OpenAI's APIs mean by each field.

Answers are rendered with `Body.render(...)`, which checks the field names
against the model but does not validate or copy the values: numpy arrays go
to orjson as they are, so the hot path keeps its float32 shortest-text output.
Request models are strict (as Go's decoder: "true" is not a bool); answer
models are lenient, as a client of any Ollama-shaped server must be.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from emberd.server.core.durations import parse_keep_alive
from emberd.server.core.errors import InvalidRequest

# -- requests


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class _KeepAlive(_Request):
    keep_alive: Any = None  # seconds (number) or Go duration (string); negative = forever

    def keep_alive_seconds(self) -> float | None:
        """keep_alive in seconds (inf = forever), None when absent."""
        return parse_keep_alive(self.keep_alive)


class _Named(_Request):
    model: str = ""  # the model's name
    name: str = ""  # legacy spelling of `model`

    def target(self) -> str:
        """The model asked for."""
        return self.model or self.name


class EmbedRequest(_KeepAlive):
    """POST /api/embed."""

    model: str = ""
    input: Any = None  # str or list[str]; checked by `texts()` for Ollama's message
    truncate: bool | None = None  # default true: cut over-long inputs
    dimensions: int | None = None  # cut vectors to this many values, then normalise
    options: dict[str, Any] | None = None  # Ollama options; load options may reload

    def texts(self) -> list[str]:
        """The inputs: a string is one input, ""/null/absent none, a list all strings."""
        value = self.input
        if value is None or value == "":
            return []
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        raise InvalidRequest("invalid input type")


class LegacyEmbeddingRequest(_KeepAlive):
    """POST /api/embeddings in Ollama's legacy dialect (the body has `prompt`)."""

    model: str = ""
    prompt: str = ""  # one text; "" just loads the model
    options: dict[str, Any] | None = None


class OpenAIEmbeddingRequest(_Request):
    """POST /v1/embeddings, and /api/embeddings bodies with `input` (AI gateways)."""

    model: str = ""
    input: Any = None  # string, strings, token ids, or lists of token ids
    encoding_format: str | None = None  # "float" (default) or "base64", any case
    dimensions: int | None = None  # cut vectors to this many values, then normalise
    user: str | None = None  # accepted, ignored


class ShowRequest(_Named):
    """POST /api/show: `model`, or the legacy `name`."""

    verbose: bool = False


class PullRequest(_Named):
    """POST /api/pull."""

    insecure: bool = False  # allow plain http to a registry other than the configured one
    stream: bool | None = None  # default true: progress lines; false: one final answer


class DeleteRequest(_Named):
    """DELETE /api/delete: a model of emberd's store."""


class RerankRequest(_Request):
    """POST /v1/rerank (also /rerank and /v1/reranking): Jina's and Cohere's shape."""

    model: str = ""
    query: Any = None  # the text documents are scored against
    documents: Any = None  # strings, or objects with a "text" string
    top_n: int | None = None  # keep the n best; absent keeps all
    return_documents: bool = False  # echo each document as {"text": ...}

    def query_text(self) -> str:
        """The query; it must be a string ("" is allowed)."""
        if not isinstance(self.query, str):
            raise InvalidRequest("query is required and must be a string")
        return self.query

    def document_texts(self) -> list[str]:
        """The documents' texts: each a string or an object whose "text" is one."""
        if not isinstance(self.documents, list):
            raise InvalidRequest("documents is required and must be a list")
        texts = []
        for item in self.documents:
            if isinstance(item, dict):
                item = item.get("text")
            if not isinstance(item, str):
                raise InvalidRequest(
                    "each document must be a string or an object with a text string"
                )
            texts.append(item)
        return texts


class CohereRerankRequest(RerankRequest):
    """POST /v2/rerank: Cohere's v2 request (documents are strings there; objects pass too)."""

    max_tokens_per_doc: int | None = None  # cut each document to this many tokens first


class OllamaRerankRequest(RerankRequest, _KeepAlive):
    """POST /api/rerank: the same request, with Ollama's keep_alive, options and truncate."""

    truncate: bool | None = None  # default true: cut documents, never the query
    options: dict[str, Any] | None = None  # Ollama options; load options may reload


# -- answers


class Body(BaseModel):
    """An answer: lenient when parsed, rendered without validation."""

    model_config = ConfigDict(extra="ignore")

    @classmethod
    def render(cls, **values: Any) -> dict[str, Any]:
        """The JSON object of this answer, values as given; unknown field names are a bug."""
        unknown = values.keys() - cls.model_fields.keys()
        if unknown:
            raise TypeError(f"{cls.__name__} has no field {sorted(unknown)[0]!r}")
        return values


def parse_timestamp(text: object) -> datetime | None:
    """An RFC 3339 time as Go writes it (nanoseconds, `Z`); None if absent, bad or Go's zero."""
    if isinstance(text, datetime):
        return text
    if not isinstance(text, str) or not text:
        return None
    # fromisoformat before 3.11 takes neither "Z" nor more than 6 fraction digits.
    normalised = re.sub(r"[Zz]$", "+00:00", text.strip())
    normalised = re.sub(r"(\.\d{6})\d+", r"\1", normalised)
    try:
        moment = datetime.fromisoformat(normalised)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return None if moment.year <= 1 else moment


def _text(value: object) -> object:
    return "" if value is None else value


def _count(value: object) -> object:
    return 0 if value is None else value


# RFC 3339 text on the wire, a datetime (or None) in Python.
Timestamp = Annotated[datetime | None, BeforeValidator(parse_timestamp)]
Text = Annotated[str, BeforeValidator(_text)]
Count = Annotated[int, BeforeValidator(_count)]


class ErrorBody(Body):
    """An error on the Ollama routes."""

    error: str


class CohereErrorBody(Body):
    """An error on Cohere's route (/v2/rerank), as Cohere's API writes one."""

    message: str


class OpenAIErrorDetail(Body):
    """What went wrong, as OpenAI describes it."""

    message: str
    type: str  # invalid_request_error, authentication_error, not_found_error, api_error, ...
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(Body):
    """An error on the OpenAI routes."""

    error: OpenAIErrorDetail


class VersionResponse(Body):
    """GET /api/version."""

    version: str


class EmbedResponse(Body):
    """POST /api/embed. A load-only request (no input) gets `model` and `embeddings` alone."""

    model: str  # the request's name, as sent
    embeddings: list[list[float]]  # L2-normalised, in input order
    total_duration: int | None = None  # nanoseconds
    load_duration: int | None = None  # nanoseconds, waiting for the model included
    prompt_eval_count: int | None = None  # tokens evaluated, special tokens included


class LegacyEmbeddingResponse(Body):
    """POST /api/embeddings in the legacy dialect (the vector is not normalised)."""

    embedding: list[float]


class OpenAIEmbedding(Body):
    """One vector of an OpenAI-shaped answer."""

    object: str = "embedding"
    embedding: list[float] | str  # floats, or base64 of little-endian float32
    index: int


class OpenAIUsage(Body):
    """Token counts."""

    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingResponse(Body):
    """POST /v1/embeddings."""

    object: str = "list"
    data: list[OpenAIEmbedding]
    model: str  # as sent
    usage: OpenAIUsage


class RerankDocument(Body):
    """A document echoed back (`return_documents`)."""

    text: str


class RerankResult(Body):
    """One document's place, best first."""

    index: int  # the document's position in the request
    relevance_score: float  # what the model's head computes; see /api/show's "rerank"
    document: RerankDocument | None = None


class RerankResponse(Body):
    """POST /v1/rerank (Jina/Cohere shape)."""

    model: str
    object: str = "list"
    results: list[RerankResult]
    usage: OpenAIUsage


class CohereApiVersion(Body):
    """`meta.api_version` of a Cohere answer."""

    version: str


class CohereTokens(Body):
    """`meta.tokens`: what the request cost, in tokens."""

    input_tokens: int
    output_tokens: int


class CohereBilledUnits(Body):
    """`meta.billed_units`: Cohere bills a rerank as search units (one per request here)."""

    search_units: int


class CohereMeta(Body):
    """`meta` of a Cohere answer."""

    api_version: CohereApiVersion
    billed_units: CohereBilledUnits
    tokens: CohereTokens


class CohereRerankResponse(Body):
    """POST /v2/rerank: Cohere's v2 answer."""

    id: str
    results: list[RerankResult]
    meta: CohereMeta


class OllamaRerankResponse(Body):
    """POST /api/rerank."""

    model: str
    results: list[RerankResult]
    total_duration: int  # nanoseconds
    load_duration: int  # nanoseconds
    prompt_eval_count: int  # tokens of every (query, document) pair


class ModelDetails(Body):
    """The `details` of a model in /api/tags, /api/show and /api/ps."""

    parent_model: Text = ""
    format: Text = ""  # "gguf"
    family: Text = ""  # the architecture, e.g. "bert"
    families: list[str] | None = None
    parameter_size: Text = ""  # "22.57M"
    quantization_level: Text = ""  # "F16", "Q8_0"
    # emberd's own key (clients ignore keys they do not know): where the model
    # comes from, "emberd" (its store), "file" (a GGUF dropped there) or
    # "ollama" (Ollama's store, read-only).
    store: Text = ""


class ListedModel(Body):
    """One entry of GET /api/tags."""

    name: Text = ""
    model: Text = ""
    modified_at: Timestamp = None
    size: Count = 0  # bytes
    digest: Text = ""
    details: ModelDetails = Field(default_factory=ModelDetails)


class TagsResponse(Body):
    """GET /api/tags: every model in the stores, newest first."""

    models: list[ListedModel]


class RerankFacts(Body):
    """What a reranker's `relevance_score` is, or why the model cannot be served."""

    score: str | None = None  # e.g. "raw logit of the model's one-output head"
    unsupported: str | None = None


class EmbeddingFacts(Body):
    """How an embedding model pools its token vectors."""

    pooling: str  # "mean", "cls", "last", or "mean (the model declares no pooling)"


class ShowResponse(Body):
    """POST /api/show."""

    license: Text = ""
    modelfile: Text = ""
    parameters: Text = ""  # the params layer, one `key value` line each
    template: Text = ""
    details: ModelDetails = Field(default_factory=ModelDetails)
    model_info: dict[str, Any] = Field(default_factory=dict)  # the GGUF's key/values
    capabilities: list[str] = Field(default_factory=list)  # ["embedding"] or ["rerank"]
    modified_at: Timestamp = None
    rerank: RerankFacts | None = None  # rerankers only
    embedding: EmbeddingFacts | None = None  # embedding models only


class RunningModel(Body):
    """One entry of GET /api/ps."""

    name: Text = ""
    model: Text = ""
    size: Count = 0  # bytes
    digest: Text = ""
    details: ModelDetails = Field(default_factory=ModelDetails)
    expires_at: Timestamp = None
    size_vram: Count = 0  # bytes on a GPU
    context_length: int | None = None


class PsResponse(Body):
    """GET /api/ps: loaded models, latest expiry first."""

    models: list[RunningModel]


class PullStatus(Body):
    """One line of a streamed POST /api/pull (empty fields are left out), or its answer."""

    status: str  # "pulling manifest", "pulling <digest>", "success", ...
    digest: str | None = None  # the layer being pulled
    total: int | None = None  # the layer's size in bytes
    completed: int | None = None  # bytes of the layer on disk so far


class OpenAIModel(Body):
    """GET /v1/models/{model}, and each entry of GET /v1/models."""

    id: str
    object: str = "model"
    created: int  # Unix seconds
    owned_by: str


class OpenAIModelList(Body):
    """GET /v1/models."""

    object: str = "list"
    data: list[OpenAIModel]
