"""`emberd import`, `emberd pull` and `emberd rm` on a real store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from emberd.models.errors import ModelNotFound
from emberd.models.store import ModelStores
from emberd.server.cli.main import main
from tests.support.hf_checkpoint import write_checkpoint
from tests.support.hf_families import write_qwen3
from tests.support.registry_server import RegistryServer, registry_server
from tests.support.tiny_model import write_tiny_bert


@pytest.fixture
def registry() -> Iterator[RegistryServer]:
    with registry_server() as server:
        yield server


def stores_of(env: dict[str, str]) -> ModelStores:
    return ModelStores(Path(env["EMBERD_MODELS"]), None)


def test_import_then_rm(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_checkpoint(tmp_path / "ckpt")
    assert main(["import", str(source), "--name", "mine:v1", "--type", "q8_0"], env) == 0
    record = stores_of(env).resolve("mine:v1")
    assert record.info().file_type == "Q8_0"
    assert "imported mine:v1" in capsys.readouterr().out

    assert main(["rm", "mine:v1"], env) == 0
    with pytest.raises(ModelNotFound):
        stores_of(env).resolve("mine:v1")


def test_import_of_a_bad_checkpoint_fails_cleanly(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["import", str(tmp_path / "empty"), "--name", "x"], env) == 1
    assert "config.json" in capsys.readouterr().err
    assert stores_of(env).list() == []


def test_import_of_another_family_shows_its_architecture(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    family = write_qwen3(tmp_path / "qwen3")
    assert main(["import", str(family.directory), "--name", "q3", "--type", "f16"], env) == 0
    captured = capsys.readouterr()
    assert "imported q3:latest (qwen3," in captured.out
    assert "100% |" in captured.err
    config = stores_of(env).resolve("q3").config
    assert config is not None and config.family == "qwen3"


def test_import_of_an_unsupported_model_type_names_it(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    family = write_qwen3(tmp_path / "other")
    config = family.directory / "config.json"
    config.write_text(config.read_text().replace('"qwen3"', '"mamba"'))
    assert main(["import", str(family.directory), "--name", "x"], env) == 1
    assert "unsupported model_type 'mamba'" in capsys.readouterr().err
    assert stores_of(env).list() == []


def test_rm_of_an_unknown_model_fails(env: dict[str, str]) -> None:
    assert main(["rm", "nothing-here"], env) == 1


def test_pull_from_the_configured_registry(
    tmp_path: Path, env: dict[str, str], registry: RegistryServer
) -> None:
    gguf = write_tiny_bert(tmp_path / "tiny.gguf").read_bytes()
    registry.state.publish("library/tiny", "latest", gguf, {"num_ctx": 64})
    env["EMBERD_REGISTRY"] = registry.url
    assert main(["pull", "tiny"], env) == 0
    assert stores_of(env).resolve("tiny").path.read_bytes() == gguf
