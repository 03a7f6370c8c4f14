"""Rerank request bodies: the Jina/Cohere shape, and Ollama's conventions on top of it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from server.durations import parse_keep_alive
from server.errors import BadRequest


class RerankRequest(BaseModel):
    """POST /v1/rerank (also /rerank and /v1/reranking): Jina's and Cohere's shape."""

    # strict as the other request bodies: "3" is not a top_n.
    model_config = ConfigDict(strict=True, extra="ignore")

    model: str = ""
    query: Any = None  # the text documents are scored against
    documents: Any = None  # strings, or objects with a "text" string
    top_n: int | None = None  # keep the n best; absent keeps all
    return_documents: bool = False  # echo each document as {"text": ...}

    def query_text(self) -> str:
        """The query; it must be a string ("" is allowed)."""
        if not isinstance(self.query, str):
            raise BadRequest("query is required and must be a string")
        return self.query

    def document_texts(self) -> list[str]:
        """The documents' texts: each a string or an object whose "text" is one."""
        if not isinstance(self.documents, list):
            raise BadRequest("documents is required and must be a list")
        texts = []
        for item in self.documents:
            if isinstance(item, dict):
                item = item.get("text")
            if not isinstance(item, str):
                raise BadRequest("each document must be a string or an object with a text string")
            texts.append(item)
        return texts


class OllamaRerankRequest(RerankRequest):
    """POST /api/rerank: the same request, with Ollama's keep_alive, options and truncate."""

    truncate: bool | None = None  # default true: cut documents, never the query
    keep_alive: Any = None  # seconds (number) or Go duration (string); negative = forever
    options: dict[str, Any] | None = None  # Ollama options; load options may reload

    def keep_alive_seconds(self) -> float | None:
        """keep_alive in seconds (inf = forever), None when absent."""
        return parse_keep_alive(self.keep_alive)
