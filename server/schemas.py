"""Request bodies of both dialects, validated with pydantic.

Each model documents its fields as the Ollama and OpenAI APIs define them.
`parse_body` turns raw bytes into a model or a 400 with a clear message.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from server.durations import parse_keep_alive
from server.errors import BadRequest

Body = TypeVar("Body", bound=BaseModel)

class _Request(BaseModel):
    # strict: "true" is not a bool and "5" is not an int, as in Go's decoder.
    model_config = ConfigDict(strict=True, extra="ignore")


class EmbedRequest(_Request):
    """POST /api/embed."""

    model: str = ""
    input: Any = None  # str or list[str]; checked by `texts()` for Ollama's message
    truncate: bool | None = None  # default true: cut over-long inputs
    dimensions: int | None = None  # cut vectors to this many values, then normalise
    keep_alive: Any = None  # seconds (number) or Go duration (string); negative = forever
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
        raise BadRequest("invalid input type")

    def keep_alive_seconds(self) -> float | None:
        """keep_alive in seconds (inf = forever), None when absent."""
        return parse_keep_alive(self.keep_alive)


class LegacyEmbeddingRequest(_Request):
    """POST /api/embeddings in Ollama's legacy dialect (the body has `prompt`)."""

    model: str = ""
    prompt: str = ""  # one text; "" just loads the model
    keep_alive: Any = None
    options: dict[str, Any] | None = None

    def keep_alive_seconds(self) -> float | None:
        """keep_alive in seconds (inf = forever), None when absent."""
        return parse_keep_alive(self.keep_alive)


class ShowRequest(_Request):
    """POST /api/show: `model`, or the legacy `name`."""

    model: str = ""
    name: str = ""
    verbose: bool = False

    def target(self) -> str:
        """The model asked for."""
        return self.model or self.name


def read_json(raw: bytes) -> dict[str, Any]:
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


def parse_body(kind: type[Body], data: dict[str, Any]) -> Body:
    """Validate `data` as `kind`; the first problem becomes the 400's message."""
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise BadRequest(f'invalid value for "{where}": {first["msg"]}') from None


class OpenAIEmbeddingRequest(_Request):
    """POST /v1/embeddings, and /api/embeddings bodies with `input` (AI gateways)."""

    model: str = ""
    input: Any = None  # string, strings, token ids, or lists of token ids
    encoding_format: str | None = None  # "float" (default) or "base64", any case
    dimensions: int | None = None  # cut vectors to this many values, then normalise
    user: str | None = None  # accepted, ignored
