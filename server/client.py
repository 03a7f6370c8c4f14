"""A small HTTP client for a running emberd, used by the command-line verbs.

Built on `urllib.request` so the command line needs nothing beyond the
standard library. Responses are turned into frozen dataclasses here, so the
verbs never dig through raw JSON.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from server.config import is_loopback_host

__all__ = [
    "ClientError",
    "ConnectError",
    "EmberdClient",
    "ListedModel",
    "ModelDetails",
    "RunningModel",
    "ShowResult",
    "parse_timestamp",
]


class ClientError(Exception):
    """The server answered with an error, or with something that is not its API."""


class ConnectError(ClientError):
    """No server could be reached at the configured address."""


@dataclass(frozen=True)
class ModelDetails:
    """The `details` object of /api/tags, /api/ps and /api/show."""

    format: str = ""
    family: str = ""
    parameter_size: str = ""
    quantization_level: str = ""


@dataclass(frozen=True)
class ListedModel:
    """One entry of GET /api/tags."""

    name: str
    digest: str
    size: int
    modified_at: datetime | None
    details: ModelDetails


@dataclass(frozen=True)
class RunningModel:
    """One entry of GET /api/ps."""

    name: str
    digest: str
    size: int
    size_vram: int
    expires_at: datetime | None
    context_length: int | None
    details: ModelDetails


@dataclass(frozen=True)
class ShowResult:
    """The parts of POST /api/show that the command line prints.

    `model_info` holds the GGUF key/values as the server sent them; their
    types vary with the key.
    """

    details: ModelDetails
    model_info: Mapping[str, object]
    capabilities: tuple[str, ...]
    parameters: str


def parse_timestamp(text: object) -> datetime | None:
    """Parse an RFC 3339 time as Go writes it (nanoseconds, `Z`); None if absent or bad.

    Go's zero time (year 1) also reads as None.
    """
    if not isinstance(text, str) or not text:
        return None
    # fromisoformat before 3.11 takes neither "Z" nor more than 6 fraction digits.
    normalised = re.sub(r"[Zz]$", "+00:00", text.strip())
    normalised = re.sub(r"(\.\d{6})\d+", r"\1", normalised)
    try:
        moment = datetime.fromisoformat(normalised)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return None if moment.year <= 1 else moment


def _details(value: object) -> ModelDetails:
    if not isinstance(value, dict):
        return ModelDetails()
    return ModelDetails(
        format=str(value.get("format") or ""),
        family=str(value.get("family") or ""),
        parameter_size=str(value.get("parameter_size") or ""),
        quantization_level=str(value.get("quantization_level") or ""),
    )


def _int(value: object) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


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
        return [
            ListedModel(
                name=str(item.get("name") or item.get("model") or ""),
                digest=str(item.get("digest") or ""),
                size=_int(item.get("size")),
                modified_at=parse_timestamp(item.get("modified_at")),
                details=_details(item.get("details")),
            )
            for item in self._models(self._json("GET", "/api/tags"))
        ]

    def running_models(self) -> list[RunningModel]:
        """GET /api/ps."""
        return [
            RunningModel(
                name=str(item.get("name") or item.get("model") or ""),
                digest=str(item.get("digest") or ""),
                size=_int(item.get("size")),
                size_vram=_int(item.get("size_vram")),
                expires_at=parse_timestamp(item.get("expires_at")),
                context_length=_int(item.get("context_length")) or None,
                details=_details(item.get("details")),
            )
            for item in self._models(self._json("GET", "/api/ps"))
        ]

    def show(self, model: str) -> ShowResult:
        """POST /api/show for one model."""
        body = self._json("POST", "/api/show", {"model": model})
        info = body.get("model_info")
        capabilities = body.get("capabilities")
        return ShowResult(
            details=_details(body.get("details")),
            model_info=dict(info) if isinstance(info, dict) else {},
            capabilities=tuple(str(c) for c in capabilities)
            if isinstance(capabilities, list)
            else (),
            parameters=str(body.get("parameters") or ""),
        )

    def embed(self, model: str, inputs: Sequence[str], **fields: object) -> str:
        """POST /api/embed (with any other request `fields`); the JSON response text unchanged."""
        payload = {"model": model, "input": list(inputs), **fields}
        return self._request("POST", "/api/embed", payload).decode("utf-8")

    def _models(self, body: dict[str, object]) -> list[dict[str, object]]:
        models = body.get("models")
        if not isinstance(models, list):
            raise ClientError("unexpected response from server: no models list")
        return [item for item in models if isinstance(item, dict)]

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
            raise ClientError(_error_message(exc)) from None
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
