"""Browser pages from origins that are not allowed are refused with 403 before any work.

CORS headers only hide an answer from a page; a browser sends a `text/plain`
POST cross-origin without a preflight, so the server itself must refuse it.
"""

from __future__ import annotations

import json

import httpx
import pytest
from starlette.routing import Route

from tests.support.harness import TINY, LiveServer, RecordingBackend, ServerFactory

EVIL = "http://evil.example"
EMBED = json.dumps({"model": TINY, "input": "why is the sky blue"})
TEXT_PLAIN = {"Content-Type": "text/plain;charset=UTF-8"}


def every_request(live: LiveServer) -> list[tuple[str, str]]:
    """(method, path) for every route of the app and method it answers, OPTIONS included."""
    found = []
    for route in live.app.routes:
        assert isinstance(route, Route)
        path = route.path_format.replace("{model}", TINY)
        found += [(method, path) for method in sorted(route.methods or ())]
        found.append(("OPTIONS", path))
    return found


def refused(origin: str) -> str:
    """The 403's message: it names the origin and the variable that would allow it."""
    fix = "add it to OLLAMA_ORIGINS where the server starts"
    return f"forbidden: origin {origin!r} not allowed ({fix})"


def assert_forbidden(response: httpx.Response, path: str) -> None:
    assert response.status_code == 403, (response.request.method, path, response.text)
    assert "access-control-allow-origin" not in response.headers
    if response.request.method == "HEAD":
        return
    message = refused(response.request.headers["origin"])
    if path.startswith("/v1/"):
        assert response.json()["error"]["message"] == message
        assert response.json()["error"]["type"] == "permission_error"
    elif path.startswith("/v2/"):  # Cohere's route, Cohere's shape
        assert response.json() == {"message": message}
    else:
        assert response.json() == {"error": message}


@pytest.mark.parametrize(
    "origin", [EVIL, "http://localhost.evil.example", "https://my.app", "null", "http://127.0.0.2"]
)
def test_every_route_and_method_refuses_a_foreign_origin(serve: ServerFactory, origin: str) -> None:
    backend = RecordingBackend()
    live = serve(backend=backend)
    requests = every_request(live)
    assert ("POST", "/api/pull") in requests and ("DELETE", "/api/delete") in requests
    for method, path in requests:
        body = EMBED if method in ("POST", "DELETE") else None
        headers = {"Origin": origin, **TEXT_PLAIN}
        assert_forbidden(live.client.request(method, path, content=body, headers=headers), path)
    assert backend.load_calls == 0  # nothing was loaded, let alone embedded
    assert live.pending == 0


def test_a_text_plain_pull_from_a_page_does_nothing(serve: ServerFactory) -> None:
    live = serve(registry="http://127.0.0.1:9")  # a pull that ran would answer 500
    body = json.dumps({"model": "evil/model", "stream": False})
    response = live.client.post("/api/pull", content=body, headers={"Origin": EVIL, **TEXT_PLAIN})
    assert_forbidden(response, "/api/pull")


def test_a_delete_from_a_page_keeps_the_model(serve: ServerFactory) -> None:
    live = serve()
    body = json.dumps({"model": TINY})
    response = live.client.request("DELETE", "/api/delete", content=body, headers={"Origin": EVIL})
    assert_forbidden(response, "/api/delete")
    assert TINY + ":latest" in [m["name"] for m in live.client.get("/api/tags").json()["models"]]


@pytest.mark.parametrize(
    "origin", ["http://localhost:3000", "app://obsidian.md", "vscode-webview://abc", "file://"]
)
def test_allowed_origins_are_served_as_before(server: LiveServer, origin: str) -> None:
    response = server.client.post(
        "/api/embed", content=EMBED, headers={"Origin": origin, **TEXT_PLAIN}
    )
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == origin


def test_configured_origins_are_served(serve: ServerFactory) -> None:
    live = serve(env={"OLLAMA_ORIGINS": "https://my.app, https://*.example.org"})
    for origin in ("https://my.app", "https://docs.example.org"):
        response = live.client.post("/v1/embeddings", content=EMBED, headers={"Origin": origin})
        assert response.status_code == 200, (origin, response.text)
    assert_forbidden(
        live.client.post("/v1/embeddings", content=EMBED, headers={"Origin": EVIL}),
        "/v1/embeddings",
    )


def test_same_origin_and_no_origin_are_served(server: LiveServer) -> None:
    assert server.client.post("/api/embed", content=EMBED).status_code == 200
    # A page the server itself served, under a name no built-in origin covers.
    port = server.url.rsplit(":", 1)[1]
    host = f"emberd.localhost:{port}"
    headers = {"Host": host, "Origin": f"http://{host}"}
    response = server.client.post("/api/embed", content=EMBED, headers=headers)
    assert response.status_code == 200, response.text
