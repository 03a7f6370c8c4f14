"""(query, document) pairs as token sequences for a reranker.

A pair is joined the way the model's tokenizer joins two texts, with the
model's own special ids (XLM-R: `<s> q </s></s> d </s>`). Truncation cuts the
document, never the query: a query that leaves no room is a 400 whatever
`truncate` says.
"""

from __future__ import annotations

from collections.abc import Sequence

from backends.base import LoadedModel, LoadOptions
from server.errors import BadRequest


def pair_limit(model: LoadedModel, options: LoadOptions) -> int:
    """Most tokens one pair may have, special tokens included."""
    return min(options.num_ctx, model.facts.n_ctx_train)


def build_pairs(
    model: LoadedModel, query: str, documents: Sequence[str], limit: int, truncate: bool
) -> list[list[int]]:
    """One token sequence per document: the query and that document, joined and fitted."""
    facts = model.facts
    head = [*facts.prefix, *model.tokenize(query), *facts.suffix, *facts.pair_separator]
    tail = list(facts.suffix)
    room = limit - len(head) - len(tail)
    if room <= 0:
        raise BadRequest("the query leaves no room for a document within the context length")
    pairs = []
    for document in documents:
        tokens = model.tokenize(document)
        if len(tokens) > room:
            if not truncate:
                raise BadRequest("the input length exceeds the context length")
            tokens = tokens[:room]
        pairs.append(head + tokens + tail)
    return pairs
