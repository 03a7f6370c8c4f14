"""Request bytes to a request model of `api_types.py`, or a 400 that says why."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from emberd.server.http.error_responses import BadRequest

Request = TypeVar("Request", bound=BaseModel)


def json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object in a request body, or a 400."""
    if not raw.strip():
        raise BadRequest("missing request body")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return data


def parse_body(kind: type[Request], data: dict[str, Any]) -> Request:
    """Validate `data` as `kind`; the first problem becomes the 400's message."""
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise BadRequest(f'invalid value for "{where}": {first["msg"]}') from None
