"""Reranking's pieces: the job and result types, (query, document) pairs, and the order.

The engine's `rerank` method runs the job: it leases the model, builds the
pairs here, sends them down the model's batch queue (where they share decodes
with other requests, as embedding sequences do), then turns each pair's head
values into a score and orders the documents with `rank`.

A pair is joined the way the model's tokenizer joins two texts, with the
model's own special ids (XLM-R: `<s> q </s></s> d </s>`), or, for a model
whose GGUF carries a rerank prompt (Qwen3-Reranker), by writing the query
and the document into that prompt, as llama-server does. Truncation cuts the
document, never the query: a query that leaves no room is a 400 whatever
`truncate` says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from emberd.backends.base import LoadedModel, LoadOptions
from emberd.server.core.errors import InvalidRequest


@dataclass(frozen=True)
class RerankJob:
    """What a rerank dialect asks of the core."""

    model: str
    query: str
    documents: Sequence[str]
    top_n: int | None = None  # keep the best n; None keeps all
    truncate: bool = True  # cut documents (never the query) to the context
    max_document_tokens: int | None = None  # cut each document to this many first (Cohere v2)
    keep_alive: float | None = None
    options: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Ranked:
    """One document's place: its index in the request and its relevance score."""

    index: int
    score: float


@dataclass(frozen=True)
class RerankResult:
    """Documents best first (cut to top_n), with the counts and timings responses carry."""

    ranked: list[Ranked]
    prompt_tokens: int
    model_wait_seconds: float  # see EmbedResult
    total_seconds: float


def rank(scores: Sequence[float], top_n: int | None) -> list[Ranked]:
    """Indexes ordered by score, highest first (ties keep request order), cut to top_n."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    if top_n is not None:
        order = order[:top_n]
    return [Ranked(i, float(scores[i])) for i in order]


_NO_ROOM = "the query leaves no room for a document within the context length"
_TOO_LONG = "the input length exceeds the context length"
_PLACEHOLDER = re.compile(r"\{query\}|\{document\}")


def pair_limit(model: LoadedModel, options: LoadOptions) -> int:
    """Most tokens one pair may have, special tokens included."""
    return min(options.num_ctx, model.facts.n_ctx_train)


async def build_pairs(
    model: LoadedModel,
    query: str,
    documents: Sequence[str],
    limit: int,
    truncate: bool,
    max_document_tokens: int | None = None,
) -> list[list[int]]:
    """One token sequence per document: the query and that document, joined and fitted.

    With `max_document_tokens`, a longer document is first cut to that many
    of its own tokens (whatever `truncate` says: the caller asked for it).
    """
    if max_document_tokens is not None:
        documents = await _cut(model, documents, max_document_tokens)
    template = model.facts.rerank_template
    if template is not None:
        return [await _prompt_pair(model, template, query, d, limit, truncate) for d in documents]
    facts = model.facts
    query_tokens, *document_tokens = await model.tokenize([query, *documents])
    head = [*facts.prefix, *query_tokens, *facts.suffix, *facts.pair_separator]
    tail = list(facts.suffix)
    room = limit - len(head) - len(tail)
    if room <= 0:
        raise InvalidRequest(_NO_ROOM)
    pairs = []
    for tokens in document_tokens:
        if len(tokens) > room:
            if not truncate:
                raise InvalidRequest(_TOO_LONG)
            tokens = tokens[:room]
        pairs.append(head + tokens + tail)
    return pairs


async def _cut(model: LoadedModel, documents: Sequence[str], most: int) -> list[str]:
    """Each document, or the text of its first `most` tokens when it has more."""
    cut = []
    for document, tokens in zip(documents, await model.tokenize(documents), strict=True):
        cut.append(document if len(tokens) <= most else await model.detokenize(tokens[:most]))
    return cut


def fill_template(template: str, query: str, document: str) -> str:
    """The rerank prompt with both texts in (a placeholder inside a text stays as it is)."""
    texts = {"{query}": query, "{document}": document}
    return _PLACEHOLDER.sub(lambda match: texts[match.group(0)], template)


async def _prompt_pair(
    model: LoadedModel, template: str, query: str, document: str, limit: int, truncate: bool
) -> list[int]:
    """The prompt's tokens, the document cut (as tokens, then back to text) until it fits."""
    tokens, doc_tokens = await model.tokenize([fill_template(template, query, document), document])
    if len(tokens) <= limit:
        return tokens
    if not truncate:
        raise InvalidRequest(_TOO_LONG)
    keep = len(doc_tokens) - (len(tokens) - limit)
    while keep > 0:
        cut = await model.detokenize(doc_tokens[:keep])
        (tokens,) = await model.tokenize([fill_template(template, query, cut)])
        if len(tokens) <= limit:
            return tokens
        keep -= max(1, len(tokens) - limit)  # tokens can merge differently at the cut
    raise InvalidRequest(_NO_ROOM)
