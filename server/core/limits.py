"""Bounds on one request: body size, number of inputs, and tokens.

`RequestLimits` holds the bounds and the checks the core makes of every job
that takes inputs (embeddings, reranking); `server/http/body_limit.py` is the
middleware that stops reading a body past its bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from emberd.server.core.errors import InvalidRequest


@dataclass(frozen=True)
class RequestLimits:
    """The bounds one request must fit; the checks raise the client's error.

    The values come from the settings (`emberd.server.assembly.request_limits`).
    """

    max_body_size: int
    max_inputs: int
    max_tokens: int

    def check_inputs(self, count: int) -> None:
        """400 when a request carries more inputs (texts, documents) than allowed."""
        if count > self.max_inputs:
            raise InvalidRequest(
                f"too many inputs: {count}, the limit is {self.max_inputs} per request "
                "(set by EMBERD_MAX_INPUTS); split them over several requests"
            )

    def check_tokens(self, sequences: Sequence[Sequence[int]]) -> None:
        """400 when the request's sequences, after truncation, hold too many tokens."""
        self.check_token_count(sum(len(sequence) for sequence in sequences))

    def check_token_count(self, total: int) -> None:
        """400 when a request's `total` tokens, after truncation, are too many."""
        if total > self.max_tokens:
            raise InvalidRequest(
                f"too many tokens: {total}, the limit is {self.max_tokens} per request "
                "(set by EMBERD_MAX_REQUEST_TOKENS); split the inputs over several requests"
            )
