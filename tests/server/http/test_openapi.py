"""GET /openapi.json documents every route of the app, with its request schemas."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from starlette.routing import Route

from emberd.server.http.api_types import EmbedRequest, OpenAIEmbeddingRequest
from tests.support.harness import LiveServer

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def spec(server: LiveServer) -> dict[str, Any]:
    response = server.client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    document: dict[str, Any] = orjson.loads(response.content)
    return document


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `$ref`, checking it points at something."""
    ref = schema.get("$ref")
    if ref is None:
        return schema
    prefix = "#/components/schemas/"
    assert ref.startswith(prefix), ref
    target: dict[str, Any] = spec["components"]["schemas"][ref.removeprefix(prefix)]
    return target


def request_schemas(spec: dict[str, Any], path: str) -> list[dict[str, Any]]:
    body = spec["paths"][path]["post"]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    options = schema.get("oneOf") or schema.get("anyOf") or [schema]
    return [resolve(spec, option) for option in options]


def test_document_is_openapi_3(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] and spec["info"]["version"]
    assert spec["paths"]


def test_every_route_is_documented_with_its_methods(
    server: LiveServer, spec: dict[str, Any]
) -> None:
    routes = server.app.routes
    assert len(routes) >= 13
    for route in routes:
        assert isinstance(route, Route), route
        assert route.path_format in spec["paths"], route.path_format
        documented = {m for m in spec["paths"][route.path_format] if m in HTTP_METHODS}
        served = {m.lower() for m in route.methods or ()}
        if "get" in served and "head" not in documented:
            served.discard("head")  # every GET answers HEAD; documented where asked for
        assert served == documented, route.path_format


def test_no_path_is_documented_that_the_app_does_not_serve(
    server: LiveServer, spec: dict[str, Any]
) -> None:
    served = {route.path_format for route in server.app.routes if isinstance(route, Route)}
    assert set(spec["paths"]) == served


def test_head_is_documented_where_the_contract_names_it(spec: dict[str, Any]) -> None:
    for path in ("/", "/api/version", "/api/tags"):
        assert {"get", "head"} <= set(spec["paths"][path]), path


def test_path_parameters_are_declared(spec: dict[str, Any]) -> None:
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            named = {part[1:-1] for part in path.split("/") if part.startswith("{")}
            assert declared == named, path


def test_every_operation_has_a_summary_and_responses(spec: dict[str, Any]) -> None:
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation["summary"], (path, method)
            assert "200" in operation["responses"], (path, method)


def test_every_reference_resolves(spec: dict[str, Any]) -> None:
    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                resolve(spec, node)
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(spec)


def test_embed_request_schema_has_its_fields(spec: dict[str, Any]) -> None:
    (schema,) = request_schemas(spec, "/api/embed")
    fields = set(schema["properties"])
    assert {"model", "input", "truncate", "dimensions", "keep_alive", "options"} <= fields
    assert fields == set(EmbedRequest.model_fields)


def test_openai_request_schema_has_its_fields(spec: dict[str, Any]) -> None:
    (schema,) = request_schemas(spec, "/v1/embeddings")
    fields = set(schema["properties"])
    assert {"model", "input", "encoding_format", "dimensions", "user"} <= fields
    assert fields == set(OpenAIEmbeddingRequest.model_fields)


def test_api_embeddings_documents_both_dialects(spec: dict[str, Any]) -> None:
    fields = [set(schema["properties"]) for schema in request_schemas(spec, "/api/embeddings")]
    assert any("prompt" in f for f in fields)
    assert any("input" in f and "encoding_format" in f for f in fields)


def test_openai_routes_document_openai_errors(spec: dict[str, Any]) -> None:
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            error = operation["responses"]["4XX"]["content"]["application/json"]["schema"]
            message = resolve(spec, error)["properties"]["error"]
            if path.startswith("/v1/"):
                assert resolve(spec, message)["properties"].keys() >= {"message", "type"}, path
            else:
                assert message["type"] == "string", path


def test_management_bodies_match_their_routes(spec: dict[str, Any]) -> None:
    from emberd.server.http.api_types import DeleteRequest, PullRequest

    (pull,) = request_schemas(spec, "/api/pull")
    assert set(pull["properties"]) == set(PullRequest.model_fields)
    body = spec["paths"]["/api/delete"]["delete"]["requestBody"]
    delete = resolve(spec, body["content"]["application/json"]["schema"])
    assert set(delete["properties"]) == set(DeleteRequest.model_fields)


def test_every_json_answer_has_its_schema(spec: dict[str, Any]) -> None:
    for path, methods in spec["paths"].items():
        if path == "/openapi.json":
            continue
        for method, operation in methods.items():
            content = operation["responses"]["200"].get("content", {})
            for media in ("application/json", "application/x-ndjson"):
                if media in content:
                    schema = content[media].get("schema")
                    assert schema, f"{method.upper()} {path} answers {media} without a schema"
                    for option in schema.get("oneOf") or [schema]:
                        assert resolve(spec, option)["properties"]


def test_the_client_types_parse_what_the_server_renders(server: LiveServer) -> None:
    from emberd.server.http.api_types import PsResponse, ShowResponse, TagsResponse

    assert server.embed({"model": "tiny", "input": "sky", "keep_alive": "1m"}).status_code == 200
    tags = TagsResponse.model_validate(server.client.get("/api/tags").json())
    listed = {m.name: m for m in tags.models}
    assert listed["tiny:latest"].details.family == "bert"
    assert listed["tiny:latest"].modified_at is not None
    running = PsResponse.model_validate(server.client.get("/api/ps").json())
    tiny = next(m for m in running.models if m.name == "tiny:latest")
    assert tiny.expires_at is not None and tiny.context_length
    shown = ShowResponse.model_validate(server.post_ok("/api/show", {"model": "tiny"}))
    assert shown.capabilities == ["embedding"]
    assert shown.model_info["general.architecture"] == "bert"
