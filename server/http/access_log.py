"""The access log: uvicorn's line for each request, written after its response has left.

uvicorn writes its access line before the response's head, on the request's
own path: formatting it and writing it to the log cost a one-text embedding
a measurable share of its latency. Here the same line, under uvicorn's
logger name and in its format (so that log setups keep working), is written
for requests that have ended, a batch at a time, when `Metrics` counts
them (`RequestMetrics` sees every request end); `BoundedHttpProtocol`
turns uvicorn's own line off.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, cast

from starlette.types import Scope
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

log = logging.getLogger("uvicorn.access")


def write(ended: Iterable[tuple[Scope, int]]) -> None:
    """Log `client - "METHOD /path HTTP/1.1" status` for each (scope, status)."""
    if not log.isEnabledFor(logging.INFO):
        return
    for scope, status in ended:
        http_scope = cast(Any, scope)  # uvicorn's helpers want its own TypedDict of the same dict
        log.info(
            '%s - "%s %s HTTP/%s" %d',
            get_client_addr(http_scope),
            scope["method"],
            get_path_with_query_string(http_scope),
            scope["http_version"],
            status,
        )
