"""One bad entry never fails a listing, and listing never stalls other requests."""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.harness import ModelFiles, ServerFactory, Stores, make_stores
from tests.support.tiny_model import write_ollama_layout

_STRING, _ARRAY, _UINT32 = 8, 9, 4


def _gguf_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def write_nested_array_gguf(path: Path, depth: int) -> Path:
    """A GGUF header whose one extra key is an array nested `depth` deep."""
    kv = _gguf_string("general.architecture") + struct.pack("<I", _STRING) + _gguf_string("bert")
    # An array of one array of one array ... of an empty array of uint32.
    nested = struct.pack("<I", _ARRAY) + struct.pack("<IQ", _ARRAY, 1) * (depth - 1)
    kv += _gguf_string("deep") + nested + struct.pack("<IQ", _UINT32, 0)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + kv)
    return path


@pytest.fixture
def hostile_stores(tmp_path: Path, model_files: ModelFiles) -> Stores:
    stores = make_stores(tmp_path, model_files)
    write_nested_array_gguf(stores.emberd / "nested.gguf", 100_000)
    write_ollama_layout(stores.ollama, model_files.mean, name="deep-manifest")
    manifest = stores.ollama / "manifests" / "registry.ollama.ai" / "library" / "deep-manifest"
    (manifest / "latest").write_text("[" * 100_000 + "]" * 100_000)
    return stores


def test_deeply_nested_files_are_left_out_of_the_listings(
    serve: ServerFactory, hostile_stores: Stores
) -> None:
    live = serve(model_stores=hostile_stores)
    tags = live.client.get("/api/tags")
    assert tags.status_code == 200, tags.text
    names = [m["name"] for m in tags.json()["models"]]
    assert "tiny:latest" in names
    assert "nested:latest" not in names and "deep-manifest:latest" not in names
    models = live.client.get("/v1/models")
    assert models.status_code == 200, models.text
    assert "tiny:latest" in [m["id"] for m in models.json()["data"]]
    assert live.client.post("/api/show", json={"model": "nested"}).status_code == 500


def test_hashing_a_big_dropped_file_does_not_hold_up_other_requests(
    serve: ServerFactory, tmp_path: Path, model_files: ModelFiles
) -> None:
    stores = make_stores(tmp_path, model_files)
    big = stores.emberd / "big.gguf"
    big.write_bytes(model_files.mean.read_bytes())
    # Sparse: costs no disk, but hashing it reads every byte.
    os.truncate(big, 512 << 20)
    live = serve(model_stores=stores)
    listing: list[httpx.Response] = []
    worker = threading.Thread(
        target=lambda: listing.append(httpx.get(f"{live.url}/api/tags", timeout=120))
    )
    worker.start()
    # Give the listing time to start hashing (a second or more for 512 MB): were
    # it on the event loop, the requests below would wait until it is done.
    time.sleep(0.2)
    health = live.client.get("/")
    embedded = live.embed({"model": "tiny", "input": "sky"})
    answered_while_listing = not listing
    worker.join(120)
    assert health.status_code == 200 and embedded.status_code == 200
    assert answered_while_listing, "the listing finished first: it held up the other requests"
    assert listing[0].status_code == 200
    assert "big:latest" in [m["name"] for m in listing[0].json()["models"]]
