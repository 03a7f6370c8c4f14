"""JSON out through orjson: numpy float32 arrays are written as the shortest
text that round-trips a float32, without a Python list in between."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def dumps(body: Any) -> bytes:
    """Serialise a response body (dicts, lists, numpy arrays)."""
    return orjson.dumps(body, option=_OPTIONS)


def json_response(body: Any, status: int = 200) -> Response:
    """A JSON response from `body`."""
    return Response(dumps(body), status_code=status, media_type="application/json")
