"""Who may talk to the server: API keys, the Host check (DNS rebinding) and CORS."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import httpx
import ollama
import openai
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from emberd.server.http import ui
from emberd.server.http.app import create_app
from tests.support.harness import (
    TINY,
    LiveServer,
    RecordingBackend,
    ServerFactory,
    Stores,
    running_server,
    settings_for,
    wait_until,
)

KEY_A = "sk-emberd-alpha-7f3c2a"
KEY_B = "sk-emberd-beta-91d2e4"
WRONG = "sk-emberd-wrong-5e8a0b"
EMBED = {"model": TINY, "input": "why is the sky blue"}
OLLAMA_401 = {
    "error": "unauthorized: a valid API key is required "
    "(send Authorization: Bearer KEY with a key from the server's EMBERD_API_KEY)"
}


@pytest.fixture(scope="module")
def keyed(stores: Stores) -> Iterator[LiveServer]:
    """A loopback server that requires one of two API keys."""
    with running_server(settings_for(stores, api_keys=(KEY_A, KEY_B))) as live:
        yield live


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def app_requests(live: LiveServer) -> list[tuple[str, str]]:
    """(method, path) for every route of the app and method it answers, but GET|HEAD /
    and the page's files (open: test_ui.py)."""
    found = []
    for route in live.app.routes:
        assert isinstance(route, Route)
        path = route.path_format.replace("{model}", TINY).replace("{path}", "app.js")
        for method in sorted(route.methods or ()):
            if path == "/" and method in ("GET", "HEAD"):
                continue
            if not ui.is_public_file(method, path):
                found.append((method, path))
    return found


def assert_401(response: httpx.Response, path: str) -> None:
    assert response.status_code == 401, (path, response.text)
    assert response.headers["www-authenticate"] == "Bearer"
    if response.request.method == "HEAD":
        assert response.content == b""
    elif path.startswith("/v1/"):
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "authentication_error"
        assert error["message"] == OLLAMA_401["error"]
    elif path.startswith("/v2/"):  # Cohere's route, Cohere's shape
        assert response.json() == {"message": OLLAMA_401["error"]}
    else:
        assert response.json() == OLLAMA_401


# -- API keys ----------------------------------------------------------------------------


def test_every_route_but_root_needs_a_key(keyed: LiveServer) -> None:
    requests = app_requests(keyed)
    assert ("POST", "/v1/embeddings") in requests and ("GET", "/metrics") in requests
    assert ("GET", "/ui/data/live") in requests and ("POST", "/ui/data/embed") in requests
    for method, path in [*requests, ("POST", "/"), ("GET", "/no/such/path")]:
        assert_401(keyed.client.request(method, path), path)


@pytest.mark.parametrize(
    "header",
    [
        f"Bearer {WRONG}",
        f"Basic {KEY_A}",
        KEY_A,
        "Bearer",
        "",
        f"Bearer {KEY_A}x",
        f"Bearer {KEY_A[:-1]}",
    ],
)
@pytest.mark.parametrize("path", ["/api/embed", "/v1/embeddings"])
def test_wrong_keys_and_schemes_are_401(keyed: LiveServer, header: str, path: str) -> None:
    response = keyed.client.post(path, json=EMBED, headers={"Authorization": header})
    assert_401(response, path)


def test_missing_header_is_401_in_each_dialect(keyed: LiveServer) -> None:
    assert_401(keyed.client.post("/api/embed", json=EMBED), "/api/embed")
    assert_401(keyed.client.post("/api/embeddings", json=EMBED), "/api/embeddings")
    assert_401(keyed.client.post("/v1/embeddings", json=EMBED), "/v1/embeddings")
    assert_401(keyed.client.get("/v1/models"), "/v1/models")


@pytest.mark.parametrize("key", [KEY_A, KEY_B])
def test_both_keys_work(keyed: LiveServer, key: str) -> None:
    for method, path, body in [
        ("POST", "/api/embed", EMBED),
        ("POST", "/v1/embeddings", EMBED),
        ("GET", "/api/tags", None),
        ("GET", "/v1/models", None),
        ("GET", "/metrics", None),
        ("GET", "/openapi.json", None),
    ]:
        response = keyed.client.request(method, path, json=body, headers=bearer(key))
        assert response.status_code == 200, (path, response.text)
    lower_scheme = {"Authorization": f"bearer {key}"}
    assert keyed.client.get("/api/version", headers=lower_scheme).status_code == 200


def test_an_empty_key_lets_nobody_in(stores: Stores) -> None:
    settings = dataclasses.replace(settings_for(stores), api_keys=("",))
    with TestClient(create_app(settings), base_url="http://localhost") as client:
        for header in ("Bearer ", "Bearer", ""):
            response = client.get("/api/version", headers={"Authorization": header})
            assert response.status_code == 401, header


def test_root_needs_no_key(keyed: LiveServer) -> None:
    assert keyed.client.get("/").text == "Ollama is running"
    assert keyed.client.head("/").status_code == 200


def test_ollama_client_sends_ollama_api_key(
    keyed: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_API_KEY", KEY_B)
    with ollama.Client(host=keyed.url) as client:
        assert len(client.embed(model=TINY, input=["a", "b"]).embeddings) == 2
        assert TINY + ":latest" in [m.model for m in client.list().models]
    monkeypatch.delenv("OLLAMA_API_KEY")
    with ollama.Client(host=keyed.url) as client, pytest.raises(ollama.ResponseError) as caught:
        client.embed(model=TINY, input="a")
    assert caught.value.status_code == 401


def test_openai_client_api_key(keyed: LiveServer) -> None:
    with openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=KEY_A, max_retries=0) as client:
        assert len(client.embeddings.create(model=TINY, input=["a", "b"]).data) == 2
    with (
        openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=WRONG, max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.embeddings.create(model=TINY, input="a")


def test_keys_never_reach_the_logs(keyed: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("uvicorn.access", "uvicorn.error", "emberd"):
        caplog.set_level(logging.DEBUG, logger=name)
    assert keyed.client.post("/api/embed", json=EMBED, headers=bearer(WRONG)).status_code == 401
    assert keyed.client.post("/api/embed", json=EMBED, headers=bearer(KEY_A)).status_code == 200
    bad_request = keyed.client.post("/v1/embeddings", json={"model": TINY}, headers=bearer(KEY_A))
    assert bad_request.status_code == 400
    # Access lines are written a moment after their requests end (RequestMetrics).
    wait_until(lambda: sum(r.name == "uvicorn.access" for r in caplog.records) >= 3)
    for record in caplog.records:
        text = f"{record.getMessage()} {record.exc_text or ''}"
        for secret in (KEY_A, KEY_B, WRONG):
            assert secret not in text, record
    assert all(secret not in caplog.text for secret in (KEY_A, KEY_B, WRONG))


@pytest.mark.parametrize(
    ("host", "keys", "warns"),
    [
        ("0.0.0.0", (), True),
        ("::", (), True),
        ("0.0.0.0", (KEY_A,), False),
        ("127.0.0.1", (), False),
    ],
)
def test_exposed_without_a_key_warns_at_app_creation(
    stores: Stores,
    caplog: pytest.LogCaptureFixture,
    host: str,
    keys: tuple[str, ...],
    warns: bool,
) -> None:
    caplog.set_level(logging.WARNING, logger="emberd")
    create_app(settings_for(stores, host=host, api_keys=keys))
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "API key" in r.getMessage()
    ]
    assert bool(warnings) == warns
    for record in caplog.records:
        assert KEY_A not in record.getMessage()


# -- Host check ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "localhost:11434",
        "localhost",
        "LOCALHOST",
        "127.0.0.1",
        "127.0.0.1:8080",
        "[::1]:1234",
        "[::1]",
        "foo.localhost",
        "foo.localhost:3000",
    ],
)
def test_local_hosts_are_allowed(server: LiveServer, host: str) -> None:
    response = server.client.get("/api/version", headers={"Host": host})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",
        "evil.example:11434",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
        "[2606:4700::1111]:80",
        "8.8.8.8",
    ],
)
def test_other_hosts_are_403(server: LiveServer, host: str) -> None:
    headers = {"Host": host}
    response = server.client.get("/api/version", headers=headers)
    assert response.status_code == 403
    assert response.json() == {"error": "forbidden: host not allowed"}
    assert server.client.get("/", headers=headers).status_code == 403
    openai_shape = server.client.post("/v1/embeddings", json=EMBED, headers=headers)
    assert openai_shape.status_code == 403
    assert openai_shape.json()["error"]["type"] == "permission_error"


def test_host_check_applies_to_a_loopback_app(stores: Stores) -> None:
    app = create_app(settings_for(stores))
    with TestClient(app, base_url="http://evil.example") as client:
        assert client.get("/").status_code == 403


def test_a_server_bound_to_all_interfaces_does_not_check_host(stores: Stores) -> None:
    app = create_app(settings_for(stores, host="0.0.0.0"))
    with TestClient(app, base_url="http://evil.example") as client:
        assert client.get("/").text == "Ollama is running"
        assert client.get("/api/version").status_code == 200


# -- CORS ------------------------------------------------------------------------------------


def preflight(live: LiveServer, origin: str, path: str = "/api/embed") -> httpx.Response:
    return live.client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost:3000",
        "http://localhost",
        "https://127.0.0.1:8443",
        "app://obsidian.md",
        "vscode-webview://abc",
        "tauri://localhost",
        "file://",
    ],
)
def test_preflight_from_builtin_origins(server: LiveServer, origin: str) -> None:
    response = preflight(server, origin)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == origin
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()
    simple = server.client.post("/api/embed", json=EMBED, headers={"Origin": origin})
    assert simple.headers["access-control-allow-origin"] == origin


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://localhost.evil.example", "https://my.app"]
)
def test_other_origins_are_refused(server: LiveServer, origin: str) -> None:
    # More in test_origins.py: every route and method, text/plain posts, pulls.
    asked = preflight(server, origin)
    assert asked.status_code == 403
    assert "access-control-allow-origin" not in asked.headers
    simple = server.client.post("/api/embed", json=EMBED, headers={"Origin": origin})
    assert simple.status_code == 403
    assert "access-control-allow-origin" not in simple.headers


def test_configured_origins_are_added(serve: ServerFactory) -> None:
    live = serve(env={"OLLAMA_ORIGINS": "https://my.app, https://*.example.org"})
    for origin in ("https://my.app", "https://docs.example.org", "http://localhost:3000"):
        response = preflight(live, origin, "/v1/embeddings")
        assert response.headers.get("access-control-allow-origin") == origin, origin
    assert "access-control-allow-origin" not in preflight(live, "https://evil.example").headers


def test_preflight_needs_no_key_and_401s_are_readable(keyed: LiveServer) -> None:
    origin = "http://localhost:3000"
    response = preflight(keyed, origin)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == origin
    denied = keyed.client.post("/api/embed", json=EMBED, headers={"Origin": origin})
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == origin
    allowed = keyed.client.post(
        "/api/embed", json=EMBED, headers={"Origin": origin, **bearer(KEY_A)}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == origin


def test_errors_are_readable_from_allowed_origins(serve: ServerFactory) -> None:
    live = serve(backend=RecordingBackend(fail_with=RuntimeError("an unforeseen fault")))
    origin = "http://localhost:3000"
    for path in ("/api/embed", "/v1/embeddings"):
        response = live.client.post(path, json=EMBED, headers={"Origin": origin})
        assert response.status_code == 500
        assert response.headers["access-control-allow-origin"] == origin, path
    unknown = live.client.post("/api/embed", json={"model": "nope"}, headers={"Origin": origin})
    assert unknown.status_code == 404
    assert unknown.headers["access-control-allow-origin"] == origin
