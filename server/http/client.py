"""A small HTTP client for a running emberd, used by the command-line verbs.

Built on `urllib.request`; answers are parsed into the models of
`api_types.py`, the same ones the server renders, so the verbs never
dig through raw JSON.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import TypeVar

from pydantic import ValidationError

from emberd.server.address import is_loopback_host
from emberd.server.http.api_types import (
    Body,
    ListedModel,
    PsResponse,
    RunningModel,
    ShowResponse,
    TagsResponse,
)

__all__ = [
    "ClientError",
    "ConnectError",
    "EmberdClient",
]

Answer = TypeVar("Answer", bound=Body)

# Where the command line takes the key it sends (ClientConfig.from_env).
CLIENT_KEY_HINT = "this command sends the first key of EMBERD_API_KEY, else OLLAMA_API_KEY"


class ClientError(Exception):
    """The server answered with an error, or with something that is not its API."""


class ConnectError(ClientError):
    """No server could be reached at the configured address."""


class EmberdClient:
    """Talks to one server over HTTP, JSON in and out."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        host = urllib.parse.urlsplit(self.base_url).hostname or ""
        # A proxy from the environment must not capture loopback traffic.
        handlers = [urllib.request.ProxyHandler({})] if is_loopback_host(host) else []
        self._opener = urllib.request.build_opener(*handlers)

    def list_models(self) -> list[ListedModel]:
        """GET /api/tags."""
        return self._parse(TagsResponse, "GET", "/api/tags").models

    def running_models(self) -> list[RunningModel]:
        """GET /api/ps."""
        return self._parse(PsResponse, "GET", "/api/ps").models

    def show(self, model: str) -> ShowResponse:
        """POST /api/show for one model."""
        return self._parse(ShowResponse, "POST", "/api/show", {"model": model})

    def embed(self, model: str, inputs: Sequence[str], **fields: object) -> str:
        """POST /api/embed (with any other request `fields`); the JSON response text unchanged."""
        payload = {"model": model, "input": list(inputs), **fields}
        return self._request("POST", "/api/embed", payload).decode("utf-8")

    def _parse(
        self,
        kind: type[Answer],
        method: str,
        path: str,
        payload: Mapping[str, object] | None = None,
    ) -> Answer:
        body = self._json(method, path, payload)
        try:
            return kind.model_validate(body)
        except ValidationError as exc:
            where = ".".join(str(p) for p in exc.errors()[0]["loc"])
            raise ClientError(f"unexpected response from server on {path}: {where}") from None

    def _json(
        self, method: str, path: str, payload: Mapping[str, object] | None = None
    ) -> dict[str, object]:
        raw = self._request(method, path, payload)
        try:
            body = json.loads(raw)
        except ValueError:
            raise ClientError(f"unexpected response from server on {path}: not JSON") from None
        if not isinstance(body, dict):
            raise ClientError(f"unexpected response from server on {path}: not a JSON object")
        return body

    def _request(
        self, method: str, path: str, payload: Mapping[str, object] | None = None
    ) -> bytes:
        headers = {"Accept": "application/json", "User-Agent": "emberd-cli"}
        data = None
        if payload is not None:
            data = json.dumps(payload).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        request = urllib.request.Request(
            self.base_url + path, data=data, headers=headers, method=method
        )
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            message = _error_message(exc)
            if exc.code == 401:
                message += f"; {CLIENT_KEY_HINT}"
            raise ClientError(message) from None
        except urllib.error.URLError as exc:
            raise self._connect_error(exc.reason) from None
        except (ConnectionError, TimeoutError) as exc:
            raise self._connect_error(exc) from None

    def _connect_error(self, reason: object) -> ConnectError:
        message = f"could not connect to emberd at {self.base_url}; is `emberd serve` running?"
        if isinstance(reason, ConnectionRefusedError):
            return ConnectError(message)
        return ConnectError(f"{message} ({reason})")


def _error_message(exc: urllib.error.HTTPError) -> str:
    """The `error` text of an error response, in either API dialect."""
    try:
        body = json.loads(exc.read())
    except (ValueError, OSError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str) and error:
        return error
    return f"{exc.code} {exc.reason}"
