"""A model file replaced or removed while loaded: reload or 404, never a crash.

A `cp` over a mapped model once killed the server (SIGBUS) or fed it garbage,
so these run against a server in a child process.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.support.subprocess_server import ChildServer, child_server_in
from tests.support.tiny_model import write_tiny_bert

TEXTS = ["why is the sky blue?", "a second text, longer than the first one"]


@pytest.fixture
def child(tmp_path: Path) -> Iterator[ChildServer]:
    models = tmp_path / "models"
    models.mkdir()
    write_tiny_bert(models / "first.gguf", seed=0)
    write_tiny_bert(models / "second.gguf", seed=7, pooling=2)
    store = tmp_path / "emberd"
    store.mkdir()
    for name in ("first", "second"):
        shutil.copyfile(models / "first.gguf", store / f"{name}.gguf")
    (store / "reference.gguf").write_bytes((models / "second.gguf").read_bytes())
    with child_server_in(tmp_path) as running:
        yield running


def vectors(child: ChildServer, model: str) -> np.ndarray:
    response = child.client.post("/api/embed", json={"model": model, "input": TEXTS})
    assert response.status_code == 200, response.text
    return np.asarray(response.json()["embeddings"])


def test_a_file_copied_over_a_loaded_model_is_reloaded(child: ChildServer, tmp_path: Path) -> None:
    store = tmp_path / "emberd"
    before = vectors(child, "first")
    # `cp` writes into the same file (same inode), as a user replacing it would.
    with open(store / "first.gguf", "r+b") as target:
        data = (tmp_path / "models" / "second.gguf").read_bytes()
        target.truncate(0)
        target.write(data)
    after = vectors(child, "first")
    assert child.alive(), child.log()
    np.testing.assert_allclose(after, vectors(child, "reference"), atol=1e-6)
    assert not np.allclose(after, before)
    assert "reloading first:latest: its file changed" in child.log()


def test_a_removed_file_is_a_404_and_leaves_the_listings_working(
    child: ChildServer, tmp_path: Path
) -> None:
    vectors(child, "first")
    vectors(child, "second")
    (tmp_path / "emberd" / "first.gguf").unlink()
    ps = child.client.get("/api/ps")
    assert ps.status_code == 200, ps.text
    assert [m["name"] for m in ps.json()["models"]] == ["second:latest"]
    response = child.client.post("/api/embed", json={"model": "first", "input": "sky"})
    assert response.status_code == 404, response.text
    deleted = child.client.request("DELETE", "/api/delete", json={"model": "first"})
    assert deleted.status_code == 404, deleted.text
    assert child.client.get("/api/tags").status_code == 200
    assert child.alive()
