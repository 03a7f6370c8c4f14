"""An input's token sequence as a model takes it: Ollama's truncation, then special tokens.

One rule for both places that apply it: the server, which fits each text's
tokens before batching them, and a runner, which tokenizes, fits and decodes
a lone text in one step.
"""

from __future__ import annotations

from collections.abc import Sequence

from emberd.backends.base import InputRefused

TOO_LONG = "the input length exceeds the context length"
# Ollama's words, then which option to raise.
NO_ROOM = (
    'input after truncation exceeds maximum context length: option "num_ctx" '
    "leaves no room for input beside the model's special tokens"
)


def fit_sequence(
    tokens: Sequence[int],
    index: int,
    limit: int,
    truncate: bool,
    prefix: Sequence[int],
    suffix: Sequence[int],
) -> list[int]:
    """Input `index`'s `tokens` cut to `limit` (InputRefused unless `truncate`), then
    wrapped in the model's special tokens, which are added after the cut.

    A `limit` below 1 (a context the special tokens fill) leaves no room for
    any input. An input with no tokens and a model that adds none has
    nothing to pool: refused, since a zero vector would look like data.
    """
    if limit <= 0:
        raise InputRefused(NO_ROOM)
    if len(tokens) > limit:
        if not truncate:
            raise InputRefused(TOO_LONG)
        tokens = tokens[:limit]
    if not (tokens or prefix or suffix):
        raise InputRefused(
            f"input {index} has no tokens to embed: it is empty and this model "
            "adds no special tokens"
        )
    return [*prefix, *tokens, *suffix]
