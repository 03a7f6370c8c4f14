"""The page's routes over HTTP: files, headers, data, keys, origins and `--no-ui`.

What the page does in a browser is tested in test_ui_browser.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from emberd.server.http import ui
from tests.support.harness import TINY, TINY_CLS, LiveServer, ServerFactory

OWN_FILES = ("index.html", "docs.html", "app.js", "charts.js", "key.js", "docs.js", "style.css")
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


def test_the_page_and_its_files_are_served_with_a_strict_policy(server: LiveServer) -> None:
    page = server.client.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'id="heatmap"' in page.text
    policy = page.headers["content-security-policy"]
    assert policy == ui.CONTENT_SECURITY_POLICY
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"  # no inline script, no eval
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    for path, media in (
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
        ("/ui/favicon.svg", "image/svg+xml"),
        ("/ui/vendor/swagger-ui/swagger-ui-bundle.js", "text/javascript"),
        ("/docs", "text/html"),
    ):
        answer = server.client.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].startswith(media), path
        assert answer.headers["content-security-policy"] == ui.CONTENT_SECURITY_POLICY
    assert server.client.get("/ui/data/live").headers["content-security-policy"]


def test_the_root_is_still_ollamas_and_carries_no_page_headers(server: LiveServer) -> None:
    answer = server.client.get("/")
    assert answer.text == "Ollama is running"
    assert "content-security-policy" not in answer.headers


def test_ui_without_a_slash_goes_to_the_page(server: LiveServer) -> None:
    answer = server.client.get("/ui")
    assert answer.status_code == 308
    assert answer.headers["location"] == "/ui/"


@pytest.mark.parametrize(
    "path", ["/ui/nothing.js", "/ui/%2e%2e/ui.py", "/ui/..%2fui.py", "/ui/vendor/", "/ui/vendor"]
)
def test_only_the_packaged_files_are_served(server: LiveServer, path: str) -> None:
    answer = server.client.get(path)
    assert answer.status_code == 404, path
    assert answer.json() == {"error": "not found"}


def test_the_pages_load_nothing_from_elsewhere() -> None:
    for name in OWN_FILES:
        text = (ui.ASSETS / name).read_text()
        addresses = set(re.findall(r"[a-z]+://[^\s\"'`)]*", text))
        assert addresses <= {SVG_NAMESPACE}, (name, addresses)
        if name.endswith(".html"):
            for link in re.findall(r'(?:src|href)="([^"]*)"', text):
                assert link.startswith(("/ui/", "/docs", "#")), (name, link)
            assert "<script>" not in text and "style=" not in text  # nothing inline
    assert "@import" not in (ui.ASSETS / "style.css").read_text()


def test_the_vendored_renderer_names_its_version_and_license() -> None:
    vendor = ui.ASSETS / "vendor" / "swagger-ui"
    note = (vendor / "VERSION.md").read_text()
    assert "swagger-ui-dist` 5.35.0" in note and "Apache-2.0" in note
    assert "Apache License" in (vendor / "LICENSE").read_text()
    assert "sourceMappingURL" not in (vendor / "swagger-ui.css").read_text()


def test_models_are_the_tags_listing_with_sources(server: LiveServer) -> None:
    listed = server.client.get("/ui/data/models").json()["models"]
    tags = server.client.get("/api/tags").json()["models"]
    assert [m["name"] for m in listed] == [m["name"] for m in tags]
    for entry, tag in zip(listed, tags, strict=True):
        assert {k: entry[k] for k in tag} == tag
    sources = {m["name"]: m["source"] for m in listed}
    assert sources[f"{TINY}:latest"] == "dropped file"
    assert sources["ollama-tiny:latest"] == "Ollama store"
    assert all(m["capabilities"] == ["embedding"] for m in listed)


def test_live_figures_follow_the_embeddings_per_model(serve: ServerFactory) -> None:
    live = serve()
    tokens = 0
    for name in (TINY, "TINY:latest", TINY):
        tokens += live.post_ok("/api/embed", {"model": name, "input": ["a b", "c"]})[
            "prompt_eval_count"
        ]
    live.post_ok("/v1/embeddings", {"model": TINY_CLS, "input": "one"})
    figures = live.client.get("/ui/data/live").json()
    models = figures["activity"]["models"]
    assert set(models) == {f"{TINY}:latest", f"{TINY_CLS}:latest"}
    tiny = models[f"{TINY}:latest"]["series"]
    assert sum(s["requests"] for s in tiny) == 3
    assert sum(s["texts"] for s in tiny) == 6
    assert sum(s["tokens"] for s in tiny) == tokens
    assert max(s["p50"] for s in tiny) > 0
    assert sum(s["requests"] for s in models[f"{TINY_CLS}:latest"]["series"]) == 1
    assert figures["activity"]["recent"]["requests"] == 4
    assert figures["activity"]["recent"]["texts"] == 7
    ps = live.client.get("/api/ps").json()["models"]
    assert [m["name"] for m in figures["running"]] == [m["name"] for m in ps]
    for entry, running in zip(figures["running"], ps, strict=True):
        assert entry["device"] == "CPU"
        assert {k: entry[k] for k in running} == running
    assert figures["queue_depth"] == 0


def test_the_pages_own_polling_is_not_counted_as_activity(serve: ServerFactory) -> None:
    live = serve()
    for path in ("/ui/data/live", "/ui/data/models", "/ui/", "/api/ps", "/api/tags"):
        assert live.client.get(path).status_code == 200
    assert live.client.get("/ui/data/live").json()["activity"]["models"] == {}


def test_playground_embeddings_match_api_embed_with_token_counts(server: LiveServer) -> None:
    texts = ["car", "an automobile on the road", "banana"]
    answer = server.post_ok("/ui/data/embed", {"model": TINY, "input": texts})
    reference = server.post_ok("/api/embed", {"model": TINY, "input": texts})
    np.testing.assert_allclose(answer["embeddings"], reference["embeddings"], atol=1e-6)
    assert answer["dimensions"] == len(reference["embeddings"][0])
    each = [server.post_ok("/api/embed", {"model": TINY, "input": t}) for t in texts]
    assert answer["token_counts"] == [e["prompt_eval_count"] for e in each]
    assert sum(answer["token_counts"]) == reference["prompt_eval_count"]


def test_playground_errors_are_the_contracts(server: LiveServer) -> None:
    missing = server.client.post("/ui/data/embed", json={"model": "nope", "input": "x"})
    assert missing.status_code == 404
    assert missing.json() == {"error": 'model "nope" not found, try pulling it first'}
    bad = server.client.post("/ui/data/embed", json={"model": TINY, "input": 3})
    assert (bad.status_code, bad.json()) == (400, {"error": "invalid input type"})


def test_load_and_unload_from_the_data_route(serve: ServerFactory) -> None:
    live = serve()
    assert live.post_ok("/ui/data/load", {"model": TINY_CLS}) == {"model": TINY_CLS}
    assert live.loaded_names() == [f"{TINY_CLS}:latest"]
    live.post_ok("/ui/data/load", {"model": TINY_CLS, "keep_alive": 0})
    assert live.loaded_names() == []
    assert live.client.post("/ui/data/load", json={"model": "nope"}).status_code == 404


def test_with_api_keys_the_files_are_open_and_the_data_needs_a_key(
    serve: ServerFactory,
) -> None:
    live = serve(env={"EMBERD_API_KEY": "s3cret"})
    for path in ("/ui/", "/ui/app.js", "/docs", "/ui/vendor/swagger-ui/swagger-ui.css", "/ui"):
        assert live.client.get(path).status_code in (200, 308), path
    for method, path in (
        ("GET", "/ui/data/live"),
        ("GET", "/ui/data/models"),
        ("POST", "/ui/data/embed"),
        ("POST", "/ui/data/load"),
        ("POST", "/ui/app.js"),
        ("GET", "/openapi.json"),
        ("GET", "/api/ps"),
    ):
        answer = live.client.request(method, path)
        assert answer.status_code == 401, (method, path)
    keyed = {"Authorization": "Bearer s3cret"}
    assert live.client.get("/ui/data/live", headers=keyed).status_code == 200


def test_same_origin_requests_pass_and_foreign_ones_get_403(server: LiveServer) -> None:
    port = server.url.rsplit(":", 1)[1]
    # A page served from emberd.localhost: not an allowed origin, but its own.
    own = {"Host": f"emberd.localhost:{port}", "Origin": f"http://emberd.localhost:{port}"}
    body = {"model": TINY, "input": "x"}
    assert server.client.post("/ui/data/embed", json=body, headers=own).status_code == 200
    for origin in ("http://evil.example", f"http://other.localhost:{port}"):
        answer = server.client.post(
            "/ui/data/embed",
            content=b'{"model": "tiny", "input": "x"}',
            headers={"Origin": origin, "Content-Type": "text/plain"},
        )
        assert answer.status_code == 403, origin
        assert answer.json() == {
            "error": f"forbidden: origin {origin!r} not allowed "
            "(add it to OLLAMA_ORIGINS where the server starts)"
        }
        assert server.client.get("/ui/data/live", headers={"Origin": origin}).status_code == 403


@pytest.mark.parametrize("how", [{"ui": False}, {"env": {"EMBERD_UI": "0"}}])
def test_no_ui_turns_the_pages_off(serve: ServerFactory, how: dict[str, object]) -> None:
    live = serve(**how)
    for path in ("/ui/", "/ui", "/docs", "/ui/app.js", "/ui/data/live"):
        assert live.client.get(path).status_code == 404, path
    assert "content-security-policy" not in live.client.get("/ui/").headers
    paths = live.client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith("/ui") or p == "/docs"]
    assert live.client.get("/").text == "Ollama is running"


def test_the_page_files_are_listed_from_the_package(server: LiveServer) -> None:
    files = ui.asset_files()
    on_disk = {
        p.relative_to(ui.ASSETS).as_posix() for p in Path(ui.ASSETS).rglob("*") if p.is_file()
    }
    assert set(files) == on_disk
    for name in files:
        assert server.client.get(f"/ui/{name}").content == (ui.ASSETS / name).read_bytes()
