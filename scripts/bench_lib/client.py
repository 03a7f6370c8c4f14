"""One HTTP client for every server: keep-alive `http.client` connections, orjson bodies.

emberd is asked on `/api/embed` (Ollama's shape) and llama-server on
`/v1/embeddings` (OpenAI's shape); both answers are parsed in full and
checked for one vector per input.
"""

from __future__ import annotations

import http.client
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from scripts.bench_lib.procs import BenchError

OLLAMA = "ollama"
OPENAI = "openai"
_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Endpoint:
    """Where and how to ask for embeddings."""

    port: int
    dialect: str  # OLLAMA (/api/embed) or OPENAI (/v1/embeddings)
    model: str

    @property
    def path(self) -> str:
        """The request path of the dialect."""
        return "/api/embed" if self.dialect == OLLAMA else "/v1/embeddings"


class HttpEmbedder:
    """One keep-alive connection to an endpoint."""

    def __init__(self, endpoint: Endpoint, timeout_s: float = 600.0) -> None:
        self._endpoint = endpoint
        self._conn = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=timeout_s)
        self._conn.connect()

    def post(self, batch: Sequence[str]) -> Any:
        """Send one request for `batch`; the parsed answer (BenchError unless 200)."""
        body = orjson.dumps({"model": self._endpoint.model, "input": list(batch)})
        try:
            self._conn.request("POST", self._endpoint.path, body, _HEADERS)
            response = self._conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closed an idle keep-alive connection: reconnect once, as clients do.
            self._conn.close()
            self._conn.request("POST", self._endpoint.path, body, _HEADERS)
            response = self._conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise BenchError(f"{self._endpoint.path} answered {response.status}: {data[:300]!r}")
        return orjson.loads(data)

    def embed(self, batch: Sequence[str]) -> None:
        """Embed `batch`; BenchError unless the answer holds one non-empty vector per text."""
        answer = self.post(batch)
        if self._endpoint.dialect == OLLAMA:
            vectors = answer["embeddings"]
        else:
            vectors = [item["embedding"] for item in answer["data"]]
        if len(vectors) != len(batch) or (vectors and not vectors[0]):
            raise BenchError(f"asked for {len(batch)} embeddings, got {len(vectors)}")

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def token_count(endpoint: Endpoint, batch: Sequence[str]) -> int:
    """Tokens the server evaluated for `batch` (emberd's `prompt_eval_count`)."""
    client = HttpEmbedder(endpoint)
    try:
        answer = client.post(batch)
    finally:
        client.close()
    if endpoint.dialect == OLLAMA:
        return int(answer["prompt_eval_count"])
    return int(answer["usage"]["prompt_tokens"])
