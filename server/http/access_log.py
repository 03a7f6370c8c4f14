"""The access log: one line per request, written once its response has left.

uvicorn writes its access line before the response's head, on the request's
own path: formatting it and writing it to the log cost a one-text embedding
a measurable share of its latency. Here the same line, under uvicorn's
logger name and in its format (so that log setups keep working), is written
in the loop turn after the response was sent, while the client reads it.
`RequestMetrics`, which sees every request end, asks for it;
`BoundedHttpProtocol` turns uvicorn's own line off.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from starlette.types import Scope
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

log = logging.getLogger("uvicorn.access")


def write_later(scope: Scope, status: int) -> None:
    """Log `client - "METHOD /path HTTP/1.1" status` in the next turn of the loop."""
    if log.isEnabledFor(logging.INFO):
        asyncio.get_running_loop().call_soon(_write, scope, status)


def _write(scope: Scope, status: int) -> None:
    http_scope = cast(Any, scope)  # uvicorn's helpers want its own TypedDict of the same dict
    log.info(
        '%s - "%s %s HTTP/%s" %d',
        get_client_addr(http_scope),
        scope["method"],
        get_path_with_query_string(http_scope),
        scope["http_version"],
        status,
    )
