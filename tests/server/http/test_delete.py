"""DELETE /api/delete: a model goes, with the blobs no other model uses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from emberd.models.names import ModelName
from emberd.models.ollama_layout import (
    CONFIG_MEDIA_TYPE,
    MODEL_MEDIA_TYPE,
    PARAMS_MEDIA_TYPE,
    Layer,
)
from emberd.models.store import ModelStores
from emberd.server.config import Settings
from tests.support.registry_server import manage_app
from tests.support.tiny_model import write_ollama_layout, write_tiny_bert


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("delete") / "tiny.gguf")


@dataclass(frozen=True)
class Store:
    """An emberd store holding tiny:a and tiny:b (one GGUF, two params) and a dropped GGUF."""

    stores: ModelStores
    root: Path
    ollama: Path
    model: str
    params_a: str
    params_b: str
    config: str

    def blobs(self) -> set[str]:
        """Digests of the blobs on disk."""
        folder = self.root / "blobs"
        return {p.name.replace("-", ":", 1) for p in folder.iterdir()} if folder.is_dir() else set()


def _blob(stores: ModelStores, media_type: str, data: bytes) -> Layer:
    return Layer(media_type, stores.write_blob([data]), len(data))


@pytest.fixture
def store(tmp_path: Path, gguf: Path) -> Store:
    root, ollama = tmp_path / "emberd", tmp_path / "ollama"
    stores = ModelStores(root, ollama)
    model = Layer(MODEL_MEDIA_TYPE, stores.write_blob_from_file(gguf), gguf.stat().st_size)
    config = _blob(stores, CONFIG_MEDIA_TYPE, b'{"model_format":"gguf"}')
    params = {}
    for tag, num_ctx in (("a", 32), ("b", 64)):
        params[tag] = _blob(stores, PARAMS_MEDIA_TYPE, json.dumps({"num_ctx": num_ctx}).encode())
        stores.write_manifest(ModelName.parse(f"tiny:{tag}"), [model, params[tag]], config)
    (root / "dropped.gguf").write_bytes(gguf.read_bytes())
    write_ollama_layout(ollama, gguf, name="theirs")
    return Store(
        stores, root, ollama, model.digest, params["a"].digest, params["b"].digest, config.digest
    )


@pytest.fixture
def client(tmp_path: Path, store: Store) -> Iterator[TestClient]:
    env = {
        "HOME": str(tmp_path),
        "EMBERD_MODELS": str(store.root),
        "OLLAMA_MODELS": str(store.ollama),
    }
    with TestClient(manage_app(Settings.from_env(env)), base_url="http://127.0.0.1") as test_client:
        yield test_client


def delete(client: TestClient, body: dict[str, str]) -> tuple[int, bytes]:
    response = client.request("DELETE", "/api/delete", json=body)
    return response.status_code, response.content


def tags(client: TestClient) -> list[str]:
    return sorted(m["name"] for m in client.get("/api/tags").json()["models"])


def test_delete_keeps_blobs_another_model_uses(client: TestClient, store: Store) -> None:
    assert tags(client) == ["dropped:latest", "theirs:latest", "tiny:a", "tiny:b"]

    assert delete(client, {"model": "tiny:a"}) == (200, b"")

    assert tags(client) == ["dropped:latest", "theirs:latest", "tiny:b"]
    assert store.blobs() == {store.model, store.params_b, store.config}
    assert client.post("/api/show", json={"model": "tiny:b"}).status_code == 200

    assert delete(client, {"name": "TINY:B"}) == (200, b"")  # legacy field, any case
    assert store.blobs() == set()
    assert not (store.root / "manifests" / "registry.ollama.ai").exists()


def test_delete_of_a_dropped_gguf_removes_the_file(client: TestClient, store: Store) -> None:
    assert delete(client, {"model": "dropped"}) == (200, b"")
    assert not (store.root / "dropped.gguf").exists()
    assert store.blobs() == {store.model, store.params_a, store.params_b, store.config}


def test_delete_of_unknown_model_is_404(client: TestClient) -> None:
    status, body = delete(client, {"model": "nope"})
    assert status == 404
    assert json.loads(body) == {"error": "model 'nope' not found"}


def test_models_in_ollamas_store_are_never_deleted(client: TestClient, store: Store) -> None:
    before = sorted(p.relative_to(store.ollama) for p in store.ollama.rglob("*"))
    status, body = delete(client, {"model": "theirs"})
    assert status == 403
    assert json.loads(body) == {
        "error": "model 'theirs' is in Ollama's store, which emberd never changes; "
        "`ollama rm theirs` removes it"
    }
    assert sorted(p.relative_to(store.ollama) for p in store.ollama.rglob("*")) == before
    assert "theirs:latest" in tags(client)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, 400, "model is required"),
        ({"model": ""}, 400, "model is required"),
        ({"model": "../../etc"}, 400, "invalid model name"),
        # Names Windows cannot create as files.
        ({"model": "con"}, 400, "invalid model name"),
        ({"model": "nul:latest"}, 400, "invalid model name"),
        ({"model": "m."}, 400, "invalid model name"),
        ({"model": "m:x:y"}, 400, "invalid model name"),
    ],
)
def test_delete_bad_requests(
    client: TestClient, store: Store, body: dict[str, str], status: int, message: str
) -> None:
    got_status, got_body = delete(client, body)
    assert (got_status, json.loads(got_body)) == (status, {"error": message})
    assert len(store.blobs()) == 4
