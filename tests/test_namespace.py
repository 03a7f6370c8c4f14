"""emberd installs one import package, `emberd`: a user's own `models.py` or `server/`
shadows nothing, and Ray workers started from such a folder import emberd all the same.

Each check runs as a user would, in a fresh process whose working folder holds
a `models.py` and a `server/` package of its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.bulk_files import corpus, read_output, store_env, vectors_of, write_corpus
from tests.support.harness import TINY, LiveServer, ModelFiles, Stores

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    """A project folder with its own `models.py` and `server` package."""
    folder = tmp_path / "project"
    (folder / "server").mkdir(parents=True)
    (folder / "models.py").write_text("WHOSE = 'the user'\n")
    (folder / "server" / "__init__.py").write_text("WHOSE = 'the user'\n")
    return folder


def run_in(folder: Path, argv: list[str], env: dict[str, str] | None = None) -> str:
    """Run `argv` in `folder` as a user would (no PYTHONPATH); its stdout, or fail with stderr."""
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        argv,
        cwd=folder,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout


def test_a_users_models_and_server_are_their_own(user_folder: Path) -> None:
    out = run_in(
        user_folder,
        [
            sys.executable,
            "-c",
            "import models, server, emberd.models.store, emberd.server.config;"
            "print(models.WHOSE, '|', server.WHOSE, '|', emberd.models.store.__name__)",
        ],
    )
    assert out.strip() == "the user | the user | emberd.models.store"


def test_embed_file_on_ray_works_from_a_users_folder(
    user_folder: Path, stores: Stores, model_files: ModelFiles
) -> None:
    texts = corpus(12, seed=3)
    source = write_corpus(user_folder / "docs.jsonl", texts, list(range(12)))
    emberd = str(Path(sys.executable).with_name("emberd"))
    common = ["--model", TINY, "--id-field", "id", "--batch", "4"]
    env = dict(store_env(stores))
    run_in(user_folder, [emberd, "embed-file", str(source), "--out", "local.parquet", *common], env)
    run_in(
        user_folder,
        [
            emberd,
            "embed-file",
            str(source),
            "--out",
            "ray.parquet",
            "--ray",
            "--ray-actors",
            "2",
            *common,
        ],
        env,
    )
    local, on_ray = (
        read_output(user_folder / "local.parquet"),
        read_output(user_folder / "ray.parquet"),
    )
    assert on_ray.column("id").to_pylist() == list(range(12))
    np.testing.assert_array_equal(vectors_of(on_ray), vectors_of(local))


def readme_ray_snippet() -> str:
    """The README's Ray Data example, as printed there."""
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    return next(b for b in blocks if "Embedder" in b)


def test_the_readmes_ray_data_snippet_works_from_a_users_folder(
    user_folder: Path, model_files: ModelFiles, server: LiveServer
) -> None:
    texts = corpus(8, seed=4)
    chunks, vectors = user_folder / "chunks", user_folder / "vectors"
    chunks.mkdir()
    pq.write_table(pa.Table.from_pylist([{"text": t} for t in texts]), chunks / "part-0.parquet")
    # The example as written, pointed at local folders, one small actor and the tiny model.
    snippet = (
        readme_ray_snippet()
        .replace("s3://bucket/chunks/", str(chunks))
        .replace("s3://bucket/vectors/", str(vectors))
        .replace('"all-minilm"', repr(str(model_files.mean)))
    )
    # Ray 2.51+ documents map_batches' `concurrency` as deprecated: `compute` sizes the pool.
    assert "concurrency" not in snippet and "compute=ray.data.ActorPoolStrategy(" in snippet
    snippet = re.sub(r"ActorPoolStrategy\(size=\d+\)", "ActorPoolStrategy(size=1)", snippet)
    snippet = re.sub(r"num_cpus=\d+", "num_cpus=1", snippet)
    snippet = re.sub(r"batch_size=\d+", "batch_size=4", snippet)
    script = "import ray\nray.init(num_cpus=2, include_dashboard=False)\n" + snippet
    (user_folder / "pipeline.py").write_text(textwrap.dedent(script))
    run_in(user_folder, [sys.executable, "pipeline.py"])
    table = pq.read_table(vectors)
    got = np.stack([np.asarray(v, dtype=np.float32) for v in table.column("embedding").to_pylist()])
    order = [texts.index(t) for t in table.column("text").to_pylist()]
    # Batches of four may pack differently from one of eight: equal to float32 rounding.
    np.testing.assert_allclose(got, server.vectors(TINY, texts)[order], atol=1e-5)
