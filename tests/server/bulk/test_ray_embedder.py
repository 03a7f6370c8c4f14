"""The Ray Data callable class and `embed-file --ray`, on one local Ray instance.

Skipped only when Ray is not installed (`pip install .[ray]`; scripts/test
installs it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emberd.server.bulk.ray_embedder import Embedder
from emberd.server.cli.main import main
from tests.support.bulk_files import corpus, read_output, store_env, vectors_of, write_corpus
from tests.support.harness import TINY, LiveServer, ModelFiles, Stores

ray = pytest.importorskip("ray")

# Ray warns about its own deprecated settings when Ray Data starts.
pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning"), pytest.mark.slow]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """One local Ray instance for the module (starting one takes seconds)."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=128 * 1024 * 1024,
    )
    try:
        yield ray
    finally:
        ray.shutdown()


def test_map_batches_gives_the_servers_vectors(
    local_ray: Any, model_files: ModelFiles, server: LiveServer
) -> None:
    texts = corpus(24, seed=5)
    ds = local_ray.data.from_items([{"id": i, "text": t} for i, t in enumerate(texts)])
    embedded = ds.map_batches(
        Embedder,
        fn_constructor_kwargs={"model": str(model_files.mean), "num_thread": 1},
        concurrency=1,
        batch_size=8,
        num_cpus=1,
    )
    rows = sorted(embedded.take_all(), key=lambda row: row["id"])
    assert [row["id"] for row in rows] == list(range(24))
    vectors = np.stack([np.asarray(row["embedding"], dtype=np.float32) for row in rows])
    expected = np.concatenate([server.vectors(TINY, texts[i : i + 8]) for i in range(0, 24, 8)])
    np.testing.assert_array_equal(vectors, expected.astype(np.float32))
    assert all(row["tokens"] > 2 for row in rows)


def test_embed_file_on_ray_writes_what_a_local_run_writes(
    local_ray: Any, stores: Stores, tmp_path: Path
) -> None:
    source = write_corpus(tmp_path / "in.jsonl", corpus(40, seed=6), list(range(40)))
    common = ["--model", TINY, "--id-field", "id", "--batch", "8"]
    local, on_ray = tmp_path / "local.parquet", tmp_path / "ray.parquet"
    env = store_env(stores)
    assert main(["embed-file", str(source), "--out", str(local), *common], env=env) == 0
    assert (
        main(
            [
                "embed-file",
                str(source),
                "--out",
                str(on_ray),
                "--ray",
                "--ray-actors",
                "2",
                *common,
            ],
            env=env,
        )
        == 0
    )
    mine, theirs = read_output(local), read_output(on_ray)
    assert theirs.column("id").to_pylist() == list(range(40))
    np.testing.assert_array_equal(vectors_of(theirs), vectors_of(mine))
    assert theirs.column("tokens").to_pylist() == mine.column("tokens").to_pylist()


def test_a_model_the_actors_cannot_load_is_reported(
    local_ray: Any, stores: Stores, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_corpus(tmp_path / "in.txt", corpus(3))
    out = tmp_path / "out.parquet"
    assert (
        main(
            [
                "embed-file",
                str(source),
                "--out",
                str(out),
                "--model",
                "nope",
                "--ray",
                "--ray-actors",
                "1",
            ],
            env=store_env(stores),
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "Error: a Ray actor could not load the model: model 'nope' not found\n" in err
    assert not out.exists()
